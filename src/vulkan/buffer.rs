//! Buffers bound to their own dedicated, external-capable `VkDeviceMemory`, or at a slot of
//! an [`ExportPool`](super::ExportPool) block.

use std::ops::Range;
use std::sync::Arc;

use ash::vk;

use super::capabilities::memory_handle_flags;
use super::memory::{
    allocate_exportable, check_import_size, export_handle, import_fd, import_memory,
    unsupported_type, Dedicated,
};
use super::pool::{PoolBlock, PoolSlot};
use super::Context;
use crate::error::{Error, Result};
use crate::external::{MemoryHandleType, MemoryImport};

/// What [`ExternalBuffer::new`] creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferDesc {
    /// Size in bytes the buffer is created with (the allocation may be larger).
    pub size: u64,
    /// Buffer usage; the default allows transfers both ways and storage-buffer access.
    pub usage: vk::BufferUsageFlags,
    /// How the memory is exported.
    pub handle_type: MemoryHandleType,
}

impl BufferDesc {
    /// A `size`-byte buffer with transfer and storage usage, exported as an opaque fd.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            usage: vk::BufferUsageFlags::TRANSFER_SRC
                | vk::BufferUsageFlags::TRANSFER_DST
                | vk::BufferUsageFlags::STORAGE_BUFFER,
            handle_type: MemoryHandleType::OpaqueFd,
        }
    }

    /// Replaces the usage flags.
    pub fn usage(mut self, usage: vk::BufferUsageFlags) -> Self {
        self.usage = usage;
        self
    }

    /// Replaces the export handle type.
    pub fn handle_type(mut self, handle_type: MemoryHandleType) -> Self {
        self.handle_type = handle_type;
        self
    }
}

/// A `VkBuffer` bound to a dedicated `VkDeviceMemory` that was allocated exportable
/// ([`ExternalBuffer::new`]) or imported from an external handle
/// ([`ExternalBuffer::import`]), or bound at a slot of an exportable pool block
/// ([`ExportPool::allocate`](super::ExportPool::allocate)). Destroys the buffer and frees the memory on drop; GPU work
/// that uses it must have finished by then.
pub struct ExternalBuffer {
    ctx: Context,
    buffer: vk::Buffer,
    /// Declared after `buffer`: the memory is freed (or its slot returned) after the
    /// `vkDestroyBuffer` in `Drop`.
    backing: Backing,
    size: u64,
    allocation_size: u64,
    usage: vk::BufferUsageFlags,
    handle_type: MemoryHandleType,
    exportable: bool,
}

impl std::fmt::Debug for ExternalBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalBuffer")
            .field("size", &self.size)
            .field("allocation_size", &self.allocation_size)
            .field("handle_type", &self.handle_type)
            .field("exportable", &self.exportable)
            .finish_non_exhaustive()
    }
}

/// The memory an [`ExternalBuffer`] is bound to.
enum Backing {
    /// Its own allocation, freed with the buffer.
    Dedicated(vk::DeviceMemory),
    /// A slot of an [`ExportPool`](super::ExportPool) block, returned when dropped.
    Pooled(PoolSlot),
}

impl Drop for ExternalBuffer {
    fn drop(&mut self) {
        let device = self.ctx.device();
        // SAFETY: the buffer was made from this device and is destroyed once; every CUDA
        // import of the memory holds this buffer (or its pool block) alive until then.
        unsafe { device.destroy_buffer(self.buffer, None) };
        if let Backing::Dedicated(memory) = self.backing {
            // SAFETY: as above; the buffer bound to the memory is gone.
            unsafe { device.free_memory(memory, None) };
        }
        // A pooled slot returns its range when `backing` drops, after the buffer is gone.
    }
}

/// Owns a buffer handle until it is bound into an [`ExternalBuffer`].
pub(super) struct BufferGuard<'a> {
    device: &'a ash::Device,
    pub(super) buffer: vk::Buffer,
}

