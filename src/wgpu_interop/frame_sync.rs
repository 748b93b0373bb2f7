//! N frames in flight from wgpu to CUDA and back, every Vulkan-side wait and signal riding
//! on wgpu's own submissions.

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::CudaStream;

use super::ownership::{Direction, Handed, Points, PARKED_LAYOUT};
use super::{WgpuBuffer, WgpuContext, WgpuTexture};
use crate::cuda;
use crate::error::{Error, Result};
use crate::interop::SharedSemaphore;
use crate::util::Commands;
use crate::vulkan::{Semaphore, SemaphoreKind};

/// Most frames in flight.
pub const MAX_FRAMES_IN_FLIGHT: usize = 16;

/// Frames from wgpu to CUDA and back on one wgpu queue and one CUDA stream, over two
/// exported timeline semaphores (wgpu → CUDA, CUDA → wgpu) and a local one that says when
/// a frame's hand-back has executed. See the [module docs](super) for how the ownership
/// transfers stay invisible to wgpu's state tracking.
///
/// Frame `n` (value `n + 1`) goes: the caller's wgpu work →
/// [`WgpuFrame::release_to_cuda`] → [`WgpuFrame::cuda_wait`] → the caller's CUDA work →
/// [`WgpuFrame::cuda_signal`] → [`WgpuFrame::acquire_from_cuda`] → the caller's wgpu work.
/// The steps are enforced in that order. [`WgpuFrameSync::begin`] waits on the host only when
/// `frames_in_flight` frames are still unfinished. [`WgpuFrameSync::with_own_queue`] moves the
/// acquires, which wait for CUDA, to vkcuda's own queue on wgpu's device.
pub struct WgpuFrameSync {
    ctx: WgpuContext,
    stream: Arc<CudaStream>,
    frames_in_flight: usize,
    timeout: Duration,
    begun: u64,
    /// The latest hand-back value whose signal was added to wgpu's queue, and the latest
    /// one known to ride on a submission: a hand-back's signal rides on the next one made
    /// on the queue (by anyone), and one is owed before waiting for it.
    added: u64,
    flushed: u64,
    /// With [`WgpuFrameSync::with_own_queue`]: one command buffer per slot on vkcuda's own
    /// queue, which records each frame's acquire.
    acquirers: Option<Vec<Commands>>,
    /// A wait for a hand-back value was added to wgpu's queue and may not have been
    /// carried by a submission yet.
    wait_pending: bool,
    /// Images and buffers whose barriers a frame recorded behind wgpu's back, kept until
    /// that frame's hand-back has executed (wgpu does not know our command buffers use
    /// them).
    held: VecDeque<(u64, Handed)>,
    // Dropped only once every frame has finished (see Drop).
    to_cuda: ManuallyDrop<SharedSemaphore>,
    to_wgpu: ManuallyDrop<SharedSemaphore>,
    done: ManuallyDrop<Arc<Semaphore>>,
}

impl std::fmt::Debug for WgpuFrameSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuFrameSync")
            .field("frames_in_flight", &self.frames_in_flight)
            .field("begun", &self.begun)
            .finish_non_exhaustive()
    }
}

/// Where a frame is in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Begun,
    Released,
    CudaWaited,
    CudaSignalled,
    /// Handed back (or completed by Drop): nothing left to do.
    Done,
}

/// One frame of a [`WgpuFrameSync`]. Dropping it before [`WgpuFrame::acquire_from_cuda`]
/// completes the chain with empty work (waits and signals still pair up; textures and
/// buffers released to CUDA are taken back), so later frames never wait on a value nobody
/// signals.
pub struct WgpuFrame<'a> {
    sync: &'a mut WgpuFrameSync,
    value: u64,
    step: Step,
    /// What [`WgpuFrame::release_to_cuda`] handed over, taken back at the end.
    released: Option<Released>,
}

/// The textures and buffers a frame released to CUDA.
struct Released {
    textures: Vec<WgpuTexture>,
    buffers: Vec<WgpuBuffer>,
    handed: Handed,
}

