//! [`Commands`]: a command buffer recorded and submitted without `unsafe`.
//!
//! Commands are collected as a list of operations and recorded into the Vulkan command
//! buffer only at submission, while the tracked state of every image and buffer they touch
//! is locked and up to the queue submission itself. So the layouts and owners the barriers
//! assume are always the ones the resource really has in submission order, whatever other
//! command buffers are recorded meanwhile; if recording or the submission fails, no state
//! changes. A resource last used on another queue is accepted only when the submission is
//! ordered after that use (see [`crate::vulkan::ExternalImage`]'s "Queues"). Every resource
//! an operation names is kept alive until the submission's fence has signalled.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use ash::vk;

use super::one_shot::copy_region;
use super::ComputeTarget;
use crate::error::{Error, Result};
use crate::vulkan::{
    level_bytes, require_buffer_owned, BufferStep, Context, ExternalBuffer, ExternalImage,
    FencedCommandBuffer, ImageOwner, ImageState, QueueUse, Semaphore, SemaphoreKind, Step,
    Submission, Tracked,
};

/// How long `Drop` waits for a pending submission before leaking its objects instead of
/// destroying them while in use.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// One recorded operation, with the resources it keeps alive.
enum Op {
    Dispatch {
        target: Arc<ComputeTarget>,
        push: Vec<u8>,
    },
    Release(Arc<ExternalImage>),
    Acquire(Arc<ExternalImage>, vk::ImageLayout),
    CopyToBuffer {
        image: Arc<ExternalImage>,
        buffer: Arc<ExternalBuffer>,
    },
    Buffer(Arc<ExternalBuffer>, BufferStep),
    CopyBuffer {
        src: Arc<ExternalBuffer>,
        dst: Arc<ExternalBuffer>,
        region: vk::BufferCopy,
    },
}

impl Op {
    fn image(&self) -> Option<&Arc<ExternalImage>> {
        match self {
            Op::Dispatch { target, .. } => Some(target.image()),
            Op::Release(i) | Op::Acquire(i, _) | Op::CopyToBuffer { image: i, .. } => Some(i),
            Op::Buffer(..) | Op::CopyBuffer { .. } => None,
        }
    }

    /// The buffers it uses (at most two).
    fn buffers(&self) -> impl Iterator<Item = &Arc<ExternalBuffer>> {
        let (a, b) = match self {
            Op::CopyToBuffer { buffer, .. } | Op::Buffer(buffer, _) => (Some(buffer), None),
            Op::CopyBuffer { src, dst, .. } => (Some(src), Some(dst)),
            _ => (None, None),
        };
        a.into_iter().chain(b)
    }
}

/// The distinct resources of `items`, in address order (the lock order among them).
pub(crate) fn distinct<'a, T>(items: impl Iterator<Item = &'a Arc<T>>) -> Vec<&'a Arc<T>>
where
    T: 'a,
{
    let mut v: Vec<_> = items.collect();
    v.sort_by_key(|r| Arc::as_ptr(r));
    v.dedup_by_key(|r| Arc::as_ptr(r));
    v
}

/// Where `r` is in `all` (from [`distinct`], so it is there).
fn index_of<T>(all: &[&Arc<T>], r: &Arc<T>) -> usize {
    all.iter()
        .position(|a| Arc::ptr_eq(a, r))
        .unwrap_or_default()
}

/// A primary command buffer with its own pool and fence, recorded through safe methods.
///
/// Use: add operations ([`Commands::dispatch`], [`Commands::release_image`], ...), then
/// submit with [`Commands::submit`] or through a [`crate::interop::Frame`]. Submitting waits
/// first (bounded) for this buffer's previous submission, so one `Commands` per frame in
/// flight lets frames overlap.
pub struct Commands {
    ctx: Context,
    /// Pool, command buffer and fence.
    buffer: FencedCommandBuffer,
    /// Operations added since the last submission.
    ops: Vec<Op>,
    /// Operations of the pending submission (kept alive until its fence signals), and the
    /// id of its use of their resources.
    pending: Option<(Vec<Op>, u64)>,
    /// Semaphores of the pending submission.
    pending_semaphores: Vec<Arc<Semaphore>>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("ops", &self.ops.len())
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        if let Err(e) = self.wait(DROP_TIMEOUT) {
            // Destroying the pool of a pending command buffer would be undefined behaviour:
            // leak it (and what it keeps alive) instead.
            log::error!("dropping Commands whose submission did not finish ({e}); leaking it");
            std::mem::forget(self.pending.take());
            std::mem::forget(std::mem::take(&mut self.pending_semaphores));
            return;
        }
        // SAFETY: nothing is pending (waited above); destroyed once, here.
        unsafe { self.buffer.destroy(self.ctx.device()) };
    }
}

