//! The queue-family transfers wgpu does not record, submitted on wgpu's queue through
//! raw hal encoders (see the module docs of [`super`] for why wgpu's tracker stays right),
//! planned and committed through vkcuda's image and buffer trackers, with every timeline
//! signal checked against its high-water mark.

use std::sync::Arc;
use std::time::Duration;

use ash::vk;
use wgpu::hal::api::Vulkan;

use super::{WgpuBuffer, WgpuContext, WgpuTexture};
use crate::error::{Error, Result};
use crate::timeline::HighWater;
use crate::util::distinct;
use crate::vulkan::{
    BufferStep, ExternalBuffer, ExternalImage, ImageState, QueueUse, Semaphore, Step, Submission,
    FOREIGN_QUEUE,
};

/// The state a shared texture is parked in whenever wgpu's tracker and the real image must
/// agree: wgpu's read-write storage state, whose layout wgpu-hal derives as `GENERAL` for
/// every colour format (`derive_image_layout`), the layout CUDA works in. The release and
/// the acquire then change the queue family only, never the layout.
const PARKED: wgpu::TextureUses = wgpu::TextureUses::STORAGE_READ_WRITE;

/// The Vulkan layout of [`PARKED`].
pub(super) const PARKED_LAYOUT: vk::ImageLayout = vk::ImageLayout::GENERAL;

/// How long the one-shot hand-overs of [`WgpuContext`] wait for wgpu's queue.
const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(10);

fn no_hal() -> Error {
    Error::Unsupported {
        what: "recording a queue-family transfer for wgpu".into(),
        reason: "wgpu gave no Vulkan hal command encoder or queue".into(),
    }
}

/// Which way a hand-over moves textures and buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Park in [`PARKED`], then release to `VK_QUEUE_FAMILY_EXTERNAL` in `GENERAL`.
    Release,
    /// Acquire from `VK_QUEUE_FAMILY_EXTERNAL`, staying in the parked layout.
    Acquire,
}

/// The textures' images and the buffers' Vulkan buffers of one hand-over; dropped (in a
/// frame, kept) only once the submission that uses them has executed.
#[derive(Debug)]
pub(super) struct Handed {
    pub(super) images: Vec<Arc<ExternalImage>>,
    pub(super) buffers: Vec<Arc<ExternalBuffer>>,
    /// The id of the submission's use in the trackers.
    use_id: u64,
    /// The submission's wgpu index.
    pub(super) index: wgpu::SubmissionIndex,
}

/// What one submission on wgpu's queue does besides its barriers.
#[derive(Default)]
pub(super) struct Points<'a> {
    /// A timeline value it waits for.
    pub(super) wait: Option<(vk::Semaphore, u64)>,
    /// Timeline values it signals (each checked against and recorded in its mark).
    pub(super) signals: &'a [(&'a Arc<Semaphore>, u64)],
    /// Whether the signals may ride on whichever submission on wgpu's queue comes next
    /// (any is after this one) instead of an empty one made at once; the caller then owes
    /// a submission before it waits for them.
    pub(super) deferred: bool,
    /// The caller's command buffers, in the same submission: before the barriers of a
    /// release, after those of an acquire.
    pub(super) commands: Vec<wgpu::CommandBuffer>,
}

/// One submission of [`WgpuContext::submit_raw`] besides its raw commands.
struct Submit<'a> {
    before: Vec<wgpu::CommandBuffer>,
    after: Vec<wgpu::CommandBuffer>,
    wait: Option<(vk::Semaphore, u64)>,
    signals: &'a [(vk::Semaphore, u64)],
    deferred: bool,
}

/// Refuses a resource listed twice.
fn check_distinct(arg: &'static str, listed: usize, distinct: usize) -> Result<()> {
    if listed == distinct {
        return Ok(());
    }
    Err(Error::invalid(
        arg,
        format!("{} of the {listed} are listed twice", listed - distinct),
        "each resource at most once",
    ))
}

