//! [`FrameSync`]: N frames in flight from Vulkan to CUDA and back (design in its docs).
//!
//! * `desc.rs`: the mode, queue layout and stream count, and their checks;
//! * `ledger.rs`: which frame comes next, in which slot, after which earlier frame;
//! * `frame.rs`: the [`Frame`] token and the order of its steps;
//! * `crossing.rs`: the crossing objects, one enum variant per mode;
//! * `relay.rs`: the low-latency mode's host relay;
//! * here: [`FrameSync`] itself, its slots, the steps' submissions and the drain.

mod crossing;
mod desc;
mod frame;
mod ledger;
mod relay;
mod trace;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ash::vk;
use cudarc::driver::CudaStream;

use super::check_same_device;
use crate::cuda;
use crate::error::{Error, Result};
use crate::vulkan::{self, Semaphore, SemaphoreKind};
use crossing::Crossing;
use desc::{check_counts, check_mode, slot_queues};
pub use desc::{FrameSyncDesc, QueueLayout, SyncMode};
pub use frame::Frame;
use frame::Step;
use ledger::{Ledger, Ticket};
pub use trace::FrameTrace;
use trace::{bracketed, Tracer};

/// One frame slot.
struct Slot {
    /// Queue of step 1.
    produce_queue: usize,
    /// Queue of step 4.
    consume_queue: usize,
    stream: Arc<CudaStream>,
    /// Vulkan-only timeline, signalled with the frame value by the frame's last batch.
    /// (Shared with the tracked state of the resources the frame used: see `frame.rs`.)
    done: Arc<Semaphore>,
    /// Vulkan-only timeline signalled by step 1 when it runs on another queue than step 4
    /// (queue order then says nothing about step 1 having finished).
    produced: Option<Arc<Semaphore>>,
}

