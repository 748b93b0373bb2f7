//! The queue-family transfers wgpu does not record, submitted on wgpu's queue through
//! raw hal encoders (see the module docs of [`super`] for why wgpu's tracker stays right).

use std::sync::Arc;
use std::time::Duration;

use ash::vk;
use wgpu::hal::api::Vulkan;

use super::{WgpuContext, WgpuTexture};
use crate::error::{Error, Result};
use crate::vulkan::{ExternalImage, ImageOwner, ImageState};

/// The layout a shared texture is parked in whenever wgpu's tracker and the real image
/// must agree: wgpu's `COPY_DST` state.
const PARKED: vk::ImageLayout = vk::ImageLayout::TRANSFER_DST_OPTIMAL;

/// How long the one-shot hand-overs of [`WgpuContext`] wait for wgpu's queue.
const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(10);

fn no_hal() -> Error {
    Error::Unsupported {
        what: "recording a queue-family transfer for wgpu".into(),
        reason: "wgpu gave no Vulkan hal command encoder or queue".into(),
    }
}

/// A timeline value a submission waits for or signals.
pub(super) type Point = (vk::Semaphore, u64);

impl WgpuContext {
    /// Checks `textures` for a release: distinct, made on this device, not released.
    fn releasable(&self, textures: &[&WgpuTexture]) -> Result<Vec<Arc<ExternalImage>>> {
        let mut images: Vec<Arc<ExternalImage>> = Vec::with_capacity(textures.len());
        for t in textures {
            let image = t.image();
            if images.iter().any(|i| Arc::ptr_eq(i, image))
                || image.context().device().handle() != self.vulkan().device().handle()
                || image.state().owner != ImageOwner::Vulkan
            {
                return Err(Error::invalid(
                    "textures",
                    format!("{:?}", t.texture()),
                    "distinct textures of this device, not released yet",
                ));
            }
            images.push(image.clone());
        }
        Ok(images)
    }

    /// Parks `textures` in `COPY_DST` (a wgpu encoder) and releases them to
    /// `VK_QUEUE_FAMILY_EXTERNAL` in `GENERAL` (a raw encoder), in one submission; then
    /// `signal`, if any. Returns the images, which must stay alive until it has executed.
    pub(super) fn submit_release(
        &self,
        textures: &[&WgpuTexture],
        signal: Option<Point>,
    ) -> Result<Vec<Arc<ExternalImage>>> {
        let images = self.releasable(textures)?;
        let mut park = self.device().create_command_encoder(&Default::default());
        park.transition_resources(
            std::iter::empty(),
            textures.iter().map(|t| wgpu::TextureTransition {
                texture: t.texture(),
                selector: None,
                state: wgpu::TextureUses::COPY_DST,
            }),
        );
        self.submit_raw(Some(park.finish()), None, signal, |cmd| {
            for image in &images {
                // SAFETY: the parking encoder, submitted just before this one, leaves the
                // image in wgpu's COPY_DST state (TRANSFER_DST_OPTIMAL), owned by the family.
                unsafe {
                    image.assume_state(ImageState {
                        owner: ImageOwner::Vulkan,
                        layout: PARKED,
                    })
                };
                // SAFETY: `cmd` is wgpu's open command buffer for its queue's family (the
                // context's family), submitted right after, once.
                unsafe { image.record_release(cmd) }?;
            }
            Ok(())
        })?;
        Ok(images)
    }

    /// Acquires `images` from `VK_QUEUE_FAMILY_EXTERNAL` back into the parked `COPY_DST`
    /// layout, in a submission that waits for `wait` (if any); then `signal`, if any.
    pub(super) fn submit_acquire(
        &self,
        images: &[Arc<ExternalImage>],
        wait: Option<Point>,
        signal: Option<Point>,
    ) -> Result<()> {
        self.submit_raw(None, wait, signal, |cmd| {
            for image in images {
                // SAFETY: `cmd` is wgpu's open command buffer for the context's family,
                // submitted right after, once, after the release it pairs with.
                unsafe { image.record_acquire(cmd, PARKED) }?;
            }
            Ok(())
        })
    }

