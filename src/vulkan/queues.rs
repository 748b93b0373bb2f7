//! The context's queues by role, and a command buffer recorded once and submitted many
//! times on one of them.
//!
//! Besides the queues of its main (graphics/compute) family, a context made with
//! [`ContextDesc::transfer_queue`](super::ContextDesc::transfer_queue) has one queue of a
//! transfer-only family where the device has one. On NVIDIA such a family runs on a copy
//! engine, so copies, fills and timestamp writes submitted there never make the GPU switch
//! its graphics/compute engine between the Vulkan and the CUDA context (see
//! [`crate::interop::alternation_floor`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use ash::vk;

use super::timestamps::Bracket;
use super::Context;
use crate::error::{Error, Result};

/// How long `Drop` waits for a pending submission before leaking its objects instead of
/// destroying them while in use.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Context::submit_and_wait_on`] waits for its command buffer.
const ONE_OFF_TIMEOUT: Duration = Duration::from_secs(60);

/// One of a context's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueId {
    /// Queue `n` of the main family ([`Context::queue_at`]; `Main(0)` is [`Context::queue`]).
    Main(usize),
    /// The queue of a transfer-only family ([`Context::transfer_family`]).
    Transfer,
}

/// The first family that can transfer but neither draw nor compute (a copy engine), if any.
pub(crate) fn transfer_only_family(families: &[vk::QueueFamilyProperties]) -> Option<u32> {
    families
        .iter()
        .position(|f| {
            f.queue_count > 0
                && f.queue_flags.contains(vk::QueueFlags::TRANSFER)
                && !f
                    .queue_flags
                    .intersects(vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE)
        })
        .and_then(|i| u32::try_from(i).ok())
}

impl Context {
    /// The transfer-only family whose queue [`QueueId::Transfer`] names, or `None` when the
    /// context was made without [`ContextDesc::transfer_queue`](super::ContextDesc) or the
    /// device has no such family (lavapipe has none; NVIDIA has several copy-engine
    /// families, and the first is used).
    pub fn transfer_family(&self) -> Option<u32> {
        self.transfer_queue_slot().map(|(family, _)| family)
    }

    /// The family of `queue`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`queue`) when the context has no such queue.
    pub fn family_of(&self, queue: QueueId) -> Result<u32> {
        match queue {
            QueueId::Main(index) if index < self.queue_count() => Ok(self.queue_family_index()),
            QueueId::Transfer => self.transfer_family().ok_or_else(no_transfer_queue),
            QueueId::Main(index) => Err(no_main_queue(index, self.queue_count())),
        }
    }

    /// `queue`, locked for the caller's submission.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`queue`) when the context has no such queue.
    pub fn lock(&self, queue: QueueId) -> Result<QueueGuard<'_>> {
        match queue {
            QueueId::Main(index) => self.queue_at(index),
            QueueId::Transfer => self
                .transfer_queue_slot()
                .ok_or_else(no_transfer_queue)?
                .1
                .lock(self.queue_count(), Self::QUEUE_LOCK_TIMEOUT),
        }
    }

    /// Records one command buffer with `record`, submits it on `queue` and waits for it
    /// (bounded): a one-off submission, e.g. a copy on the transfer-only queue. Allocates
    /// and frees its own pool, so it is not for per-frame work.
    ///
    /// `record` gets the command buffer in the recording state; it must record only
    /// commands `queue`'s family supports (a transfer-only family: copies, fills, timestamp
    /// writes), on resources that stay alive until this returns.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`queue`) when the context has no such queue;
    /// [`Error::Timeout`] when the work does not finish within 60 s; driver errors.
    pub fn submit_and_wait_on(
        &self,
        queue: QueueId,
        record: impl FnOnce(vk::CommandBuffer),
    ) -> Result<()> {
        let mut cmd = Recorded::new(self, queue, |_, cmd| record(cmd))?;
        cmd.submit()?;
        cmd.wait(ONE_OFF_TIMEOUT)
    }
}

fn no_transfer_queue() -> Error {
    Error::invalid(
        "queue",
        "QueueId::Transfer on a context without a transfer-only queue",
        "a context made with ContextDesc::transfer_queue on a device with a transfer-only \
         family (Context::transfer_family() is Some)",
    )
}

fn no_main_queue(index: usize, count: usize) -> Error {
    Error::invalid(
        "queue",
        format!("QueueId::Main({index})"),
        format!("an index below queue_count() = {count}"),
    )
}

/// A primary command buffer recorded once and submitted any number of times on one queue
/// (one submission pending at a time), with a fence to wait on.
pub(crate) struct Recorded {
    ctx: Context,
    queue: QueueId,
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
    pending: bool,
}

