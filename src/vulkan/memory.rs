//! External-capable `VkDeviceMemory`, the core that buffers and images share: [`Bound`]
//! owns a resource and its memory (its own allocation, made for export or imported from a
//! handle, a slot of an [`ExportPool`](super::ExportPool) block, or a range of an
//! [`ImportedBlock`]), exports a dedicated
//! allocation as an owned handle, and destroys the resource, then frees the memory (or
//! returns the slot), on drop. [`ExternalBuffer`](super::ExternalBuffer) and
//! [`ExternalImage`](super::ExternalImage) add their description on top. The handles
//! themselves (fds checked before import, made by export) are `memory_fd.rs`'s.

use std::sync::Arc;

use ash::vk;

use super::capabilities::memory_handle_flags;
use super::imported_block::ImportedBlock;
#[cfg(not(unix))]
use super::memory_fd::lend_fd;
use super::memory_fd::{
    check_memory_fd, export_handle, fd_raw, import_fd, invalid_handle, unsupported_type, ImportFd,
};
use super::pool::{PoolBlock, PoolSlot};
use super::Context;
use crate::error::{Error, Result};
#[cfg(unix)]
use crate::external::lend_fd;
use crate::external::{MemoryHandleType, MemoryImport};

/// A buffer or an image: what a dedicated allocation is made for.
pub(crate) trait Resource: Copy {
    /// What the resource is called in errors: `"buffer"` or `"image"`.
    const NAME: &'static str;
    /// The type whose `new` makes exportable ones, for errors.
    const OWNER: &'static str;

    /// `VkMemoryDedicatedAllocateInfo` naming this resource.
    fn dedicated_info(self) -> vk::MemoryDedicatedAllocateInfo<'static>;

    /// `vkGet{Buffer,Image}MemoryRequirements`.
    ///
    /// # Safety
    /// 1. The resource was created from `device` and is alive.
    unsafe fn requirements(self, device: &ash::Device) -> vk::MemoryRequirements;

    /// `VkMemoryDedicatedRequirements::requiresDedicatedAllocation`, from
    /// `vkGet{Buffer,Image}MemoryRequirements2`.
    ///
    /// # Safety
    /// 1. The resource was created from `device` and is alive.
    unsafe fn requires_dedicated(self, device: &ash::Device) -> bool;

    /// `vkBind{Buffer,Image}Memory` at `offset`.
    ///
    /// # Safety
    /// 1. The resource was created from `device`, is alive and unbound; `memory` holds its
    ///    `VkMemoryRequirements::size` bytes from `offset`, is of an allowed type, and
    ///    `offset` is a multiple of its `alignment`.
    unsafe fn bind(self, device: &ash::Device, memory: vk::DeviceMemory, offset: u64)
        -> Result<()>;

    /// `vkDestroy{Buffer,Image}`.
    ///
    /// # Safety
    /// 1. The resource was created from `device` and no pending work uses it; destroyed once.
    unsafe fn destroy(self, device: &ash::Device);
}

impl Resource for vk::Buffer {
    const NAME: &'static str = "buffer";
    const OWNER: &'static str = "ExternalBuffer";

    fn dedicated_info(self) -> vk::MemoryDedicatedAllocateInfo<'static> {
        vk::MemoryDedicatedAllocateInfo::default().buffer(self)
    }

    unsafe fn requirements(self, device: &ash::Device) -> vk::MemoryRequirements {
        // SAFETY: precondition 1.
        unsafe { device.get_buffer_memory_requirements(self) }
    }

    unsafe fn requires_dedicated(self, device: &ash::Device) -> bool {
        let mut dedicated = vk::MemoryDedicatedRequirements::default();
        let mut out = vk::MemoryRequirements2::default().push_next(&mut dedicated);
        let info = vk::BufferMemoryRequirementsInfo2::default().buffer(self);
        // SAFETY: precondition 1; the output chain points at live structs (core since
        // Vulkan 1.1; vkcuda requires 1.2).
        unsafe { device.get_buffer_memory_requirements2(&info, &mut out) };
        dedicated.requires_dedicated_allocation == vk::TRUE
    }

    unsafe fn bind(
        self,
        device: &ash::Device,
        memory: vk::DeviceMemory,
        offset: u64,
    ) -> Result<()> {
        // SAFETY: precondition 1.
        unsafe { device.bind_buffer_memory(self, memory, offset) }
            .map_err(|r| Error::vk("vkBindBufferMemory", r))
    }

    unsafe fn destroy(self, device: &ash::Device) {
        // SAFETY: precondition 1.
        unsafe { device.destroy_buffer(self, None) }
    }
}