impl std::fmt::Debug for WgpuFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuFrame")
            .field("value", &self.value)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl WgpuFrameSync {
    /// Sets up `frames_in_flight` frames between `ctx`'s queue and a new stream of `cu`.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `frames_in_flight` outside `1..=MAX_FRAMES_IN_FLIGHT`,
    ///   or `cu` is not on `ctx`'s GPU (`cu`).
    /// * [`Error::MissingExtension`]: the device cannot export semaphore fds
    ///   ([`WgpuContext::check_semaphore_export`]).
    /// * Creation failures of the semaphores or the stream.
    pub fn new(ctx: &WgpuContext, cu: &cuda::Context, frames_in_flight: usize) -> Result<Self> {
        Self::setup(ctx, cu, frames_in_flight, false)
    }

    /// As [`WgpuFrameSync::new`], but each frame's acquire (the submission that waits for
    /// CUDA) goes to vkcuda's own queue on wgpu's device instead of wgpu's queue, as
    /// [`FrameSync`](crate::interop::FrameSync)'s default two-queue layout does: a frame
    /// waiting for CUDA then holds up no wgpu work but what must see its result. With
    /// [`WgpuFrame::acquire_from_cuda`], wgpu's next submission waits for the acquire
    /// (wgpu's queue still runs behind CUDA); with [`WgpuFrame::acquire_from_cuda_deferred`]
    /// the textures come back at the slot's next [`WgpuFrameSync::begin`], and the next
    /// frames' wgpu work overlaps the crossing.
    ///
    /// # Errors
    /// As [`WgpuFrameSync::new`]; [`Error::Unsupported`] when the vkcuda context on wgpu's
    /// device has no queue of its own ([`WgpuContext::open`] gives it one where wgpu's
    /// queue family has a second queue).
    pub fn with_own_queue(
        ctx: &WgpuContext,
        cu: &cuda::Context,
        frames_in_flight: usize,
    ) -> Result<Self> {
        if ctx.vulkan().queue_count() == 0 {
            return Err(Error::Unsupported {
                what: "acquiring wgpu frames on vkcuda's own queue".into(),
                reason: "the vkcuda context on this wgpu device has no queue (WgpuContext::open \
                         gives it one where wgpu's queue family has a second queue)"
                    .into(),
            });
        }
        Self::setup(ctx, cu, frames_in_flight, true)
    }

    fn setup(
        ctx: &WgpuContext,
        cu: &cuda::Context,
        frames_in_flight: usize,
        own_queue: bool,
    ) -> Result<Self> {
        if !(1..=MAX_FRAMES_IN_FLIGHT).contains(&frames_in_flight) {
            return Err(Error::invalid(
                "frames_in_flight",
                frames_in_flight.to_string(),
                format!("1..={MAX_FRAMES_IN_FLIGHT}"),
            ));
        }
        ctx.check_semaphore_export()?;
        let vk = ctx.vulkan();
        let to_cuda = SharedSemaphore::timeline(vk, cu, 0)?;
        let to_wgpu = SharedSemaphore::timeline(vk, cu, 0)?;
        let done = Arc::new(Semaphore::local(vk, SemaphoreKind::Timeline, 0)?);
        let acquirers = own_queue
            .then(|| (0..frames_in_flight).map(|_| Commands::new(vk)).collect())
            .transpose()?;
        Ok(Self {
            ctx: ctx.clone(),
            stream: cu.new_stream()?,
            frames_in_flight,
            timeout: Duration::from_secs(10),
            begun: 0,
            added: 0,
            flushed: 0,
            acquirers,
            wait_pending: false,
            held: VecDeque::new(),
            to_cuda: ManuallyDrop::new(to_cuda),
            to_wgpu: ManuallyDrop::new(to_wgpu),
            done: ManuallyDrop::new(done),
        })
    }

    /// The CUDA stream every frame's CUDA work runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Frames begun so far.
    pub fn frames_begun(&self) -> u64 {
        self.begun
    }

    /// Starts the next frame, first waiting (host, spin then sleep, bounded) until the
    /// frame `frames_in_flight` earlier has been handed back to wgpu.
    ///
    /// # Errors
    /// [`Error::Timeout`] naming the frame waited for (no frame was begun).
    pub fn begin(&mut self) -> Result<WgpuFrame<'_>> {
        let value = self.begun + 1;
        let oldest = value.saturating_sub(self.frames_in_flight as u64);
        if oldest > 0 {
            if oldest > self.flushed {
                self.ctx.flush_signals();
                self.flushed = self.added;
                self.wait_pending = false;
            }
            self.done.wait(oldest, self.timeout)?;
        }
        self.held.retain(|(v, _)| *v > oldest);
        self.begun = value;
        Ok(WgpuFrame {
            sync: self,
            value,
            step: Step::Begun,
            released: None,
        })
    }

    /// Waits (host, bounded) until every frame begun so far has been handed back.
    ///
    /// # Errors
    /// [`Error::Timeout`].
    pub fn wait_idle(&self) -> Result<()> {
        if self.begun > self.flushed {
            self.ctx.flush_signals();
        }
        self.done.wait(self.begun, self.timeout)
    }

    /// With a wait for `done` possibly not yet carried by a submission on wgpu's queue,
    /// carries it and waits (bounded) until that submission has executed, so `done` is in
    /// no pending queue operation when it is destroyed.
    fn settle_waits(&mut self) -> Result<()> {
        if std::mem::take(&mut self.wait_pending) {
            let index = self.ctx.flush_signals();
            self.ctx.wait_queue(Some(index))?;
        }
        Ok(())
    }
}