impl BufferGuard<'_> {
    fn release(self) -> vk::Buffer {
        let b = self.buffer;
        std::mem::forget(self);
        b
    }
}

impl Drop for BufferGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the buffer was created from `device` and never bound or used.
        unsafe { self.device.destroy_buffer(self.buffer, None) };
    }
}

impl ExternalBuffer {
    /// Creates a buffer with its own exportable dedicated allocation, after checking that
    /// the handle type can be exported for this usage.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `desc.size` is 0 or above `maxMemoryAllocationSize`.
    /// * [`Error::Unsupported`]: the handle type cannot be exported here (Vulkan has no
    ///   such type, its extension is not enabled, the driver refuses it for this usage,
    ///   or it is a Win32 type on a non-Windows platform).
    /// * [`Error::OutOfMemory`].
    pub fn new(ctx: &Context, desc: &BufferDesc) -> Result<Self> {
        check_size(ctx, desc.size)?;
        let flags = exportable_flags(ctx, desc)?;
        let device = ctx.device();
        let buffer = create_buffer(device, desc, flags)?;
        // SAFETY: `buffer.buffer` was just created from `device`.
        let requirements = unsafe { device.get_buffer_memory_requirements(buffer.buffer) };
        // SAFETY: the buffer was created from `ctx`'s device with `flags`, is unbound, and
        // `requirements` are its own.
        let memory = unsafe {
            allocate_exportable(ctx, &requirements, flags, Dedicated::Buffer(buffer.buffer))
        }?;
        Self::bind(ctx, buffer, memory, desc, requirements.size, true)
    }

    /// Creates a buffer bound to memory imported from `import` (e.g. another device's or
    /// process's export). `desc` must describe the buffer the same way the exporter did
    /// (size and usage), so the memory type and allocation size match the payload.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `import.size` is smaller than the buffer needs, or
    ///   `desc.handle_type` differs from the handle's type.
    /// * [`Error::InvalidExternalHandle`]: the driver rejected the handle.
    /// * [`Error::Unsupported`]: non-fd handle types (vkcuda imports fds only).
    ///
    /// On success the fd belongs to Vulkan; on failure vkcuda has closed it.
    ///
    /// # Safety
    /// 1. `import.handle` is an export of memory allocated by a device with this context's
    ///    UUID, of exactly `import.size` bytes, in the memory type this `desc` selects (as
    ///    [`ExternalBuffer::new`] with an equal `desc` allocates), dedicated as
    ///    `import.dedicated` says. Vulkan requires the allocation size and memory type to
    ///    match the payload (VUID-VkMemoryAllocateInfo-allocationSize-01742); a mismatch the
    ///    driver does not catch is undefined behaviour. [`ExternalBuffer::alias`] is the
    ///    safe loopback.
    pub unsafe fn import(ctx: &Context, desc: &BufferDesc, import: MemoryImport) -> Result<Self> {
        check_size(ctx, desc.size)?;
        let handle_type = import.handle.handle_type();
        if handle_type != desc.handle_type {
            return Err(Error::invalid(
                "desc.handle_type",
                format!("{} but the handle is {handle_type}", desc.handle_type),
                "the type of the handle being imported",
            ));
        }
        let fd = import_fd(import.handle)?;
        let flags =
            memory_handle_flags(handle_type).ok_or_else(|| unsupported_type(handle_type))?;
        let device = ctx.device();
        let buffer = create_buffer(device, desc, flags)?;
        // SAFETY: `buffer.buffer` was just created from `device`.
        let requirements = unsafe { device.get_buffer_memory_requirements(buffer.buffer) };
        check_import_size(import.size, import.dedicated, requirements.size, || {
            format!("a {}-byte buffer", desc.size)
        })?;
        let dedicated = import.dedicated.then_some(Dedicated::Buffer(buffer.buffer));
        // SAFETY: the buffer was created from `ctx`'s device with `flags` for this handle
        // type and is unbound.
        let memory = unsafe {
            import_memory(
                ctx,
                handle_type,
                fd,
                requirements.memory_type_bits,
                import.size,
                dedicated,
            )
        }?;
        Self::bind(ctx, buffer, memory, desc, import.size, false)
    }