impl WgpuContext {
    /// Hands `textures` and `buffers` over in `direction` in one submission on wgpu's
    /// queue, synchronised as `sync` says. The images' and buffers' tracked states are
    /// locked (lock order: images, buffers, then the signals' marks), checked to be
    /// ordered after their last queue use and planned; they change only when the
    /// submission went through. Returns what the submission uses.
    pub(super) fn hand_over(
        &self,
        direction: Direction,
        textures: &[&WgpuTexture],
        buffers: &[&WgpuBuffer],
        sync: Points<'_>,
    ) -> Result<Handed> {
        let vk = self.vulkan();
        for t in textures {
            vk.check_owns("textures", t.image().context())?;
        }
        for b in buffers {
            vk.check_owns("buffers", b.external().context())?;
        }
        let images = distinct(textures.iter().map(|t| t.image()));
        check_distinct("textures", textures.len(), images.len())?;
        let vk_buffers = distinct(buffers.iter().map(|b| b.external()));
        check_distinct("buffers", buffers.len(), vk_buffers.len())?;

        let after: Vec<_> = sync.wait.into_iter().collect();
        let order = Submission {
            queue: FOREIGN_QUEUE,
            after: &after,
        };
        let mut image_guards: Vec<_> = images.iter().map(|i| i.lock_state()).collect();
        let mut buffer_guards: Vec<_> = vk_buffers.iter().map(|b| b.lock_owner()).collect();
        let mut image_plans = Vec::with_capacity(images.len());
        for (image, guard) in images.iter().zip(&image_guards) {
            guard.check_order("textures", &order)?;
            image_plans.push(match direction {
                // wgpu's parking transition (below) leaves the image in PARKED, owned by
                // the family, whatever layout the tracker last knew.
                Direction::Release => image.plan(
                    ImageState {
                        owner: guard.now.owner,
                        layout: PARKED_LAYOUT,
                    },
                    Step::Release,
                )?,
                Direction::Acquire => image.plan(guard.now, Step::Acquire(PARKED_LAYOUT))?,
            });
        }
        let step = match direction {
            Direction::Release => BufferStep::Release,
            Direction::Acquire => BufferStep::Acquire,
        };
        let mut buffer_plans = Vec::with_capacity(vk_buffers.len());
        for (buffer, guard) in vk_buffers.iter().zip(&buffer_guards) {
            guard.check_order("buffers", &order)?;
            buffer_plans.push(buffer.plan(guard.now, step)?);
        }
        let marks: Vec<(usize, &HighWater, u64)> = sync
            .signals
            .iter()
            .enumerate()
            .map(|(i, (s, v))| (i, s.high_water(), *v))
            .collect();
        let batch = HighWater::lock_batch("signals", &marks)?;

        let parked = (direction == Direction::Release && !textures.is_empty()).then(|| {
            let mut park = self.device().create_command_encoder(&Default::default());
            park.transition_resources(
                std::iter::empty(),
                textures.iter().map(|t| wgpu::TextureTransition {
                    texture: t.texture(),
                    selector: None,
                    state: PARKED,
                }),
            );
            park.finish()
        });
        let (before, after) = match direction {
            Direction::Release => (sync.commands.into_iter().chain(parked).collect(), vec![]),
            Direction::Acquire => (vec![], sync.commands),
        };
        let raw_signals: Vec<_> = sync.signals.iter().map(|(s, v)| (s.raw(), *v)).collect();
        let submit = Submit {
            before,
            after,
            wait: sync.wait,
            signals: &raw_signals,
            deferred: sync.deferred,
        };
        let index = self.submit_raw(submit, |cmd| {
            for (image, (barrier, _)) in images.iter().zip(&image_plans) {
                if let Some(b) = barrier {
                    // SAFETY: `cmd` is wgpu's open command buffer for its queue's family
                    // (the context's family), submitted once, right after the parking
                    // encoder (if any) and in submission order with every earlier
                    // hand-over.
                    unsafe { image.record_barrier(cmd, b) };
                }
            }
            for (buffer, (barrier, _)) in vk_buffers.iter().zip(&buffer_plans) {
                // SAFETY: as above; the buffer belongs to this device.
                unsafe { buffer.record_barrier(cmd, barrier) };
            }
            Ok(())
        })?;
        batch.commit();
        let keep: Vec<_> = sync
            .signals
            .iter()
            .map(|(s, v)| ((*s).clone(), *v))
            .collect();
        let queue_use = QueueUse::new(FOREIGN_QUEUE, keep);
        for (guard, (_, next)) in image_guards.iter_mut().zip(image_plans) {
            guard.now = next;
            guard.used(queue_use.clone());
        }
        for (guard, (_, next)) in buffer_guards.iter_mut().zip(buffer_plans) {
            guard.now = next;
            guard.used(queue_use.clone());
        }
        Ok(Handed {
            images: images.into_iter().cloned().collect(),
            buffers: vk_buffers.into_iter().cloned().collect(),
            use_id: queue_use.id(),
            index,
        })
    }

