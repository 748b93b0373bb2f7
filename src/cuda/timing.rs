//! GPU times on a CUDA stream from timing-enabled events, mapped onto the host clock.
//!
//! CUDA events carry no absolute time, only distances between two of them
//! (`cuEventElapsedTime`). A [`CudaTimer`] therefore records an *anchor* event on its
//! stream while the stream is idle and the host spins on it: the event completes between
//! the host reads before and after ([`crate::trace::Bracketed`]), and the tightest of a few
//! tries becomes the anchor's host time. Every later event maps to the anchor's host time
//! plus its elapsed time from the anchor.
//!
//! `cuEventElapsedTime` returns milliseconds as an `f32` with about 0.5 us resolution; the
//! single-precision distance from the anchor loses about 1 us of precision some 10 s after
//! the anchor, so long runs call [`CudaTimer::calibrate`] again. Durations are taken from
//! event to event and keep full resolution.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};

use super::Context;
use crate::error::{Error, Result};
use crate::trace::{self, tightest, Bracketed, GpuSpan};

/// Most slots one [`CudaTimer`] holds.
pub const MAX_CUDA_TIMER_SLOTS: usize = 4096;

/// Anchor tries per calibration; the tightest is kept.
const ANCHOR_TRIES: usize = 8;

/// How long one anchor try may wait for its event.
const ANCHOR_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a slot is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Started,
    Ended,
}

struct Slot {
    start: CudaEvent,
    end: CudaEvent,
    state: SlotState,
}

/// Spans of work on one CUDA stream, timed with events and read back as host times.
///
/// ```no_run
/// # fn main() -> vkcuda::Result<()> {
/// # let cu: vkcuda::cuda::Context = todo!();
/// use vkcuda::cuda::CudaTimer;
/// let stream = cu.new_stream()?;
/// let mut timer = CudaTimer::new(&cu, &stream, 8)?;
/// let slot = timer.begin()?;
/// // launch the frame's kernels on `stream` ...
/// timer.end(slot)?;
/// let span = timer.read(slot, std::time::Duration::from_secs(1))?;
/// println!("kernel busy for {} ns", span.end_ns - span.start_ns);
/// # Ok(()) }
/// ```
pub struct CudaTimer {
    stream: Arc<CudaStream>,
    slots: Vec<Slot>,
    next: usize,
    anchor: CudaEvent,
    anchor_host_ns: u64,
    anchor_uncertainty_ns: u64,
}

impl std::fmt::Debug for CudaTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaTimer")
            .field("slots", &self.slots.len())
            .field("anchor_host_ns", &self.anchor_host_ns)
            .field("anchor_uncertainty_ns", &self.anchor_uncertainty_ns)
            .finish_non_exhaustive()
    }
}

fn timing_event(cu: &Context) -> Result<CudaEvent> {
    cu.cuda()
        .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| Error::cuda("cuEventCreate", e))
}