impl Resource for vk::Image {
    const NAME: &'static str = "image";
    const OWNER: &'static str = "ExternalImage";

    fn dedicated_info(self) -> vk::MemoryDedicatedAllocateInfo<'static> {
        vk::MemoryDedicatedAllocateInfo::default().image(self)
    }

    unsafe fn requirements(self, device: &ash::Device) -> vk::MemoryRequirements {
        // SAFETY: precondition 1.
        unsafe { device.get_image_memory_requirements(self) }
    }

    unsafe fn requires_dedicated(self, device: &ash::Device) -> bool {
        let mut dedicated = vk::MemoryDedicatedRequirements::default();
        let mut out = vk::MemoryRequirements2::default().push_next(&mut dedicated);
        let info = vk::ImageMemoryRequirementsInfo2::default().image(self);
        // SAFETY: as for buffers.
        unsafe { device.get_image_memory_requirements2(&info, &mut out) };
        dedicated.requires_dedicated_allocation == vk::TRUE
    }

    unsafe fn bind(
        self,
        device: &ash::Device,
        memory: vk::DeviceMemory,
        offset: u64,
    ) -> Result<()> {
        // SAFETY: precondition 1.
        unsafe { device.bind_image_memory(self, memory, offset) }
            .map_err(|r| Error::vk("vkBindImageMemory", r))
    }

    unsafe fn destroy(self, device: &ash::Device) {
        // SAFETY: precondition 1.
        unsafe { device.destroy_image(self, None) }
    }
}

/// A resource just created and not yet bound: destroyed on drop unless [`Bound`] takes it.
pub(crate) struct Unbound<'a, R: Resource> {
    device: &'a ash::Device,
    raw: R,
}

impl<'a, R: Resource> Unbound<'a, R> {
    /// Takes ownership of `raw`.
    ///
    /// # Safety
    /// 1. `raw` was just created from `device`, is unbound and used by nothing else.
    pub(crate) unsafe fn new(device: &'a ash::Device, raw: R) -> Self {
        Self { device, raw }
    }

    /// The resource, still unbound.
    pub(crate) fn raw(&self) -> R {
        self.raw
    }

    /// The device it was created from.
    pub(crate) fn device(&self) -> &'a ash::Device {
        self.device
    }

    /// Its memory requirements.
    pub(crate) fn requirements(&self) -> vk::MemoryRequirements {
        // SAFETY: created from `device` and alive (`new`'s precondition).
        unsafe { self.raw.requirements(self.device) }
    }

    /// Refuses a resource the driver requires a dedicated allocation for: it cannot be
    /// bound at an offset of memory that others share, `place` (VUID-vkBindBufferMemory-
    /// buffer-01444, VUID-vkBindImageMemory-image-01445). `what` names it.
    pub(crate) fn check_shareable(&self, place: &str, what: impl FnOnce() -> String) -> Result<()> {
        // SAFETY: created from `device` and alive (`new`'s precondition).
        if !unsafe { self.raw.requires_dedicated(self.device) } {
            return Ok(());
        }
        Err(Error::Unsupported {
            what: format!("{} in {place}", what()),
            reason: format!(
                "the driver requires a dedicated allocation for it (requiresDedicatedAllocation): \
                 create it with {}::new",
                R::OWNER
            ),
        })
    }

    fn release(self) -> R {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }
}

impl<R: Resource> Drop for Unbound<'_, R> {
    fn drop(&mut self) {
        // SAFETY: created from `device`, never bound or used (`new`'s precondition).
        unsafe { self.raw.destroy(self.device) };
    }
}