/// N frames in flight from Vulkan to CUDA and back.
///
/// Every frame is one chain: a Vulkan batch produces data, a CUDA stream waits for it, works,
/// signals, and a second Vulkan batch waits for CUDA and consumes the result.
///
/// ```text
/// begin()                   waits (host, bounded) until frame i-N has finished: its slot is free
/// submit_vulkan(cmds)       producing Vulkan batch, then the crossing to CUDA
/// cuda_wait() -> stream     the frame's CUDA stream waits for that crossing
/// (your kernels on stream)
/// cuda_signal()             the crossing back to Vulkan, after the kernels
/// submit_vulkan_after_cuda  consuming Vulkan batch that waits for it, then marks the frame done
/// ```
///
/// # Why this shape
/// The crossing itself is the cost: a cross-API semaphore wait takes far longer to pass than
/// the work of a small frame, even when its value is already reached, and a batch waiting on
/// a semaphore holds up every later batch of its queue, so a chain through one semaphore
/// pair, one queue and one stream runs at one crossing per frame whatever the number of
/// frames in flight. (Measured figures: `benches/RESULTS.md` in the repository, "Frame
/// hand-off".) So:
///
/// * **Slots.** Frame `i` uses slot `i % N`. Each slot has its own crossing objects and its
///   own Vulkan-only completion timeline (`done`), signalled by the frame's consuming batch;
///   [`FrameSync::begin`] returns only once the slot's previous frame is done, so per-slot
///   resources (what a frame reads and writes) are free to reuse from then on.
///   [`FrameSync::begin`] and [`FrameSync::wait_frame`] poll `done` with the fast host wait
///   ([`vulkan::Semaphore::wait`]), not the driver's sleeping `vkWaitSemaphores`.
/// * **Queues and streams ([`QueueLayout`], [`FrameSyncDesc::lanes`]), defaults chosen by
///   measurement** (every layout and stream count of both modes, in `benches/RESULTS.md`).
///   The semaphore mode defaults to `Split` with one stream: a consuming batch waiting for
///   CUDA never holds up the next frame's production, so each crossing overlaps the next
///   frames'. With one frame in flight there is nothing to overlap and a second queue only
///   adds latency, so it uses `Single` then. The low-latency mode defaults to `Single` with
///   one stream: its crossings are short, and layouts with batches waiting on several queues
///   at once were several times slower on the measured driver. With one stream (both defaults)
///   frames' CUDA work runs in frame order; with `Single`, Vulkan work too. What two frames
///   in flight share (anything not per slot) needs your own synchronisation whenever their
///   batches can run at the same time (`Split`, `PerSlot`, or several streams).
/// * **One timeline per direction per slot**, not one shared timeline: each semaphore has
///   exactly one signaller (Vulkan for `to_cuda`, CUDA for `to_vulkan`) and one waiter, so
///   its counter says how far that side got, the validation layer sees every Vulkan signal
///   of the Vulkan-signalled one, and neither API ever has to stay below a value the other
///   signals. (`Split` adds a Vulkan-only `produced` timeline per slot, since queue order no
///   longer says that the producing batch has finished.)
/// * **Values**: frame `i` (from 0) has value `i + 1` on every semaphore of its slot, so a
///   slot's semaphores see `v, v + N, v + 2N, ...`: monotonic, 64-bit, never wrapping
///   (checked: the 2^64-1st frame is an error). A value is waited for only after the
///   operation that signals it has been submitted: the [`Frame`] token enforces the step
///   order, and finishes the chain with empty work if it is dropped half-way, so no later
///   wait can target a value nobody will signal. Host waits are bounded
///   ([`FrameSyncDesc::timeout`], then [`Error::Timeout`]).
///
/// # Modes
/// [`SyncMode::Semaphores`] (the default) crosses with exported timeline semaphores
/// imported into CUDA: the spec-defined path, with the memory dependencies of a semaphore
/// signal/wait pair on both sides. Needs `VK_KHR_external_semaphore_fd`.
///
/// [`SyncMode::LowLatency`] avoids semaphore waits across the APIs:
/// * **Vulkan → CUDA**: after your command buffers the batch runs a pipeline barrier
///   (`ALL_COMMANDS`/`MEMORY_WRITE` → `TRANSFER`/`TRANSFER_WRITE`, whose first scope is every
///   earlier command of the queue) and `vkCmdFillBuffer` of the frame value's low 32 bits
///   into the slot's word of a small exported buffer ("mailbox") imported into CUDA; the
///   CUDA stream waits with `cuStreamWaitValue32(word, value, GEQ)` (cyclic compare, so the
///   32-bit word never wraps wrongly: writer and waiter are at most N apart).
/// * **CUDA → Vulkan**: `cuStreamWriteValue32` of the value into page-locked, device-mapped
///   host memory; the default flags put a stream-scoped system fence before the write, so
///   the kernels' writes are visible before the value. A host thread of the `FrameSync`
///   ("relay") polls the words and signals the slot's Vulkan-only timeline with
///   `vkSignalSemaphore`; the consuming batch waits on that timeline.
///
/// Its hand-off latency and throughput against the semaphore mode are measured by
/// `benches/suite/sync.rs` and recorded in `benches/RESULTS.md`.
///
/// Guarantees and limits of the low-latency mode:
/// * Memory ordering rests on the same-device cache hierarchy, not on a cross-API promise:
///   neither spec defines how a Vulkan transfer write orders against a CUDA memory-op poll.
///   Vulkan's writes are made available (device domain, the GPU's L2) by the barrier before
///   the mailbox write, and CUDA work starts after its wait with fresh L1s; CUDA's writes
///   are fenced system-wide before the host sees the word, and the host signal + semaphore
///   wait gives Vulkan the usual visibility operation. `tests/suite/sync.rs` proves the order
///   by data over thousands of frames; the semaphore mode remains the default and the one
///   to use where the spec's guarantees are required.
/// * Needs the V2 stream memory operations (driver 11.7+, checked:
///   [`cuda::Context::check_stream_memops`]), but no exportable semaphores.
/// * The relay spins one host core while frames are pending, for 200 us without progress,
///   then sleeps 20 us to 1 ms at a time; it parks when nothing is pending. With several
///   frames per crossing (long CUDA work) a CUDA host function (`cuLaunchHostFunc`,
///   enqueued after each crossing's write) wakes it instead, so the crossing reaches Vulkan
///   one wake-up after CUDA finished rather than up to ~1 ms later. With one frame per
///   crossing it does not: a host function costs a crossing about as much as the switch
///   itself on the H200 (benches/RESULTS.md).
/// * A Vulkan batch that never executes (device lost) leaves the CUDA stream waiting on the
///   mailbox for ever; the drop then reports the timeout and leaks the objects the GPU may
///   still use rather than freeing them.
/// * The validation layer cannot see the fill → wait-value ordering (it sees no cross-API
///   dependency at all), but it has nothing to check there either: no semaphore crosses.
///
/// # Drop
/// Dropping waits (bounded by the timeout) for every frame to finish, for every queue the
/// frames used to drain (an empty batch with a fence, so earlier batches are retired) and for
/// the streams, then frees. If that wait fails it prints the error and leaks the
/// semaphores, streams and memory the GPU may still use.
///
/// # Example
/// With [`util::Commands`](crate::util::Commands) no `unsafe` is needed: record into one `Commands` per slot and
/// direction, submit with [`Frame::submit_commands`] and [`Frame::submit_commands_after_cuda`]
/// (`dev/src/pipeline.rs` does). With the caller's own command buffers:
/// ```no_run
/// # fn main() -> vkcuda::Result<()> {
/// # let (vk, cu): (vkcuda::vulkan::Context, vkcuda::cuda::Context) = todo!();
/// # let (render, present): (vkcuda::ash::vk::CommandBuffer, vkcuda::ash::vk::CommandBuffer) = todo!();
/// use vkcuda::interop::{FrameSync, FrameSyncDesc};
///
/// let mut frames = FrameSync::new(&vk, &cu, &FrameSyncDesc::new(3))?;
/// for _ in 0..100 {
///     let mut f = frames.begin()?; // waits only while frame i-3 is unfinished
///     // SAFETY: `render` is executable, for the context's queue family, and its resources
///     // (this slot's) outlive the batch.
///     unsafe { f.submit_vulkan(&[render], &[], &[], Default::default()) }?;
///     let stream = f.cuda_wait()?;
///     // ... launch kernels on `stream` ...
///     f.cuda_signal()?;
///     // SAFETY: as above, for `present`.
///     unsafe { f.submit_vulkan_after_cuda(&[present], &[], &[], Default::default()) }?;
/// }
/// frames.wait_idle(std::time::Duration::from_secs(1))?;
/// # Ok(()) }
/// ```
pub struct FrameSync {
    slots: Vec<Slot>,
    /// The mode's crossing objects of every slot.
    crossing: Crossing,
    ledger: Ledger,
    /// Queue layout and stream count in effect.
    layout: (QueueLayout, usize),
    timeout: Duration,
    /// Frames each [`Frame`] carries across ([`FrameSyncDesc::frames_per_crossing`]).
    frames_per_crossing: usize,
    /// The timeline, when [`FrameSyncDesc::trace`] is on.
    tracer: Option<Mutex<Tracer>>,
    /// Signalled by the empty batch that drains each queue on drop.
    drain_fence: vk::Fence,
    /// The frame begun last and its next step, while unfinished: set by `begin`, kept up
    /// to date by the [`Frame`], cleared when it finishes or drops. Still set at the next
    /// `begin` only if the frame was leaked (`mem::forget`): `begin` then finishes it.
    open: Option<(Ticket, Step)>,
    /// Why a frame's chain could not be finished: its slot would never become free, so
    /// every later `begin` refuses with [`Error::Unusable`].
    stuck: Option<String>,
    vk: vulkan::Context,
}

