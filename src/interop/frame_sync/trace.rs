//! The optional timeline of a [`FrameSync`](super::FrameSync)
//! ([`FrameSyncDesc::trace`](super::FrameSyncDesc::trace)): GPU timestamps around each
//! Vulkan batch, CUDA events around each frame's CUDA work, and the host's steps, all on the
//! host clock, as a [`Trace`] per crossing.
//!
//! Tracing never fails a frame: the first error of a timer is logged, tracing stops, and
//! [`FrameTrace::error`] says why.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ash::vk;
use cudarc::driver::CudaStream;

use crate::cuda::{self, CudaTimer};
use crate::error::{Error, Result};
use crate::trace::{now_ns, GpuSpan, Span, Trace, TrackId, TrackKind};
use crate::vulkan::{self, Bracket, GpuTimer, QueueId};

/// What [`FrameSync::take_trace`](super::FrameSync::take_trace) returns.
#[derive(Debug)]
pub struct FrameTrace {
    /// One track per Vulkan queue, CUDA stream and the host thread that drove the frames;
    /// write it with [`Trace::write_json`] and open it in Perfetto or `chrome://tracing`.
    pub trace: Trace,
    /// Per crossing, in order: from the host submitting its producing batch until its
    /// consuming batch finished on the GPU (every frame it carries was back in Vulkan).
    pub latencies: Vec<Duration>,
    /// Why tracing stopped early, if it did.
    pub error: Option<Error>,
}

/// The timing pieces of one crossing, until all can be read.
struct Record {
    index: u64,
    frames: Range<u64>,
    submitted_ns: u64,
    produce: Option<(usize, Bracket)>,
    cuda: Option<(usize, usize)>,
    consume: Option<(usize, Bracket)>,
}

pub(super) struct Tracer {
    timer: GpuTimer,
    cuda: Vec<CudaTimer>,
    trace: Trace,
    host: TrackId,
    queues: Vec<TrackId>,
    streams: Vec<TrackId>,
    pending: VecDeque<Record>,
    latencies: Vec<Duration>,
    error: Option<Error>,
}

impl Tracer {
    /// Timers for the context's queues (`queue_count` of its main family) and `streams`,
    /// with room for `in_flight` crossings.
    pub(super) fn new(
        vk: &vulkan::Context,
        cu: &cuda::Context,
        streams: &[Arc<CudaStream>],
        in_flight: usize,
    ) -> Result<Self> {
        let slots = 2 * in_flight + 2;
        let timer = GpuTimer::new(vk, QueueId::Main(0), slots)?;
        let cuda = streams
            .iter()
            .map(|s| CudaTimer::new(cu, s, in_flight + 1))
            .collect::<Result<Vec<_>>>()?;
        let mut trace = Trace::new();
        let host = trace.track("host: FrameSync", TrackKind::HostThread);
        let family = vk.queue_family_index();
        let queues = (0..vk.queue_count())
            .map(|q| {
                trace.track(
                    format!("Vulkan queue {q}"),
                    TrackKind::VulkanQueue {
                        family,
                        index: q as u32,
                    },
                )
            })
            .collect();
        let streams = (0..streams.len())
            .map(|s| trace.track(format!("CUDA stream {s}"), TrackKind::CudaStream))
            .collect();
        Ok(Self {
            timer,
            cuda,
            trace,
            host,
            queues,
            streams,
            pending: VecDeque::new(),
            latencies: Vec::new(),
            error: None,
        })
    }

    fn active(&self) -> bool {
        self.error.is_none()
    }

