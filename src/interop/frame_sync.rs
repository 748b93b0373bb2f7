//! [`FrameSync`]: N frames in flight from Vulkan to CUDA and back (design in its docs).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ash::vk;
use cudarc::driver::CudaStream;

use super::{check_same_device, SharedBuffer, SharedSemaphore};
use crate::cuda::memops::{self, HostWords};
use crate::cuda::{self, MappedBuffer};
use crate::error::{Error, Result};
use crate::vulkan::{self, BufferDesc, ExportableSemaphore, SemaphoreKind};

/// How a [`FrameSync`] crosses between Vulkan and CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Exported timeline semaphores imported into CUDA: spec-defined, the default. Needs
    /// `VK_KHR_external_semaphore_fd`.
    #[default]
    Semaphores,
    /// Stream memory operations on a shared buffer (Vulkan → CUDA) and a host relay
    /// (CUDA → Vulkan); see the module docs for its ordering guarantees and limits. Needs
    /// the V2 stream memory operations (CUDA driver 11.7+).
    LowLatency,
}

/// Which Vulkan queues a [`FrameSync`]'s batches go to. A batch that waits (on CUDA) holds
/// up every later batch of its queue, so this decides what can overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLayout {
    /// Both batches of slot `s` go to queue `s % queue_count`: independent frames wait in
    /// parallel, each on its own queue.
    PerSlot,
    /// Every batch goes to queue 0: frames run strictly one after another on the Vulkan
    /// side.
    Single,
    /// Producing batches (step 1) go to queue 0, consuming batches (step 4) to queue 1
    /// (queue 0 on a context with one queue): a consuming batch waiting for CUDA never
    /// holds up the next frame's production.
    Split,
}

/// What [`FrameSync::new`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSyncDesc {
    /// Frames in flight, `1..=FrameSync::MAX_FRAMES_IN_FLIGHT`: one slot (semaphores or
    /// mailbox word, completion timeline) each.
    pub frames_in_flight: usize,
    /// How frames cross between the APIs.
    pub mode: SyncMode,
    /// Longest host wait of [`FrameSync::begin`] (and of the drain on drop) before
    /// [`Error::Timeout`]. Zero makes `begin` a single poll.
    pub timeout: Duration,
    /// Which queues the batches go to; `None`: the mode's default
    /// ([`FrameSyncDesc::layout`]).
    pub queues: Option<QueueLayout>,
    /// How many CUDA streams the slots share round-robin (slot `s` uses stream
    /// `s % streams`), `1..=frames_in_flight`; `None`: the mode's default
    /// ([`FrameSyncDesc::layout`]).
    pub streams: Option<usize>,
}

impl FrameSyncDesc {
    /// `frames_in_flight` frames, [`SyncMode::Semaphores`], a 5 s timeout, the mode's
    /// default queues and streams.
    pub fn new(frames_in_flight: usize) -> Self {
        Self {
            frames_in_flight,
            mode: SyncMode::Semaphores,
            timeout: Duration::from_secs(5),
            queues: None,
            streams: None,
        }
    }

    /// Replaces the mode.
    pub fn mode(mut self, mode: SyncMode) -> Self {
        self.mode = mode;
        self
    }

    /// Replaces the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the queue layout and the number of streams (instead of the mode's default).
    pub fn lanes(mut self, queues: QueueLayout, streams: usize) -> Self {
        self.queues = Some(queues);
        self.streams = Some(streams);
        self
    }

    /// The queue layout and stream count in effect: the ones set, or the mode's default
    /// (measured, see [`FrameSync`]): [`QueueLayout::Split`] and one stream for
    /// [`SyncMode::Semaphores`] with several frames in flight, so each ~320 us crossing
    /// overlaps the next frames'; otherwise [`QueueLayout::Single`] and one stream (the
    /// low-latency mode's crossings are short and slow down when batches wait on several
    /// queues at once, and one frame in flight has nothing to overlap).
    pub fn layout(&self) -> (QueueLayout, usize) {
        let (queues, streams) = match self.mode {
            SyncMode::Semaphores if self.frames_in_flight > 1 => DEFAULT_SEMAPHORES,
            SyncMode::Semaphores | SyncMode::LowLatency => DEFAULT_ONE_QUEUE,
        };
        (
            self.queues.unwrap_or(queues),
            self.streams.unwrap_or(streams),
        )
    }
}

/// The semaphore mode's default lanes with several frames in flight (measured: see
/// [`FrameSync`]).
const DEFAULT_SEMAPHORES: (QueueLayout, usize) = (QueueLayout::Split, 1);
/// The default lanes of the low-latency mode, and of the semaphore mode with one frame in
/// flight (measured: see [`FrameSync`]).
const DEFAULT_ONE_QUEUE: (QueueLayout, usize) = (QueueLayout::Single, 1);

/// The steps of a frame, in the only order they may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    SubmitVulkan,
    CudaWait,
    CudaSignal,
    SubmitVulkanAfterCuda,
}

/// What the errors say the order is.
const STEP_ORDER: &str =
    "submit_vulkan -> cuda_wait -> cuda_signal -> submit_vulkan_after_cuda, each once";

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::SubmitVulkan => "submit_vulkan",
            Self::CudaWait => "cuda_wait",
            Self::CudaSignal => "cuda_signal",
            Self::SubmitVulkanAfterCuda => "submit_vulkan_after_cuda",
        }
    }

    /// The step after this one (`None`: the frame is finished).
    fn next(self) -> Option<Self> {
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

/// One frame's place in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticket {
    /// Frame number, from 0.
    index: u64,
    /// Its value on the slot's semaphores: `index + 1`.
    value: u64,
    /// `index % N`.
    slot: usize,
    /// Value of the frame that used the slot before (`value - N`), if any: it must have
    /// finished before this frame starts.
    reuses: Option<u64>,
}

/// The value bookkeeping: which frame comes next, in which slot, after which earlier frame.
#[derive(Debug)]
struct Ledger {
    frames_in_flight: usize,
    /// Frames begun so far (= the index of the next frame = the value of the last one).
    begun: u64,
}

