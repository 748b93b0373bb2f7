//! [`Frame`]: the token of one frame, which enforces the order of its four steps and
//! finishes the chain with empty work if it is dropped half-way.

use std::sync::Arc;

use ash::vk;
use cudarc::driver::CudaStream;

use super::ledger::Ticket;
use super::FrameSync;
use crate::error::{Error, Result};
use crate::util;
use crate::vulkan::{Semaphore, Submission};

/// What the library knows orders step 1 or 4 (`step`) of `t` with `Commands`, for the
/// image and buffer tracking ([`Submission`]): its queue; the slot's timeline values it
/// runs after (the previous frame of the slot, which `begin` waited for on the host, and,
/// for step 4, step 1 of the frame, through CUDA's wait and signal); and the values it
/// signals, by which later uses on other queues can order themselves after it.
fn hand_off(sync: &FrameSync, t: &Ticket, step: Step) -> HandOff {
    let slot = &sync.slots[t.slot];
    let mut after = Vec::with_capacity(3);
    if let Some(previous) = t.reuses {
        after.push((slot.done.raw(), previous));
        after.extend(slot.produced.iter().map(|p| (p.raw(), previous)));
    }
    if step == Step::SubmitVulkan {
        let signals = slot.produced.iter().map(|p| (p.clone(), t.value)).collect();
        HandOff {
            queue: slot.produce_queue,
            after,
            signals,
        }
    } else {
        after.extend(slot.produced.iter().map(|p| (p.raw(), t.value)));
        HandOff {
            queue: slot.consume_queue,
            after,
            signals: vec![(slot.done.clone(), t.value)],
        }
    }
}

/// What [`hand_off`] finds.
struct HandOff {
    queue: usize,
    after: Vec<(vk::Semaphore, u64)>,
    signals: Vec<(Arc<Semaphore>, u64)>,
}

/// The steps of a frame, in the only order they may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    SubmitVulkan,
    CudaWait,
    CudaSignal,
    SubmitVulkanAfterCuda,
}

/// What the errors say the order is.
const STEP_ORDER: &str =
    "submit_vulkan -> cuda_wait -> cuda_signal -> submit_vulkan_after_cuda, each once";

impl Step {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::SubmitVulkan => "submit_vulkan",
            Self::CudaWait => "cuda_wait",
            Self::CudaSignal => "cuda_signal",
            Self::SubmitVulkanAfterCuda => "submit_vulkan_after_cuda",
        }
    }

    /// The step after this one (`None`: the frame is finished).
    pub(super) fn next(self) -> Option<Self> {
        match self {
            Self::SubmitVulkan => Some(Self::CudaWait),
            Self::CudaWait => Some(Self::CudaSignal),
            Self::CudaSignal => Some(Self::SubmitVulkanAfterCuda),
            Self::SubmitVulkanAfterCuda => None,
        }
    }
}

/// Checks that `op` is the step frame `index` expects (`expected`, `None` once finished).
fn check_step(index: u64, expected: Option<Step>, op: Step) -> Result<()> {
    match expected {
        Some(e) if e == op => Ok(()),
        Some(e) => Err(Error::invalid(
            "frame",
            format!(
                "frame {index}: {} called when {} is next",
                op.name(),
                e.name()
            ),
            STEP_ORDER,
        )),
        None => Err(Error::invalid(
            "frame",
            format!(
                "frame {index}: {} called after the frame finished",
                op.name()
            ),
            STEP_ORDER,
        )),
    }
}

/// One frame of a [`FrameSync`], from [`FrameSync::begin`]: the four steps must run in
/// order, each once, and [`Frame::submit_vulkan_after_cuda`] consumes the token.
///
/// A frame dropped before its last step is finished with empty work (empty Vulkan batches,
/// an immediate CUDA wait and signal), so its slot's chain stays whole; so is a frame leaked
/// with `mem::forget`, by the next [`FrameSync::begin`]. When finishing fails, that `begin`
/// and every later one return [`Error::Unusable`]: rebuild the `FrameSync`.
pub struct Frame<'a> {
    pub(super) sync: &'a mut FrameSync,
    pub(super) ticket: Ticket,
    /// The step that may run next (`None`: finished).
    pub(super) next: Option<Step>,
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("index", &self.ticket.index)
            .field("slot", &self.ticket.slot)
            .field("next", &self.next.map(Step::name))
            .finish()
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        self.sync.open = None;
        if let Some(step) = self.next {
            self.sync.finish(&self.ticket, step);
        }
    }
}