    /// Binds `memory` to the guarded buffer and assembles the result; frees both on error.
    fn bind(
        ctx: &Context,
        buffer: BufferGuard<'_>,
        memory: vk::DeviceMemory,
        desc: &BufferDesc,
        allocation_size: u64,
        exportable: bool,
    ) -> Result<Self> {
        let device = ctx.device();
        // SAFETY: memory was allocated for (and dedicated to) this buffer; bound once.
        if let Err(r) = unsafe { device.bind_buffer_memory(buffer.buffer, memory, 0) } {
            // SAFETY: the memory is unbound and unused.
            unsafe { device.free_memory(memory, None) };
            return Err(Error::vk("vkBindBufferMemory", r));
        }
        Ok(Self {
            ctx: ctx.clone(),
            buffer: buffer.release(),
            backing: Backing::Dedicated(memory),
            size: desc.size,
            allocation_size,
            usage: desc.usage,
            handle_type: desc.handle_type,
            exportable,
        })
    }

    /// Exports the memory as a new handle (each call makes a new fd), described so CUDA
    /// imports exactly this allocation: size from `VkMemoryRequirements`, dedicated.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the buffer was imported rather than allocated
    /// exportable; [`Error::Vulkan`] when `vkGetMemoryFdKHR` fails.
    pub fn export(&self) -> Result<MemoryImport> {
        if let Backing::Pooled(_) = self.backing {
            return Err(Error::Unsupported {
                what: "export of a pooled buffer on its own".into(),
                reason: "it is a range of a pool block: export the block \
                         (ExternalBuffer::pool_slot) and carry the offset"
                    .into(),
            });
        }
        if !self.exportable {
            return Err(Error::Unsupported {
                what: "export of an imported buffer".into(),
                reason: "only buffers created by ExternalBuffer::new are exportable".into(),
            });
        }
        Ok(MemoryImport {
            handle: export_handle(&self.ctx, self.memory(), self.handle_type)?,
            size: self.allocation_size,
            dedicated: true,
        })
    }

    /// A second buffer on the same memory: exports this one and imports the handle back
    /// into the same context (Vulkan-only zero copy, e.g. to check that export works).
    ///
    /// # Errors
    /// As [`ExternalBuffer::export`] and [`ExternalBuffer::import`].
    pub fn alias(&self) -> Result<Self> {
        let desc = BufferDesc {
            size: self.size,
            usage: self.usage,
            handle_type: self.handle_type,
        };
        // SAFETY: the handle is this buffer's own export, described by its own allocation
        // size and dedication, on the same device, with the description that made it.
        unsafe { Self::import(&self.ctx, &desc, self.export()?) }
    }

    /// The raw buffer, for recording commands. Valid while `self` lives.
    pub fn raw(&self) -> vk::Buffer {
        self.buffer
    }

    /// The raw memory. Valid while `self` lives.
    pub fn memory(&self) -> vk::DeviceMemory {
        match &self.backing {
            Backing::Dedicated(memory) => *memory,
            Backing::Pooled(slot) => slot.block().memory(),
        }
    }

    /// For a buffer from an [`ExportPool`](super::ExportPool): its block and the byte
    /// offset it is bound at. `None` for a buffer with its own allocation.
    pub fn pool_slot(&self) -> Option<(&Arc<PoolBlock>, u64)> {
        match &self.backing {
            Backing::Dedicated(_) => None,
            Backing::Pooled(slot) => Some((slot.block(), slot.offset())),
        }
    }