impl Commands {
    /// A command buffer on `ctx` (any of its queues: they share one family).
    ///
    /// # Errors
    /// Driver errors creating the pool, buffer or fence.
    pub fn new(ctx: &Context) -> Result<Self> {
        Ok(Self {
            ctx: ctx.clone(),
            buffer: FencedCommandBuffer::new(ctx.device(), ctx.queue_family_index())?,
            ops: Vec::new(),
            pending: None,
            pending_semaphores: Vec::new(),
        })
    }

    /// Runs `target`'s compute pass over its image with `push` constants (the image is
    /// transitioned to `GENERAL` first if needed).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `push` has the wrong size or the target is on
    /// another device (checked now); image-state errors are reported at submission.
    pub fn dispatch(&mut self, target: &Arc<ComputeTarget>, push: &[u8]) -> Result<()> {
        target.pass().check_push(push)?;
        self.push_op(Op::Dispatch {
            target: target.clone(),
            push: push.to_vec(),
        })
    }

    /// Releases `image` to `VK_QUEUE_FAMILY_EXTERNAL` in `GENERAL`, for CUDA. The
    /// submission must then signal what CUDA waits on (a [`crate::interop::FrameSync`]
    /// frame does).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image is on another device.
    pub fn release_image(&mut self, image: &Arc<ExternalImage>) -> Result<()> {
        self.push_op(Op::Release(image.clone()))
    }

    /// Releases `buffer` to `VK_QUEUE_FAMILY_EXTERNAL`, for CUDA (see [`ExternalBuffer`]'s
    /// ownership). The submission must then signal what CUDA waits on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the buffer is on another device (checked now);
    /// ownership errors are reported at submission.
    pub fn release_buffer(&mut self, buffer: &Arc<ExternalBuffer>) -> Result<()> {
        self.push_op(Op::Buffer(buffer.clone(), BufferStep::Release))
    }

    /// Acquires `buffer` back from `VK_QUEUE_FAMILY_EXTERNAL`, before Vulkan uses what CUDA
    /// wrote. The submission must wait on CUDA's signal first.
    ///
    /// # Errors
    /// As [`Commands::release_buffer`].
    pub fn acquire_buffer(&mut self, buffer: &Arc<ExternalBuffer>) -> Result<()> {
        self.push_op(Op::Buffer(buffer.clone(), BufferStep::Acquire))
    }

    /// Acquires `image` back from `VK_QUEUE_FAMILY_EXTERNAL` into `layout`. The submission
    /// must wait on CUDA's signal first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image is on another device.
    pub fn acquire_image(
        &mut self,
        image: &Arc<ExternalImage>,
        layout: vk::ImageLayout,
    ) -> Result<()> {
        self.push_op(Op::Acquire(image.clone(), layout))
    }

    /// Copies mip level 0 (all layers, tightly packed) of `image` to the start of `buffer`,
    /// leaving the image in `GENERAL`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image lacks `TRANSFER_SRC`, the buffer lacks
    /// `TRANSFER_DST` or is too small, or either is on another device;
    /// [`Error::Unsupported`] for formats without a known texel size.
    pub fn copy_image_to_buffer(
        &mut self,
        image: &Arc<ExternalImage>,
        buffer: &Arc<ExternalBuffer>,
    ) -> Result<()> {
        let desc = image.desc();
        if !desc.usage.contains(vk::ImageUsageFlags::TRANSFER_SRC) {
            return Err(Error::invalid(
                "image",
                format!("usage {:?} lacks TRANSFER_SRC", desc.usage),
                "an image created with TRANSFER_SRC",
            ));
        }
        buffer.check_usage(vk::BufferUsageFlags::TRANSFER_DST)?;
        let bytes = level_bytes(desc, 0).ok_or_else(|| Error::Unsupported {
            what: format!("copying a {:?} image", desc.format),
            reason: "vkcuda does not know its texel size".into(),
        })? * u64::from(desc.layers);
        if buffer.size() < bytes {
            return Err(Error::invalid(
                "buffer",
                format!("{} bytes", buffer.size()),
                format!("at least {bytes} bytes (level 0 of the image)"),
            ));
        }
        self.push_op(Op::CopyToBuffer {
            image: image.clone(),
            buffer: buffer.clone(),
        })
    }