impl Frame<'_> {
    /// Frame number, from 0.
    pub fn index(&self) -> u64 {
        self.ticket.index
    }

    /// Its value on its slot's semaphores (`index + 1`), for [`FrameSync::wait_frame`].
    pub fn value(&self) -> u64 {
        self.ticket.value
    }

    /// The frame numbers it carries across: `index * K .. (index + 1) * K` with K the
    /// frames per crossing ([`FrameSyncDesc::frames_per_crossing`](super::FrameSyncDesc::frames_per_crossing); K = 1 by default).
    pub fn frames(&self) -> std::ops::Range<u64> {
        self.sync.frames_of(self.ticket.index)
    }

    /// Its slot, `index % frames_in_flight`: index per-slot resources with it.
    pub fn slot(&self) -> usize {
        self.ticket.slot
    }

    /// The Vulkan queue indices ([`vulkan::Context::queue_at`](crate::vulkan::Context::queue_at)) of its producing (step 1)
    /// and consuming (step 4) batches; record its command buffers for
    /// [`vulkan::Context::queue_family_index`](crate::vulkan::Context::queue_family_index).
    pub fn queues(&self) -> (usize, usize) {
        let slot = &self.sync.slots[self.ticket.slot];
        (slot.produce_queue, slot.consume_queue)
    }

    /// Advances to the step after `op`, which must be the next one.
    fn advance(&mut self, op: Step) {
        self.next = op.next();
        self.sync.open = self.next.map(|s| (self.ticket, s));
    }

    /// Step 1, safely: submits `commands` (the Vulkan work CUDA will read, typically ending
    /// with [`util::Commands::release_image`]) on the frame's producing queue, followed by
    /// the crossing to CUDA.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`frame`) out of order, (`commands`) when they were made on
    /// another context; as [`util::Commands::submit`].
    pub fn submit_commands(&mut self, commands: &mut util::Commands) -> Result<()> {
        self.submit_commands_at(Step::SubmitVulkan, commands)
    }

    /// Step 4, safely: submits `commands` (typically starting with
    /// [`util::Commands::acquire_image`]) on the frame's consuming queue after CUDA's
    /// signal, and completes the frame. Returns the frame's value.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`frame`) out of order, (`commands`) when they were made on
    /// another context; as [`util::Commands::submit`].
    pub fn submit_commands_after_cuda(mut self, commands: &mut util::Commands) -> Result<u64> {
        self.submit_commands_at(Step::SubmitVulkanAfterCuda, commands)?;
        Ok(self.ticket.value)
    }

    /// Step 1 or 4 (`step`) with `commands`, checked against the order and the context.
    fn submit_commands_at(&mut self, step: Step, commands: &mut util::Commands) -> Result<()> {
        check_step(self.ticket.index, self.next, step)?;
        self.sync.vk.check_owns("commands", commands.context())?;
        let (sync, ticket) = (&mut *self.sync, &self.ticket);
        let h = hand_off(sync, ticket, step);
        let order = Submission {
            queue: h.queue,
            after: &h.after,
        };
        commands.submit_via(sync.timeout, &order, h.signals, |cmds, fence| {
            // `cmds` were just recorded by `Commands` for this device's family and stay
            // alive (with everything they use) until `fence`, which only they use, signals;
            // no caller semaphores are added.
            if step == Step::SubmitVulkan {
                // SAFETY: as said above.
                unsafe { sync.submit_produce(ticket, cmds, &[], &[], fence) }
            } else {
                // SAFETY: as said above.
                unsafe { sync.submit_consume(ticket, cmds, &[], &[], fence) }
            }
        })?;
        self.advance(step);
        Ok(())
    }

    /// Step 1: submits `command_buffers` (the Vulkan work CUDA will read) on the frame's
    /// producing queue ([`Frame::queues`]), waiting on `waits` and signalling `signals` like
    /// [`vulkan::Context::submit_to`](crate::vulkan::Context::submit_to), followed by the crossing to CUDA.
    ///
    /// # Safety
    /// As [`vulkan::Context::submit_to`](crate::vulkan::Context::submit_to) for the caller's command buffers, semaphores and
    /// fence. In particular each of `waits` will be signalled (or the frame, and every
    /// later frame of its queue, hangs until the timeout reports it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`frame`) out of order; as
    /// [`vulkan::Context::submit_to`](crate::vulkan::Context::submit_to). After an error the step may be retried.
    pub unsafe fn submit_vulkan(
        &mut self,
        command_buffers: &[vk::CommandBuffer],
        waits: &[(&Semaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&Semaphore, u64)],
        fence: vk::Fence,
    ) -> Result<()> {
        check_step(self.ticket.index, self.next, Step::SubmitVulkan)?;
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.sync
                .submit_produce(&self.ticket, command_buffers, waits, signals, fence)
        }?;
        self.advance(Step::SubmitVulkan);
        Ok(())
    }

    /// Step 2: makes the frame's CUDA stream wait for step 1, and returns that stream:
    /// launch the frame's kernels on it, then call [`Frame::cuda_signal`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`frame`) out of order (before step 1 there is nothing to
    /// wait for); CUDA errors.
    pub fn cuda_wait(&mut self) -> Result<Arc<CudaStream>> {
        check_step(self.ticket.index, self.next, Step::CudaWait)?;
        let stream = self.sync.enqueue_cuda_wait(&self.ticket)?;
        self.advance(Step::CudaWait);
        Ok(stream)
    }

    /// Step 3: the crossing back to Vulkan, after everything enqueued so far on the
    /// frame's stream.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`frame`) out of order; CUDA errors. When the error came
    /// after the signal was enqueued (recording its completion event failed), the step
    /// counts as done and the next one is [`Frame::submit_vulkan_after_cuda`]: a retry would
    /// signal the value twice.
    pub fn cuda_signal(&mut self) -> Result<()> {
        check_step(self.ticket.index, self.next, Step::CudaSignal)?;
        let enqueued = self.sync.enqueue_cuda_signal(&self.ticket);
        let (slot, value) = (self.ticket.slot, self.ticket.value);
        if enqueued.is_ok() || self.sync.crossing.signalled(slot, value) {
            self.advance(Step::CudaSignal);
        }
        enqueued
    }

    /// Step 4: submits `command_buffers` (the Vulkan work that reads CUDA's results) on the
    /// frame's consuming queue ([`Frame::queues`]), waiting for step 3 (at `ALL_COMMANDS`) and on `waits`, then signalling
    /// `signals` and the frame's completion. Returns the frame's value
    /// ([`FrameSync::wait_frame`]).
    ///
    /// # Safety
    /// As [`Frame::submit_vulkan`].
    ///
    /// # Errors
    /// As [`Frame::submit_vulkan`]; the frame is then finished with an empty batch.
    pub unsafe fn submit_vulkan_after_cuda(
        mut self,
        command_buffers: &[vk::CommandBuffer],
        waits: &[(&Semaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&Semaphore, u64)],
        fence: vk::Fence,
    ) -> Result<u64> {
        check_step(self.ticket.index, self.next, Step::SubmitVulkanAfterCuda)?;
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.sync
                .submit_consume(&self.ticket, command_buffers, waits, signals, fence)
        }?;
        self.advance(Step::SubmitVulkanAfterCuda);
        Ok(self.ticket.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_in_order_once() {
        let order = [
            Step::SubmitVulkan,
            Step::CudaWait,
            Step::CudaSignal,
            Step::SubmitVulkanAfterCuda,
        ];
        let mut next = Some(Step::SubmitVulkan);
        for (i, &op) in order.iter().enumerate() {
            // Every other step is refused here, naming the one that is next.
            for &other in order.iter().filter(|&&o| o != op) {
                let e = check_step(7, next, other).unwrap_err();
                let text = e.to_string();
                assert!(text.contains("frame 7"), "{text}");
                assert!(text.contains(&format!("{} is next", op.name())), "{text}");
            }
            check_step(7, next, op).unwrap();
            next = op.next();
            assert_eq!(next.is_none(), i == order.len() - 1);
        }
        let e = check_step(7, None, Step::CudaWait).unwrap_err();
        assert!(e.to_string().contains("after the frame finished"), "{e}");
    }
}
