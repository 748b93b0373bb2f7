//! [`SharedSemaphore`]: an exportable Vulkan semaphore and its CUDA import.

use std::sync::Arc;

use super::check_same_device;
use crate::cuda::{self, ExternalSemaphore};
use crate::error::Result;
use crate::vulkan::{self, Semaphore, SemaphoreDesc, SemaphoreKind};

/// A Vulkan semaphore (timeline or binary) created exportable and imported into CUDA once.
///
/// Vulkan submissions use [`SharedSemaphore::vulkan`] (with
/// [`vulkan::Context::submit_to`]), CUDA streams [`SharedSemaphore::cuda`]
/// ([`ExternalSemaphore::signal`], [`ExternalSemaphore::wait`], batched with
/// [`ExternalSemaphore::signal_many`] / [`ExternalSemaphore::wait_many`]). Both name one
/// payload: a CUDA signal of a timeline value is seen by Vulkan waits and host reads of the
/// Vulkan semaphore, and the reverse. Both halves check timeline signals against one
/// record of the highest value signalled or submitted on either side, so values never go
/// backwards across the APIs.
///
/// # Drop order
/// The CUDA import is declared first, so it is destroyed first: `cuDestroyExternalSemaphore`
/// runs after the CUDA operations enqueued through it have finished (it waits for them),
/// and only then does this handle's reference to the Vulkan semaphore go. The Vulkan
/// semaphore itself is destroyed with its last [`Arc`]; Vulkan batches that use it must have
/// completed by then (as for any [`Semaphore`]).
///
/// # Costs
/// A cross-API wait on an imported timeline value (a CUDA stream wait, or a Vulkan queue wait
/// on a CUDA-signalled value) takes long to pass even when the value is already reached
/// (figures in `benches/RESULTS.md`): chain frames through [`crate::interop::FrameSync`],
/// which overlaps independent frames, or avoids semaphores in its low-latency mode. On the
/// host, [`Semaphore::wait`] sees a CUDA signal at its next counter read.
pub struct SharedSemaphore {
    cuda: ExternalSemaphore,
    vulkan: Arc<Semaphore>,
}

impl std::fmt::Debug for SharedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSemaphore")
            .field("vulkan", &self.vulkan)
            .field("cuda", &self.cuda)
            .finish()
    }
}

impl SharedSemaphore {
    /// Creates an exportable Vulkan semaphore as `desc` says and imports it into `cu`.
    ///
    /// # Errors
    /// * [`crate::Error::InvalidArgument`] (`cu`) when `cu` is not on `vk`'s GPU, or as
    ///   [`Semaphore::new`] for a bad description.
    /// * [`crate::Error::MissingExtension`] without `VK_KHR_external_semaphore_fd` (e.g.
    ///   lavapipe); [`crate::Error::Unsupported`] when the handle type is refused.
    /// * [`crate::Error::InvalidExternalHandle`], [`crate::Error::Cuda`] when CUDA refuses
    ///   the import (the exported fd is closed; nothing leaks).
    pub fn new(vk: &vulkan::Context, cu: &cuda::Context, desc: &SemaphoreDesc) -> Result<Self> {
        check_same_device(vk, cu)?;
        Self::from_vulkan(Arc::new(Semaphore::new(vk, desc)?), cu)
    }

    /// Shorthand for [`SharedSemaphore::new`] with [`SemaphoreDesc::timeline`].
    ///
    /// # Errors
    /// As [`SharedSemaphore::new`].
    pub fn timeline(vk: &vulkan::Context, cu: &cuda::Context, initial_value: u64) -> Result<Self> {
        Self::new(vk, cu, &SemaphoreDesc::timeline(initial_value))
    }

    /// Shorthand for [`SharedSemaphore::new`] with [`SemaphoreDesc::binary`].
    ///
    /// # Errors
    /// As [`SharedSemaphore::new`].
    pub fn binary(vk: &vulkan::Context, cu: &cuda::Context) -> Result<Self> {
        Self::new(vk, cu, &SemaphoreDesc::binary())
    }

    /// Imports an existing exportable semaphore (for example one made on a wrapped device).
    /// Each call exports a new fd, which CUDA takes over.
    ///
    /// # Errors
    /// As [`SharedSemaphore::new`]; [`crate::Error::Unsupported`] when `semaphore` was not
    /// created exportable.
    pub fn from_vulkan(semaphore: Arc<Semaphore>, cu: &cuda::Context) -> Result<Self> {
        check_same_device(semaphore.context(), cu)?;
        let handle = semaphore.export()?;
        // SAFETY: `handle` is this semaphore's own export, made by the device `cu` was just
        // checked to run on; its variant (TimelineFd / OpaqueFd) matches the semaphore's kind
        // because `export` derives it from the kind.
        let mut cuda = unsafe { ExternalSemaphore::import(cu, handle) }?;
        cuda.share_high_water(semaphore.high_water());
        Ok(Self {
            cuda,
            vulkan: semaphore,
        })
    }

    /// Binary or timeline.
    pub fn kind(&self) -> SemaphoreKind {
        self.vulkan.kind()
    }

    /// The Vulkan side: submissions, host signal/wait/value.
    pub fn vulkan(&self) -> &Arc<Semaphore> {
        &self.vulkan
    }

    /// The CUDA side: stream signals and waits.
    pub fn cuda(&self) -> &ExternalSemaphore {
        &self.cuda
    }
}