/// A buffer or image bound to its own dedicated `VkDeviceMemory`, allocated exportable
/// ([`Bound::allocate`]) or imported from a handle ([`Bound::import`]), or bound at a slot
/// of a pool block ([`Bound::pooled`]) or at an offset of an imported block
/// ([`Bound::in_block`]). Drop destroys the resource, then frees the memory
/// (or returns the slot); GPU work that uses it must have finished by then.
pub(crate) struct Bound<R: Resource> {
    ctx: Context,
    raw: R,
    /// Released in `Drop`, after the resource is destroyed.
    backing: Backing,
    allocation_size: u64,
    /// The memory type it lives in (a pool block's, for a pooled resource).
    memory_type: u32,
    handle_type: MemoryHandleType,
    exportable: bool,
}

/// How much memory a [`Bound`] resource's allocation holds, and of which type.
struct Placement {
    size: u64,
    memory_type: u32,
}

/// The memory a [`Bound`] resource is bound to.
enum Backing {
    /// Its own allocation, freed with the resource.
    Dedicated(vk::DeviceMemory),
    /// A slot of an [`ExportPool`](super::ExportPool) block, returned when dropped.
    Pooled(PoolSlot),
    /// A range of an [`ImportedBlock`], held alive.
    InBlock(Arc<ImportedBlock>),
}

impl<R: Resource> Drop for Bound<R> {
    fn drop(&mut self) {
        let device = self.ctx.device();
        // SAFETY: the resource and memory were made from this device and are destroyed once;
        // every CUDA import of the memory holds the owner of this value (or its pool block)
        // alive until then.
        unsafe { self.raw.destroy(device) };
        if let Backing::Dedicated(memory) = self.backing {
            // SAFETY: as above; the resource bound to the memory is gone.
            unsafe { device.free_memory(memory, None) };
        }
        // A pooled slot returns its range (an imported block is released) when `backing`
        // drops, after the resource is gone.
    }
}

impl<R: Resource> Bound<R> {
    /// Allocates memory exportable as `handle_type` ([`export_flags`]), dedicated to
    /// `resource`, and binds it.
    ///
    /// # Safety
    /// 1. `resource` was created from `ctx.device()` with `VkExternalMemory{Buffer,Image}
    ///    CreateInfo` naming `flags`.
    pub(crate) unsafe fn allocate(
        ctx: &Context,
        resource: Unbound<'_, R>,
        flags: vk::ExternalMemoryHandleTypeFlags,
        handle_type: MemoryHandleType,
    ) -> Result<Self> {
        let requirements = resource.requirements();
        let memory_type = choose_memory_type(ctx, requirements.memory_type_bits)?;
        // SAFETY: precondition 1; the resource is unbound and `requirements` are its own.
        let memory =
            unsafe { allocate_exportable(ctx, &requirements, memory_type, flags, resource.raw) }?;
        let placement = Placement {
            size: requirements.size,
            memory_type,
        };
        Self::bind(ctx, resource, memory, placement, handle_type, true)
    }

    /// Imports `import` (memory of `handle_type`) and binds it; `what` names the resource
    /// in errors. On success Vulkan owns the fd; on failure it has been closed.
    ///
    /// # Safety
    /// 1. `resource` was created from `ctx.device()` with `VkExternalMemory{Buffer,Image}
    ///    CreateInfo` naming `handle_type`'s flag.
    /// 2. The payload behind the handle fits `resource` (the `import` contracts of
    ///    [`ExternalBuffer`](super::ExternalBuffer) and [`ExternalImage`](super::ExternalImage)).
    pub(crate) unsafe fn import(
        ctx: &Context,
        resource: Unbound<'_, R>,
        import: MemoryImport,
        handle_type: MemoryHandleType,
        what: impl Fn() -> String,
    ) -> Result<Self> {
        let fd = import_fd(import.handle)?;
        let requirements = resource.requirements();
        check_import_size(import.size, import.dedicated, requirements.size, &what)?;
        let to = import.dedicated.then_some(resource.raw);
        let wanted = MemoryTypeWanted {
            exporters: import.memory_type,
            allowed: requirements.memory_type_bits,
            resource: &what,
        };
        // SAFETY: preconditions 1 and 2; the resource is unbound.
        let (memory, memory_type) =
            unsafe { import_memory(ctx, handle_type, fd, wanted, import.size, to) }?;
        let placement = Placement {
            size: import.size,
            memory_type,
        };
        Self::bind(ctx, resource, memory, placement, handle_type, false)
    }