    /// Submits on wgpu's queue `before` (if any) and one encoder into which `record` writes
    /// raw Vulkan commands, waiting for `wait`. A `signal` is added afterwards and carried
    /// by an empty submission, so it follows the recorded commands in queue order even if
    /// another thread submits in between; a wait taken by another thread's earlier
    /// submission still orders ours (a `vkQueueSubmit` wait covers every later submission).
    pub(super) fn submit_raw(
        &self,
        before: Option<wgpu::CommandBuffer>,
        wait: Option<Point>,
        signal: Option<Point>,
        record: impl FnOnce(vk::CommandBuffer) -> Result<()>,
    ) -> Result<()> {
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("vkcuda queue-family transfer"),
            });
        let in_hal = |hal: Option<&mut wgpu::hal::vulkan::CommandEncoder>| {
            let hal = hal.ok_or_else(no_hal)?;
            // SAFETY: the handle is only recorded into, never ended or destroyed.
            record(unsafe { hal.raw_handle() })
        };
        // SAFETY: the callback records barriers only into the open command buffer and
        // touches the wgpu encoder in no other way meanwhile.
        unsafe { encoder.as_hal_mut::<Vulkan, _, _>(in_hal) }?;
        let queue = self.queue();
        let hal_queue = || {
            // SAFETY: only used to add semaphores; nothing is destroyed.
            unsafe { queue.as_hal::<Vulkan>() }.ok_or_else(no_hal)
        };
        if let Some((semaphore, value)) = wait {
            hal_queue()?.add_wait_semaphore(
                semaphore,
                Some(value),
                vk::PipelineStageFlags::ALL_COMMANDS,
            );
        }
        queue.submit(before.into_iter().chain([encoder.finish()]));
        if let Some((semaphore, value)) = signal {
            hal_queue()?.add_signal_semaphore(semaphore, Some(value));
            queue.submit([]);
        }
        Ok(())
    }

    /// Waits (bounded) until wgpu's queue has executed everything submitted so far.
    fn wait_queue(&self) -> Result<()> {
        self.device()
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(ONE_SHOT_TIMEOUT),
            })
            .map(drop)
            .map_err(|e| match e {
                wgpu::PollError::Timeout => Error::Timeout {
                    what: "wgpu's queue to finish a hand-over".into(),
                    waited: ONE_SHOT_TIMEOUT,
                },
                other => Error::Unsupported {
                    what: "waiting for wgpu's queue".into(),
                    reason: other.to_string(),
                },
            })
    }

    /// Hands `textures` to another user of their memory (CUDA, another device or process
    /// through [`crate::vulkan::ExternalImage::export`]) as a one-shot submission on wgpu's
    /// queue that this call waits for: after every wgpu use submitted so far, they are
    /// released to `VK_QUEUE_FAMILY_EXTERNAL` in `GENERAL`. For setup and tests; per frame
    /// use [`super::WgpuFrameSync`]. wgpu must not use them until
    /// [`WgpuContext::acquire_textures`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`textures`): listed twice, made on another device, or
    /// already released; [`Error::Timeout`].
    pub fn release_textures(&self, textures: &[&WgpuTexture]) -> Result<()> {
        self.submit_release(textures, None)?;
        self.wait_queue()
    }

    /// Takes `textures` back from the other user after [`WgpuContext::release_textures`],
    /// as a one-shot submission this call waits for; the other user must be done with them
    /// (e.g. its stream synchronised). wgpu sees what it wrote.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`image`) when one is not released; [`Error::Timeout`].
    pub fn acquire_textures(&self, textures: &[&WgpuTexture]) -> Result<()> {
        let images: Vec<_> = textures.iter().map(|t| t.image().clone()).collect();
        if let Some(t) = images
            .iter()
            .find(|i| i.state().owner != ImageOwner::External)
        {
            return Err(Error::invalid(
                "image",
                format!("{:?} is not released", t.raw()),
                "textures released with release_textures",
            ));
        }
        self.submit_acquire(&images, None, None)?;
        self.wait_queue()
    }
}
