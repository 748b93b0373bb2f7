//! [`SharedBuffer`]: a Vulkan buffer and the CUDA memory behind it, whichever side owns it.

use std::ops::Range;
use std::sync::Arc;

use super::{check_same_device, check_vmm_handle_type};
use crate::cuda::{self, ExternalMemory, MappedBuffer, VmmAllocation};
use crate::error::Result;
use crate::vulkan::{self, BufferDesc, ExternalBuffer};

/// A Vulkan buffer and its memory as CUDA sees it.
///
/// Either Vulkan owns the memory and CUDA imports it ([`SharedBuffer::new`],
/// [`SharedBuffer::from_vulkan`], [`SharedPool`](super::SharedPool) sub-allocations), or
/// CUDA owns it and Vulkan imports it ([`SharedBuffer::from_cuda`]). Map ranges with
/// [`SharedBuffer::map`] as often as needed.
///
/// # Handing the memory between the APIs
/// The spec asks for a queue-family ownership transfer on a buffer shared with another
/// API, as on an image (see [`ExternalBuffer`]'s ownership): **release** it to
/// `VK_QUEUE_FAMILY_EXTERNAL` before CUDA uses memory Vulkan wrote, and **acquire** it
/// back before Vulkan reads what CUDA wrote; the releasing submission signals what CUDA
/// waits on, the acquiring one waits on CUDA's signal. Per frame, put
/// [`Commands::release_buffer`](crate::util::Commands::release_buffer) at the end of the
/// producing batch and [`Commands::acquire_buffer`](crate::util::Commands::acquire_buffer)
/// at the start of the consuming one of a [`FrameSync`](super::FrameSync) frame; for setup
/// and tests, [`OneShot::release_buffer`](crate::util::OneShot::release_buffer) and
/// [`OneShot::acquire_buffer`](crate::util::OneShot::acquire_buffer) (after synchronising
/// CUDA's stream). While released, vkcuda's own Vulkan uses of the buffer are refused.
///
/// # Drop order
/// * Vulkan owns: each [`MappedBuffer`] keeps the import alive, and the import keeps the
///   Vulkan buffer (or its pool block) alive, so `cuMemFree` → `cuDestroyExternalMemory` →
///   `vkDestroyBuffer`/`vkFreeMemory` run in that order whatever order handles drop in.
/// * CUDA owns: each [`MappedBuffer`] keeps the [`VmmAllocation`] alive (unmapped and
///   released after the last one), and the Vulkan import holds its own reference to the
///   physical memory through the fd it imported, so neither side waits for the other.
pub struct SharedBuffer {
    cuda: CudaSide,
    vulkan: Arc<ExternalBuffer>,
}

/// Who owns the memory, and how CUDA reaches it.
enum CudaSide {
    /// Vulkan owns it; CUDA imported the allocation the buffer is bound at `offset` of.
    Imported { memory: ExternalMemory, offset: u64 },
    /// CUDA owns it; Vulkan imported it.
    Owned(VmmAllocation),
}

impl std::fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owner = match &self.cuda {
            CudaSide::Imported { offset, .. } => format!("Vulkan, at offset {offset}"),
            CudaSide::Owned(_) => "CUDA".to_owned(),
        };
        f.debug_struct("SharedBuffer")
            .field("vulkan", &self.vulkan)
            .field("owner", &owner)
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
        Ok(Self::imported(memory, 0, buffer))
    }

    /// Allocates the memory with CUDA ([`VmmAllocation::new`]: `desc.size` rounded up to
    /// [`cuda::vmm_granularity`]) and imports it into Vulkan as a buffer of `desc`.
    ///
    /// # Errors
    /// * [`crate::Error::InvalidArgument`]: `cu` is not on `vk`'s GPU, `desc.size` is 0 or
    ///   too large, or `desc.handle_type` is not
    ///   [`MemoryHandleType::OpaqueFd`](crate::external::MemoryHandleType::OpaqueFd) (what
    ///   CUDA exports).
    /// * [`crate::Error::Unsupported`]: the device has no VMM or no POSIX-fd export (see
    ///   [`VmmAllocation::new`]).
    /// * [`crate::Error::InvalidExternalHandle`] when Vulkan refuses the fd; CUDA and Vulkan
    ///   allocation failures.
    pub fn from_cuda(vk: &vulkan::Context, cu: &cuda::Context, desc: &BufferDesc) -> Result<Self> {
        check_same_device(vk, cu)?;
        check_vmm_handle_type(desc.handle_type)?;
        let memory = VmmAllocation::new(cu, desc.size)?;
        let import = memory.export()?;
        // SAFETY: the fd is an export of a CUDA allocation on `vk`'s GPU (checked above) of
        // exactly `import.size` bytes, not dedicated, which Vulkan imports into the
        // device-local type the buffer allows (NVIDIA's simpleVulkanMMAP sample imports
        // VMM fds the same way).
        let buffer = unsafe { ExternalBuffer::import(vk, desc, import) }?;
        Ok(Self {
            cuda: CudaSide::Owned(memory),
            vulkan: Arc::new(buffer),
        })
    }

    /// A buffer bound at `offset` of an allocation that CUDA imported as `memory`.
    pub(super) fn imported(
        memory: ExternalMemory,
        offset: u64,
        vulkan: Arc<ExternalBuffer>,
    ) -> Self {
        Self {
            cuda: CudaSide::Imported { memory, offset },
            vulkan,
        }
    }

    /// Maps `range` (bytes of the buffer) as a read-write CUDA device pointer. The mapping
    /// holds the buffer (and, for a pool buffer, its slot) as long as it lives.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the range is empty, ends past the buffer, or
    /// starts at an offset that is not a multiple of [`cuda::MAP_OFFSET_ALIGNMENT`].
    pub fn map(&self, range: Range<u64>) -> Result<MappedBuffer> {
        self.vulkan.check_range("range", &range)?;
        match &self.cuda {
            CudaSide::Imported { memory, offset } => {
                // The mapping holds the buffer: a pooled one would otherwise hand its slot
                // to the next allocation while CUDA still maps it.
                let holder: Arc<dyn std::any::Any + Send + Sync> = self.vulkan.clone();
                memory.map_holding(offset + range.start..offset + range.end, holder)
            }
            CudaSide::Owned(memory) => memory.map(range),
        }
    }

    /// Size of the buffer in bytes (as created; the allocation may be larger).
    pub fn size(&self) -> u64 {
        self.vulkan.size()
    }

    /// The Vulkan side.
    pub fn vulkan(&self) -> &Arc<ExternalBuffer> {
        &self.vulkan
    }

    /// The CUDA import, when Vulkan owns the memory (`None` from
    /// [`SharedBuffer::from_cuda`]). For a buffer from a [`SharedPool`](super::SharedPool)
    /// it is the whole block's import, which other buffers share: the buffer starts at
    /// its [`pool_slot`](crate::vulkan::ExternalBuffer::pool_slot) offset, and
    /// [`SharedBuffer::map`] is the way to its own bytes.
    pub fn cuda(&self) -> Option<&ExternalMemory> {
        match &self.cuda {
            CudaSide::Imported { memory, .. } => Some(memory),
            CudaSide::Owned(_) => None,
        }
    }

    /// The CUDA allocation, when CUDA owns the memory ([`SharedBuffer::from_cuda`]).
    pub fn vmm(&self) -> Option<&VmmAllocation> {
        match &self.cuda {
            CudaSide::Imported { .. } => None,
            CudaSide::Owned(memory) => Some(memory),
        }
    }
}