impl std::fmt::Debug for FrameSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSync")
            .field("frames_in_flight", &self.ledger.frames_in_flight)
            .field("mode", &self.mode())
            .field("frames_begun", &self.ledger.begun)
            .finish_non_exhaustive()
    }
}

impl FrameSync {
    /// Most frames in flight.
    pub const MAX_FRAMES_IN_FLIGHT: usize = desc::MAX_FRAMES_IN_FLIGHT;

    /// Most frames per crossing ([`FrameSyncDesc::frames_per_crossing`]).
    pub const MAX_FRAMES_PER_CROSSING: usize = desc::MAX_FRAMES_PER_CROSSING;

    /// Creates the streams ([`FrameSyncDesc::layout`]) and the slots: per slot a producing
    /// and a consuming queue index, a Vulkan-only completion timeline, and the crossing
    /// objects of `desc.mode` (two shared timelines; or a command buffer, a mailbox word and
    /// a relay timeline).
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `cu` is not on `vk`'s GPU (`cu`),
    ///   `desc.frames_in_flight` is outside `1..=MAX_FRAMES_IN_FLIGHT`, or the stream count
    ///   outside `1..=frames_in_flight` (`desc.streams`).
    /// * [`Error::MissingExtension`]: [`SyncMode::Semaphores`] on a device without
    ///   `VK_KHR_external_semaphore_fd`.
    /// * [`Error::Unsupported`]: [`SyncMode::LowLatency`] with a driver without the V2
    ///   stream memory operations; `vk` has no queue of its own (it shares a wgpu device's,
    ///   [`vulkan::Context::queue_count`] is 0).
    /// * Creation failures of the semaphores, streams, buffer, host memory or thread.
    pub fn new(vk: &vulkan::Context, cu: &cuda::Context, desc: &FrameSyncDesc) -> Result<Self> {
        check_same_device(vk, cu)?;
        if vk.queue_count() == 0 {
            return Err(vulkan::no_queue());
        }
        let (layout, stream_count) = desc.layout();
        check_counts(
            desc.frames_in_flight,
            stream_count,
            desc.frames_per_crossing,
        )?;
        check_mode(desc.mode, vk.can_export_semaphore_fds(), || {
            cu.check_stream_memops()
        })?;
        let n = desc.frames_in_flight;
        // SAFETY: valid device and create info.
        let drain_fence = unsafe {
            vk.device()
                .create_fence(&vk::FenceCreateInfo::default(), None)
        }
        .map_err(|r| Error::vk("vkCreateFence", r))?;
        // From here on, a failure drops `sync`, which frees what was made so far.
        let mut sync = Self {
            slots: Vec::with_capacity(n),
            crossing: Crossing::new(desc.mode, vk, cu, n, desc.frames_per_crossing > 1)?,
            ledger: Ledger::new(n),
            layout: (layout, stream_count),
            timeout: desc.timeout,
            frames_per_crossing: desc.frames_per_crossing,
            tracer: None,
            drain_fence,
            open: None,
            stuck: None,
            vk: vk.clone(),
        };
        let streams = (0..stream_count)
            .map(|_| cu.new_stream())
            .collect::<Result<Vec<_>>>()?;
        if desc.trace {
            sync.tracer = Some(Mutex::new(Tracer::new(vk, cu, &streams, n)?));
        }
        for slot in 0..n {
            let (produce_queue, consume_queue) = slot_queues(layout, slot, vk.queue_count());
            let produced = (produce_queue != consume_queue)
                .then(|| Semaphore::local(vk, SemaphoreKind::Timeline, 0).map(Arc::new))
                .transpose()?;
            sync.slots.push(Slot {
                produce_queue,
                consume_queue,
                stream: streams[slot % stream_count].clone(),
                done: Arc::new(Semaphore::local(vk, SemaphoreKind::Timeline, 0)?),
                produced,
            });
        }
        Ok(sync)
    }

