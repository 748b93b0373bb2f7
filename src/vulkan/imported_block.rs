//! [`ImportedBlock`]: another device's or process's shared allocation (a
//! [`PoolBlock`](super::PoolBlock)'s export, or CUDA's VMM memory), imported once, with
//! buffers and images bound into it at the exporter's offsets
//! ([`ExternalBuffer::bind_in`](super::ExternalBuffer::bind_in),
//! [`ExternalImage::bind_in`](super::ExternalImage::bind_in)): the importing half of a pool,
//! one fd for many resources.

use std::sync::Arc;

use ash::vk;

use super::memory::{import_memory, MemoryTypeWanted};
use super::memory_fd::import_fd;
use super::Context;
use crate::error::{Error, Result};
use crate::external::{MemoryHandleType, MemoryImport};

/// A shared (not dedicated) allocation imported into this context, into which resources
/// are bound at offsets. Each resource bound in it holds it; the memory is freed when the
/// last one (and the last `Arc`) is gone.
pub struct ImportedBlock {
    ctx: Context,
    memory: vk::DeviceMemory,
    size: u64,
    memory_type: u32,
    handle_type: MemoryHandleType,
}

impl std::fmt::Debug for ImportedBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedBlock")
            .field("size", &self.size)
            .field("memory_type", &self.memory_type)
            .field("handle_type", &self.handle_type)
            .finish_non_exhaustive()
    }
}

impl Drop for ImportedBlock {
    fn drop(&mut self) {
        // SAFETY: every resource bound in the block holds it, so none is left; freed once.
        unsafe { self.ctx.device().free_memory(self.memory, None) };
    }
}

impl ImportedBlock {
    /// Imports `import`, a shared allocation, once. Its memory type is the exporter's where
    /// `import.memory_type` names it (every vkcuda export does), else the first
    /// device-local type.
    ///
    /// # Safety
    /// 1. `import.handle` is an export of memory allocated by a device with this context's
    ///    UUID, not dedicated, of exactly `import.size` bytes, in `import.memory_type` where
    ///    that names one (VUID-VkMemoryAllocateInfo-allocationSize-01742). A mismatch the
    ///    driver does not catch is undefined behaviour.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `import.dedicated` is true (a dedicated allocation is
    ///   imported with its resource: [`ExternalImage::import`](super::ExternalImage::import)),
    ///   `import.size` is 0, or `import.memory_type` is not a type of this device.
    /// * [`Error::Unsupported`]: a handle type vkcuda cannot import here.
    /// * [`Error::InvalidExternalHandle`]: the driver rejected the handle.
    pub unsafe fn import(ctx: &Context, import: MemoryImport) -> Result<Arc<Self>> {
        if import.dedicated {
            return Err(Error::invalid(
                "import.dedicated",
                "true",
                "a shared allocation (a pool block's or CUDA's VMM export); import a \
                 dedicated one with its resource",
            ));
        }
        if import.size == 0 {
            return Err(Error::invalid("import.size", "0", "at least 1 byte"));
        }
        let handle_type = import.handle.handle_type();
        let fd = import_fd(import.handle)?;
        let count = ctx.memory_properties().memory_type_count;
        let all = u32::MAX.checked_shr(32 - count).unwrap_or(0);
        let what = || "a shared block".to_owned();
        let wanted = MemoryTypeWanted {
            exporters: import.memory_type,
            allowed: all,
            resource: &what,
        };
        // SAFETY: no resource is named (not dedicated); precondition 1 covers the payload.
        let (memory, memory_type) = unsafe {
            import_memory(
                ctx,
                handle_type,
                fd,
                wanted,
                import.size,
                None::<vk::Buffer>,
            )
        }?;
        Ok(Arc::new(Self {
            ctx: ctx.clone(),
            memory,
            size: import.size,
            memory_type,
            handle_type,
        }))
    }

    /// Size of the allocation in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The Vulkan memory type index it was imported into.
    pub fn memory_type(&self) -> u32 {
        self.memory_type
    }

    /// The handle type it was imported from.
    pub fn handle_type(&self) -> MemoryHandleType {
        self.handle_type
    }

    /// The raw memory. Valid while `self` lives.
    pub fn memory(&self) -> vk::DeviceMemory {
        self.memory
    }

    /// The context it was imported into.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}