    /// Submits on wgpu's queue, in one submission, `submit.before`, one encoder into which
    /// `record` writes raw Vulkan commands, and `submit.after`, waiting for `submit.wait`;
    /// returns that submission's index.
    /// The signals are added afterwards, so they follow the recorded commands in queue
    /// order even if another thread submits in between, and are carried by an empty
    /// submission unless deferred. A wait taken by another thread's earlier submission
    /// still orders ours (a `vkQueueSubmit` wait covers every later submission). The caller
    /// checked the signal values against their marks and holds those locks.
    fn submit_raw(
        &self,
        submit: Submit<'_>,
        record: impl FnOnce(vk::CommandBuffer) -> Result<()>,
    ) -> Result<wgpu::SubmissionIndex> {
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
        // SAFETY: only used to add semaphores; nothing is destroyed.
        let hal_queue = unsafe { queue.as_hal::<Vulkan>() }.ok_or_else(no_hal)?;
        if let Some((semaphore, value)) = submit.wait {
            hal_queue.add_wait_semaphore(
                semaphore,
                Some(value),
                vk::PipelineStageFlags::ALL_COMMANDS,
            );
        }
        let index = queue.submit(
            submit
                .before
                .into_iter()
                .chain([encoder.finish()])
                .chain(submit.after),
        );
        for &(semaphore, value) in submit.signals {
            hal_queue.add_signal_semaphore(semaphore, Some(value));
        }
        if !submit.signals.is_empty() && !submit.deferred {
            queue.submit([]);
        }
        Ok(index)
    }

    /// Makes a submission on wgpu's queue with no work, which carries every wait and signal
    /// added so far (deferred ones included); returns its index.
    pub(super) fn flush_signals(&self) -> wgpu::SubmissionIndex {
        self.queue().submit([])
    }

    /// Makes the next submission on wgpu's queue, whoever makes it, wait for `value` of
    /// `semaphore` (which must outlive that submission).
    pub(super) fn wait_on_next_submission(
        &self,
        semaphore: vk::Semaphore,
        value: u64,
    ) -> Result<()> {
        let queue = self.queue();
        // SAFETY: only used to add a wait; nothing is destroyed.
        let hal_queue = unsafe { queue.as_hal::<Vulkan>() }.ok_or_else(no_hal)?;
        hal_queue.add_wait_semaphore(semaphore, Some(value), vk::PipelineStageFlags::ALL_COMMANDS);
        Ok(())
    }

    /// Signals `signals` on wgpu's queue after everything submitted so far, with no other
    /// work (a frame dropped before it handed anything over).
    pub(super) fn submit_signals(&self, signals: &[(&Arc<Semaphore>, u64)]) -> Result<()> {
        self.hand_over(
            Direction::Release,
            &[],
            &[],
            Points {
                signals,
                ..Points::default()
            },
        )
        .map(drop)
    }

    /// Waits (bounded) until wgpu's queue has executed `index` (everything submitted so far
    /// when `None`).
    pub(super) fn wait_queue(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        self.device()
            .poll(wgpu::PollType::Wait {
                submission_index: index,
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

    /// A one-shot hand-over this call waits for; the host has then seen it complete.
    fn hand_over_and_wait(
        &self,
        direction: Direction,
        textures: &[&WgpuTexture],
        buffers: &[&WgpuBuffer],
    ) -> Result<()> {
        let handed = self.hand_over(direction, textures, buffers, Points::default())?;
        self.wait_queue(None)?;
        // The tracked last use is on wgpu's queue, which vkcuda's own queue is not ordered
        // after; once the host has seen it finish, it no longer matters.
        for image in &handed.images {
            image.lock_state().complete(handed.use_id);
        }
        for buffer in &handed.buffers {
            buffer.lock_owner().complete(handed.use_id);
        }
        Ok(())
    }

    /// Hands `textures` and `buffers` to another user of their memory (CUDA, another
    /// device or process through their `export`) as a one-shot submission on wgpu's
    /// queue that this call waits for: after every wgpu use submitted so far, they are
    /// released to `VK_QUEUE_FAMILY_EXTERNAL` (textures in `GENERAL`). For setup and tests;
    /// per frame use [`super::WgpuFrameSync`]. wgpu must not use them until
    /// [`WgpuContext::acquire`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: one listed twice or made on another device
    /// (`textures`/`buffers`), already released (`image`/`buffer`), or last used by
    /// vkcuda on one of its own queues without being waited for; [`Error::Timeout`].
    pub fn release(&self, textures: &[&WgpuTexture], buffers: &[&WgpuBuffer]) -> Result<()> {
        self.hand_over_and_wait(Direction::Release, textures, buffers)
    }

    /// Takes `textures` and `buffers` back from the other user after
    /// [`WgpuContext::release`], as a one-shot submission this call waits for; the other
    /// user must be done with them (e.g. its stream synchronised). wgpu sees what it wrote.
    ///
    /// # Errors
    /// As [`WgpuContext::release`], with "not released" for `image`/`buffer`.
    pub fn acquire(&self, textures: &[&WgpuTexture], buffers: &[&WgpuBuffer]) -> Result<()> {
        self.hand_over_and_wait(Direction::Acquire, textures, buffers)
    }
}