impl Ledger {
    fn new(frames_in_flight: usize) -> Self {
        Self {
            frames_in_flight,
            begun: 0,
        }
    }

    fn n(&self) -> u64 {
        self.frames_in_flight as u64
    }

    /// The next frame's ticket, without taking it.
    fn peek(&self) -> Result<Ticket> {
        let index = self.begun;
        let value = index.checked_add(1).ok_or_else(|| {
            Error::invalid(
                "frame",
                format!("frame {index} would need value 2^64"),
                "fewer than 2^64 - 1 frames per FrameSync (values never wrap)",
            )
        })?;
        Ok(Ticket {
            index,
            value,
            slot: (index % self.n()) as usize,
            reuses: value.checked_sub(self.n()).filter(|&v| v > 0),
        })
    }

    /// Takes the ticket [`Ledger::peek`] returned.
    fn commit(&mut self, ticket: &Ticket) {
        self.begun = ticket.index + 1;
    }

    /// The slot of the frame with `value`.
    fn slot_of(&self, value: u64) -> usize {
        ((value - 1) % self.n()) as usize
    }

    /// Value of the last frame begun in `slot`, if any.
    fn last_in_slot(&self, slot: usize) -> Option<u64> {
        let s = slot as u64;
        if s >= self.begun {
            return None;
        }
        Some(s + self.n() * ((self.begun - 1 - s) / self.n()) + 1)
    }

    /// Checks that `value` names a frame begun so far.
    fn check_value(&self, value: u64) -> Result<()> {
        if value >= 1 && value <= self.begun {
            return Ok(());
        }
        Err(Error::invalid(
            "value",
            format!("frame value {value}, which no frame has (yet): nobody would signal it"),
            format!("1..={} (the frames begun so far)", self.begun),
        ))
    }
}

/// The 64-bit value a 32-bit word written with the low bits of increasing values stands
/// for, given the last value seen: the word is at most 2^31 - 1 ahead (FrameSync keeps
/// writers at most N ahead), and a word that is not ahead means no progress.
fn widen(last: u64, word: u32) -> u64 {
    let delta = word.wrapping_sub(last as u32);
    if delta == 0 || delta > i32::MAX as u32 {
        return last;
    }
    last.saturating_add(u64::from(delta))
}

/// Checks `desc.frames_in_flight` and the stream count in effect.
fn check_counts(frames_in_flight: usize, streams: usize) -> Result<()> {
    if !(1..=FrameSync::MAX_FRAMES_IN_FLIGHT).contains(&frames_in_flight) {
        return Err(Error::invalid(
            "desc.frames_in_flight",
            format!("{frames_in_flight} frames in flight"),
            format!("1..={}", FrameSync::MAX_FRAMES_IN_FLIGHT),
        ));
    }
    if !(1..=frames_in_flight).contains(&streams) {
        return Err(Error::invalid(
            "desc.streams",
            format!("{streams} streams"),
            format!("1..={frames_in_flight} (at most one per frame in flight)"),
        ));
    }
    Ok(())
}

/// The (produce, consume) queue indices of `slot` under `layout` on a context with
/// `queue_count` queues.
fn slot_queues(layout: QueueLayout, slot: usize, queue_count: usize) -> (usize, usize) {
    match layout {
        QueueLayout::PerSlot => (slot % queue_count, slot % queue_count),
        QueueLayout::Single => (0, 0),
        QueueLayout::Split => (0, 1 % queue_count),
    }
}

/// The capability `mode` needs beyond a matching device: exportable semaphore fds for
/// [`SyncMode::Semaphores`], the stream memory operations for [`SyncMode::LowLatency`]
/// (`memops` is the outcome of [`cuda::Context::check_stream_memops`], asked only then).
fn check_mode(
    mode: SyncMode,
    semaphore_fds: bool,
    memops: impl FnOnce() -> Result<()>,
) -> Result<()> {
    match mode {
        SyncMode::Semaphores if !semaphore_fds => Err(Error::Unsupported {
            what: "FrameSync in SyncMode::Semaphores".into(),
            reason: "the Vulkan device cannot export semaphore fds \
                     (VK_KHR_external_semaphore_fd is missing)"
                .into(),
        }),
        SyncMode::Semaphores => Ok(()),
        SyncMode::LowLatency => memops(),
    }
}

/// The per-slot command buffer that writes the frame value into the mailbox
/// ([`SyncMode::LowLatency`]), re-recorded every frame.
struct FillCommands {
    vk: vulkan::Context,
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
}

impl Drop for FillCommands {
    fn drop(&mut self) {
        // SAFETY: made from this device; FrameSync drops slots only after draining every
        // queue it submitted to, so the command buffer is not pending.
        unsafe { self.vk.device().destroy_command_pool(self.pool, None) };
    }
}

impl FillCommands {
    fn new(vk: &vulkan::Context) -> Result<Self> {
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(vk.queue_family_index())
            .flags(vk::CommandPoolCreateFlags::TRANSIENT);
        // SAFETY: valid device and create info.
        let pool = unsafe { vk.device().create_command_pool(&info, None) }
            .map_err(|r| Error::vk("vkCreateCommandPool", r))?;
        let mut fill = Self {
            vk: vk.clone(),
            pool,
            cmd: vk::CommandBuffer::null(),
        };
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: `pool` was just created from this device (and is destroyed by `fill`).
        let cmds = unsafe { vk.device().allocate_command_buffers(&alloc) }
            .map_err(|r| Error::vk("vkAllocateCommandBuffers", r))?;
        fill.cmd = cmds.first().copied().ok_or(Error::Vulkan {
            call: "vkAllocateCommandBuffers",
            result: vk::Result::ERROR_UNKNOWN,
        })?;
        Ok(fill)
    }

