//! Who owns an image and how its contents are laid out ([`ImageState`]), the pure barrier
//! plan that takes it from one state to the next, and the recording of that barrier. The
//! immediate (`record_*`), one-shot and deferred ([`crate::util::Commands`]) paths all
//! record through [`ExternalImage::plan`].

use std::sync::MutexGuard;

use ash::vk;

use super::ExternalImage;
use crate::error::{Error, Result};
use crate::vulkan::queue_use::Tracked;

/// Which queue family may use an image's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageOwner {
    /// The context's queue family ([`Context::queue_family_index`](crate::vulkan::Context::queue_family_index)): Vulkan may use it.
    Vulkan,
    /// Released to `VK_QUEUE_FAMILY_EXTERNAL`: CUDA (or whoever imported the memory) may
    /// use it; Vulkan must acquire it first.
    External,
}

/// An image's owner and the layout of its contents, as tracked in recording order (see
/// [`ExternalImage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageState {
    /// Who may use it.
    pub owner: ImageOwner,
    /// The layout of all its levels and layers.
    pub layout: vk::ImageLayout,
}

impl ExternalImage {
    /// Owner and layout once every barrier recorded so far has executed.
    pub fn state(&self) -> ImageState {
        self.lock_state().now
    }

    /// Tells the tracker the image's state after barriers the caller recorded itself.
    ///
    /// # Safety
    /// 1. Once the caller's commands recorded so far execute, the image is owned and laid
    ///    out as `state` says, for all levels and layers.
    pub unsafe fn assume_state(&self, state: ImageState) {
        self.lock_state().now = state;
    }