    /// Binds the resource at `offset` of an imported block, after checking that the
    /// resource may live in the block's memory type and fits there at its alignment.
    ///
    /// # Safety
    /// 1. `resource` was created from `block`'s context's device with
    ///    `VkExternalMemory{Buffer,Image}CreateInfo` naming the block's handle type.
    pub(crate) unsafe fn in_block(
        resource: Unbound<'_, R>,
        block: &Arc<ImportedBlock>,
        offset: u64,
        what: impl Fn() -> String,
    ) -> Result<Self> {
        resource.check_shareable("an imported block", &what)?;
        let r = resource.requirements();
        let t = block.memory_type();
        if r.memory_type_bits & (1 << t) == 0 {
            return Err(Error::Unsupported {
                what: format!("{} in an imported block", what()),
                reason: format!(
                    "its memoryTypeBits {:#b} exclude the block's memory type {t}",
                    r.memory_type_bits
                ),
            });
        }
        let fits = offset
            .checked_add(r.size)
            .is_some_and(|end| end <= block.size());
        if !offset.is_multiple_of(r.alignment) || !fits {
            return Err(Error::invalid(
                "offset",
                format!(
                    "{offset}, for {} of {} bytes aligned to {} in a {}-byte block",
                    what(),
                    r.size,
                    r.alignment,
                    block.size()
                ),
                "a multiple of the resource's alignment whose range ends within the block \
                 (the exporter's offset)",
            ));
        }
        let ctx = block.context();
        // SAFETY: precondition 1; the range lies in the block's live memory at the
        // resource's alignment, in a type it allows (checked above); the resource is
        // unbound. On error `resource` destroys it.
        unsafe { resource.raw.bind(ctx.device(), block.memory(), offset) }?;
        Ok(Self {
            ctx: ctx.clone(),
            raw: resource.release(),
            allocation_size: r.size,
            memory_type: t,
            backing: Backing::InBlock(block.clone()),
            handle_type: block.handle_type(),
            exportable: false,
        })
    }

    /// Binds the resource at `slot` of a pool block whose memory is exportable as
    /// `handle_type`. The result cannot be exported on its own (its block can).
    ///
    /// # Safety
    /// 1. `resource` was created from `ctx.device()` with `VkExternalMemory{Buffer,Image}
    ///    CreateInfo` naming `handle_type`'s flag; it does not require a dedicated
    ///    allocation ([`Unbound::check_shareable`]); its memory requirements allow the
    ///    block's memory type, and `slot` is at least their `size` long at an offset that is
    ///    a multiple of their `alignment`.
    pub(crate) unsafe fn pooled(
        ctx: &Context,
        resource: Unbound<'_, R>,
        slot: PoolSlot,
        handle_type: MemoryHandleType,
    ) -> Result<Self> {
        // SAFETY: precondition 1; the slot lies in the block's live memory; the resource is
        // unbound. On error `resource` destroys it and `slot` returns its range.
        unsafe {
            resource
                .raw
                .bind(ctx.device(), slot.block().memory(), slot.offset())
        }?;
        Ok(Self {
            ctx: ctx.clone(),
            raw: resource.release(),
            allocation_size: slot.len(),
            memory_type: slot.block().memory_type(),
            backing: Backing::Pooled(slot),
            handle_type,
            exportable: false,
        })
    }

