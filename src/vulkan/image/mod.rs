//! Images bound to their own dedicated, external-capable `VkDeviceMemory`, to a slot of an
//! exportable pool block, or at an offset of an imported block.
//!
//! * `desc.rs`: what an image is ([`ImageKind`], [`ImageDesc`]) and its checks;
//! * `state.rs`: who owns it and in which layout ([`ImageState`]), the barrier plan and its
//!   recording;
//! * `linear.rs`: LINEAR images as rows at a pitch ([`LinearLayout`]), and their import
//!   from memory made for no image in particular ([`ExternalImage::import_linear`]);
//! * here: [`ExternalImage`] itself, its constructors and export.
//!
//! The contract (checks, ownership, memory ordering) is documented on [`ExternalImage`].

mod desc;
mod linear;
mod state;

use std::sync::{Arc, Mutex};

use ash::vk;

pub use desc::{ImageDesc, ImageKind};
pub(crate) use linear::linear_row_bytes;
pub use linear::{LinearLayout, LinearRequirements};
/// For the presenter, which narrows a planned barrier to its transfer.
#[cfg(feature = "window")]
pub(crate) use state::Barrier;
pub(crate) use state::Step;
pub use state::{ImageOwner, ImageState};

use super::memory::{check_handle_type, check_import_type, export_flags, Bound, Unbound};
use super::pool::{PoolBlock, PoolSlot};
use super::queue_use::Tracked;
use super::Context;
use super::{ExternalSupport, ImportedBlock};
use crate::error::{Error, Result};
use crate::external::{MemoryHandleType, MemoryImport};
use desc::{check_desc, check_format_limits};
use linear::check_linear_in_imported_memory;

