//! [`SharedBuffer`]: a Vulkan buffer and its CUDA import.

use std::ops::Range;
use std::sync::Arc;

use super::check_same_device;
use crate::cuda::{self, ExternalMemory, MappedBuffer};
use crate::error::Result;
use crate::vulkan::{self, BufferDesc, ExternalBuffer};

/// A Vulkan buffer with its own exportable allocation, imported into CUDA once.
///
/// The CUDA import is described from the allocation itself (size from
/// `VkMemoryRequirements`, dedicated flag), so it cannot disagree with Vulkan. Map ranges
/// with [`SharedBuffer::map`] as often as needed: each [`MappedBuffer`] keeps the import
/// alive, and the import keeps the Vulkan buffer alive, so `cuMemFree` →
/// `cuDestroyExternalMemory` → `vkDestroyBuffer`/`vkFreeMemory` run in that order whatever
/// order the handles are dropped in.
pub struct SharedBuffer {
    memory: ExternalMemory,
    vulkan: Arc<ExternalBuffer>,
}

impl std::fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("vulkan", &self.vulkan)
            .finish_non_exhaustive()
    }
}

impl SharedBuffer {
    /// Creates an exportable Vulkan buffer and imports it into CUDA.
    ///
    /// # Errors
    /// Everything [`ExternalBuffer::new`] reports, [`crate::Error::InvalidArgument`] when
    /// `cu` is not on `vk`'s GPU, and CUDA import failures.
    pub fn new(vk: &vulkan::Context, cu: &cuda::Context, desc: &BufferDesc) -> Result<Self> {
        check_same_device(vk, cu)?;
        Self::from_vulkan(Arc::new(ExternalBuffer::new(vk, desc)?), cu)
    }

    /// Imports an existing exportable buffer (for example one made on a wrapped device).
    ///
    /// # Errors
    /// As [`SharedBuffer::new`]; the buffer must have been created exportable.
    pub fn from_vulkan(buffer: Arc<ExternalBuffer>, cu: &cuda::Context) -> Result<Self> {
        check_same_device(buffer.context(), cu)?;
        let import = buffer.export()?;
        let owner: Arc<dyn std::any::Any + Send + Sync> = buffer.clone();
        // SAFETY: `import` is this buffer's own export: its size is the allocation size
        // from VkMemoryRequirements and it is a dedicated allocation, as described; `owner`
        // keeps the Vulkan memory alive until after cuDestroyExternalMemory.
        let memory = unsafe { ExternalMemory::import_with_owner(cu, import, owner) }?;
        Ok(Self {
            memory,
            vulkan: buffer,
        })
    }

    /// Maps `range` (bytes of the buffer) as a read-write CUDA device pointer.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the range is empty, ends past the buffer, or
    /// starts at an offset that is not a multiple of [`cuda::MAP_OFFSET_ALIGNMENT`].
    pub fn map(&self, range: Range<u64>) -> Result<MappedBuffer> {
        self.vulkan.check_range("range", &range)?;
        self.memory.map(range)
    }

    /// Size of the buffer in bytes (as created; the allocation may be larger).
    pub fn size(&self) -> u64 {
        self.vulkan.size()
    }

    /// The Vulkan side.
    pub fn vulkan(&self) -> &Arc<ExternalBuffer> {
        &self.vulkan
    }

    /// The CUDA import.
    pub fn cuda(&self) -> &ExternalMemory {
        &self.memory
    }
}