    /// Records "barrier after everything earlier, then write `value` at `offset` of
    /// `mailbox`".
    ///
    /// # Safety
    /// 1. The command buffer is not pending (the slot's previous frame has finished).
    /// 2. `mailbox` is a live buffer of this device with `TRANSFER_DST` usage and
    ///    `offset + 4` bytes or more; `offset` is a multiple of 4.
    unsafe fn record(&self, mailbox: vk::Buffer, offset: u64, value: u32) -> Result<()> {
        let device = self.vk.device();
        // SAFETY: precondition 1: nothing allocated from the pool is pending.
        unsafe { device.reset_command_pool(self.pool, vk::CommandPoolResetFlags::empty()) }
            .map_err(|r| Error::vk("vkResetCommandPool", r))?;
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the buffer was just reset (initial state).
        unsafe { device.begin_command_buffer(self.cmd, &begin) }
            .map_err(|r| Error::vk("vkBeginCommandBuffer", r))?;
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
            .dst_access_mask(vk::AccessFlags::TRANSFER_WRITE);
        // SAFETY: recording; a global memory barrier with valid stage and access masks.
        unsafe {
            device.cmd_pipeline_barrier(
                self.cmd,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::PipelineStageFlags::TRANSFER,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            )
        };
        // SAFETY: recording; precondition 2 covers the buffer, offset and size.
        unsafe { device.cmd_fill_buffer(self.cmd, mailbox, offset, 4, value) };
        // SAFETY: recording began above.
        unsafe { device.end_command_buffer(self.cmd) }
            .map_err(|r| Error::vk("vkEndCommandBuffer", r))
    }
}

/// How one slot crosses.
enum Crossing {
    Semaphores {
        /// Vulkan signals, CUDA waits.
        to_cuda: SharedSemaphore,
        /// CUDA signals, Vulkan waits.
        to_vulkan: SharedSemaphore,
    },
    LowLatency {
        fill: FillCommands,
    },
}

/// One frame slot.
struct Slot {
    /// Queue of step 1.
    produce_queue: usize,
    /// Queue of step 4.
    consume_queue: usize,
    stream: Arc<CudaStream>,
    /// Vulkan-only timeline, signalled with the frame value by the frame's last batch.
    done: ExportableSemaphore,
    /// Vulkan-only timeline signalled by step 1 when it runs on another queue than step 4
    /// (queue order then says nothing about step 1 having finished).
    produced: Option<ExportableSemaphore>,
    crossing: Crossing,
}

/// The mailbox of [`SyncMode::LowLatency`]: one 32-bit word per slot that Vulkan writes and
/// CUDA waits on.
struct Mailbox {
    /// Declared first: the CUDA mapping goes before the buffer it maps.
    words: MappedBuffer,
    buffer: SharedBuffer,
}

impl Mailbox {
    fn offset(slot: usize) -> u64 {
        4 * slot as u64
    }
}

/// What the relay thread and the [`FrameSync`] share.
struct RelayShared {
    /// CUDA writes the frame value of slot `s` to word `s`.
    words: HostWords,
    /// Vulkan-only timelines the relay signals, one per slot.
    semaphores: Vec<ExportableSemaphore>,
    state: Mutex<RelayState>,
    wake: Condvar,
}

struct RelayState {
    /// The value CUDA will write next to each slot's word (0: none yet).
    expected: Vec<u64>,
    stop: bool,
    /// A failed `vkSignalSemaphore`; the relay stops then.
    failed: Option<Error>,
}

impl RelayShared {
    fn lock(&self) -> MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The relay thread: polls the words of slots with a pending value and signals their
    /// timeline when CUDA's write arrives. Spins while there is progress (or for the spin
    /// window after it), then backs off like the fast host wait, and parks when nothing is
    /// pending.
    fn run(&self) {
        let mut relayed = vec![0u64; self.semaphores.len()];
        let mut active = Instant::now();
        let mut sleeps = 0u32;
        loop {
            let expected = {
                let mut state = self.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    let pending = state.expected.iter().zip(&relayed).any(|(e, r)| e > r);
                    if pending || active.elapsed() < ExportableSemaphore::WAIT_SPIN_WINDOW {
                        break state.expected.clone();
                    }
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    active = Instant::now();
                    sleeps = 0;
                }
            };
            match self.relay_once(&expected, &mut relayed) {
                Ok(true) => {
                    active = Instant::now();
                    sleeps = 0;
                }
                Ok(false) => match vulkan::backoff(active.elapsed(), sleeps) {
                    None => std::hint::spin_loop(),
                    Some(pause) => {
                        std::thread::sleep(pause);
                        sleeps = sleeps.saturating_add(1);
                    }
                },
                Err(e) => {
                    self.lock().failed = Some(e);
                    return;
                }
            }
        }
    }

    /// One pass over the pending slots; says whether any progressed.
    fn relay_once(&self, expected: &[u64], relayed: &mut [u64]) -> Result<bool> {
        let mut progressed = false;
        for (slot, (&want, done)) in expected.iter().zip(relayed.iter_mut()).enumerate() {
            if want <= *done {
                continue;
            }
            let seen = widen(*done, self.words.read(slot)?);
            if seen > *done {
                self.semaphores[slot].signal(seen)?;
                *done = seen;
                progressed = true;
            }
        }
        Ok(progressed)
    }
}