    /// Keeps `r`'s value, or stops tracing with its error.
    fn note<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                log::warn!("FrameSync trace stopped: {e}");
                self.error.get_or_insert(e);
                None
            }
        }
    }

    /// A host step from `start_ns` until now.
    pub(super) fn host_step(&mut self, name: &str, start_ns: u64, crossing: u64) {
        if self.active() {
            let span = Span::new(name, start_ns, now_ns()).frame(crossing);
            let r = self.trace.push(self.host, span);
            self.note(r);
        }
    }

    /// The bracket around crossing `index`'s producing batch on `queue`.
    pub(super) fn produce(
        &mut self,
        index: u64,
        frames: Range<u64>,
        queue: usize,
    ) -> Option<Bracket> {
        if !self.active() {
            return None;
        }
        let r = self.timer.bracket();
        let bracket = self.note(r)?;
        self.pending.push_back(Record {
            index,
            frames,
            submitted_ns: now_ns(),
            produce: Some((queue, bracket)),
            cuda: None,
            consume: None,
        });
        Some(bracket)
    }

    /// The bracket around crossing `index`'s consuming batch on `queue`.
    pub(super) fn consume(&mut self, index: u64, queue: usize) -> Option<Bracket> {
        if !self.active() {
            return None;
        }
        let r = self.timer.bracket();
        let bracket = self.note(r)?;
        if let Some(rec) = self.record(index) {
            rec.consume = Some((queue, bracket));
        }
        Some(bracket)
    }

    /// The bracket was not submitted (the submission failed).
    pub(super) fn unsubmitted(&mut self, bracket: Option<Bracket>) {
        if let Some(b) = bracket {
            self.timer.unsubmitted(&b);
            let e = Error::invalid("frame", "a traced batch failed to submit", "");
            self.note::<()>(Err(e));
        }
    }

    /// Starts timing crossing `index`'s CUDA work on stream `stream` (after its wait).
    pub(super) fn cuda_begin(&mut self, index: u64, stream: usize) {
        if !self.active() {
            return;
        }
        let r = self.cuda[stream].begin();
        if let Some(slot) = self.note(r) {
            if let Some(rec) = self.record(index) {
                rec.cuda = Some((stream, slot));
            }
        }
    }

    /// Ends the CUDA span of crossing `index` (before its signal).
    pub(super) fn cuda_end(&mut self, index: u64) {
        if !self.active() {
            return;
        }
        if let Some((stream, slot)) = self.record(index).and_then(|r| r.cuda) {
            let r = self.cuda[stream].end(slot);
            self.note(r);
        }
    }

    fn record(&mut self, index: u64) -> Option<&mut Record> {
        self.pending.iter_mut().rev().find(|r| r.index == index)
    }

    /// Reads back every crossing up to `done` (finished on the GPU), in order.
    pub(super) fn harvest(&mut self, done: u64, timeout: Duration) {
        while self.active() && self.pending.front().is_some_and(|r| r.index <= done) {
            let Some(rec) = self.pending.pop_front() else {
                break;
            };
            let r = self.read(&rec, timeout);
            self.note(r);
        }
    }

    fn read(&mut self, rec: &Record, timeout: Duration) -> Result<()> {
        let label = format!("frames {}..{}", rec.frames.start, rec.frames.end);
        let mut end = None;
        for (name, part) in [("produce", rec.produce), ("consume", rec.consume)] {
            if let Some((queue, b)) = part {
                let span = self.timer.read(b.slot, timeout)?;
                end = Some(span.end_ns);
                self.push_gpu(self.queues[queue], name, &label, rec.index, span)?;
            }
        }
        if let Some((stream, slot)) = rec.cuda {
            let span = self.cuda[stream].read(slot, timeout)?;
            self.push_gpu(self.streams[stream], "CUDA work", &label, rec.index, span)?;
        }
        if let (Some(end), Some(_)) = (end, rec.consume) {
            self.latencies
                .push(Duration::from_nanos(end.saturating_sub(rec.submitted_ns)));
        }
        Ok(())
    }

    fn push_gpu(
        &mut self,
        track: TrackId,
        name: &str,
        label: &str,
        index: u64,
        span: GpuSpan,
    ) -> Result<()> {
        let s = span.named(format!("{name} {label}")).frame(index);
        self.trace.push(track, s)
    }

    /// Everything read so far, and the timers' state.
    pub(super) fn finish(self) -> FrameTrace {
        FrameTrace {
            trace: self.trace,
            latencies: self.latencies,
            error: self.error,
        }
    }
}

/// `[before, middle.., after]` for a traced batch, or `middle` alone.
pub(super) fn bracketed(
    bracket: Option<Bracket>,
    middle: impl IntoIterator<Item = vk::CommandBuffer>,
) -> Vec<vk::CommandBuffer> {
    let mut all: Vec<_> = bracket.map(|b| b.before).into_iter().collect();
    all.extend(middle);
    all.extend(bracket.map(|b| b.after));
    all
}