/// A `VkImage` bound to a dedicated `VkDeviceMemory` that was allocated exportable
/// ([`ExternalImage::new`]) or imported from an external handle ([`ExternalImage::import`]),
/// or bound at a slot of an exportable pool block
/// ([`ExportPool::allocate_image`](super::ExportPool::allocate_image)) or at an offset of an
/// imported one ([`ExternalImage::bind_in`]), with its queue-family owner and layout tracked
/// ([`ImageState`]). Destroys the image and frees the
/// memory (or returns the slot) on drop; GPU work that uses it (on either API) must have
/// finished by then.
///
/// # Describing an image
/// [`ImageDesc`] names everything the image is created with, and everything an importer
/// (CUDA's `cuExternalMemoryGetMappedMipmappedArray`, another Vulkan device) must be told to
/// lay the memory out the same way: [`ImageKind`], extent, array layers, mip levels, format,
/// usage, tiling. [`ExternalImage::new`] checks it in two steps before creating anything:
/// 1. against the rules and the device limits (`maxImageDimension*`,
///    `maxImageArrayLayers`, the full mip chain), as [`Error::InvalidArgument`] naming the
///    field (`desc.mip_levels`, ...) and the limit;
/// 2. against the driver, with `vkGetPhysicalDeviceImageFormatProperties2` and
///    `VkPhysicalDeviceExternalImageFormatInfo`: a refused combination is an
///    [`Error::Unsupported`] naming format, usage and tiling and saying which format feature
///    is missing; a handle type that cannot be exported is an [`Error::Unsupported`]; an
///    extent, level count or layer count above what this format allows is an
///    [`Error::InvalidArgument`] naming the field and the format's limit.
///
/// # Ownership and layout
/// An image shared with another API belongs either to the context's queue family
/// ([`ImageOwner::Vulkan`]) or to `VK_QUEUE_FAMILY_EXTERNAL` ([`ImageOwner::External`]), and
/// its contents are in one layout. [`ExternalImage`] tracks both ([`ImageState`]) and
/// records the barriers that change them, so nobody writes them by hand:
///
/// | helper | barrier over all levels and layers | state after |
/// |---|---|---|
/// | [`record_initialize`](ExternalImage::record_initialize) | `UNDEFINED` → `GENERAL` (contents discarded) | Vulkan, `GENERAL` |
/// | [`record_transition`](ExternalImage::record_transition) | current → `layout` | Vulkan, `layout` |
/// | [`record_release`](ExternalImage::record_release) | current → `GENERAL`, queue family → `EXTERNAL` | External, `GENERAL` |
/// | [`record_acquire`](ExternalImage::record_acquire) | `EXTERNAL` → queue family, `GENERAL` → `layout` | Vulkan, `layout` |
///
/// [`OneShot::release_image`](crate::util::OneShot::release_image) and [`OneShot::acquire_image`](crate::util::OneShot::acquire_image) do the same as one-shot
/// submissions that wait for completion (setup and tests, not per-frame work).
///
/// A new exportable image starts as (Vulkan, `UNDEFINED`). An **imported** image starts as
/// (External, `GENERAL`): its contents were written by the exporter, which released them,
/// so the first Vulkan use is an acquire, which keeps them.
///
/// The state is tracked **in recording order**: after a `record_*` call it is the state
/// the image will be in once that command buffer has executed. Command buffers that record
/// these barriers must therefore be submitted (to a queue of
/// [`Context::queue_family_index`](crate::vulkan::Context::queue_family_index)) in the order they were recorded, and each exactly once;
/// this is what the `# Safety` sections of the `record_*` methods ask. A caller that moves
/// the image with its own barriers says so with [`ExternalImage::assume_state`].
///
/// # Queues
/// The context may have several queues of its family ([`Context::queue_at`]). Submission
/// order is execution order only on one queue, so vkcuda also tracks **which queue** last
/// used the image, and its safe paths ([`crate::util::Commands`], [`crate::util::OneShot`]
/// on queue 0, [`crate::interop::Frame::submit_commands`], the `Presenter`) accept a use
/// on another queue only when it is ordered after that one:
/// * the new submission waits for a timeline value the last one signals
///   ([`Commands::submit`](crate::util::Commands::submit)'s `waits`), or
///   [`crate::interop::FrameSync`] knows the order (a frame's consuming batch runs after
///   its producing one through CUDA; a slot's next frame after `begin` waited for it);
/// * or the host has seen the last use complete: a value it signals was reached,
///   [`Commands::wait`](crate::util::Commands::wait) returned, or it was a one-shot.
///
/// Otherwise the submission is refused with [`Error::InvalidArgument`] naming both queues,
/// before anything is submitted. The `record_*` methods leave this to their `# Safety`.
///
/// # Memory ordering with the other API
/// * **Release** (Vulkan → CUDA): the barrier's first scope is every earlier command on the
///   queue (`ALL_COMMANDS`, `MEMORY_WRITE`), so their writes are made available before the
///   release. The submission that contains it must signal a semaphore that CUDA waits on
///   (or the host must wait for its fence) before CUDA touches the memory. From then until
///   the acquire, Vulkan must not use the image: vkcuda's own helpers refuse to.
/// * **Acquire** (CUDA → Vulkan): the submission that contains it must wait for a semaphore
///   CUDA signalled after its last access (any wait stage: the barrier's source stage is
///   `ALL_COMMANDS`, so it chains with the wait), or the host must have synchronised CUDA's
///   stream before submitting.
///   The barrier's second scope is `ALL_COMMANDS` with `MEMORY_READ | MEMORY_WRITE`, so any
///   later command sees CUDA's writes.
/// * [`record_transition`](ExternalImage::record_transition) and
///   [`record_initialize`](ExternalImage::record_initialize) are full barriers
///   (`ALL_COMMANDS` both sides): simple rather than fine-grained.
pub struct ExternalImage {
    bound: Bound<vk::Image>,
    desc: ImageDesc,
    state: Mutex<Tracked<ImageState>>,
}

impl std::fmt::Debug for ExternalImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalImage")
            .field("desc", &self.desc)
            .field("allocation_size", &self.allocation_size())
            .field("exportable", &self.is_exportable())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

fn create_image<'a>(
    device: &'a ash::Device,
    desc: &ImageDesc,
    flags: vk::ExternalMemoryHandleTypeFlags,
) -> Result<Unbound<'a, vk::Image>> {
    let mut external = vk::ExternalMemoryImageCreateInfo::default().handle_types(flags);
    let info = desc.create_info().push_next(&mut external);
    // SAFETY: `info`'s chain points at live structs; `desc` was checked against the device
    // limits and the driver's format properties.
    let image =
        unsafe { device.create_image(&info, None) }.map_err(|r| Error::vk("vkCreateImage", r))?;
    // SAFETY: just created from `device`, unbound, used by nothing else.
    Ok(unsafe { Unbound::new(device, image) })
}