    /// Starts the next frame: waits (on the host, spinning then sleeping, at most the
    /// timeout) until the frame that last used its slot, `N` frames earlier, has finished,
    /// so everything that frame used may be reused.
    ///
    /// # Errors
    /// * [`Error::Timeout`] naming the frame waited for; no frame was begun, `begin` may be
    ///   called again.
    /// * [`Error::Unusable`] once a frame's chain could not be finished (a frame dropped
    ///   half-way, or leaked with `mem::forget`, is finished with empty work, and a CUDA or
    ///   Vulkan error stopped that): its slot would never become free. Drop this
    ///   `FrameSync` and create a new one.
    /// * The failure of the low-latency relay, once.
    /// * [`Error::InvalidArgument`] (`frame`) after 2^64 - 2 frames.
    pub fn begin(&mut self) -> Result<Frame<'_>> {
        if let Some((ticket, step)) = self.open.take() {
            // The previous frame was leaked without running its drop: finish it now.
            self.finish(&ticket, step);
        }
        if let Some(reason) = &self.stuck {
            return Err(Error::Unusable {
                what: "FrameSync",
                reason: reason.clone(),
            });
        }
        self.crossing.take_error()?;
        let started = crate::trace::now_ns();
        let ticket = self.ledger.peek()?;
        if let Some(previous) = ticket.reuses {
            let slot = &self.slots[ticket.slot];
            let deadline = Deadline::after(self.timeout);
            let produced = slot
                .produced
                .as_ref()
                .map_or(Ok(()), |p| p.wait(previous, deadline.left()));
            produced
                .and_then(|()| slot.done.wait(previous, deadline.left()))
                .map_err(|e| match e {
                    Error::Timeout { what, waited } => Error::Timeout {
                        what: format!(
                            "frame {} (value {previous}, slot {}) to finish before frame {} \
                             reuses its slot: {what}",
                            ticket.index - self.ledger.n(),
                            ticket.slot,
                            ticket.index
                        ),
                        waited,
                    },
                    other => other,
                })?;
        }
        if let Some(mut tracer) = self.tracer() {
            // Every crossing up to the one this slot last carried has finished.
            if let Some(done) = ticket.index.checked_sub(self.ledger.n()) {
                tracer.harvest(done, self.timeout);
            }
            tracer.host_step("begin (wait for the slot)", started, ticket.index);
        }
        self.ledger.commit(&ticket);
        self.open = Some((ticket, Step::SubmitVulkan));
        Ok(Frame {
            sync: self,
            ticket,
            next: Some(Step::SubmitVulkan),
        })
    }

    /// Waits on the host (at most `timeout`) until the frame with `value`
    /// ([`Frame::value`]) has finished.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`value`) when no frame with that value has begun (nobody
    /// would signal it); [`Error::Timeout`]; [`Error::Vulkan`] from the counter read.
    pub fn wait_frame(&self, value: u64, timeout: Duration) -> Result<()> {
        self.ledger.check_value(value)?;
        self.slots[self.ledger.slot_of(value)]
            .done
            .wait(value, timeout)
    }

    /// Waits on the host (at most `timeout` in all) until every frame begun so far has
    /// finished.
    ///
    /// # Errors
    /// As [`FrameSync::wait_frame`].
    pub fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Deadline::after(timeout);
        for (s, slot) in self.slots.iter().enumerate() {
            if let Some(last) = self.ledger.last_in_slot(s) {
                slot.done.wait(last, deadline.left())?;
            }
        }
        Ok(())
    }

    /// Frames in flight (slots).
    pub fn frames_in_flight(&self) -> usize {
        self.ledger.frames_in_flight
    }

    /// Frames each [`Frame`] carries across ([`FrameSyncDesc::frames_per_crossing`]).
    pub fn frames_per_crossing(&self) -> usize {
        self.frames_per_crossing
    }

    /// The crossing mode.
    pub fn mode(&self) -> SyncMode {
        self.crossing.mode()
    }

    /// How many frames have begun (the value of the last one).
    pub fn frames_begun(&self) -> u64 {
        self.ledger.begun
    }

    /// The queue layout and stream count in effect ([`FrameSyncDesc::layout`]).
    pub fn layout(&self) -> (QueueLayout, usize) {
        self.layout
    }

    /// The timeline recorded so far ([`FrameSyncDesc::trace`]), after waiting (at most
    /// `timeout`) for every frame begun to finish; `None` when tracing is off. Tracing
    /// ends with this call.
    ///
    /// # Errors
    /// As [`FrameSync::wait_idle`].
    pub fn take_trace(&mut self, timeout: Duration) -> Result<Option<FrameTrace>> {
        if self.tracer.is_none() {
            return Ok(None);
        }
        self.wait_idle(timeout)?;
        let Some(tracer) = self.tracer.take() else {
            return Ok(None);
        };
        let mut tracer = tracer.into_inner().unwrap_or_else(|p| p.into_inner());
        tracer.harvest(u64::MAX, timeout);
        Ok(Some(tracer.finish()))
    }

    /// The frame numbers crossing `index` carries ([`Frame::frames`]).
    fn frames_of(&self, index: u64) -> std::ops::Range<u64> {
        let k = self.frames_per_crossing as u64;
        let first = index.saturating_mul(k);
        first..first.saturating_add(k)
    }

    /// The tracer, locked, when tracing is on.
    fn tracer(&self) -> Option<MutexGuard<'_, Tracer>> {
        self.tracer
            .as_ref()
            .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Finishes the chain of frame `t` from `step` with empty work (a frame dropped
    /// half-way or leaked). When that fails the slot is stuck: recorded for `begin`.
    fn finish(&mut self, t: &Ticket, step: Step) {
        match self.complete(t, step) {
            Ok(None) => {}
            Ok(Some(late)) => log::warn!("FrameSync: frame {} finished, but: {late}", t.index),
            Err(e) => {
                log::error!("FrameSync: frame {} could not be finished: {e}", t.index);
                self.stuck.get_or_insert_with(|| {
                    format!(
                        "frame {} (slot {}) could not be finished ({e}), so its slot never \
                         becomes free",
                        t.index, t.slot
                    )
                });
            }
        }
    }

    /// Step 1 of `t`: the Vulkan batch, then the crossing to CUDA.
    ///
    /// # Safety
    /// As [`Frame::submit_vulkan`].
    unsafe fn submit_produce(
        &self,
        t: &Ticket,
        command_buffers: &[vk::CommandBuffer],
        waits: &[(&Semaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&Semaphore, u64)],
        fence: vk::Fence,
    ) -> Result<()> {
        let slot = &self.slots[t.slot];
        // SAFETY: the slot's previous frame finished (`begin` waited for it).
        let extra = unsafe { self.crossing.produce(t.slot, t.value) }?;
        let started = crate::trace::now_ns();
        let frames = self.frames_of(t.index);
        let bracket = self
            .tracer()
            .and_then(|mut tr| tr.produce(t.index, frames, slot.produce_queue));
        let all = bracketed(
            bracket,
            command_buffers.iter().copied().chain(extra.command_buffer),
        );
        let mut all_signals = Vec::with_capacity(signals.len() + 2);
        all_signals.extend(extra.signal.map(|s| (s, t.value)));
        all_signals.extend(slot.produced.iter().map(|p| (&**p, t.value)));
        all_signals.extend_from_slice(signals);
        // SAFETY: the caller's preconditions cover its command buffers, waits, signals and
        // fence; the crossing's command buffer and the timer's brackets were recorded for
        // this family, and they and the slot's semaphores live as long as `self`, whose
        // drop drains the queue first.
        let r = unsafe {
            self.vk
                .submit_to(slot.produce_queue, &all, waits, &all_signals, fence)
        };
        self.traced(r, bracket, "submit produce", started, t.index)
    }

    /// Ends a traced submission: takes the bracket back if it failed, and records the host
    /// step.
    fn traced(
        &self,
        r: Result<()>,
        bracket: Option<vulkan::Bracket>,
        step: &str,
        started: u64,
        index: u64,
    ) -> Result<()> {
        if let Some(mut tracer) = self.tracer() {
            if r.is_err() {
                tracer.unsubmitted(bracket);
            }
            tracer.host_step(step, started, index);
        }
        r
    }

    /// Step 2 of `t`: the slot's stream waits for step 1's crossing.
    fn enqueue_cuda_wait(&self, t: &Ticket) -> Result<Arc<CudaStream>> {
        let slot = &self.slots[t.slot];
        // SAFETY: step 1 was submitted (checked by the frame); `self` synchronises the
        // streams in its drop before the crossing goes.
        unsafe { self.crossing.wait(t.slot, &slot.stream, t.value) }?;
        if let Some(mut tracer) = self.tracer() {
            tracer.cuda_begin(t.index, t.slot % self.layout.1);
        }
        Ok(slot.stream.clone())
    }

    /// Step 3 of `t`: the crossing back to Vulkan, after the stream's work.
    fn enqueue_cuda_signal(&self, t: &Ticket) -> Result<()> {
        let slot = &self.slots[t.slot];
        if let Some(mut tracer) = self.tracer() {
            tracer.cuda_end(t.index);
        }
        // SAFETY: as in `enqueue_cuda_wait`.
        unsafe { self.crossing.signal(t.slot, &slot.stream, t.value) }
    }

    /// Step 4 of `t`: the Vulkan batch that waits for CUDA and marks the frame finished.
    ///
    /// # Safety
    /// As [`Frame::submit_vulkan_after_cuda`].
    unsafe fn submit_consume(
        &self,
        t: &Ticket,
        command_buffers: &[vk::CommandBuffer],
        waits: &[(&Semaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&Semaphore, u64)],
        fence: vk::Fence,
    ) -> Result<()> {
        let slot = &self.slots[t.slot];
        let crossing = self.crossing.to_vulkan(t.slot);
        let mut all_waits = Vec::with_capacity(waits.len() + 1);
        all_waits.push((crossing, t.value, vk::PipelineStageFlags::ALL_COMMANDS));
        all_waits.extend_from_slice(waits);
        let mut all_signals = Vec::with_capacity(signals.len() + 1);
        all_signals.push((&*slot.done, t.value));
        all_signals.extend_from_slice(signals);
        let started = crate::trace::now_ns();
        let bracket = self
            .tracer()
            .and_then(|mut tr| tr.consume(t.index, slot.consume_queue));
        let all = bracketed(bracket, command_buffers.iter().copied());
        // SAFETY: the caller's preconditions cover its part; the crossing value is
        // signalled by step 3, already enqueued (checked by the frame); the slot's
        // semaphores live until the drop has drained the queue.
        let r = unsafe {
            self.vk
                .submit_to(slot.consume_queue, &all, &all_waits, &all_signals, fence)
        };
        self.traced(r, bracket, "submit consume", started, t.index)
    }

    /// Runs the steps of `t` from `from` on with empty work, so the chain is complete
    /// (`Err`: it is not). A CUDA signal that failed after it was enqueued does not stop the
    /// chain (its value will be signalled); its error is returned as `Ok(Some(..))`.
    fn complete(&self, t: &Ticket, from: Step) -> Result<Option<Error>> {
        let mut step = Some(from);
        let mut late = None;
        while let Some(s) = step {
            match s {
                Step::SubmitVulkan => {
                    // SAFETY: no command buffers, waits, signals or fence of the caller's.
                    unsafe { self.submit_produce(t, &[], &[], &[], vk::Fence::null()) }?
                }
                Step::CudaWait => drop(self.enqueue_cuda_wait(t)?),
                Step::CudaSignal => match self.enqueue_cuda_signal(t) {
                    Err(e) if self.crossing.signalled(t.slot, t.value) => late = Some(e),
                    other => other?,
                },
                Step::SubmitVulkanAfterCuda => {
                    // SAFETY: as above.
                    unsafe { self.submit_consume(t, &[], &[], &[], vk::Fence::null()) }?
                }
            }
            step = s.next();
        }
        Ok(late)
    }

    /// Waits for everything the frames submitted: their `done` values, then an empty
    /// batch with a fence on each queue used (which retires every earlier batch), then the
    /// streams.
    fn drain(&self) -> Result<()> {
        if self.ledger.begun == 0 {
            return Ok(());
        }
        let deadline = Deadline::after(self.timeout);
        self.wait_idle(self.timeout)?;
        let mut queues: Vec<usize> = self
            .slots
            .iter()
            .flat_map(|s| [s.produce_queue, s.consume_queue])
            .collect();
        queues.sort_unstable();
        queues.dedup();
        let device = self.vk.device();
        for q in queues {
            // SAFETY: an empty batch; the fence is unsignalled (reset after each use below)
            // and used by no other submission.
            unsafe { self.vk.submit_to(q, &[], &[], &[], self.drain_fence) }?;
            let nanos = u64::try_from(deadline.left().as_nanos()).unwrap_or(u64::MAX);
            // SAFETY: the fence belongs to this device.
            match unsafe { device.wait_for_fences(&[self.drain_fence], true, nanos) } {
                Ok(()) => {}
                Err(vk::Result::TIMEOUT) => {
                    return Err(Error::Timeout {
                        what: format!("Vulkan queue {q} to drain"),
                        waited: self.timeout,
                    })
                }
                Err(r) => return Err(Error::vk("vkWaitForFences", r)),
            }
            // SAFETY: the fence is signalled and no longer in use.
            unsafe { device.reset_fences(&[self.drain_fence]) }
                .map_err(|r| Error::vk("vkResetFences", r))?;
        }
        for slot in &self.slots {
            slot.stream
                .synchronize()
                .map_err(|e| Error::cuda("cuStreamSynchronize", e))?;
        }
        Ok(())
    }
}