impl Recorded {
    /// Allocates a command buffer for `queue`'s family and records it with `record`.
    ///
    /// `record` must record only commands the family supports, on resources that outlive
    /// every submission of this buffer.
    pub(crate) fn new(
        ctx: &Context,
        queue: QueueId,
        record: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> Result<Self> {
        let family = ctx.family_of(queue)?;
        let d = ctx.device();
        let info = vk::CommandPoolCreateInfo::default().queue_family_index(family);
        // SAFETY: valid device and create info.
        let pool = unsafe { d.create_command_pool(&info, None) }
            .map_err(|r| Error::vk("vkCreateCommandPool", r))?;
        // From here on `this` owns the pool (and what follows), so an error frees them.
        let mut this = Self {
            ctx: ctx.clone(),
            queue,
            pool,
            cmd: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            pending: false,
        };
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: valid device; the pool was just made.
        let cmds = unsafe { d.allocate_command_buffers(&alloc) }
            .map_err(|r| Error::vk("vkAllocateCommandBuffers", r))?;
        this.cmd = cmds.first().copied().unwrap_or_default();
        // SAFETY: valid device and create info.
        this.fence = unsafe { d.create_fence(&vk::FenceCreateInfo::default(), None) }
            .map_err(|r| Error::vk("vkCreateFence", r))?;
        // SAFETY: the buffer was just allocated and is in the initial state.
        unsafe { d.begin_command_buffer(this.cmd, &vk::CommandBufferBeginInfo::default()) }
            .map_err(|r| Error::vk("vkBeginCommandBuffer", r))?;
        record(d, this.cmd);
        // SAFETY: recording began above.
        unsafe { d.end_command_buffer(this.cmd) }
            .map_err(|r| Error::vk("vkEndCommandBuffer", r))?;
        Ok(this)
    }

    /// Submits the command buffer on its queue, signalling the fence.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the previous submission has not been waited for.
    pub(crate) fn submit(&mut self) -> Result<()> {
        self.submit_bracketed(None)
    }

    /// Like [`Recorded::submit`], with the buffer between `bracket`'s two timestamp
    /// buffers in the same batch (the bracket's timer must be on this queue's family).
    pub(crate) fn submit_bracketed(&mut self, bracket: Option<&Bracket>) -> Result<()> {
        if self.pending {
            return Err(Error::invalid(
                "submit",
                "the previous submission of this command buffer is still pending",
                "wait() or poll() until it completes first",
            ));
        }
        let cmds = match bracket {
            Some(b) => vec![b.before, self.cmd, b.after],
            None => vec![self.cmd],
        };
        let submit = vk::SubmitInfo::default().command_buffers(&cmds);
        let queue = self.ctx.lock(self.queue)?;
        // SAFETY: the queue is locked and belongs to the buffer's family (and the
        // bracket's, the caller's precondition); the buffer is executable and not pending
        // (checked above), the bracket's buffers are simultaneous-use; the fence is
        // unsignalled (reset when the last submission was seen complete).
        unsafe {
            self.ctx
                .device()
                .queue_submit(*queue, &[submit], self.fence)
        }
        .map_err(|r| Error::vk("vkQueueSubmit", r))?;
        self.pending = true;
        Ok(())
    }

    /// Whether the last submission has completed (then the fence is reset for the next).
    /// `true` when nothing is pending.
    pub(crate) fn poll(&mut self) -> Result<bool> {
        if !self.pending {
            return Ok(true);
        }
        let d = self.ctx.device();
        // SAFETY: the fence belongs to this device.
        let done = unsafe { d.get_fence_status(self.fence) }
            .map_err(|r| Error::vk("vkGetFenceStatus", r))?;
        if done {
            // SAFETY: the fence is signalled and nothing else uses it.
            unsafe { d.reset_fences(&[self.fence]) }.map_err(|r| Error::vk("vkResetFences", r))?;
            self.pending = false;
        }
        Ok(done)
    }

    /// Spins on [`Recorded::poll`] (no sleep) until the submission completes or `timeout`
    /// passes. For measurements where a sleep would be the thing measured.
    pub(crate) fn spin(&mut self, timeout: Duration) -> Result<()> {
        self.wait_with(timeout, |_, _| None)
    }

    /// Waits for the submission (spinning, then sleeping with the crate's backoff) until it
    /// completes or `timeout` passes.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<()> {
        self.wait_with(timeout, super::backoff)
    }