    /// Binds `memory` to the resource and assembles the result; frees both on error.
    fn bind(
        ctx: &Context,
        resource: Unbound<'_, R>,
        memory: vk::DeviceMemory,
        placement: Placement,
        handle_type: MemoryHandleType,
        exportable: bool,
    ) -> Result<Self> {
        // SAFETY: memory was allocated for this resource (dedicated, or an import at least
        // `requirements.size` long); bound once.
        if let Err(e) = unsafe { resource.raw.bind(ctx.device(), memory, 0) } {
            // SAFETY: the memory is unbound and unused.
            unsafe { ctx.device().free_memory(memory, None) };
            return Err(e);
        }
        Ok(Self {
            ctx: ctx.clone(),
            raw: resource.release(),
            backing: Backing::Dedicated(memory),
            allocation_size: placement.size,
            memory_type: placement.memory_type,
            handle_type,
            exportable,
        })
    }

    /// Exports the memory as a new handle (each call makes a new fd), described so an
    /// importer takes exactly this allocation: size from `VkMemoryRequirements`, dedicated.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the memory was imported rather than allocated exportable,
    /// or is a slot of a pool block; [`Error::Vulkan`] when `vkGetMemoryFdKHR` fails.
    pub(crate) fn export(&self) -> Result<MemoryImport> {
        match self.backing {
            Backing::Pooled(_) => {
                return Err(Error::Unsupported {
                    what: format!("export of a pooled {} on its own", R::NAME),
                    reason: format!(
                        "it is a range of a pool block: export the block ({}::pool_slot) and \
                         carry the offset",
                        R::OWNER
                    ),
                });
            }
            Backing::InBlock(_) => {
                return Err(Error::Unsupported {
                    what: format!("export of a {} bound in an imported block", R::NAME),
                    reason: "the block is another device's or process's export".into(),
                });
            }
            Backing::Dedicated(_) => {}
        }
        if !self.exportable {
            return Err(Error::Unsupported {
                what: format!("export of an imported {}", R::NAME),
                reason: format!(
                    "only {}s created by {}::new are exportable",
                    R::NAME,
                    R::OWNER
                ),
            });
        }
        Ok(MemoryImport {
            handle: export_handle(&self.ctx, self.memory(), self.handle_type)?,
            size: self.allocation_size,
            dedicated: true,
            memory_type: Some(self.memory_type),
        })
    }

    /// The raw resource.
    pub(crate) fn raw(&self) -> R {
        self.raw
    }

    /// The memory type index of its memory.
    pub(crate) fn memory_type(&self) -> u32 {
        self.memory_type
    }

    /// The raw memory (a pool block's, for a pooled resource).
    pub(crate) fn memory(&self) -> vk::DeviceMemory {
        match &self.backing {
            Backing::Dedicated(memory) => *memory,
            Backing::Pooled(slot) => slot.block().memory(),
            Backing::InBlock(block) => block.memory(),
        }
    }

    /// For a pooled resource: its block and the byte offset it is bound at.
    pub(crate) fn pool_slot(&self) -> Option<(&std::sync::Arc<PoolBlock>, u64)> {
        match &self.backing {
            Backing::Pooled(slot) => Some((slot.block(), slot.offset())),
            Backing::Dedicated(_) | Backing::InBlock(_) => None,
        }
    }

    /// `VkMemoryRequirements::size` (allocated), the imported size, or the pool slot's size.
    pub(crate) fn allocation_size(&self) -> u64 {
        self.allocation_size
    }

    /// The export (or import) handle type.
    pub(crate) fn handle_type(&self) -> MemoryHandleType {
        self.handle_type
    }

    /// Whether [`Bound::export`] works.
    pub(crate) fn is_exportable(&self) -> bool {
        self.exportable
    }

    /// The context it was made on.
    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }
}

/// The Vulkan flag of an exportable `t`, after the platform and extension checks.
pub(crate) fn export_flags(
    ctx: &Context,
    t: MemoryHandleType,
) -> Result<vk::ExternalMemoryHandleTypeFlags> {
    if !t.is_fd() || !cfg!(unix) {
        return Err(unsupported_type(t));
    }
    if t == MemoryHandleType::DmaBufFd && !ctx.can_export_dma_buf() {
        return Err(Error::missing_extension(
            "VK_EXT_external_memory_dma_buf",
            "DmaBufFd memory in Vulkan",
        ));
    }
    memory_handle_flags(t).ok_or_else(|| unsupported_type(t))
}