impl Drop for WgpuFrameSync {
    fn drop(&mut self) {
        if let Err(e) = self.wait_idle().and_then(|()| self.settle_waits()) {
            // The semaphores (and the images held) may still be in use: leak them.
            log::error!("WgpuFrameSync dropped with frames unfinished, leaking: {e}");
            std::mem::forget(std::mem::take(&mut self.held));
            return;
        }
        // SAFETY: every frame has finished, so no queue or stream uses the semaphores;
        // each is dropped once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.to_cuda);
        }
        // SAFETY: as above.
        unsafe {
            ManuallyDrop::drop(&mut self.to_wgpu);
        }
        // SAFETY: as above.
        unsafe {
            ManuallyDrop::drop(&mut self.done);
        }
    }
}

impl WgpuFrame<'_> {
    /// The frame's timeline value (frame number + 1).
    pub fn value(&self) -> u64 {
        self.value
    }

    fn expect(&self, step: Step, call: &str) -> Result<()> {
        if self.step == step {
            return Ok(());
        }
        Err(Error::invalid(
            "frame",
            format!("{call} called after step {:?}", self.step),
            format!("{call} right after step {step:?}"),
        ))
    }

    /// Hands `textures` and `buffers` to CUDA after all wgpu work submitted so far: one
    /// wgpu submission that parks the textures in wgpu's `STORAGE_READ_WRITE` state
    /// (`GENERAL`) and releases them and the buffers to `VK_QUEUE_FAMILY_EXTERNAL`, then a
    /// signal of the wgpu → CUDA timeline. Pass every texture and buffer CUDA will touch;
    /// wgpu must not use them until [`WgpuFrame::acquire_from_cuda`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: out of order (`frame`); one listed twice or not made on
    /// this frame sync's device (`textures`/`buffers`), already released (`image`/`buffer`),
    /// or last used by vkcuda on one of its own queues without being waited for.
    pub fn release_to_cuda(
        &mut self,
        textures: &[&WgpuTexture],
        buffers: &[&WgpuBuffer],
    ) -> Result<()> {
        self.release_to_cuda_after(Vec::new(), textures, buffers)
    }

    /// [`WgpuFrame::release_to_cuda`] with `commands` (the frame's wgpu work, finished but
    /// not yet submitted) submitted first, in the same submission: a frame crosses with
    /// one submission fewer on the GPU's path than submitting them apart.
    ///
    /// # Errors
    /// As [`WgpuFrame::release_to_cuda`]; `commands` are then dropped unsubmitted.
    pub fn release_to_cuda_after(
        &mut self,
        commands: impl IntoIterator<Item = wgpu::CommandBuffer>,
        textures: &[&WgpuTexture],
        buffers: &[&WgpuBuffer],
    ) -> Result<()> {
        self.expect(Step::Begun, "release_to_cuda")?;
        let handed = self.sync.ctx.hand_over(
            Direction::Release,
            textures,
            buffers,
            Points {
                signals: &[(self.sync.to_cuda.vulkan(), self.value)],
                commands: commands.into_iter().collect(),
                ..Points::default()
            },
        )?;
        self.sync.flushed = self.sync.added;
        self.sync.wait_pending = false;
        self.released = Some(Released {
            textures: textures.iter().map(|&t| t.clone()).collect(),
            buffers: buffers.iter().map(|&b| b.clone()).collect(),
            handed,
        });
        self.step = Step::Released;
        Ok(())
    }

    /// Makes the CUDA stream wait for the wgpu → CUDA value of this frame; returns the
    /// stream to launch the frame's CUDA work on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] out of order (`frame`); [`Error::Cuda`].
    pub fn cuda_wait(&mut self) -> Result<Arc<CudaStream>> {
        self.expect(Step::Released, "cuda_wait")?;
        self.sync
            .to_cuda
            .cuda()
            .wait(&self.sync.stream, self.value)?;
        self.step = Step::CudaWaited;
        Ok(self.sync.stream.clone())
    }

    /// Signals the CUDA → wgpu value of this frame on the stream, after the CUDA work.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] out of order (`frame`); [`Error::Cuda`].
    pub fn cuda_signal(&mut self) -> Result<()> {
        self.expect(Step::CudaWaited, "cuda_signal")?;
        self.sync
            .to_wgpu
            .cuda()
            .signal(&self.sync.stream, self.value)?;
        self.step = Step::CudaSignalled;
        Ok(())
    }

    /// Takes the released textures and buffers back: a submission that waits for the
    /// CUDA → wgpu value (GPU-side) and acquires them from `VK_QUEUE_FAMILY_EXTERNAL` (the
    /// textures stay in the parked `GENERAL` layout wgpu's tracker still holds), on wgpu's
    /// queue (or, with [`WgpuFrameSync::with_own_queue`], on vkcuda's, with wgpu's next
    /// submission waiting for it). wgpu work submitted afterwards sees CUDA's writes.
    /// Returns the frame's value.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] out of order (`frame`); with
    /// [`WgpuFrameSync::with_own_queue`], [`Error::Timeout`] when the slot's previous
    /// acquire has not finished.
    pub fn acquire_from_cuda(mut self) -> Result<u64> {
        self.expect(Step::CudaSignalled, "acquire_from_cuda")?;
        self.finish(HandBack::Now)?;
        Ok(self.value)
    }

    /// [`WgpuFrame::acquire_from_cuda`] with `commands` (wgpu work that reads what CUDA
    /// wrote, finished but not yet submitted) submitted right after the acquire (in the
    /// same submission on wgpu's queue, or in the next one, waiting for it, with
    /// [`WgpuFrameSync::with_own_queue`]). Returns the index of the submission that holds
    /// `commands`, for `wgpu::Device::poll`.
    ///
    /// # Errors
    /// As [`WgpuFrame::acquire_from_cuda`]; `commands` are then dropped unsubmitted.
    pub fn acquire_from_cuda_then(
        mut self,
        commands: impl IntoIterator<Item = wgpu::CommandBuffer>,
    ) -> Result<wgpu::SubmissionIndex> {
        self.expect(Step::CudaSignalled, "acquire_from_cuda")?;
        let index = self.finish(HandBack::Then(commands.into_iter().collect()))?;
        index.ok_or_else(|| Error::Unsupported {
            what: "the submission of the commands after an acquire".into(),
            reason: "none was made".into(),
        })
    }

    /// [`WgpuFrame::acquire_from_cuda`] that hands the textures and buffers back to wgpu
    /// only when the slot comes round again: with [`WgpuFrameSync::with_own_queue`], the
    /// acquire runs on vkcuda's queue and wgpu's queue is not made to wait for it, so the
    /// next frames' wgpu work overlaps this crossing (as vkcuda's own two-queue
    /// [`FrameSync`](crate::interop::FrameSync) does). On a frame sync made with
    /// [`WgpuFrameSync::new`] it is [`WgpuFrame::acquire_from_cuda`]. Returns the frame's
    /// value.
    ///
    /// # Safety
    /// Submit no wgpu work that uses this frame's textures or buffers until
    /// [`WgpuFrameSync::begin`] has returned for the frame `frames_in_flight` later (or
    /// [`WgpuFrameSync::wait_idle`] has returned); the usual loop, which touches a slot's
    /// textures only in that slot's frames, does so. Work submitted sooner may run before
    /// the acquire: it would race CUDA for the memory, and wgpu's barriers would meet an
    /// image still owned by `VK_QUEUE_FAMILY_EXTERNAL`.
    ///
    /// # Errors
    /// As [`WgpuFrame::acquire_from_cuda`].
    pub unsafe fn acquire_from_cuda_deferred(mut self) -> Result<u64> {
        self.expect(Step::CudaSignalled, "acquire_from_cuda")?;
        self.finish(HandBack::Deferred)?;
        Ok(self.value)
    }

    /// The acquire, with the hand-back `back`; marks the frame finished whatever happens.
    /// Returns the index of the wgpu submission that holds the acquire or the commands,
    /// where one was made.
    fn finish(&mut self, back: HandBack) -> Result<Option<wgpu::SubmissionIndex>> {
        self.step = Step::Done;
        let value = self.value;
        let released = self.released.take();
        if self.sync.acquirers.is_some() {
            return self.finish_on_own_queue(released, back);
        }
        let sync = &mut *self.sync;
        let (textures, buffers) = match &released {
            Some(r) => (
                r.textures.iter().collect::<Vec<_>>(),
                r.buffers.iter().collect::<Vec<_>>(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let commands = match back {
            HandBack::Then(commands) => commands,
            HandBack::Now | HandBack::Deferred => Vec::new(),
        };
        // The hand-back signal rides on the next submission (see WgpuFrameSync::begin).
        let acquired = sync.ctx.hand_over(
            Direction::Acquire,
            &textures,
            &buffers,
            Points {
                wait: Some((sync.to_wgpu.vulkan().raw(), value)),
                signals: &[(&sync.done, value)],
                deferred: true,
                commands,
            },
        );
        match acquired {
            Ok(handed) => {
                sync.flushed = sync.added;
                sync.added = value;
                sync.wait_pending = false;
                let index = handed.index.clone();
                sync.held.push_back((value, handed));
                Ok(Some(index))
            }
            Err(e) => {
                // Never submitted: what the release used stays held until the frame
                // sync is dropped (after its bounded wait).
                if let Some(r) = released {
                    sync.held.push_back((u64::MAX, r.handed));
                }
                Err(e)
            }
        }
    }

    /// [`WgpuFrame::finish`] with the acquire on vkcuda's own queue, waiting for the
    /// wgpu → CUDA value too (what the release signalled: it orders the acquire after the
    /// release for the image trackers, and CUDA's signal implies it) and signalling the
    /// hand-back value there.
    fn finish_on_own_queue(
        &mut self,
        released: Option<Released>,
        back: HandBack,
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        let value = self.value;
        let sync = &mut *self.sync;
        let slots = sync.acquirers.as_ref().map_or(1, Vec::len) as u64;
        let slot = usize::try_from((value - 1) % slots).unwrap_or_default();
        let Some(c) = sync.acquirers.as_mut().and_then(|a| a.get_mut(slot)) else {
            return Err(Error::invalid(
                "frame",
                "no acquirer",
                "a frame of this sync",
            ));
        };
        let submitted = (|| {
            let mut waits = Vec::new();
            if let Some(r) = &released {
                for t in &r.textures {
                    c.acquire_image(t.image(), PARKED_LAYOUT)?;
                }
                for b in &r.buffers {
                    c.acquire_buffer(b.external())?;
                }
                waits.push((sync.to_cuda.vulkan(), value));
                waits.push((sync.to_wgpu.vulkan(), value));
            }
            c.submit(0, &waits, &[(&sync.done, value)], sync.timeout)
        })();
        if let Some(r) = released {
            // Until done: the release on wgpu's queue used them, which wgpu does not know.
            let v = if submitted.is_ok() { value } else { u64::MAX };
            sync.held.push_back((v, r.handed));
        }
        submitted?;
        sync.added = value;
        sync.flushed = value;
        let done = sync.done.raw();
        match back {
            HandBack::Now => {
                sync.ctx.wait_on_next_submission(done, value)?;
                sync.wait_pending = true;
                Ok(None)
            }
            HandBack::Then(commands) => {
                let handed = sync.ctx.hand_over(
                    Direction::Acquire,
                    &[],
                    &[],
                    Points {
                        wait: Some((done, value)),
                        commands,
                        ..Points::default()
                    },
                )?;
                sync.wait_pending = false;
                Ok(Some(handed.index))
            }
            HandBack::Deferred => Ok(None),
        }
    }
}

/// How a frame's textures and buffers come back to wgpu after CUDA.
enum HandBack {
    /// wgpu work submitted afterwards sees CUDA's writes.
    Now,
    /// These commands, submitted in the acquire's wake, see them.
    Then(Vec<wgpu::CommandBuffer>),
    /// At the slot's next `begin` (with the acquire on vkcuda's own queue).
    Deferred,
}

impl Drop for WgpuFrame<'_> {
    fn drop(&mut self) {
        let completed = (|| -> Result<()> {
            if self.step == Step::Released {
                self.cuda_wait()?;
            }
            if self.step == Step::CudaWaited {
                self.cuda_signal()?;
            }
            match self.step {
                Step::CudaSignalled => self.finish(HandBack::Now).map(drop),
                Step::Begun if self.sync.acquirers.is_some() => {
                    // Nothing released: only the hand-back value is owed, signalled on the
                    // queue that signals the others, in order after them.
                    self.finish(HandBack::Deferred).map(drop)
                }
                Step::Begun => {
                    // Nothing released: only the hand-back value is owed, signalled by wgpu
                    // in queue order (a host signal could overtake the previous frame's).
                    self.step = Step::Done;
                    let sync = &mut *self.sync;
                    sync.ctx.submit_signals(&[(&sync.done, self.value)])?;
                    sync.added = self.value;
                    sync.flushed = self.value;
                    Ok(())
                }
                _ => Ok(()),
            }
        })();
        if let Err(e) = completed {
            log::error!("completing a dropped wgpu frame failed: {e}");
        }
    }
}