/// Where a new image starts: Vulkan's, contents undefined.
const NEW: ImageState = ImageState {
    owner: ImageOwner::Vulkan,
    layout: vk::ImageLayout::UNDEFINED,
};

/// Checks `desc` as [`ExternalImage::new`] documents (limits, then the driver, which must
/// allow exporting) and creates the image, unbound, exportable as `desc.handle_type`.
/// Returns it with its external-memory flags and what the driver said of the export.
pub(in crate::vulkan) fn create_exportable<'a>(
    ctx: &'a Context,
    desc: &ImageDesc,
) -> Result<(
    Unbound<'a, vk::Image>,
    vk::ExternalMemoryHandleTypeFlags,
    ExternalSupport,
)> {
    check_desc(ctx, desc)?;
    let t = desc.handle_type;
    let flags = export_flags(ctx, t)?;
    let support = ctx.image_support(desc)?;
    let external = support.external.require_export(|| {
        format!(
            "export of {t} memory for a {:?} {:?} image with usage {:?}, tiling {:?}",
            desc.format, desc.kind, desc.usage, desc.tiling
        )
    })?;
    check_format_limits(desc, &support)?;
    Ok((create_image(ctx.device(), desc, flags)?, flags, external))
}

/// Checks `desc` as [`ExternalImage::import`] documents (limits, then the driver, which
/// must allow importing) and creates the image, unbound, importable as `desc.handle_type`.
/// Returns it with what the driver said of the import.
fn create_importable<'a>(
    ctx: &'a Context,
    desc: &ImageDesc,
) -> Result<(Unbound<'a, vk::Image>, ExternalSupport)> {
    check_desc(ctx, desc)?;
    let t = desc.handle_type;
    let flags = export_flags(ctx, t)?;
    let support = ctx.image_support(desc)?;
    if !support.external.importable {
        return Err(Error::Unsupported {
            what: format!(
                "import of {t} memory for a {:?} {:?} image with usage {:?}, tiling {:?}",
                desc.format, desc.kind, desc.usage, desc.tiling
            ),
            reason: "the driver reports the handle type as not importable for this use".into(),
        });
    }
    check_format_limits(desc, &support)?;
    Ok((create_image(ctx.device(), desc, flags)?, support.external))
}

impl ExternalImage {
    /// Creates an image with its own exportable dedicated allocation, after checking the
    /// description against the device limits and the driver (see [`ExternalImage`]).
    /// The image starts owned by Vulkan in `UNDEFINED` layout.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] naming the field: zero or too large extent, non-square
    ///   cube, wrong layer count for the kind, 0 or too many mip levels, empty usage,
    ///   `TRANSIENT_ATTACHMENT` beside non-attachment bits (or alone), tiling other than
    ///   `OPTIMAL`/`LINEAR`, or a value above the format's limits.
    /// * [`Error::Unsupported`]: the format cannot be used with this usage and tiling, or
    ///   the handle type cannot be exported here (Win32 types on non-Windows platforms,
    ///   refused by the driver).
    /// * [`Error::MissingExtension`]: `DmaBufFd` without `VK_EXT_external_memory_dma_buf`,
    ///   or a format of `VK_KHR_maintenance5` (which vkcuda does not enable).
    /// * [`Error::OutOfMemory`].
    pub fn new(ctx: &Context, desc: &ImageDesc) -> Result<Self> {
        let (image, flags, _) = create_exportable(ctx, desc)?;
        // SAFETY: the image was created from `ctx`'s device with `flags`.
        let bound = unsafe { Bound::allocate(ctx, image, flags, desc.handle_type) }?;
        Ok(Self::with(bound, desc, NEW))
    }

    /// An image of `desc` bound at `slot` of a pool block.
    ///
    /// # Safety
    /// 1. `image` was made by [`create_exportable`] for `desc` on `ctx`, whose handle type
    ///    is the block's; it does not require a dedicated allocation; its requirements
    ///    allow the block's memory type and `slot` covers their size and alignment, in a
    ///    block that holds no linear resource if the image is OPTIMAL
    ///    (`bufferImageGranularity`).
    pub(in crate::vulkan) unsafe fn pooled(
        ctx: &Context,
        image: Unbound<'_, vk::Image>,
        slot: PoolSlot,
        desc: &ImageDesc,
    ) -> Result<Self> {
        // SAFETY: precondition 1.
        let bound = unsafe { Bound::pooled(ctx, image, slot, desc.handle_type) }?;
        Ok(Self::with(bound, desc, NEW))
    }