impl CudaTimer {
    /// A timer with `slots` spans in flight at once on `stream` (a stream of `cu`),
    /// anchored to the host clock ([`CudaTimer::calibrate`]; `stream` should be idle).
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] when `slots` is not in `1..=`[`MAX_CUDA_TIMER_SLOTS`]
    ///   (`slots`), or `stream` belongs to another context (`stream`).
    /// * [`Error::Timeout`] when an anchor event does not complete within 5 s.
    /// * [`Error::Cuda`] when creating or recording an event fails.
    pub fn new(cu: &Context, stream: &Arc<CudaStream>, slots: usize) -> Result<Self> {
        if !(1..=MAX_CUDA_TIMER_SLOTS).contains(&slots) {
            return Err(Error::invalid(
                "slots",
                format!("{slots}"),
                format!("1 to {MAX_CUDA_TIMER_SLOTS}"),
            ));
        }
        if stream.context() != cu.cuda() {
            return Err(Error::invalid(
                "stream",
                "a stream of another CUDA context",
                "a stream of `cu` (Context::new_stream)",
            ));
        }
        let slots = (0..slots)
            .map(|_| {
                Ok(Slot {
                    start: timing_event(cu)?,
                    end: timing_event(cu)?,
                    state: SlotState::Free,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut timer = Self {
            stream: stream.clone(),
            slots,
            next: 0,
            anchor: timing_event(cu)?,
            anchor_host_ns: 0,
            anchor_uncertainty_ns: 0,
        };
        timer.calibrate_with(cu)?;
        Ok(timer)
    }

    /// The anchor's host time ([`crate::trace::now_ns`] axis) and how far off it may be, in
    /// nanoseconds.
    pub fn anchor(&self) -> (u64, u64) {
        (self.anchor_host_ns, self.anchor_uncertainty_ns)
    }

    /// Records a new anchor on the stream and ties it to the host clock (the tightest of a
    /// few tries). The stream should be idle: queued work widens the bracket. Spans read
    /// after this use the new anchor.
    ///
    /// # Errors
    /// [`Error::Timeout`] when an anchor event does not complete within 5 s;
    /// [`Error::Cuda`] when recording or querying an event fails.
    pub fn calibrate(&mut self, cu: &Context) -> Result<()> {
        self.calibrate_with(cu)
    }

    fn calibrate_with(&mut self, cu: &Context) -> Result<()> {
        let mut tries = Vec::with_capacity(ANCHOR_TRIES);
        let mut events = Vec::with_capacity(ANCHOR_TRIES);
        for _ in 0..ANCHOR_TRIES {
            let event = timing_event(cu)?;
            let before_ns = trace::now_ns();
            event
                .record(&self.stream)
                .map_err(|e| Error::cuda("cuEventRecord", e))?;
            let start = Instant::now();
            while !event
                .try_is_complete()
                .map_err(|e| Error::cuda("cuEventQuery", e))?
            {
                if start.elapsed() >= ANCHOR_TIMEOUT {
                    return Err(Error::Timeout {
                        what: "a CUDA anchor event (is the stream busy?)".into(),
                        waited: start.elapsed(),
                    });
                }
                std::hint::spin_loop();
            }
            let after_ns = trace::now_ns();
            tries.push(Bracketed {
                before_ns,
                device: events.len() as u64,
                after_ns,
            });
            events.push(Some(event));
        }
        let best = tightest(&tries).ok_or_else(|| Error::Unsupported {
            what: "anchoring CUDA events to the host clock".into(),
            reason: "the host clock went backwards in every try".into(),
        })?;
        // `device` holds the index of the try.
        if let Some(event) = events.get_mut(best.device as usize).and_then(Option::take) {
            self.anchor = event;
        }
        self.anchor_host_ns = best.host_ns;
        self.anchor_uncertainty_ns = best.uncertainty_ns;
        Ok(())
    }

    /// Records the start of a span on the stream (after the work queued so far) in the
    /// next slot of the ring, and returns the slot.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`slots`) when the next slot still holds a span not read
    /// back; [`Error::Cuda`] when recording fails.
    pub fn begin(&mut self) -> Result<usize> {
        let index = self.next;
        let count = self.slots.len();
        let slot = &mut self.slots[index];
        if slot.state != SlotState::Free {
            return Err(Error::invalid(
                "slots",
                format!("slot {index} of {count} still holds a span not read back"),
                "try_read() or read() of the oldest span first, or a timer with more slots",
            ));
        }
        slot.start
            .record(&self.stream)
            .map_err(|e| Error::cuda("cuEventRecord", e))?;
        slot.state = SlotState::Started;
        self.next = (index + 1) % count;
        Ok(index)
    }

    /// Records the end of the span in `slot` on the stream (after the work queued so far).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`slot`) when `slot` was not begun or already ended;
    /// [`Error::Cuda`] when recording fails.
    pub fn end(&mut self, slot: usize) -> Result<()> {
        let s = slot_in(&mut self.slots, slot, SlotState::Started)?;
        s.end
            .record(&self.stream)
            .map_err(|e| Error::cuda("cuEventRecord", e))?;
        s.state = SlotState::Ended;
        Ok(())
    }

    /// The span in `slot` once its end event has completed, without waiting; the slot is
    /// then free for a new span.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`slot`) when `slot` was not ended (or was read already);
    /// [`Error::Cuda`] when querying the events fails.
    pub fn try_read(&mut self, slot: usize) -> Result<Option<GpuSpan>> {
        let Self {
            slots,
            anchor,
            anchor_host_ns,
            ..
        } = self;
        let s = slot_in(slots, slot, SlotState::Ended)?;
        if !s
            .end
            .try_is_complete()
            .map_err(|e| Error::cuda("cuEventQuery", e))?
        {
            return Ok(None);
        }
        let to_start = anchor
            .elapsed_ms(&s.start)
            .map_err(|e| Error::cuda("cuEventElapsedTime", e))?;
        let busy = s
            .start
            .elapsed_ms(&s.end)
            .map_err(|e| Error::cuda("cuEventElapsedTime", e))?;
        s.state = SlotState::Free;
        Ok(Some(span(*anchor_host_ns, slot, to_start, busy)))
    }

    /// Waits (spinning, then sleeping up to 1 ms at a time) until `slot` can be read, at most
    /// `timeout`.
    ///
    /// # Errors
    /// As [`CudaTimer::try_read`], and [`Error::Timeout`] when the span's work does not
    /// finish in time.
    pub fn read(&mut self, slot: usize, timeout: Duration) -> Result<GpuSpan> {
        let start = Instant::now();
        loop {
            if let Some(span) = self.try_read(slot)? {
                return Ok(span);
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(Error::Timeout {
                    what: format!("the CUDA events of slot {slot}"),
                    waited: elapsed,
                });
            }
            if elapsed < Duration::from_micros(200) {
                std::hint::spin_loop();
            } else {
                std::thread::sleep((timeout - elapsed).min(Duration::from_millis(1)));
            }
        }
    }
}

/// Slot `slot` of `slots` when it is in `state`.
fn slot_in(slots: &mut [Slot], slot: usize, state: SlotState) -> Result<&mut Slot> {
    match slots.get_mut(slot) {
        Some(s) if s.state == state => Ok(s),
        found => Err(Error::invalid(
            "slot",
            match found {
                Some(s) => format!("slot {slot} is {:?}", s.state),
                None => format!("slot {slot} is not a slot of this timer"),
            },
            format!("a slot in state {state:?}"),
        )),
    }
}

/// The span of a slot whose start lies `to_start_ms` after the anchor (host time
/// `anchor_host_ns`) and which lasted `busy_ms`; negative or non-finite values clamp to 0.
fn span(anchor_host_ns: u64, slot: usize, to_start_ms: f32, busy_ms: f32) -> GpuSpan {
    let ns = |ms: f32| -> f64 {
        let v = f64::from(ms) * 1e6;
        if v.is_finite() {
            v.round()
        } else {
            0.0
        }
    };
    let start = (anchor_host_ns as f64 + ns(to_start_ms)).max(0.0);
    let start_ns = if start >= u64::MAX as f64 {
        u64::MAX
    } else {
        start as u64
    };
    let busy = ns(busy_ms).max(0.0);
    GpuSpan {
        slot,
        start_ns,
        end_ns: start_ns.saturating_add(busy as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_map_from_the_anchor() {
        let s = span(1_000_000, 2, 0.25, 0.0105);
        assert_eq!((s.slot, s.start_ns, s.end_ns), (2, 1_250_000, 1_260_500));
        // An event before a newer anchor maps before it.
        let s = span(1_000_000, 0, -0.5, 0.1);
        assert_eq!((s.start_ns, s.end_ns), (500_000, 600_000));
        // Nothing maps before the clock's origin, and bad values clamp.
        assert_eq!(span(10, 0, -1.0, -1.0).start_ns, 0);
        let s = span(10, 0, f32::NAN, f32::INFINITY);
        assert_eq!((s.start_ns, s.end_ns), (10, 10));
    }
}