/// The relay of [`SyncMode::LowLatency`]: CUDA → host → Vulkan.
struct Relay {
    shared: Arc<RelayShared>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn new(vk: &vulkan::Context, cu: &cuda::Context, slots: usize) -> Result<Self> {
        let semaphores = (0..slots)
            .map(|_| ExportableSemaphore::local(vk, SemaphoreKind::Timeline, 0))
            .collect::<Result<Vec<_>>>()?;
        let shared = Arc::new(RelayShared {
            words: HostWords::new(cu, slots)?,
            semaphores,
            state: Mutex::new(RelayState {
                expected: vec![0; slots],
                stop: false,
                failed: None,
            }),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vkcuda-frame-relay".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::Unsupported {
                what: "the FrameSync relay thread".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the relay that CUDA will write `value` to `slot`'s word.
    fn expect(&self, slot: usize, value: u64) {
        let mut state = self.shared.lock();
        if let Some(e) = state.expected.get_mut(slot) {
            *e = value;
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// The relay's failure, once.
    fn take_error(&self) -> Result<()> {
        self.shared.lock().failed.take().map_or(Ok(()), Err)
    }

    /// Stops and joins the thread.
    fn stop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                eprintln!("vkcuda: the FrameSync relay thread panicked");
            }
        }
    }
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
/// On the H100 (driver 580) the crossing itself is the cost: a CUDA wait on an imported
/// timeline value takes ~320 us to pass even when the value is already reached, a Vulkan queue
/// wait on a CUDA-signalled value ~318 us, and a chain through one semaphore pair, one queue
/// and one stream runs at ~330 us per frame whatever the number of frames in flight, because
/// a batch waiting on a semaphore holds up every later batch of its queue. So:
///
/// * **Slots.** Frame `i` uses slot `i % N`. Each slot has its own crossing objects and its
///   own Vulkan-only completion timeline (`done`), signalled by the frame's consuming batch;
///   [`FrameSync::begin`] returns only once the slot's previous frame is done, so per-slot
///   resources (what a frame reads and writes) are free to reuse from then on.
///   [`FrameSync::begin`] and [`FrameSync::wait_frame`] poll `done` with the fast host wait
///   ([`vulkan::ExportableSemaphore::wait`]: 3 us after the signal, where `vkWaitSemaphores`
///   takes 10 ms).
/// * **Queues and streams ([`QueueLayout`], [`FrameSyncDesc::lanes`]), chosen by
///   measurement** (4 frames in flight, empty work, pipelined hand-offs per second on the
///   H100; naive chain on one queue: ~3,000/s):
///
///   | lanes | semaphores | low-latency |
///   |---|---|---|
///   | `PerSlot` (queue per slot), 1 or 4 streams | 4,350-4,500/s | 4,750-5,000/s |
///   | `Single` (all on queue 0), 1 or 4 streams | 3,000/s | 42,000-48,000/s |
///   | `Split` (produce on queue 0, consume on queue 1), 1 or 4 streams | 6,700-7,400/s | 7,400-7,700/s |
///
///   The semaphore mode defaults to `Split` with one stream: a consuming batch waiting for
///   CUDA never holds up the next frame's production, so each ~320 us crossing overlaps the
///   next frames' (2.4x the naive chain). With one frame in flight there is nothing to
///   overlap and a second queue only costs (520 us a hand-off instead of ~390 us), so it
///   uses `Single` then. The low-latency mode defaults to `Single` with one stream: its
///   crossings take ~27 us, and every layout with batches waiting on several queues at once
///   is several times slower on this driver. With one stream (both defaults)
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
/// Measured on the H100 (one run, empty work, `benches/sync.rs`): a hand-off takes 27 us
/// p50 / 37 us p99 (semaphore mode and naive chain: 388 us); pipelined, 35,000 hand-offs/s
/// with one frame in flight and 45,000-48,000/s with 2 to 4 (semaphore mode 2,600-7,400/s,
/// naive chain 2,600-3,100/s).
///
/// Guarantees and limits of the low-latency mode:
/// * Memory ordering rests on the same-device cache hierarchy, not on a cross-API promise:
///   neither spec defines how a Vulkan transfer write orders against a CUDA memory-op poll.
///   Vulkan's writes are made available (device domain, the GPU's L2) by the barrier before
///   the mailbox write, and CUDA work starts after its wait with fresh L1s; CUDA's writes
///   are fenced system-wide before the host sees the word, and the host signal + semaphore
///   wait gives Vulkan the usual visibility operation. `tests/sync_gpu.rs` proves the order
///   by data over thousands of frames; the semaphore mode remains the default and the one
///   to use where the spec's guarantees are required.
/// * Needs the V2 stream memory operations (driver 11.7+, checked:
///   [`cuda::Context::check_stream_memops`]), but no exportable semaphores.
/// * The relay spins one host core while frames are pending (falling back to sleeps of
///   20 us to 1 ms after 200 us without progress, and parking when nothing is pending), so a
///   frame whose CUDA work is long may reach Vulkan up to ~1 ms after CUDA finished.
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
/// With [`vulkan::Commands`] no `unsafe` is needed: record into one `Commands` per slot and
/// direction, submit with [`Frame::submit_commands`] and [`Frame::submit_commands_after_cuda`]
/// (`examples/common/pipeline.rs` does). With the caller's own command buffers:
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
    mailbox: Option<Mailbox>,
    relay: Option<Relay>,
    ledger: Ledger,
    mode: SyncMode,
    /// Queue layout and stream count in effect.
    layout: (QueueLayout, usize),
    timeout: Duration,
    /// Signalled by the empty batch that drains each queue on drop.
    drain_fence: vk::Fence,
    /// The first failure of a dropped [`Frame`]'s completion, reported by the next `begin`.
    deferred: Option<Error>,
    vk: vulkan::Context,
}

impl std::fmt::Debug for FrameSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSync")
            .field("frames_in_flight", &self.ledger.frames_in_flight)
            .field("mode", &self.mode)
            .field("frames_begun", &self.ledger.begun)
            .finish_non_exhaustive()
    }
}

impl FrameSync {
    /// Most frames in flight.
    pub const MAX_FRAMES_IN_FLIGHT: usize = 8;