    /// An image of `desc` bound at `offset` of an imported block: the exporter's image of
    /// the same description at the same offset (a pool image's
    /// [`pool_slot`](ExternalImage::pool_slot) offset), seen from this context. Like an
    /// import it starts as (External, `GENERAL`): the exporter owns the contents until
    /// acquired. A description other than the exporter's reads other bytes, as any alias
    /// does; it cannot reach memory outside the block.
    ///
    /// # Errors
    /// * Every error of [`ExternalImage::new`] for `desc` (the driver must allow importing).
    /// * [`Error::InvalidArgument`]: `desc.handle_type` is not the block's; `offset` is not
    ///   a multiple of the image's alignment, or the image does not fit in the block there.
    /// * [`Error::Unsupported`]: the image cannot live in the block's memory type, or the
    ///   driver imports it only as a dedicated allocation (or requires one for it); a
    ///   LINEAR image on NVIDIA's proprietary driver (see [`ExternalImage::import_linear`]).
    pub fn bind_in(block: &Arc<ImportedBlock>, offset: u64, desc: &ImageDesc) -> Result<Self> {
        let ctx = block.context();
        check_handle_type(desc.handle_type, block.handle_type(), "the block")?;
        let (image, external) = create_importable(ctx, desc)?;
        if external.dedicated_only {
            return Err(Error::Unsupported {
                what: format!(
                    "a {:?} {:?} image with usage {:?}, tiling {:?} in an imported block",
                    desc.format, desc.kind, desc.usage, desc.tiling
                ),
                reason: "the driver imports this image only as a dedicated allocation".into(),
            });
        }
        check_linear_in_imported_memory(ctx, desc)?;
        let what = || format!("a {:?} {:?} image", desc.format, desc.kind);
        // SAFETY: the image was created from the block's context's device with the block's
        // handle type.
        let bound = unsafe { Bound::in_block(image, block, offset, what) }?;
        let state = ImageState {
            owner: ImageOwner::External,
            layout: vk::ImageLayout::GENERAL,
        };
        Ok(Self::with(bound, desc, state))
    }

    /// For an image from an [`ExportPool`](super::ExportPool): its block and the byte offset
    /// it is bound at. `None` for an image with its own allocation.
    pub fn pool_slot(&self) -> Option<(&Arc<PoolBlock>, u64)> {
        self.bound.pool_slot()
    }

    /// Creates an image bound to memory imported from `import` (another device's or
    /// process's export, or [`ExternalImage::export`] of this device). `desc` must describe
    /// the image exactly as the exporter created it (kind, extent, layers, levels, format,
    /// usage, tiling), so the driver lays the memory out the same way.
    ///
    /// The image starts as (External, `GENERAL`): the exporter owns the contents until
    /// [`record_acquire`](Self::record_acquire) or [`OneShot::acquire_image`](crate::util::OneShot::acquire_image), which keep
    /// them.
    ///
    /// # Errors
    /// * Every error of [`ExternalImage::new`] for `desc` (the driver must allow importing).
    /// * [`Error::InvalidArgument`]: `desc.handle_type` differs from the handle's type,
    ///   `import.size` is not the image's `VkMemoryRequirements::size` (dedicated) or smaller
    ///   than it (not dedicated), or `import.dedicated` is false where the driver requires
    ///   dedicated memory.
    /// * [`Error::InvalidExternalHandle`]: the driver rejected the handle.
    /// * [`Error::Unsupported`]: a LINEAR image on memory not dedicated to it, on NVIDIA's
    ///   proprietary driver (see [`ExternalImage::import_linear`]).
    ///
    /// On success the fd belongs to Vulkan; on failure vkcuda has closed it.
    ///
    /// # Safety
    /// 1. `import.handle` is an export of memory allocated by a device with this context's
    ///    UUID for an image created with `desc` (as [`ExternalImage::new`] does), of exactly
    ///    `import.size` bytes, dedicated as `import.dedicated` says, in `import.memory_type`
    ///    where that names one (every vkcuda export does; an image that cannot use that type
    ///    is refused), otherwise in the type `desc` selects. Vulkan requires the allocation
    ///    size, memory type and image layout to match the payload
    ///    (VUID-VkMemoryAllocateInfo-allocationSize-01742); a mismatch the driver does not
    ///    catch is undefined behaviour. [`ExternalImage::alias`] is the safe loopback.
    pub unsafe fn import(ctx: &Context, desc: &ImageDesc, import: MemoryImport) -> Result<Self> {
        // SAFETY: forwarded to the caller (precondition 1).
        unsafe { Self::import_checked(ctx, desc, import, |_| Ok(())) }
    }

