//! Buffers bound to their own dedicated, external-capable `VkDeviceMemory`, or at a slot
//! of an exportable pool block.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use ash::vk;

use super::memory::{check_handle_type, export_flags, Bound, Unbound};
use super::pool::{PoolBlock, PoolSlot};
use super::queue_use::Tracked;
use super::{Context, ImageOwner, ImportedBlock};
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
/// ([`ExportPool::allocate`](super::ExportPool::allocate)). Destroys the buffer and frees the
/// memory (or returns the slot) on drop; GPU work that uses it must have finished by then.
///
/// # Ownership
/// A buffer shared with another API belongs either to the context's queue family
/// ([`ImageOwner::Vulkan`]) or to `VK_QUEUE_FAMILY_EXTERNAL` ([`ImageOwner::External`]),
/// as an [`ExternalImage`](super::ExternalImage) does (buffers have no layout). The spec
/// asks for the same queue-family ownership transfer: release the buffer
/// ([`Commands::release_buffer`](crate::util::Commands::release_buffer),
/// [`OneShot::release_buffer`](crate::util::OneShot::release_buffer)) before CUDA uses
/// memory Vulkan wrote, and acquire it back before Vulkan uses memory CUDA wrote, with the
/// same semaphores as for images. vkcuda tracks the owner ([`ExternalBuffer::owner`]) in
/// submission order and refuses its own Vulkan uses of a released buffer. Every buffer,
/// imported ones too, starts owned by Vulkan.
pub struct ExternalBuffer {
    bound: Bound<vk::Buffer>,
    size: u64,
    usage: vk::BufferUsageFlags,
    /// Owner and last queue use.
    pub(super) owner: Mutex<Tracked<ImageOwner>>,
}

impl std::fmt::Debug for ExternalBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalBuffer")
            .field("size", &self.size)
            .field("allocation_size", &self.bound.allocation_size())
            .field("handle_type", &self.bound.handle_type())
            .field("exportable", &self.bound.is_exportable())
            .field("owner", &self.owner())
            .finish_non_exhaustive()
    }
}

impl ExternalBuffer {
    /// Creates a buffer with its own exportable dedicated allocation, after checking that
    /// the handle type can be exported for this usage.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `desc.size` is 0 or above `maxMemoryAllocationSize`.
    /// * [`Error::Unsupported`]: the handle type cannot be exported here (Vulkan has no
    ///   such type, the driver refuses it for this usage, or it is a Win32 type on a
    ///   non-Windows platform).
    /// * [`Error::MissingExtension`]: `DmaBufFd` without `VK_EXT_external_memory_dma_buf`.
    /// * [`Error::OutOfMemory`].
    pub fn new(ctx: &Context, desc: &BufferDesc) -> Result<Self> {
        check_size(ctx, desc.size)?;
        check_usage_flags(desc.usage)?;
        let flags = exportable_flags(ctx, desc)?;
        let buffer = create_buffer(ctx.device(), desc, flags)?;
        // SAFETY: the buffer was created from `ctx`'s device with `flags`.
        let bound = unsafe { Bound::allocate(ctx, buffer, flags, desc.handle_type) }?;
        Ok(Self::with(bound, desc))
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
    /// * [`Error::MissingExtension`]: `DmaBufFd` without `VK_EXT_external_memory_dma_buf`.
    ///
    /// On success the fd belongs to Vulkan; on failure vkcuda has closed it.
    ///
    /// # Safety
    /// 1. `import.handle` is an export of memory allocated by a device with this context's
    ///    UUID, of exactly `import.size` bytes, dedicated as `import.dedicated` says, in
    ///    `import.memory_type` where that names one (every vkcuda export does; a buffer that
    ///    cannot use that type is refused), otherwise in the memory type this `desc` selects
    ///    (as [`ExternalBuffer::new`] with an equal `desc` allocates). Vulkan requires the
    ///    allocation size and memory type to match the payload
    ///    (VUID-VkMemoryAllocateInfo-allocationSize-01742); a mismatch the driver does not
    ///    catch is undefined behaviour. [`ExternalBuffer::alias`] is the safe loopback.
    pub unsafe fn import(ctx: &Context, desc: &BufferDesc, import: MemoryImport) -> Result<Self> {
        let t = desc.handle_type;
        let actual = import.handle.handle_type();
        let buffer = create_importable(ctx, desc, actual, "the handle being imported")?;
        let what = || format!("a {}-byte buffer", desc.size);
        // SAFETY: the buffer was created from `ctx`'s device for this handle type; the
        // payload fits it (precondition 1).
        let bound = unsafe { Bound::import(ctx, buffer, import, t, what) }?;
        Ok(Self::with(bound, desc))
    }

    /// A buffer of `desc` bound at `offset` of an imported block: the exporter's buffer at
    /// that offset (a pool buffer's [`pool_slot`](ExternalBuffer::pool_slot) offset), seen
    /// from this context. Owned by Vulkan, as an import is. It cannot reach memory outside
    /// the block.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: a size or usage [`ExternalBuffer::new`] refuses;
    ///   `desc.handle_type` is not the block's; `offset` is not a multiple of the buffer's
    ///   alignment, or the buffer does not fit in the block there.
    /// * [`Error::Unsupported`]: the buffer cannot live in the block's memory type, or the
    ///   driver requires a dedicated allocation for it.
    pub fn bind_in(block: &Arc<ImportedBlock>, offset: u64, desc: &BufferDesc) -> Result<Self> {
        let ctx = block.context();
        let buffer = create_importable(ctx, desc, block.handle_type(), "the block")?;
        let what = || format!("a {}-byte buffer", desc.size);
        // SAFETY: the buffer was created from the block's context's device with the block's
        // handle type.
        let bound = unsafe { Bound::in_block(buffer, block, offset, what) }?;
        Ok(Self::with(bound, desc))
    }

    /// A buffer of `desc` bound at `slot` of a pool block.
    ///
    /// # Safety
    /// 1. `buffer` was created from `ctx`'s device by [`create_buffer`] with `desc`'s handle
    ///    type, which is the block's; it does not require a dedicated allocation; its
    ///    requirements allow the block's memory type and `slot` covers their size and
    ///    alignment.
    pub(super) unsafe fn pooled(
        ctx: &Context,
        buffer: Unbound<'_, vk::Buffer>,
        slot: PoolSlot,
        desc: &BufferDesc,
    ) -> Result<Self> {
        // SAFETY: precondition 1.
        let bound = unsafe { Bound::pooled(ctx, buffer, slot, desc.handle_type) }?;
        Ok(Self::with(bound, desc))
    }

    fn with(bound: Bound<vk::Buffer>, desc: &BufferDesc) -> Self {
        Self {
            bound,
            size: desc.size,
            usage: desc.usage,
            owner: Mutex::new(Tracked::new(ImageOwner::Vulkan)),
        }
    }

    /// Exports the memory as a new handle (each call makes a new fd), described so CUDA
    /// imports exactly this allocation: size from `VkMemoryRequirements`, dedicated.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the buffer was imported rather than allocated
    /// exportable, or is bound at a pool slot (export its block,
    /// [`ExternalBuffer::pool_slot`]); [`Error::Vulkan`] when `vkGetMemoryFdKHR` fails.
    pub fn export(&self) -> Result<MemoryImport> {
        self.bound.export()
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
            handle_type: self.bound.handle_type(),
        };
        // SAFETY: the handle is this buffer's own export, described by its own allocation
        // size and dedication, on the same device, with the description that made it.
        unsafe { Self::import(self.context(), &desc, self.export()?) }
    }

