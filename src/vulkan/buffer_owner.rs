//! Who owns a buffer's memory, the context's queue family or `VK_QUEUE_FAMILY_EXTERNAL`
//! ([`ImageOwner`], tracked per [`ExternalBuffer`]), the pure barrier plan of a release or
//! an acquire, and its recording. The one-shot ([`crate::util::OneShot`]) and deferred
//! ([`crate::util::Commands`]) paths both plan through [`plan`].

use std::sync::MutexGuard;

use ash::vk;

use super::queue_use::Tracked;
use super::{ExternalBuffer, ImageOwner};
use crate::error::{Error, Result};

/// A tracked change of a buffer's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferStep {
    /// To `VK_QUEUE_FAMILY_EXTERNAL`, for CUDA.
    Release,
    /// Back from `VK_QUEUE_FAMILY_EXTERNAL`.
    Acquire,
}

/// The parameters of one whole-buffer `VkBufferMemoryBarrier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BufferBarrier {
    src_family: u32,
    dst_family: u32,
    src_stage: vk::PipelineStageFlags,
    src_access: vk::AccessFlags,
    dst_stage: vk::PipelineStageFlags,
    dst_access: vk::AccessFlags,
}

/// The barrier that moves a buffer of queue family `family` owned by `owner` through
/// `step`, and the owner after it; the same access scopes as an image's release and
/// acquire (see [`ExternalImage`](super::ExternalImage#memory-ordering-with-the-other-api)).
///
/// # Errors
/// [`Error::InvalidArgument`] (`buffer`) when the buffer is already released (for a
/// release) or not released (for an acquire).
pub(crate) fn plan(
    family: u32,
    owner: ImageOwner,
    step: BufferStep,
) -> Result<(BufferBarrier, ImageOwner)> {
    match (step, owner) {
        (BufferStep::Release, ImageOwner::Vulkan) => Ok((
            BufferBarrier {
                src_family: family,
                dst_family: vk::QUEUE_FAMILY_EXTERNAL,
                src_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                src_access: vk::AccessFlags::MEMORY_WRITE,
                // Ignored for a release: the semaphore signal that follows orders it.
                dst_stage: vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                dst_access: vk::AccessFlags::empty(),
            },
            ImageOwner::External,
        )),
        (BufferStep::Acquire, ImageOwner::External) => Ok((
            BufferBarrier {
                src_family: vk::QUEUE_FAMILY_EXTERNAL,
                dst_family: family,
                // Chains with the semaphore wait; the other API's writes were made
                // available by its signal.
                src_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                src_access: vk::AccessFlags::empty(),
                dst_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                dst_access: vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE,
            },
            ImageOwner::Vulkan,
        )),
        (BufferStep::Release, ImageOwner::External) => Err(Error::invalid(
            "buffer",
            "is already released to VK_QUEUE_FAMILY_EXTERNAL",
            "a buffer owned by the context's queue family (acquire it first)",
        )),
        (BufferStep::Acquire, ImageOwner::Vulkan) => Err(Error::invalid(
            "buffer",
            "is owned by the context's queue family, not released",
            "a buffer released to VK_QUEUE_FAMILY_EXTERNAL (release_buffer)",
        )),
    }
}

/// Refuses a Vulkan use of a buffer released to `VK_QUEUE_FAMILY_EXTERNAL`.
///
/// # Errors
/// [`Error::InvalidArgument`] (`buffer`) when `owner` is [`ImageOwner::External`].
pub(crate) fn require_owned(owner: ImageOwner) -> Result<()> {
    match owner {
        ImageOwner::Vulkan => Ok(()),
        ImageOwner::External => Err(Error::invalid(
            "buffer",
            "is released to VK_QUEUE_FAMILY_EXTERNAL (CUDA or another importer owns it)",
            "a buffer owned by the context's queue family: acquire it first \
             (Commands::acquire_buffer or OneShot::acquire_buffer)",
        )),
    }
}

impl ExternalBuffer {
    /// Who owns the memory once every submission so far has executed: Vulkan (new and
    /// imported buffers) or `VK_QUEUE_FAMILY_EXTERNAL` after a release
    /// ([`Commands::release_buffer`](crate::util::Commands::release_buffer),
    /// [`OneShot::release_buffer`](crate::util::OneShot::release_buffer)).
    pub fn owner(&self) -> ImageOwner {
        self.lock_owner().now
    }

    /// The tracked owner and last queue use, locked.
    pub(crate) fn lock_owner(&self) -> MutexGuard<'_, Tracked<ImageOwner>> {
        // Plain values: a panic cannot leave them half-written.
        self.owner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`plan`] for this buffer's queue family.
    pub(crate) fn plan(
        &self,
        owner: ImageOwner,
        step: BufferStep,
    ) -> Result<(BufferBarrier, ImageOwner)> {
        plan(self.context().queue_family_index(), owner, step)
    }

    /// # Safety
    /// `cmd` is recording and belongs to this buffer's device.
    pub(crate) unsafe fn record_barrier(&self, cmd: vk::CommandBuffer, b: &BufferBarrier) {
        let barrier = vk::BufferMemoryBarrier::default()
            .src_access_mask(b.src_access)
            .dst_access_mask(b.dst_access)
            .src_queue_family_index(b.src_family)
            .dst_queue_family_index(b.dst_family)
            .buffer(self.raw())
            .offset(0)
            .size(vk::WHOLE_SIZE);
        // SAFETY: `cmd` is recording on this device (caller); the buffer is alive.
        unsafe {
            self.context().device().cmd_pipeline_barrier(
                cmd,
                b.src_stage,
                b.dst_stage,
                vk::DependencyFlags::empty(),
                &[],
                &[barrier],
                &[],
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_then_acquire_moves_the_owner_both_ways() {
        let (release, owner) = plan(3, ImageOwner::Vulkan, BufferStep::Release).unwrap();
        assert_eq!(owner, ImageOwner::External);
        assert_eq!(
            (release.src_family, release.dst_family),
            (3, vk::QUEUE_FAMILY_EXTERNAL)
        );
        assert!(release.src_access.contains(vk::AccessFlags::MEMORY_WRITE));
        let (acquire, owner) = plan(3, owner, BufferStep::Acquire).unwrap();
        assert_eq!(owner, ImageOwner::Vulkan);
        assert_eq!(
            (acquire.src_family, acquire.dst_family),
            (vk::QUEUE_FAMILY_EXTERNAL, 3)
        );
        assert!(acquire
            .dst_access
            .contains(vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE));
    }

    #[test]
    fn a_step_that_does_not_fit_the_owner_is_refused() {
        let e = plan(0, ImageOwner::External, BufferStep::Release).unwrap_err();
        assert!(e.to_string().contains("already released"), "{e}");
        let e = plan(0, ImageOwner::Vulkan, BufferStep::Acquire).unwrap_err();
        assert!(e.to_string().contains("not released"), "{e}");
        assert!(require_owned(ImageOwner::External).is_err());
        require_owned(ImageOwner::Vulkan).unwrap();
    }
}