    /// [`ExternalImage::import`], with `check` run on the created image before its memory is
    /// imported and bound.
    ///
    /// # Safety
    /// As [`ExternalImage::import`].
    unsafe fn import_checked(
        ctx: &Context,
        desc: &ImageDesc,
        import: MemoryImport,
        check: impl FnOnce(&Unbound<'_, vk::Image>) -> Result<()>,
    ) -> Result<Self> {
        check_import_type(desc.handle_type, &import)?;
        let handle_type = desc.handle_type;
        let (image, external) = create_importable(ctx, desc)?;
        if external.dedicated_only && !import.dedicated {
            return Err(Error::invalid(
                "import.dedicated",
                "false, but the driver only imports this image as a dedicated allocation",
                "true",
            ));
        }
        check(&image)?;
        if !import.dedicated {
            check_linear_in_imported_memory(ctx, desc)?;
        }
        let what = || "this image".to_owned();
        // SAFETY: the image was created from `ctx`'s device with `flags` for this handle
        // type; the payload fits it (precondition 1).
        let bound = unsafe { Bound::import(ctx, image, import, handle_type, what) }?;
        let state = ImageState {
            owner: ImageOwner::External,
            layout: vk::ImageLayout::GENERAL,
        };
        Ok(Self::with(bound, desc, state))
    }

    fn with(bound: Bound<vk::Image>, desc: &ImageDesc, state: ImageState) -> Self {
        Self {
            bound,
            desc: desc.clone(),
            state: Mutex::new(Tracked::new(state)),
        }
    }

    /// Exports the memory as a new handle (each call makes a new fd), described so an
    /// importer takes exactly this allocation: size from `VkMemoryRequirements`, dedicated.
    /// The importer also needs [`ExternalImage::desc`] to lay the memory out.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the image was imported rather than allocated exportable;
    /// [`Error::Vulkan`] when `vkGetMemoryFdKHR` fails.
    pub fn export(&self) -> Result<MemoryImport> {
        self.bound.export()
    }

    /// A second image on the same memory: exports this one and imports the handle back
    /// into the same context with the same description. The alias starts released to
    /// `VK_QUEUE_FAMILY_EXTERNAL`, as every import does.
    ///
    /// # Errors
    /// As [`ExternalImage::export`] and [`ExternalImage::import`].
    pub fn alias(&self) -> Result<Self> {
        // SAFETY: the handle is this image's own export, described by its own allocation
        // size and dedication, on the same device, with the description that made it.
        unsafe { Self::import(self.context(), &self.desc, self.export()?) }
    }

    /// The raw image, for recording commands and creating views. Valid while `self` lives.
    pub fn raw(&self) -> vk::Image {
        self.bound.raw()
    }

    /// The raw memory. Valid while `self` lives.
    pub fn memory(&self) -> vk::DeviceMemory {
        self.bound.memory()
    }

    /// What the image was created with.
    pub fn desc(&self) -> &ImageDesc {
        &self.desc
    }

    /// Size of its allocation (`VkMemoryRequirements::size`), what CUDA imports.
    pub fn allocation_size(&self) -> u64 {
        self.bound.allocation_size()
    }

    /// The Vulkan memory type index of its memory (its exporter's, for an import of a
    /// Vulkan export).
    pub fn memory_type(&self) -> u32 {
        self.bound.memory_type()
    }

    /// The export handle type.
    pub fn handle_type(&self) -> MemoryHandleType {
        self.desc.handle_type
    }

    /// Whether [`ExternalImage::export`] works (created by [`ExternalImage::new`]).
    pub fn is_exportable(&self) -> bool {
        self.bound.is_exportable()
    }

    /// The context it was made on.
    pub fn context(&self) -> &Context {
        self.bound.context()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ExternalImage>();
        send_sync::<ImageDesc>();
    }
}