    /// The raw buffer, for recording commands. Valid while `self` lives.
    pub fn raw(&self) -> vk::Buffer {
        self.bound.raw()
    }

    /// The raw memory (a pool block's, for a pooled buffer). Valid while `self` lives.
    pub fn memory(&self) -> vk::DeviceMemory {
        self.bound.memory()
    }

    /// For a buffer from an [`ExportPool`](super::ExportPool): its block and the byte
    /// offset it is bound at. `None` for a buffer with its own allocation.
    pub fn pool_slot(&self) -> Option<(&Arc<PoolBlock>, u64)> {
        self.bound.pool_slot()
    }

    /// Size the buffer was created with.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size of its allocation (`VkMemoryRequirements::size`), what CUDA imports; for a
    /// pooled buffer, the size of its slot.
    pub fn allocation_size(&self) -> u64 {
        self.bound.allocation_size()
    }

    /// The export handle type.
    pub fn handle_type(&self) -> MemoryHandleType {
        self.bound.handle_type()
    }

    /// The Vulkan memory type index of its memory (its exporter's, for an import of a
    /// Vulkan export).
    pub fn memory_type(&self) -> u32 {
        self.bound.memory_type()
    }

    /// The context it was made on.
    pub fn context(&self) -> &Context {
        self.bound.context()
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

/// Refuses an empty usage (VUID-VkBufferCreateInfo-usage-requiredbitmask) and bits
/// outside Vulkan 1.0's (TRANSFER_SRC ..= INDIRECT_BUFFER; the others need extensions or
/// features vkcuda does not enable).
fn check_usage_flags(usage: vk::BufferUsageFlags) -> Result<()> {
    let known = vk::BufferUsageFlags::from_raw(0x1ff);
    if usage.is_empty() || !known.contains(usage) {
        return Err(Error::invalid(
            "desc.usage",
            format!("{usage:?}"),
            "at least one core VkBufferUsageFlags bit (TRANSFER_SRC ..= INDIRECT_BUFFER)",
        ));
    }
    Ok(())
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
    let flags = export_flags(ctx, t)?;
    ctx.buffer_support(desc.usage, t)?.require_export(|| {
        format!(
            "export of {t} memory for a buffer with usage {:?}",
            desc.usage
        )
    })?;
    Ok(flags)
}

/// Checks `desc` as [`ExternalBuffer::import`] documents (size, usage, its handle type
/// against `actual`, the type of `of`, and the platform and extension checks of `new`:
/// `DmaBufFd` needs its extension) and creates the buffer, unbound, for that handle type.
fn create_importable<'a>(
    ctx: &'a Context,
    desc: &BufferDesc,
    actual: MemoryHandleType,
    of: &str,
) -> Result<Unbound<'a, vk::Buffer>> {
    check_size(ctx, desc.size)?;
    check_usage_flags(desc.usage)?;
    check_handle_type(desc.handle_type, actual, of)?;
    let flags = export_flags(ctx, desc.handle_type)?;
    create_buffer(ctx.device(), desc, flags)
}

pub(super) fn create_buffer<'a>(
    device: &'a ash::Device,
    desc: &BufferDesc,
    flags: vk::ExternalMemoryHandleTypeFlags,
) -> Result<Unbound<'a, vk::Buffer>> {
    let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(flags);
    let info = vk::BufferCreateInfo::default()
        .size(desc.size)
        .usage(desc.usage)
        .sharing_mode(vk::SharingMode::EXCLUSIVE)
        .push_next(&mut external);
    // SAFETY: `info`'s chain points at live structs.
    let buffer = unsafe { device.create_buffer(&info, None) }
        .map_err(|r| Error::vk_sized("vkCreateBuffer", r, desc.size))?;
    // SAFETY: just created from `device`, unbound, used by nothing else.
    Ok(unsafe { Unbound::new(device, buffer) })
}