/// Checks that the description's `handle_type` is the type of the handle being imported.
pub(crate) fn check_import_type(described: MemoryHandleType, import: &MemoryImport) -> Result<()> {
    check_handle_type(
        described,
        import.handle.handle_type(),
        "the handle being imported",
    )
}

/// Checks that the description's `handle_type` is `actual`, the type of `of` (the handle,
/// pool or block the resource's memory comes from).
pub(crate) fn check_handle_type(
    described: MemoryHandleType,
    actual: MemoryHandleType,
    of: &str,
) -> Result<()> {
    if described == actual {
        return Ok(());
    }
    Err(Error::invalid(
        "desc.handle_type",
        format!("{described} but {of} is {actual}"),
        format!("the type of {of}"),
    ))
}

/// Allocates memory of `memory_type` for `to`, exportable as `flags`, dedicated to `to`.
///
/// # Safety
/// 1. `to` was created from `ctx.device()` with `VkExternalMemory{Buffer,Image}CreateInfo`
///    naming `flags`, is alive and has no memory bound.
/// 2. `requirements` are `to`'s memory requirements, which allow `memory_type`.
unsafe fn allocate_exportable(
    ctx: &Context,
    requirements: &vk::MemoryRequirements,
    memory_type: u32,
    flags: vk::ExternalMemoryHandleTypeFlags,
    to: impl Resource,
) -> Result<vk::DeviceMemory> {
    let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(flags);
    let mut dedicated = to.dedicated_info();
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(requirements.size)
        .memory_type_index(memory_type)
        .push_next(&mut export)
        .push_next(&mut dedicated);
    // SAFETY: `info`'s chain points at live structs; the resource it dedicates to is alive
    // and unbound (precondition 1).
    unsafe { ctx.device().allocate_memory(&info, None) }
        .map_err(|r| Error::vk_sized("vkAllocateMemory", r, requirements.size))
}

/// Allocates `size` bytes of `memory_type`, exportable as `flags`, for no resource in
/// particular (a pool block that buffers are bound into at offsets).
pub(crate) fn allocate_exportable_block(
    ctx: &Context,
    size: u64,
    memory_type: u32,
    flags: vk::ExternalMemoryHandleTypeFlags,
) -> Result<vk::DeviceMemory> {
    let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(flags);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(size)
        .memory_type_index(memory_type)
        .push_next(&mut export);
    // SAFETY: `info`'s chain points at a live struct; no resource is named.
    unsafe { ctx.device().allocate_memory(&info, None) }
        .map_err(|r| Error::vk_sized("vkAllocateMemory", r, size))
}

/// What an import may allocate from: the exporter's type where the memory says (a Vulkan
/// payload), else a type of `allowed`, the resource's `memoryTypeBits`.
pub(super) struct MemoryTypeWanted<'a> {
    pub(super) exporters: Option<u32>,
    pub(super) allowed: u32,
    /// Names the resource in the refusal.
    pub(super) resource: &'a dyn Fn() -> String,
}

/// The memory type an import allocates from: the exporter's, which the resource (and the
/// handle, for types that say) must allow, else [`choose_memory_type`] among them.
fn import_memory_type(ctx: &Context, wanted: &MemoryTypeWanted<'_>, allowed: u32) -> Result<u32> {
    let Some(t) = wanted.exporters else {
        return choose_memory_type(ctx, allowed);
    };
    let count = ctx.memory_properties().memory_type_count;
    if t < count && allowed & (1 << t) != 0 {
        return Ok(t);
    }
    Err(Error::invalid(
        "import.memory_type",
        format!(
            "memory type {t}, which {} cannot use (allowed types {allowed:#b} of {count})",
            (wanted.resource)()
        ),
        "the exporter's memory type, one the importing resource allows \
         (VUID-VkMemoryAllocateInfo-allocationSize-01742)",
    ))
}

