//! Queue submission: one batch that waits on and signals semaphores, with the values and
//! the device of every semaphore checked before `vkQueueSubmit`.

use ash::vk;

use super::{Context, Semaphore, SemaphoreKind};
use crate::error::{Error, Result};
use crate::timeline::HighWater;

impl Context {
    /// [`Context::submit_to`] queue 0 ([`Context::queue`]).
    ///
    /// # Safety
    /// As [`Context::submit_to`].
    ///
    /// # Errors
    /// As [`Context::submit_to`].
    pub unsafe fn submit(
        &self,
        command_buffers: &[vk::CommandBuffer],
        waits: &[(&Semaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&Semaphore, u64)],
        fence: vk::Fence,
    ) -> Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.submit_to(0, command_buffers, waits, signals, fence) }
    }

    /// Submits one batch on queue `queue` ([`Context::queue_at`], locked for the call) that
    /// waits on `waits` (semaphore, value, stages that wait) and then signals `signals`
    /// (semaphore, value), with `VkTimelineSemaphoreSubmitInfo` filled in. Binary
    /// semaphores take the value 0. `fence` (or `vk::Fence::null()`) is signalled when the
    /// batch completes. An empty `command_buffers` is allowed: a pure wait/signal batch.
    ///
    /// Checked before submitting: every semaphore belongs to this device, binary
    /// semaphores are given 0, wait stage masks are non-empty, no timeline is signalled
    /// twice, and each timeline signal value is above the semaphore's current value (one
    /// counter read per timeline signal) and the highest value already signalled or
    /// submitted through vkcuda (host, queue or CUDA signals), and within
    /// `maxTimelineSemaphoreValueDifference` of the current value. The check and the
    /// submission happen under the timelines' locks, so concurrent signals cannot
    /// interleave between them.
    ///
    /// # Safety
    /// 1. Each command buffer was allocated from this device, for this queue's family, is
    ///    in the executable state and not pending (unless recorded with
    ///    `SIMULTANEOUS_USE`); everything it uses stays alive until the batch completes.
    /// 2. `fence` is null or an unsignalled fence of this device that no other submission
    ///    uses.
    /// 3. Every semaphore outlives the batch's execution (dropping one before it completes
    ///    destroys a semaphore in use).
    /// 4. Every wait will be satisfied: a binary semaphore has a signal submitted before
    ///    this call and no other waiter; a timeline value will be signalled by the host,
    ///    a queue or CUDA. Otherwise the queue hangs.
    /// 5. Timeline signal values are also above every value a pending operation that vkcuda
    ///    does not see (the caller's own submissions, another process) will signal.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`waits` or `signals`, naming the entry) when a check
    /// above fails, or (`queue`) when `queue` is not below [`Context::queue_count`]:
    /// nothing was submitted. [`Error::Vulkan`] (device lost, ...) or
    /// [`Error::OutOfMemory`] from `vkQueueSubmit`.
    pub unsafe fn submit_to(
        &self,
        queue: usize,
        command_buffers: &[vk::CommandBuffer],
        waits: &[(&Semaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&Semaphore, u64)],
        fence: vk::Fence,
    ) -> Result<()> {
        for (i, &(sem, value, stages)) in waits.iter().enumerate() {
            self.check_submit_entry("waits", i, sem, value)?;
            if stages.is_empty() {
                return Err(Error::invalid(
                    "waits",
                    format!("entry {i}: empty wait stage mask"),
                    "at least one stage (e.g. ALL_COMMANDS)",
                ));
            }
        }
        for (i, &(sem, value)) in signals.iter().enumerate() {
            self.check_submit_entry("signals", i, sem, value)?;
        }
        // Held until the batch is submitted: no other signal of these timelines can be
        // checked and submitted in between (lock order: these, then the queue's).
        let timelines: Vec<_> = signals
            .iter()
            .enumerate()
            .filter(|(_, s)| s.0.kind() == SemaphoreKind::Timeline)
            .map(|(i, &(sem, value))| (i, sem.high_water(), value))
            .collect();
        let batch = HighWater::lock_batch("signals", &timelines)?;
        for &(i, _, value) in &timelines {
            signals[i].0.check_signal_value("signals", Some(i), value)?;
        }
        let wait_semaphores: Vec<vk::Semaphore> = waits.iter().map(|w| w.0.raw()).collect();
        let wait_values: Vec<u64> = waits.iter().map(|w| w.1).collect();
        let wait_stages: Vec<vk::PipelineStageFlags> = waits.iter().map(|w| w.2).collect();
        let signal_semaphores: Vec<vk::Semaphore> = signals.iter().map(|s| s.0.raw()).collect();
        let signal_values: Vec<u64> = signals.iter().map(|s| s.1).collect();
        let mut timeline = vk::TimelineSemaphoreSubmitInfo::default()
            .wait_semaphore_values(&wait_values)
            .signal_semaphore_values(&signal_values);
        let submit = vk::SubmitInfo::default()
            .wait_semaphores(&wait_semaphores)
            .wait_dst_stage_mask(&wait_stages)
            .command_buffers(command_buffers)
            .signal_semaphores(&signal_semaphores)
            .push_next(&mut timeline);
        let queue = self.queue_at(queue)?;
        // SAFETY: the queue is locked; the semaphores belong to this device and their
        // values were checked; the command buffers, fence and lifetimes are the caller's
        // preconditions 1-5.
        unsafe { self.device().queue_submit(*queue, &[submit], fence) }
            .map_err(|r| Error::vk("vkQueueSubmit", r))?;
        batch.commit();
        Ok(())
    }

    fn check_submit_entry(
        &self,
        arg: &'static str,
        i: usize,
        sem: &Semaphore,
        value: u64,
    ) -> Result<()> {
        self.check_owns(arg, sem.context()).map_err(|e| match e {
            Error::InvalidArgument {
                arg,
                problem,
                expected,
            } => Error::InvalidArgument {
                arg,
                problem: format!("entry {i}: the semaphore was {problem}"),
                expected,
            },
            other => other,
        })?;
        if sem.kind() == SemaphoreKind::Binary && value != 0 {
            return Err(Error::invalid(
                arg,
                format!("entry {i}: value {value} for a binary semaphore"),
                "0 (binary semaphores carry no value)",
            ));
        }
        Ok(())
    }
}