    /// Copies `len` bytes of `src` at `src_offset` to `dst` at `dst_offset` on the GPU (e.g.
    /// a per-frame upload from a buffer the host filled once, with no staging allocation),
    /// with the copy's writes visible to every later command. Both buffers must be owned by
    /// Vulkan (not released to CUDA) when it runs.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a range lies outside its buffer (`src_offset`,
    /// `dst_offset`), `len` is zero, `src` lacks `TRANSFER_SRC` or `dst` `TRANSFER_DST`,
    /// either is on another device, or the ranges overlap in one buffer (`dst_offset`).
    pub fn copy_buffer(
        &mut self,
        src: &Arc<ExternalBuffer>,
        src_offset: u64,
        dst: &Arc<ExternalBuffer>,
        dst_offset: u64,
        len: u64,
    ) -> Result<()> {
        if len == 0 {
            return Err(Error::invalid("len", "0 bytes", "at least 1 byte"));
        }
        let src_range = src_offset..src_offset.saturating_add(len);
        let dst_range = dst_offset..dst_offset.saturating_add(len);
        src.check_range("src_offset", &src_range)?;
        dst.check_range("dst_offset", &dst_range)?;
        src.check_usage(vk::BufferUsageFlags::TRANSFER_SRC)?;
        dst.check_usage(vk::BufferUsageFlags::TRANSFER_DST)?;
        if Arc::ptr_eq(src, dst)
            && src_range.start < dst_range.end
            && dst_range.start < src_range.end
        {
            return Err(Error::invalid(
                "dst_offset",
                format!("{dst_range:?} overlaps the source range {src_range:?} of the same buffer"),
                "disjoint ranges (vkCmdCopyBuffer)",
            ));
        }
        self.push_op(Op::CopyBuffer {
            src: src.clone(),
            dst: dst.clone(),
            region: vk::BufferCopy::default()
                .src_offset(src_offset)
                .dst_offset(dst_offset)
                .size(len),
        })
    }

    fn push_op(&mut self, op: Op) -> Result<()> {
        if let Some(image) = op.image() {
            self.ctx.check_owns("image", image.context())?;
        }
        for buffer in op.buffers() {
            self.ctx.check_owns("buffer", buffer.context())?;
        }
        self.ops.push(op);
        Ok(())
    }