/// The end of a bounded wait. A timeout too long to add to `Instant::now()` (such as
/// `Duration::MAX`, "wait for ever") has no end: `checked_add` gives `None`, and the time
/// left is then `Duration::MAX`.
#[derive(Debug, Clone, Copy)]
struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now.
    fn after(timeout: Duration) -> Self {
        Self(Instant::now().checked_add(timeout))
    }

    /// The time left (zero once passed; `Duration::MAX` without an end).
    fn left(&self) -> Duration {
        self.0.map_or(Duration::MAX, |end| {
            end.saturating_duration_since(Instant::now())
        })
    }
}

impl Drop for FrameSync {
    fn drop(&mut self) {
        if let Err(e) = self.drain() {
            log::error!(
                "FrameSync dropped before its frames finished ({e}); leaking its \
                 semaphores, streams, fence and memory rather than freeing them in use"
            );
            self.crossing.stop();
            std::mem::forget(std::mem::take(&mut self.slots));
            // An empty crossing takes the place of the leaked one.
            let leaked = std::mem::replace(&mut self.crossing, Crossing::Semaphores(Vec::new()));
            std::mem::forget(leaked);
            return;
        }
        // SAFETY: the drain waited for the fence's last submission; destroyed once.
        unsafe { self.vk.device().destroy_fence(self.drain_fence, None) };
        // The slots and the crossing drop after this (the relay stops first), every use of
        // them finished.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_of_duration_max_is_no_deadline_not_a_panic() {
        let forever = Deadline::after(Duration::MAX);
        assert_eq!(forever.left(), Duration::MAX);
        let passed = Deadline::after(Duration::ZERO);
        assert_eq!(passed.left(), Duration::ZERO);
        let soon = Deadline::after(Duration::from_secs(60)).left();
        assert!(
            soon <= Duration::from_secs(60) && soon > Duration::from_secs(59),
            "{soon:?}"
        );
    }
}