    /// Records `UNDEFINED` → `GENERAL` over the whole image, **discarding** its contents:
    /// the first use of a new image that nobody has written.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`image`) when the image is released to
    /// `VK_QUEUE_FAMILY_EXTERNAL` (acquire it instead).
    ///
    /// # Safety
    /// See [`ExternalImage::record_release`].
    pub unsafe fn record_initialize(&self, cmd: vk::CommandBuffer) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.record(cmd, Step::Initialize) }
    }

    /// Records a layout transition of the whole image from its tracked layout to `layout`
    /// (a full `ALL_COMMANDS` barrier); nothing is recorded if it is already there.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: `layout` is `UNDEFINED`/`PREINITIALIZED` or needs a usage
    /// the image lacks (`layout`), or the image is released to `VK_QUEUE_FAMILY_EXTERNAL`
    /// (`image`).
    ///
    /// # Safety
    /// See [`ExternalImage::record_release`].
    pub unsafe fn record_transition(
        &self,
        cmd: vk::CommandBuffer,
        layout: vk::ImageLayout,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.record(cmd, Step::Transition(layout)) }
    }

    /// Records the release of the whole image to `VK_QUEUE_FAMILY_EXTERNAL` in `GENERAL`
    /// layout, for CUDA (or another importer) to use it. See
    /// [`ExternalImage`](ExternalImage#memory-ordering-with-the-other-api) for
    /// the semaphore the submission must signal.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`image`) when it is already released.
    ///
    /// # Safety
    /// 1. `cmd` is in the recording state and was allocated from a pool of this image's
    ///    device for [`Context::queue_family_index`](crate::vulkan::Context::queue_family_index).
    /// 2. Command buffers recorded with the `record_*` methods of this image are submitted
    ///    in the order they were recorded, each exactly once (the tracked state assumes so).
    pub unsafe fn record_release(&self, cmd: vk::CommandBuffer) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.record(cmd, Step::Release) }
    }

    /// Records the acquire of the whole image from `VK_QUEUE_FAMILY_EXTERNAL` (in
    /// `GENERAL`, as released), transitioning it to `layout` (`GENERAL` to keep it as CUDA
    /// left it). See
    /// [`ExternalImage`](ExternalImage#memory-ordering-with-the-other-api) for the semaphore
    /// the submission must wait on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: the image is not released (`image`), or `layout` is
    /// `UNDEFINED`/`PREINITIALIZED` or needs a usage the image lacks (`layout`).
    ///
    /// # Safety
    /// See [`ExternalImage::record_release`].
    pub unsafe fn record_acquire(
        &self,
        cmd: vk::CommandBuffer,
        layout: vk::ImageLayout,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.record(cmd, Step::Acquire(layout)) }
    }

    /// # Safety
    /// As [`ExternalImage::record_release`].
    unsafe fn record(&self, cmd: vk::CommandBuffer, step: Step) -> Result<()> {
        let mut state = self.lock_state();
        let (barrier, next) = self.plan(state.now, step)?;
        if let Some(b) = barrier {
            // SAFETY: forwarded to the caller (precondition 1 of `record_release`).
            unsafe { self.record_barrier(cmd, &b) };
        }
        state.now = next;
        Ok(())
    }

    /// The tracked state and the last queue use, locked.
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, Tracked<ImageState>> {
        // The state is plain values: a panic cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The barrier that takes the image from `state` through `step`, and the state after.
    pub(crate) fn plan(
        &self,
        state: ImageState,
        step: Step,
    ) -> Result<(Option<Barrier>, ImageState)> {
        let family = self.context().queue_family_index();
        let vulkan = |layout| ImageState {
            owner: ImageOwner::Vulkan,
            layout,
        };
        let full = |old, new| Barrier {
            old,
            new,
            src_family: vk::QUEUE_FAMILY_IGNORED,
            dst_family: vk::QUEUE_FAMILY_IGNORED,
            src_stage: vk::PipelineStageFlags::ALL_COMMANDS,
            src_access: vk::AccessFlags::MEMORY_WRITE,
            dst_stage: vk::PipelineStageFlags::ALL_COMMANDS,
            dst_access: vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE,
        };
        match step {
            Step::Initialize => {
                self.require_owned(state)?;
                let b = full(vk::ImageLayout::UNDEFINED, vk::ImageLayout::GENERAL);
                Ok((Some(b), vulkan(vk::ImageLayout::GENERAL)))
            }
            Step::Transition(layout) => {
                self.require_owned(state)?;
                self.check_target(layout)?;
                let b = (state.layout != layout).then(|| full(state.layout, layout));
                Ok((b, vulkan(layout)))
            }
            Step::Release => {
                self.require_owned(state)?;
                let b = Barrier {
                    old: state.layout,
                    new: vk::ImageLayout::GENERAL,
                    src_family: family,
                    dst_family: vk::QUEUE_FAMILY_EXTERNAL,
                    src_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                    src_access: vk::AccessFlags::MEMORY_WRITE,
                    // Ignored for a release: the semaphore signal that follows orders it.
                    dst_stage: vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                    dst_access: vk::AccessFlags::empty(),
                };
                let next = ImageState {
                    owner: ImageOwner::External,
                    layout: vk::ImageLayout::GENERAL,
                };
                Ok((Some(b), next))
            }
            Step::Acquire(layout) => {
                if state.owner != ImageOwner::External {
                    return Err(Error::invalid(
                        "image",
                        "is owned by the context's queue family, not released",
                        "an image released to VK_QUEUE_FAMILY_EXTERNAL (or imported)",
                    ));
                }
                self.check_target(layout)?;
                let b = Barrier {
                    old: vk::ImageLayout::GENERAL,
                    new: layout,
                    src_family: vk::QUEUE_FAMILY_EXTERNAL,
                    dst_family: family,
                    // Chains with the semaphore wait whatever its stage mask; no access (the
                    // other API's writes were made available by its signal).
                    src_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                    src_access: vk::AccessFlags::empty(),
                    dst_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                    dst_access: vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE,
                };
                Ok((Some(b), vulkan(layout)))
            }
        }
    }

    fn require_owned(&self, state: ImageState) -> Result<()> {
        if state.owner == ImageOwner::Vulkan {
            Ok(())
        } else {
            Err(Error::invalid(
                "image",
                "is released to VK_QUEUE_FAMILY_EXTERNAL (CUDA or another importer owns it)",
                "an image owned by the context's queue family: acquire it first \
                 (record_acquire or OneShot::acquire_image)",
            ))
        }
    }

    /// A layout the image can be moved to, given its format and usage: `GENERAL`, or one
    /// of the `*_OPTIMAL` layouts below whose usage the image has. Anything else (another
    /// layout needing a feature or extension vkcuda does not enable, or a value that is no
    /// layout at all) is refused before the driver sees it.
    fn check_target(&self, layout: vk::ImageLayout) -> Result<()> {
        use vk::ImageLayout as L;
        use vk::ImageUsageFlags as U;
        let aspect = super::desc::aspect_of(self.desc.format);
        let colour = aspect == vk::ImageAspectFlags::COLOR;
        let needs = match layout {
            L::GENERAL => return Ok(()),
            L::TRANSFER_SRC_OPTIMAL => U::TRANSFER_SRC,
            L::TRANSFER_DST_OPTIMAL => U::TRANSFER_DST,
            L::SHADER_READ_ONLY_OPTIMAL => U::SAMPLED | U::INPUT_ATTACHMENT,
            L::COLOR_ATTACHMENT_OPTIMAL if colour => U::COLOR_ATTACHMENT,
            L::DEPTH_STENCIL_ATTACHMENT_OPTIMAL if !colour => U::DEPTH_STENCIL_ATTACHMENT,
            L::DEPTH_STENCIL_READ_ONLY_OPTIMAL if !colour => {
                U::DEPTH_STENCIL_ATTACHMENT | U::SAMPLED | U::INPUT_ATTACHMENT
            }
            _ => {
                return Err(Error::invalid(
                    "layout",
                    format!(
                        "{layout:?} for a {:?} image ({aspect:?} aspect)",
                        self.desc.format
                    ),
                    if colour {
                        "GENERAL, TRANSFER_SRC/TRANSFER_DST/SHADER_READ_ONLY/COLOR_ATTACHMENT_OPTIMAL"
                    } else {
                        "GENERAL, TRANSFER_SRC/TRANSFER_DST/SHADER_READ_ONLY/\
                         DEPTH_STENCIL_ATTACHMENT/DEPTH_STENCIL_READ_ONLY_OPTIMAL"
                    },
                ))
            }
        };
        if self.desc.usage.intersects(needs) {
            Ok(())
        } else {
            Err(Error::invalid(
                "layout",
                format!(
                    "{layout:?} but the image's usage {:?} lacks {needs:?}",
                    self.desc.usage
                ),
                format!("GENERAL, or an image created with {needs:?}"),
            ))
        }
    }

    /// # Safety
    /// `cmd` is recording and belongs to this image's device.
    pub(crate) unsafe fn record_barrier(&self, cmd: vk::CommandBuffer, b: &Barrier) {
        let barrier = vk::ImageMemoryBarrier::default()
            .src_access_mask(b.src_access)
            .dst_access_mask(b.dst_access)
            .old_layout(b.old)
            .new_layout(b.new)
            .src_queue_family_index(b.src_family)
            .dst_queue_family_index(b.dst_family)
            .image(self.raw())
            .subresource_range(self.desc.subresource_range());
        // SAFETY: `cmd` is recording on this device (caller); the image is alive.
        unsafe {
            self.context().device().cmd_pipeline_barrier(
                cmd,
                b.src_stage,
                b.dst_stage,
                vk::DependencyFlags::empty(),
                &[],
                &[],
                &[barrier],
            )
        };
    }
}

/// One tracked change of owner or layout.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Initialize,
    Transition(vk::ImageLayout),
    Release,
    Acquire(vk::ImageLayout),
}

/// The parameters of one whole-image `VkImageMemoryBarrier`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Barrier {
    old: vk::ImageLayout,
    new: vk::ImageLayout,
    src_family: u32,
    dst_family: u32,
    pub(crate) src_stage: vk::PipelineStageFlags,
    pub(crate) src_access: vk::AccessFlags,
    pub(crate) dst_stage: vk::PipelineStageFlags,
    pub(crate) dst_access: vk::AccessFlags,
}