    /// The context it records for.
    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }

    /// Waits (at most `timeout`) for the previous submission and frees what it kept alive.
    /// Its images and buffers may then be used on any queue.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it has not finished in time (it stays pending).
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        let Some((ops, id)) = &self.pending else {
            return Ok(());
        };
        self.buffer.wait(
            self.ctx.device(),
            timeout,
            "a Vulkan command buffer submission",
        )?;
        // The host has seen the use complete: it no longer orders later uses.
        for op in ops {
            if let Some(image) = op.image() {
                image.lock_state().complete(*id);
            }
            for buffer in op.buffers() {
                buffer.lock_owner().complete(*id);
            }
        }
        self.pending = None;
        self.pending_semaphores.clear();
        Ok(())
    }

    /// Records the operations added since the last submission and submits them on queue
    /// `queue` of the context, waiting on `waits` (semaphore, value; all stages wait) and
    /// signalling `signals`. Waits first (at most `timeout`) for this buffer's previous
    /// submission.
    ///
    /// Every wait must be signalled by someone (CUDA, the host, another submission), or the
    /// queue stalls; [`crate::interop::FrameSync`] pairs them for you.
    ///
    /// An image or buffer last used on another queue must be ordered before this
    /// submission: `waits` holds a value that use's submission signals, or the host has
    /// seen it complete (its value reached, [`Commands::wait`], a one-shot).
    ///
    /// # Errors
    /// [`Error::Timeout`] from the wait; [`Error::InvalidArgument`] for a binary semaphore,
    /// when an operation does not fit its resource's state (e.g. releasing an image already
    /// released), when a resource was last used on another queue by a submission this one
    /// is not ordered after (the error names both queues), or when a semaphore value check
    /// of [`Context::submit_to`] fails: nothing was submitted and no state changed.
    pub fn submit(
        &mut self,
        queue: usize,
        waits: &[(&Arc<Semaphore>, u64)],
        signals: &[(&Arc<Semaphore>, u64)],
        timeout: Duration,
    ) -> Result<()> {
        // A binary wait needs a signal already submitted (no way to check it here), so
        // this safe path takes timeline semaphores only; binary ones go through the
        // unsafe `Context::submit_to`.
        if let Some(i) = waits
            .iter()
            .chain(signals)
            .position(|(s, _)| s.kind() != SemaphoreKind::Timeline)
        {
            return Err(Error::invalid(
                "waits/signals",
                format!("entry {i} is a binary semaphore"),
                "timeline semaphores (binary ones need Context::submit_to)",
            ));
        }
        let wait_list: Vec<_> = waits
            .iter()
            .map(|(s, v)| (s.as_ref(), *v, vk::PipelineStageFlags::ALL_COMMANDS))
            .collect();
        let signal_list: Vec<_> = signals.iter().map(|(s, v)| (s.as_ref(), *v)).collect();
        let after: Vec<_> = waits.iter().map(|(s, v)| (s.raw(), *v)).collect();
        let order = Submission {
            queue,
            after: &after,
        };
        let keep: Vec<_> = signals.iter().map(|(s, v)| ((*s).clone(), *v)).collect();
        let ctx = self.ctx.clone();
        self.submit_via(timeout, &order, keep, |cmds, fence| {
            // SAFETY: `cmds` were recorded by `submit_via` on this device's family and are
            // kept alive (with what they use) until `fence` signals; the fence is
            // unsignalled and only ours; the semaphores are kept alive below until then.
            unsafe { ctx.submit_to(queue, cmds, &wait_list, &signal_list, fence) }
        })?;
        self.pending_semaphores = waits
            .iter()
            .chain(signals)
            .map(|(s, _)| (*s).clone())
            .collect();
        Ok(())
    }

    /// Records the pending operations and hands the command buffer and fence to `submit`,
    /// with every touched image's and buffer's state locked, after checking that `order`
    /// (the submission's queue and what it runs after) is ordered after each one's last
    /// use; commits the new states, and this use (which signals `signals`), only if
    /// `submit` succeeds. Used by [`Commands::submit`] and by FrameSync's frames.
    pub(crate) fn submit_via(
        &mut self,
        timeout: Duration,
        order: &Submission<'_>,
        signals: Vec<(Arc<Semaphore>, u64)>,
        submit: impl FnOnce(&[vk::CommandBuffer], vk::Fence) -> Result<()>,
    ) -> Result<()> {
        self.wait(timeout)?;
        let ops = std::mem::take(&mut self.ops);
        // Lock each distinct image, then each distinct buffer, once, in address order (no
        // lock-order inversions between two Commands).
        let images = distinct(ops.iter().filter_map(Op::image));
        let buffers = distinct(ops.iter().flat_map(Op::buffers));
        let mut image_guards: Vec<_> = images.iter().map(|i| i.lock_state()).collect();
        let mut buffer_guards: Vec<_> = buffers.iter().map(|b| b.lock_owner()).collect();
        let mut tracked = Planned {
            images: &images,
            states: image_guards.iter().map(|g| g.now).collect(),
            buffers: &buffers,
            owners: buffer_guards.iter().map(|g| g.now).collect(),
        };
        let result = check_order(&image_guards, "image", order)
            .and_then(|()| check_order(&buffer_guards, "buffer", order))
            .and_then(|()| self.record(&ops, &mut tracked))
            .and_then(|()| submit(&[self.buffer.cmd], self.buffer.fence));
        match result {
            Ok(()) => {
                let queue_use = QueueUse::new(order.queue, signals);
                let id = queue_use.id();
                commit(&mut image_guards, tracked.states, &queue_use);
                commit(&mut buffer_guards, tracked.owners, &queue_use);
                drop((image_guards, buffer_guards));
                self.pending = Some((ops, id));
                Ok(())
            }
            Err(e) => {
                drop((image_guards, buffer_guards));
                // Nothing was submitted: the buffer can be reset; the operations are dropped.
                // SAFETY: the command buffer is not pending (waited above, not submitted).
                let reset = unsafe {
                    self.ctx
                        .device()
                        .reset_command_buffer(self.buffer.cmd, vk::CommandBufferResetFlags::empty())
                };
                reset.map_err(|r| Error::vk("vkResetCommandBuffer", r))?;
                Err(e)
            }
        }
    }

    /// Records `ops` into the command buffer, planning barriers from `tracked` (updated).
    fn record(&self, ops: &[Op], tracked: &mut Planned<'_>) -> Result<()> {
        let Planned {
            images,
            states,
            buffers,
            owners,
        } = tracked;
        let d = self.ctx.device();
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the buffer is not pending (`submit_via` waited) and its pool allows reset.
        unsafe { d.begin_command_buffer(self.buffer.cmd, &begin) }
            .map_err(|r| Error::vk("vkBeginCommandBuffer", r))?;
        for op in ops {
            if let Op::Buffer(buffer, step) = op {
                let owner = &mut owners[index_of(buffers, buffer)];
                let (barrier, next) = buffer.plan(*owner, *step)?;
                // SAFETY: the buffer is recording, on the buffer's device.
                unsafe { buffer.record_barrier(self.buffer.cmd, &barrier) };
                *owner = next;
                continue;
            }
            if let Op::CopyBuffer { src, dst, region } = op {
                require_buffer_owned(owners[index_of(buffers, src)])?;
                require_buffer_owned(owners[index_of(buffers, dst)])?;
                let cmd = self.buffer.cmd;
                // The copy runs after every earlier command and its writes are visible to
                // every later one.
                // SAFETY: `cmd` is recording, on this device.
                unsafe {
                    super::memory_barrier(
                        d,
                        cmd,
                        (
                            vk::PipelineStageFlags::ALL_COMMANDS,
                            vk::AccessFlags::MEMORY_WRITE,
                        ),
                        (
                            vk::PipelineStageFlags::TRANSFER,
                            vk::AccessFlags::TRANSFER_READ | vk::AccessFlags::TRANSFER_WRITE,
                        ),
                    )
                };
                // SAFETY: as above; both buffers are Vulkan's, kept alive with the pending
                // ops, and the region lies in both (checked when added).
                unsafe { d.cmd_copy_buffer(cmd, src.raw(), dst.raw(), &[*region]) };
                // SAFETY: as above.
                unsafe { super::record_transfer_writes_visible(d, cmd) };
                continue;
            }
            let Some(image) = op.image() else { continue };
            let k = index_of(images, image);
            let step = |s: &mut ImageState, step: Step| -> Result<()> {
                let (barrier, next) = image.plan(*s, step)?;
                if let Some(b) = barrier {
                    // SAFETY: the buffer is recording, on the image's device.
                    unsafe { image.record_barrier(self.buffer.cmd, &b) };
                }
                *s = next;
                Ok(())
            };
            match op {
                Op::Dispatch { target, push } => {
                    step(&mut states[k], Step::Transition(vk::ImageLayout::GENERAL))?;
                    // SAFETY: recording; the target is kept alive with the pending ops;
                    // its image is in GENERAL at this point of the buffer.
                    unsafe { target.pass().record_dispatch(self.buffer.cmd, target, push) }?;
                }
                Op::Release(_) => step(&mut states[k], Step::Release)?,
                Op::Acquire(_, layout) => step(&mut states[k], Step::Acquire(*layout))?,
                Op::CopyToBuffer { image, buffer } => {
                    require_buffer_owned(owners[index_of(buffers, buffer)])?;
                    step(
                        &mut states[k],
                        Step::Transition(vk::ImageLayout::TRANSFER_SRC_OPTIMAL),
                    )?;
                    let desc = image.desc();
                    let region = copy_region(desc, 0, &(0..desc.layers));
                    // SAFETY: recording; the image is in TRANSFER_SRC_OPTIMAL and the
                    // buffer large enough (checked when added); both are kept alive.
                    unsafe {
                        d.cmd_copy_image_to_buffer(
                            self.buffer.cmd,
                            image.raw(),
                            vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                            buffer.raw(),
                            &[region],
                        )
                    };
                    step(&mut states[k], Step::Transition(vk::ImageLayout::GENERAL))?;
                    // SAFETY: recording on this device.
                    unsafe { super::record_transfer_writes_visible(d, self.buffer.cmd) };
                }
                Op::Buffer(..) | Op::CopyBuffer { .. } => {}
            }
        }
        // SAFETY: recording began above.
        unsafe { d.end_command_buffer(self.buffer.cmd) }
            .map_err(|r| Error::vk("vkEndCommandBuffer", r))
    }
}

/// The states planned through one recording, starting from the tracked ones.
struct Planned<'a> {
    images: &'a [&'a Arc<ExternalImage>],
    states: Vec<ImageState>,
    buffers: &'a [&'a Arc<ExternalBuffer>],
    owners: Vec<ImageOwner>,
}

/// Checks that `order` runs after the last use of every resource (`arg`) of `guards`.
fn check_order<S>(
    guards: &[MutexGuard<'_, Tracked<S>>],
    arg: &'static str,
    order: &Submission<'_>,
) -> Result<()> {
    guards.iter().try_for_each(|g| g.check_order(arg, order))
}

/// Stores the planned `states` and the submission's `queue_use` into `guards`.
fn commit<S>(guards: &mut [MutexGuard<'_, Tracked<S>>], states: Vec<S>, queue_use: &QueueUse) {
    for (g, s) in guards.iter_mut().zip(states) {
        g.now = s;
        g.used(queue_use.clone());
    }
}