    /// A buffer of `desc` bound at `slot` of a pool block; `buffer` was created with the
    /// pool's handle type and `slot` fits its requirements (checked by the pool).
    pub(super) fn bind_pooled(
        ctx: &Context,
        buffer: BufferGuard<'_>,
        slot: PoolSlot,
        desc: &BufferDesc,
    ) -> Result<Self> {
        // SAFETY: the slot lies in the block's memory, its offset is a multiple of the
        // buffer's alignment and its size covers the buffer's requirements (the pool
        // checked both); the buffer is unbound.
        unsafe {
            ctx.device()
                .bind_buffer_memory(buffer.buffer, slot.block().memory(), slot.offset())
        }
        .map_err(|r| Error::vk("vkBindBufferMemory", r))?;
        Ok(Self {
            ctx: ctx.clone(),
            buffer: buffer.release(),
            allocation_size: slot.len(),
            backing: Backing::Pooled(slot),
            size: desc.size,
            usage: desc.usage,
            handle_type: desc.handle_type,
            exportable: false,
        })
    }

    /// Size the buffer was created with.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size of its allocation (`VkMemoryRequirements::size`), what CUDA imports.
    pub fn allocation_size(&self) -> u64 {
        self.allocation_size
    }

    /// The export handle type.
    pub fn handle_type(&self) -> MemoryHandleType {
        self.handle_type
    }

    /// The context it was made on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Checks that `range` is non-empty and inside the buffer; `arg` names it in the error.
    pub(crate) fn check_range(&self, arg: &'static str, range: &Range<u64>) -> Result<()> {
        if range.start >= range.end {
            return Err(Error::invalid(
                arg,
                format!("empty range {range:?}"),
                "start < end",
            ));
        }
        if range.end > self.size {
            return Err(Error::invalid(
                arg,
                format!("{range:?} ends past the {}-byte buffer", self.size),
                format!("end <= {}", self.size),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_usage(&self, needed: vk::BufferUsageFlags) -> Result<()> {
        if self.usage.contains(needed) {
            Ok(())
        } else {
            Err(Error::invalid(
                "buffer",
                format!("usage {:?} lacks {needed:?}", self.usage),
                format!("a buffer created with {needed:?}"),
            ))
        }
    }
}

pub(super) fn check_size(ctx: &Context, size: u64) -> Result<()> {
    if size == 0 {
        return Err(Error::invalid("desc.size", "0 bytes", "at least 1 byte"));
    }
    let max = ctx.max_allocation_size();
    if size > max {
        return Err(Error::invalid(
            "desc.size",
            format!("{size} bytes is above this device's maxMemoryAllocationSize"),
            format!("at most {max} bytes"),
        ));
    }
    Ok(())
}

/// The Vulkan flag for an exportable buffer of `desc`, after every capability check.
pub(super) fn exportable_flags(
    ctx: &Context,
    desc: &BufferDesc,
) -> Result<vk::ExternalMemoryHandleTypeFlags> {
    let t = desc.handle_type;
    if !t.is_fd() || !cfg!(unix) {
        return Err(unsupported_type(t));
    }
    if t == MemoryHandleType::DmaBufFd && !ctx.can_export_dma_buf() {
        return Err(Error::Unsupported {
            what: "DmaBufFd memory from Vulkan".into(),
            reason: "the device does not have VK_EXT_external_memory_dma_buf".into(),
        });
    }
    let flags = memory_handle_flags(t).ok_or_else(|| unsupported_type(t))?;
    ctx.buffer_support(desc.usage, t)?.require_export(|| {
        format!(
            "export of {t} memory for a buffer with usage {:?}",
            desc.usage
        )
    })?;
    Ok(flags)
}

pub(super) fn create_buffer<'a>(
    device: &'a ash::Device,
    desc: &BufferDesc,
    flags: vk::ExternalMemoryHandleTypeFlags,
) -> Result<BufferGuard<'a>> {
    let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(flags);
    let info = vk::BufferCreateInfo::default()
        .size(desc.size)
        .usage(desc.usage)
        .sharing_mode(vk::SharingMode::EXCLUSIVE)
        .push_next(&mut external);
    // SAFETY: `info`'s chain points at live structs.
    let buffer = unsafe { device.create_buffer(&info, None) }
        .map_err(|r| Error::vk_sized("vkCreateBuffer", r, desc.size))?;
    Ok(BufferGuard { device, buffer })
}