/// Allocates `size` bytes from the imported `fd` of `handle_type`, in the type `wanted`
/// says, dedicated to `dedicated` if given. Returns the memory and its type.
///
/// On success Vulkan owns the fd; on failure it has been closed (see [`lend_fd`]).
///
/// # Safety
/// 1. `dedicated`, if given, was created from `ctx.device()` with external-memory create info
///    naming `handle_type`, is alive and has no memory bound.
pub(super) unsafe fn import_memory(
    ctx: &Context,
    handle_type: MemoryHandleType,
    fd: ImportFd,
    wanted: MemoryTypeWanted<'_>,
    size: u64,
    dedicated: Option<impl Resource>,
) -> Result<(vk::DeviceMemory, u32)> {
    let flags = memory_handle_flags(handle_type).ok_or_else(|| unsupported_type(handle_type))?;
    let fd = check_memory_fd(fd, handle_type)?;
    let allowed = if handle_type == MemoryHandleType::OpaqueFd {
        // An opaque fd's types are not queryable: the exporter's (where it says), or the
        // same choice the exporting constructor makes for the same description.
        wanted.allowed
    } else {
        let mut props = vk::MemoryFdPropertiesKHR::default();
        // SAFETY: `fd` is a live fd; the handle type is not OPAQUE_FD.
        unsafe {
            ctx.memory_fd()
                .get_memory_fd_properties(flags, fd_raw(&fd), &mut props)
        }
        .map_err(|r| invalid_handle("vkGetMemoryFdPropertiesKHR", handle_type, r))?;
        wanted.allowed & props.memory_type_bits
    };
    let memory_type = import_memory_type(ctx, &wanted, allowed)?;
    let memory = lend_fd(fd, |raw| {
        let mut fd_info = vk::ImportMemoryFdInfoKHR::default()
            .handle_type(flags)
            .fd(raw);
        let mut dedicated_info = dedicated.map(Resource::dedicated_info);
        let mut info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(memory_type)
            .push_next(&mut fd_info);
        if let Some(d) = dedicated_info.as_mut() {
            info = info.push_next(d);
        }
        // SAFETY: the chain points at live structs; `raw` is open for the call and Vulkan
        // owns it on success; the dedicated resource is alive and unbound (precondition 1).
        unsafe { ctx.device().allocate_memory(&info, None) }
            .map_err(|r| invalid_handle("vkAllocateMemory", handle_type, r))
    })?;
    Ok((memory, memory_type))
}

/// The first `DEVICE_LOCAL` type in `allowed`, else the first allowed type.
pub(crate) fn choose_memory_type(ctx: &Context, allowed: u32) -> Result<u32> {
    let props = ctx.memory_properties();
    let types = &props.memory_types[..props.memory_type_count as usize];
    let pick = |want: vk::MemoryPropertyFlags| {
        (0..types.len() as u32)
            .find(|&i| allowed & (1 << i) != 0 && types[i as usize].property_flags.contains(want))
    };
    pick(vk::MemoryPropertyFlags::DEVICE_LOCAL)
        .or_else(|| pick(vk::MemoryPropertyFlags::empty()))
        .ok_or_else(|| Error::Unsupported {
            what: "a memory type for external memory".into(),
            reason: format!("no memory type in the allowed mask {allowed:#b}"),
        })
}

/// Checks an import's `size` against the resource's `VkMemoryRequirements::size`: a
/// dedicated allocation must be exactly that size (VUID-VkMemoryDedicatedAllocateInfo-
/// buffer-01435 / image-01433), a shared one at least that size. `resource` names what
/// the memory is for in the error.
fn check_import_size(
    size: u64,
    dedicated: bool,
    required: u64,
    resource: impl FnOnce() -> String,
) -> Result<()> {
    let fits = if dedicated {
        size == required
    } else {
        size >= required
    };
    if fits {
        return Ok(());
    }
    Err(Error::invalid(
        "import.size",
        format!(
            "{size} bytes, but {} needs {required} (VkMemoryRequirements::size)",
            resource()
        ),
        if dedicated {
            format!("exactly {required} for a dedicated allocation")
        } else {
            format!("at least {required}")
        },
    ))
}