    /// Creates the streams ([`FrameSyncDesc::layout`]) and the slots: per slot a producing
    /// and a consuming queue index, a Vulkan-only completion timeline, and the crossing
    /// objects of `desc.mode` (two shared timelines; or a command buffer, a mailbox word and
    /// a relay timeline).
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `cu` is not on `vk`'s GPU (`cu`),
    ///   `desc.frames_in_flight` is outside `1..=MAX_FRAMES_IN_FLIGHT`, or the stream count
    ///   outside `1..=frames_in_flight` (`desc.streams`).
    /// * [`Error::Unsupported`]: `vk` has no queue of its own (it shares a wgpu device's,
    ///   [`vulkan::Context::queue_count`]); [`SyncMode::Semaphores`] on a device without
    ///   `VK_KHR_external_semaphore_fd`; [`SyncMode::LowLatency`] with a driver without the
    ///   V2 stream memory operations.
    /// * Creation failures of the semaphores, streams, buffer, host memory or thread.
    pub fn new(vk: &vulkan::Context, cu: &cuda::Context, desc: &FrameSyncDesc) -> Result<Self> {
        check_same_device(vk, cu)?;
        if vk.queue_count() == 0 {
            return Err(vulkan::no_queue());
        }
        let (layout, stream_count) = desc.layout();
        check_counts(desc.frames_in_flight, stream_count)?;
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
            mailbox: None,
            relay: None,
            ledger: Ledger::new(n),
            mode: desc.mode,
            layout: (layout, stream_count),
            timeout: desc.timeout,
            drain_fence,
            deferred: None,
            vk: vk.clone(),
        };
        if desc.mode == SyncMode::LowLatency {
            let buffer = SharedBuffer::new(vk, cu, &BufferDesc::new(4 * n as u64))?;
            vk.fill_buffer(buffer.vulkan(), 0..buffer.size(), 0)?;
            let words = buffer.map(0..buffer.size())?;
            sync.mailbox = Some(Mailbox { words, buffer });
            sync.relay = Some(Relay::new(vk, cu, n)?);
        }
        let streams = (0..stream_count)
            .map(|_| cu.new_stream())
            .collect::<Result<Vec<_>>>()?;
        for slot in 0..n {
            let crossing = match desc.mode {
                SyncMode::Semaphores => Crossing::Semaphores {
                    to_cuda: SharedSemaphore::timeline(vk, cu, 0)?,
                    to_vulkan: SharedSemaphore::timeline(vk, cu, 0)?,
                },
                SyncMode::LowLatency => Crossing::LowLatency {
                    fill: FillCommands::new(vk)?,
                },
            };
            let (produce_queue, consume_queue) = slot_queues(layout, slot, vk.queue_count());
            let produced = (produce_queue != consume_queue)
                .then(|| ExportableSemaphore::local(vk, SemaphoreKind::Timeline, 0))
                .transpose()?;
            sync.slots.push(Slot {
                produce_queue,
                consume_queue,
                stream: streams[slot % stream_count].clone(),
                done: ExportableSemaphore::local(vk, SemaphoreKind::Timeline, 0)?,
                produced,
                crossing,
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
    /// * The deferred failure of a dropped, unfinished [`Frame`] (its chain was completed
    ///   with empty work, and that failed), or of the low-latency relay, once.
    /// * [`Error::InvalidArgument`] (`frame`) after 2^64 - 2 frames.
    pub fn begin(&mut self) -> Result<Frame<'_>> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        if let Some(relay) = &self.relay {
            relay.take_error()?;
        }
        let ticket = self.ledger.peek()?;
        if let Some(previous) = ticket.reuses {
            let slot = &self.slots[ticket.slot];
            let deadline = Instant::now() + self.timeout;
            let produced = slot.produced.as_ref().map_or(Ok(()), |p| {
                p.wait(previous, deadline.saturating_duration_since(Instant::now()))
            });
            produced
                .and_then(|()| {
                    slot.done
                        .wait(previous, deadline.saturating_duration_since(Instant::now()))
                })
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
        self.ledger.commit(&ticket);
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
        let deadline = Instant::now() + timeout;
        for (s, slot) in self.slots.iter().enumerate() {
            if let Some(last) = self.ledger.last_in_slot(s) {
                let left = deadline.saturating_duration_since(Instant::now());
                slot.done.wait(last, left)?;
            }
        }
        Ok(())
    }

    /// Frames in flight (slots).
    pub fn frames_in_flight(&self) -> usize {
        self.ledger.frames_in_flight
    }

    /// The crossing mode.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// How many frames have begun (the value of the last one).
    pub fn frames_begun(&self) -> u64 {
        self.ledger.begun
    }

    /// The queue layout and stream count in effect ([`FrameSyncDesc::layout`]).
    pub fn layout(&self) -> (QueueLayout, usize) {
        self.layout
    }

    /// Keeps the first failure of a dropped frame's completion for the next `begin`.
    fn defer(&mut self, e: Error) {
        match &self.deferred {
            None => self.deferred = Some(e),
            Some(first) => eprintln!("vkcuda: FrameSync: {e} (after an unreported {first})"),
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
        waits: &[(&ExportableSemaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&ExportableSemaphore, u64)],
        fence: vk::Fence,
    ) -> Result<()> {
        let slot = &self.slots[t.slot];
        match (&slot.crossing, &self.mailbox) {
            (Crossing::Semaphores { to_cuda, .. }, _) => {
                let mut all = Vec::with_capacity(signals.len() + 2);
                all.push((&**to_cuda.vulkan(), t.value));
                all.extend(slot.produced.iter().map(|p| (p, t.value)));
                all.extend_from_slice(signals);
                // SAFETY: the caller's preconditions cover its command buffers, waits,
                // signals and fence; the slot's semaphore lives as long as `self`, whose
                // drop drains the queue first.
                unsafe {
                    self.vk
                        .submit_to(slot.produce_queue, command_buffers, waits, &all, fence)
                }
            }
            (Crossing::LowLatency { fill }, Some(mailbox)) => {
                // SAFETY: the slot's previous frame finished (`begin` waited for it), so
                // the fill command buffer is not pending; the mailbox has a word per slot
                // and TRANSFER_DST usage (BufferDesc::new).
                unsafe {
                    fill.record(
                        mailbox.buffer.vulkan().raw(),
                        Mailbox::offset(t.slot),
                        t.value as u32,
                    )
                }?;
                let mut all = Vec::with_capacity(command_buffers.len() + 1);
                all.extend_from_slice(command_buffers);
                all.push(fill.cmd);
                let mut all_signals = Vec::with_capacity(signals.len() + 1);
                all_signals.extend(slot.produced.iter().map(|p| (p, t.value)));
                all_signals.extend_from_slice(signals);
                // SAFETY: as above; the fill command buffer was recorded for this family
                // and its mailbox outlives the batch (drained on drop).
                unsafe {
                    self.vk
                        .submit_to(slot.produce_queue, &all, waits, &all_signals, fence)
                }
            }
            (Crossing::LowLatency { .. }, None) => Err(missing_part("mailbox")),
        }
    }

    /// Step 2 of `t`: the slot's stream waits for step 1's crossing.
    fn enqueue_cuda_wait(&self, t: &Ticket) -> Result<Arc<CudaStream>> {
        let slot = &self.slots[t.slot];
        match (&slot.crossing, &self.mailbox) {
            (Crossing::Semaphores { to_cuda, .. }, _) => {
                to_cuda.cuda().wait(&slot.stream, t.value)?;
            }
            (Crossing::LowLatency { .. }, Some(mailbox)) => {
                let addr = mailbox.words.cu_device_ptr() + Mailbox::offset(t.slot);
                // SAFETY: the word lies in the live mapping, which `self` keeps until its
                // drop has synchronised the streams; step 1 (checked by the frame) submitted
                // the batch that writes `value` there.
                unsafe { memops::wait_geq(&slot.stream, addr, t.value as u32) }?;
            }
            (Crossing::LowLatency { .. }, None) => return Err(missing_part("mailbox")),
        }
        Ok(slot.stream.clone())
    }

    /// Step 3 of `t`: the crossing back to Vulkan, after the stream's work.
    fn enqueue_cuda_signal(&self, t: &Ticket) -> Result<()> {
        let slot = &self.slots[t.slot];
        match (&slot.crossing, &self.relay) {
            (Crossing::Semaphores { to_vulkan, .. }, _) => {
                to_vulkan.cuda().signal(&slot.stream, t.value)
            }
            (Crossing::LowLatency { .. }, Some(relay)) => {
                let addr = relay.shared.words.device_ptr(t.slot)?;
                // SAFETY: the word lies in the host allocation the relay keeps until
                // `self`'s drop has synchronised the streams.
                unsafe { memops::write(&slot.stream, addr, t.value as u32) }?;
                relay.expect(t.slot, t.value);
                Ok(())
            }
            (Crossing::LowLatency { .. }, None) => Err(missing_part("relay")),
        }
    }

    /// Step 4 of `t`: the Vulkan batch that waits for CUDA and marks the frame finished.
    ///
    /// # Safety
    /// As [`Frame::submit_vulkan_after_cuda`].
    unsafe fn submit_consume(
        &self,
        t: &Ticket,
        command_buffers: &[vk::CommandBuffer],
        waits: &[(&ExportableSemaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&ExportableSemaphore, u64)],
        fence: vk::Fence,
    ) -> Result<()> {
        let slot = &self.slots[t.slot];
        let crossing: &ExportableSemaphore = match (&slot.crossing, &self.relay) {
            (Crossing::Semaphores { to_vulkan, .. }, _) => to_vulkan.vulkan(),
            (Crossing::LowLatency { .. }, Some(relay)) => &relay.shared.semaphores[t.slot],
            (Crossing::LowLatency { .. }, None) => return Err(missing_part("relay")),
        };
        let mut all_waits = Vec::with_capacity(waits.len() + 1);
        all_waits.push((crossing, t.value, vk::PipelineStageFlags::ALL_COMMANDS));
        all_waits.extend_from_slice(waits);
        let mut all_signals = Vec::with_capacity(signals.len() + 1);
        all_signals.push((&slot.done, t.value));
        all_signals.extend_from_slice(signals);
        // SAFETY: the caller's preconditions cover its part; the crossing value is
        // signalled by step 3, already enqueued (checked by the frame); the slot's
        // semaphores live until the drop has drained the queue.
        unsafe {
            self.vk.submit_to(
                slot.consume_queue,
                command_buffers,
                &all_waits,
                &all_signals,
                fence,
            )
        }
    }

    /// Runs the steps of `t` from `from` on with empty work, so the chain is complete.
    fn complete(&self, t: &Ticket, from: Step) -> Result<()> {
        let mut step = Some(from);
        while let Some(s) = step {
            match s {
                Step::SubmitVulkan => {
                    // SAFETY: no command buffers, waits, signals or fence of the caller's.
                    unsafe { self.submit_produce(t, &[], &[], &[], vk::Fence::null()) }?
                }
                Step::CudaWait => drop(self.enqueue_cuda_wait(t)?),
                Step::CudaSignal => self.enqueue_cuda_signal(t)?,
                Step::SubmitVulkanAfterCuda => {
                    // SAFETY: as above.
                    unsafe { self.submit_consume(t, &[], &[], &[], vk::Fence::null()) }?
                }
            }
            step = s.next();
        }
        Ok(())
    }

    /// Waits for everything the frames submitted: their `done` values, then an empty
    /// batch with a fence on each queue used (which retires every earlier batch), then the
    /// streams.
    fn drain(&self) -> Result<()> {
        if self.ledger.begun == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
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
            let left = deadline.saturating_duration_since(Instant::now());
            let nanos = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
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

/// The error for a low-latency part that is missing (only while `new` is still building).
fn missing_part(part: &str) -> Error {
    Error::Unsupported {
        what: format!("a low-latency frame without its {part}"),
        reason: "FrameSync::new did not finish".into(),
    }
}

impl Drop for FrameSync {
    fn drop(&mut self) {
        if let Err(e) = self.drain() {
            eprintln!(
                "vkcuda: FrameSync dropped before its frames finished ({e}); leaking its \
                 semaphores, streams, fence and memory rather than freeing them in use"
            );
            if let Some(relay) = &mut self.relay {
                relay.stop();
            }
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(self.mailbox.take());
            std::mem::forget(self.relay.take());
            return;
        }
        if let Some(relay) = &mut self.relay {
            relay.stop();
        }
        // SAFETY: the drain waited for the fence's last submission; destroyed once.
        unsafe { self.vk.device().destroy_fence(self.drain_fence, None) };
        // The slots, mailbox and relay drop after this, every use of them finished.
    }
}

/// One frame of a [`FrameSync`], from [`FrameSync::begin`]: the four steps must run in
/// order, each once, and [`Frame::submit_vulkan_after_cuda`] consumes the token.
///
/// A frame dropped before its last step is finished with empty work (empty Vulkan batches,
/// an immediate CUDA wait and signal), so its slot's chain stays whole; a failure there is
/// reported by the next [`FrameSync::begin`].
pub struct Frame<'a> {
    sync: &'a mut FrameSync,
    ticket: Ticket,
    /// The step that may run next (`None`: finished).
    next: Option<Step>,
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
        if let Some(step) = self.next {
            if let Err(e) = self.sync.complete(&self.ticket, step) {
                self.sync.defer(e);
            }
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

    /// Its slot, `index % frames_in_flight`: index per-slot resources with it.
    pub fn slot(&self) -> usize {
        self.ticket.slot
    }

    /// The Vulkan queue indices ([`vulkan::Context::queue_at`]) of its producing (step 1)
    /// and consuming (step 4) batches; record its command buffers for
    /// [`vulkan::Context::queue_family_index`].
    pub fn queues(&self) -> (usize, usize) {
        let slot = &self.sync.slots[self.ticket.slot];
        (slot.produce_queue, slot.consume_queue)
    }

    /// Advances to the step after `op`, which must be the next one.
    fn advance(&mut self, op: Step) {
        self.next = op.next();
    }

    /// Step 1, safely: submits `commands` (the Vulkan work CUDA will read, typically ending
    /// with [`vulkan::Commands::release_image`]) on the frame's producing queue, followed by
    /// the crossing to CUDA.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`frame`) out of order; as [`vulkan::Commands::submit`].
    pub fn submit_commands(&mut self, commands: &mut vulkan::Commands) -> Result<()> {
        check_step(self.ticket.index, self.next, Step::SubmitVulkan)?;
        let (sync, ticket) = (&mut *self.sync, &self.ticket);
        commands.submit_via(sync.timeout, |cmds, fence| {
            // SAFETY: `cmds` were just recorded by `Commands` for this device's family and
            // stay alive (with everything they use) until `fence`, which only they use,
            // signals; no caller semaphores are added.
            unsafe { sync.submit_produce(ticket, cmds, &[], &[], fence) }
        })?;
        self.advance(Step::SubmitVulkan);
        Ok(())
    }

    /// Step 4, safely: submits `commands` (typically starting with
    /// [`vulkan::Commands::acquire_image`]) on the frame's consuming queue after CUDA's
    /// signal, and completes the frame. Returns the frame's value.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`frame`) out of order; as [`vulkan::Commands::submit`].
    pub fn submit_commands_after_cuda(mut self, commands: &mut vulkan::Commands) -> Result<u64> {
        check_step(self.ticket.index, self.next, Step::SubmitVulkanAfterCuda)?;
        let (sync, ticket) = (&mut *self.sync, &self.ticket);
        commands.submit_via(sync.timeout, |cmds, fence| {
            // SAFETY: as in `submit_commands`.
            unsafe { sync.submit_consume(ticket, cmds, &[], &[], fence) }
        })?;
        self.advance(Step::SubmitVulkanAfterCuda);
        Ok(self.ticket.value)
    }

    /// Step 1: submits `command_buffers` (the Vulkan work CUDA will read) on the frame's
    /// producing queue ([`Frame::queues`]), waiting on `waits` and signalling `signals` like
    /// [`vulkan::Context::submit_to`], followed by the crossing to CUDA.
    ///
    /// # Safety
    /// As [`vulkan::Context::submit_to`] for the caller's command buffers, semaphores and
    /// fence. In particular each of `waits` will be signalled (or the frame, and every
    /// later frame of its queue, hangs until the timeout reports it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`frame`) out of order; as
    /// [`vulkan::Context::submit_to`]. After an error the step may be retried.
    pub unsafe fn submit_vulkan(
        &mut self,
        command_buffers: &[vk::CommandBuffer],
        waits: &[(&ExportableSemaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&ExportableSemaphore, u64)],
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
    /// [`Error::InvalidArgument`] (`frame`) out of order; CUDA errors.
    pub fn cuda_signal(&mut self) -> Result<()> {
        check_step(self.ticket.index, self.next, Step::CudaSignal)?;
        self.sync.enqueue_cuda_signal(&self.ticket)?;
        self.advance(Step::CudaSignal);
        Ok(())
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
        waits: &[(&ExportableSemaphore, u64, vk::PipelineStageFlags)],
        signals: &[(&ExportableSemaphore, u64)],
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

    fn tickets(n: usize, count: usize) -> Vec<Ticket> {
        let mut ledger = Ledger::new(n);
        (0..count)
            .map(|_| {
                let t = ledger.peek().unwrap();
                assert_eq!(ledger.peek().unwrap(), t, "peek takes nothing");
                ledger.commit(&t);
                t
            })
            .collect()
    }

    #[test]
    fn values_are_index_plus_one_and_slots_rotate() {
        for n in 1..=FrameSync::MAX_FRAMES_IN_FLIGHT {
            for (i, t) in tickets(n, 50).iter().enumerate() {
                assert_eq!(t.index, i as u64);
                assert_eq!(t.value, i as u64 + 1);
                assert_eq!(t.slot, i % n);
            }
        }
    }

    #[test]
    fn a_slot_is_reused_only_after_the_frame_n_earlier() {
        for n in 1..=4 {
            let all = tickets(n, 40);
            for t in &all {
                match t.reuses {
                    None => assert!(t.index < n as u64, "frame {} waits for nothing", t.index),
                    Some(prev) => {
                        assert_eq!(prev, t.value - n as u64);
                        // The frame waited for used the same slot, and no frame in between did.
                        let p = &all[(prev - 1) as usize];
                        assert_eq!(p.slot, t.slot);
                        assert!(all[p.index as usize + 1..t.index as usize]
                            .iter()
                            .all(|m| m.slot != t.slot));
                    }
                }
            }
        }
    }

    #[test]
    fn values_per_slot_strictly_increase() {
        let all = tickets(3, 30);
        for slot in 0..3 {
            let v: Vec<u64> = all
                .iter()
                .filter(|t| t.slot == slot)
                .map(|t| t.value)
                .collect();
            assert!(v.windows(2).all(|w| w[1] == w[0] + 3), "{v:?}");
        }
    }

    #[test]
    fn the_last_value_never_wraps() {
        let mut ledger = Ledger {
            frames_in_flight: 2,
            begun: u64::MAX - 2,
        };
        let t = ledger.peek().unwrap();
        assert_eq!(t.value, u64::MAX - 1);
        ledger.commit(&t);
        let t = ledger.peek().unwrap();
        assert_eq!(t.value, u64::MAX);
        ledger.commit(&t);
        let e = ledger.peek().unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { arg: "frame", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("never wrap"), "{e}");
    }

    #[test]
    fn last_value_in_each_slot() {
        let mut ledger = Ledger::new(3);
        assert_eq!(ledger.last_in_slot(0), None);
        for t in tickets(3, 7) {
            ledger.commit(&t);
        }
        // Frames 0..=6 (values 1..=7): slot 0 had 1, 4, 7; slot 1 had 2, 5; slot 2 had 3, 6.
        assert_eq!(ledger.last_in_slot(0), Some(7));
        assert_eq!(ledger.last_in_slot(1), Some(5));
        assert_eq!(ledger.last_in_slot(2), Some(6));
        let mut young = Ledger::new(4);
        young.commit(&young.peek().unwrap());
        assert_eq!(young.last_in_slot(0), Some(1));
        assert_eq!(young.last_in_slot(1), None);
        for v in 1..=7 {
            assert_eq!(ledger.slot_of(v), (v as usize - 1) % 3);
        }
    }

    #[test]
    fn waits_on_values_nobody_will_signal_are_refused() {
        let mut ledger = Ledger::new(2);
        for t in tickets(2, 5) {
            ledger.commit(&t);
        }
        for v in 1..=5 {
            assert!(ledger.check_value(v).is_ok());
        }
        for v in [0, 6, u64::MAX] {
            let e = ledger.check_value(v).unwrap_err();
            assert!(
                matches!(e, Error::InvalidArgument { arg: "value", .. }),
                "{e}"
            );
            assert!(e.to_string().contains("1..=5"), "{e}");
        }
    }

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

    #[test]
    fn widening_follows_the_word_across_its_wrap() {
        assert_eq!(widen(0, 0), 0);
        assert_eq!(widen(0, 1), 1);
        assert_eq!(widen(5, 9), 9);
        assert_eq!(widen(9, 9), 9, "no progress");
        assert_eq!(widen(9, 5), 9, "an older word is no progress");
        // Values around 2^32: the word wraps, the 64-bit value keeps growing.
        let near = (1u64 << 32) - 2;
        assert_eq!(widen(near, (near + 4) as u32), near + 4);
        assert_eq!(widen(near + 4, (near + 4 + 8) as u32), near + 12);
        // Up to 2^31 - 1 ahead is progress; 2^31 and more is taken as stale.
        assert_eq!(widen(10, 10 + i32::MAX as u32), 10 + i32::MAX as u64);
        assert_eq!(widen(10, 10u32.wrapping_add(1 << 31)), 10);
    }

    #[test]
    fn frames_in_flight_and_streams_are_bounded() {
        for n in 1..=FrameSync::MAX_FRAMES_IN_FLIGHT {
            for streams in 1..=n {
                assert!(check_counts(n, streams).is_ok());
            }
            for streams in [0, n + 1] {
                let e = check_counts(n, streams).unwrap_err();
                assert!(
                    matches!(
                        e,
                        Error::InvalidArgument {
                            arg: "desc.streams",
                            ..
                        }
                    ),
                    "{e}"
                );
            }
        }
        for n in [0, FrameSync::MAX_FRAMES_IN_FLIGHT + 1] {
            let e = check_counts(n, 1).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument {
                        arg: "desc.frames_in_flight",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("1..=8"), "{e}");
        }
    }

    #[test]
    fn each_mode_names_the_capability_it_lacks() {
        let no_memops = || {
            Err(Error::Unsupported {
                what: "memops".into(),
                reason: "old driver".into(),
            })
        };
        let e = check_mode(SyncMode::Semaphores, false, no_memops).unwrap_err();
        assert!(
            e.to_string().contains("VK_KHR_external_semaphore_fd"),
            "{e}"
        );
        // The semaphore mode never asks for memops; the low-latency mode never for fds.
        assert!(check_mode(SyncMode::Semaphores, true, || unreachable!()).is_ok());
        assert!(check_mode(SyncMode::LowLatency, false, || Ok(())).is_ok());
        let e = check_mode(SyncMode::LowLatency, true, no_memops).unwrap_err();
        assert!(e.to_string().contains("old driver"), "{e}");
    }

    #[test]
    fn descriptions_default_to_semaphores_with_the_measured_lanes() {
        let d = FrameSyncDesc::new(3);
        assert_eq!((d.frames_in_flight, d.mode), (3, SyncMode::Semaphores));
        assert_eq!(d.timeout, Duration::from_secs(5));
        assert_eq!(d.layout(), (QueueLayout::Split, 1));
        assert_eq!(FrameSyncDesc::new(1).layout(), (QueueLayout::Single, 1));
        let d = d.mode(SyncMode::LowLatency).timeout(Duration::ZERO);
        assert_eq!((d.mode, d.timeout), (SyncMode::LowLatency, Duration::ZERO));
        assert_eq!(d.layout(), (QueueLayout::Single, 1));
        // Set lanes win over the mode's default, whatever the order of the calls.
        let d = FrameSyncDesc::new(4)
            .lanes(QueueLayout::Split, 2)
            .mode(SyncMode::LowLatency);
        assert_eq!(d.layout(), (QueueLayout::Split, 2));
    }

    #[test]
    fn queue_layouts() {
        for slot in 0..8 {
            assert_eq!(
                slot_queues(QueueLayout::PerSlot, slot, 4),
                (slot % 4, slot % 4)
            );
            assert_eq!(slot_queues(QueueLayout::Single, slot, 4), (0, 0));
            assert_eq!(slot_queues(QueueLayout::Split, slot, 4), (0, 1));
            // One queue: everything on it.
            for layout in [
                QueueLayout::PerSlot,
                QueueLayout::Single,
                QueueLayout::Split,
            ] {
                assert_eq!(slot_queues(layout, slot, 1), (0, 0));
            }
        }
    }
}