    fn wait_with(
        &mut self,
        timeout: Duration,
        pause: impl Fn(Duration, u32) -> Option<Duration>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut sleeps = 0u32;
        while !self.poll()? {
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(Error::Timeout {
                    what: format!("a command buffer on {:?}", self.queue),
                    waited: elapsed,
                });
            }
            match pause(elapsed, sleeps) {
                None => std::hint::spin_loop(),
                Some(d) => {
                    std::thread::sleep(d.min(timeout - elapsed));
                    sleeps = sleeps.saturating_add(1);
                }
            }
        }
        Ok(())
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        if let Err(e) = self.wait(DROP_TIMEOUT) {
            // Destroying the pool of a pending command buffer would be undefined behaviour.
            log::error!(
                "dropping a command buffer whose submission did not finish ({e}); leaking it"
            );
            return;
        }
        let d = self.ctx.device();
        if self.fence != vk::Fence::null() {
            // SAFETY: nothing is pending (waited above); made from `d`, destroyed once.
            unsafe { d.destroy_fence(self.fence, None) };
        }
        // SAFETY: as above; destroying the pool frees its command buffer.
        unsafe { d.destroy_command_pool(self.pool, None) };
    }
}

/// A duration in nanoseconds, saturating.
pub(super) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One queue and the thread holding its lock (0: none).
pub(super) struct QueueSlot {
    queue: Mutex<vk::Queue>,
    holder: AtomicU64,
}

/// A nonzero tag for the calling thread, to tell a re-entrant lock from a contended one.
fn thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TAG: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TAG.with(|t| *t)
}

/// A locked queue of the context ([`Context::queue_at`]): dereferences to the
/// `vk::Queue`; other submissions to it wait until it is dropped.
pub struct QueueGuard<'a> {
    queue: MutexGuard<'a, vk::Queue>,
    holder: &'a AtomicU64,
}

impl std::fmt::Debug for QueueGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("QueueGuard").field(&*self.queue).finish()
    }
}

impl std::ops::Deref for QueueGuard<'_> {
    type Target = vk::Queue;
    fn deref(&self) -> &vk::Queue {
        &self.queue
    }
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        // Cleared while the mutex is still held (the guard field drops after this).
        self.holder.store(0, Ordering::Release);
    }
}

impl QueueSlot {
    pub(super) fn new(queue: vk::Queue) -> Self {
        Self {
            queue: Mutex::new(queue),
            holder: AtomicU64::new(0),
        }
    }

    /// Locks the queue: an error when this thread already holds it, a timeout when another
    /// thread holds it longer than `timeout`. A panic while holding the lock cannot leave
    /// a `vk::Queue` half-updated, so a poisoned lock is taken over.
    pub(super) fn lock(&self, index: usize, timeout: Duration) -> Result<QueueGuard<'_>> {
        let me = thread_tag();
        if self.holder.load(Ordering::Acquire) == me {
            return Err(Error::invalid(
                "queue",
                format!("queue {index} is already locked by this thread (a QueueGuard is alive)"),
                "drop the QueueGuard from Context::queue/queue_at before calling into vkcuda",
            ));
        }
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        let queue = loop {
            match self.queue.try_lock() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if start.elapsed() < timeout => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::Timeout {
                        what: format!("locking queue {index} (another thread holds it)"),
                        waited: timeout,
                    })
                }
            }
        };
        self.holder.store(me, Ordering::Release);
        Ok(QueueGuard {
            queue,
            holder: &self.holder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(flags: vk::QueueFlags, count: u32) -> vk::QueueFamilyProperties {
        vk::QueueFamilyProperties {
            queue_flags: flags,
            queue_count: count,
            ..Default::default()
        }
    }

    #[test]
    fn the_first_copy_engine_family_is_chosen() {
        use vk::QueueFlags as F;
        // The H200's families: 0 graphics+compute+transfer, 1 transfer, 2 compute+transfer,
        // 3 transfer, 4 transfer.
        let h200 = [
            family(F::GRAPHICS | F::COMPUTE | F::TRANSFER, 16),
            family(F::TRANSFER, 2),
            family(F::COMPUTE | F::TRANSFER, 8),
            family(F::TRANSFER, 7),
            family(F::TRANSFER | F::SPARSE_BINDING, 1),
        ];
        assert_eq!(transfer_only_family(&h200), Some(1));
        // lavapipe: one graphics+compute+transfer family.
        assert_eq!(
            transfer_only_family(&[family(F::GRAPHICS | F::COMPUTE | F::TRANSFER, 1)]),
            None
        );
        // An empty family is skipped.
        assert_eq!(
            transfer_only_family(&[family(F::TRANSFER, 0), family(F::TRANSFER, 1)]),
            Some(1)
        );
    }
}
