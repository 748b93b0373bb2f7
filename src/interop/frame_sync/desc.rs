//! What [`FrameSync::new`](super::FrameSync::new) sets up: the crossing mode, the queue
//! layout, the stream count, and the checks on them.

use std::time::Duration;

use crate::error::{Error, Result};

/// How a [`FrameSync`](super::FrameSync) crosses between Vulkan and CUDA.
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

/// Which Vulkan queues a [`FrameSync`](super::FrameSync)'s batches go to. A batch that waits (on CUDA) holds
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

/// What [`FrameSync::new`](super::FrameSync::new) sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSyncDesc {
    /// Frames in flight, `1..=FrameSync::MAX_FRAMES_IN_FLIGHT`: one slot (semaphores or
    /// mailbox word, completion timeline) each.
    pub frames_in_flight: usize,
    /// How frames cross between the APIs.
    pub mode: SyncMode,
    /// Longest host wait of [`FrameSync::begin`](super::FrameSync::begin) (and of the drain on drop) before
    /// [`Error::Timeout`]. Zero makes `begin` a single poll.
    pub timeout: Duration,
    /// Which queues the batches go to; `None`: the mode's default
    /// ([`FrameSyncDesc::layout`]).
    pub queues: Option<QueueLayout>,
    /// How many CUDA streams the slots share round-robin (slot `s` uses stream
    /// `s % streams`), `1..=frames_in_flight`; `None`: the mode's default
    /// ([`FrameSyncDesc::layout`]).
    pub streams: Option<usize>,
    /// Frames each [`Frame`](super::Frame) carries across, `1..=MAX_FRAMES_PER_CROSSING`
    /// (default 1): the caller records this many frames' work into each batch and launches
    /// this many frames' kernels between [`cuda_wait`](super::Frame::cuda_wait) and
    /// [`cuda_signal`](super::Frame::cuda_signal), so the GPU switches between the APIs once
    /// per K frames instead of once per frame. [`choose_batch`](crate::interop::choose_batch)
    /// picks K for a target efficiency within a latency budget
    /// ([`FrameSyncDesc::batch`]).
    pub frames_per_crossing: usize,
    /// Records a timeline of every crossing (GPU timestamps of the Vulkan batches, CUDA
    /// events around the CUDA work, the host's steps), read with
    /// [`FrameSync::take_trace`](super::FrameSync::take_trace). Off by default; off, it
    /// costs nothing.
    pub trace: bool,
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
            frames_per_crossing: 1,
            trace: false,
        }
    }

    /// Carries `plan.frames` frames per crossing: the K that
    /// [`choose_batch`](crate::interop::choose_batch) chose for a target efficiency within
    /// a latency budget, which `plan` states (frames and time).
    pub fn batch(self, plan: &crate::interop::BatchPlan) -> Self {
        self.frames_per_crossing(plan.frames as usize)
    }

    /// Turns the timeline on or off ([`FrameSyncDesc::trace`]).
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Sets the frames each [`Frame`](super::Frame) carries across
    /// ([`FrameSyncDesc::frames_per_crossing`]).
    pub fn frames_per_crossing(mut self, frames: usize) -> Self {
        self.frames_per_crossing = frames;
        self
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
    /// (see [`FrameSync`](super::FrameSync)): [`QueueLayout::Split`] and one stream for
    /// [`SyncMode::Semaphores`] with several frames in flight and one frame per crossing,
    /// so each crossing overlaps the next frames'; otherwise [`QueueLayout::Single`] and
    /// one stream (the low-latency mode's crossings are short and slow down when batches
    /// wait on several queues at once; one frame in flight has nothing to overlap; and with
    /// several frames per crossing a render on a second queue would run while CUDA works,
    /// making the two APIs time-slice the GPU inside the batch).
    pub fn layout(&self) -> (QueueLayout, usize) {
        let (queues, streams) = match self.mode {
            SyncMode::Semaphores if self.frames_in_flight > 1 && self.frames_per_crossing == 1 => {
                DEFAULT_SEMAPHORES
            }
            SyncMode::Semaphores | SyncMode::LowLatency => DEFAULT_ONE_QUEUE,
        };
        (
            self.queues.unwrap_or(queues),
            self.streams.unwrap_or(streams),
        )
    }
}

/// The semaphore mode's default lanes with several frames in flight (measured: see
/// [`FrameSync`](super::FrameSync)).
const DEFAULT_SEMAPHORES: (QueueLayout, usize) = (QueueLayout::Split, 1);
/// The default lanes of the low-latency mode, and of the semaphore mode with one frame in
/// flight (measured: see [`FrameSync`](super::FrameSync)).
const DEFAULT_ONE_QUEUE: (QueueLayout, usize) = (QueueLayout::Single, 1);

/// Most frames in flight (re-exported as `FrameSync::MAX_FRAMES_IN_FLIGHT`).
pub(super) const MAX_FRAMES_IN_FLIGHT: usize = 8;

/// Most frames per crossing (re-exported as `FrameSync::MAX_FRAMES_PER_CROSSING`).
pub(super) const MAX_FRAMES_PER_CROSSING: usize = 1024;

/// Checks `desc.frames_in_flight`, the stream count in effect and the frames per crossing.
pub(super) fn check_counts(
    frames_in_flight: usize,
    streams: usize,
    frames_per_crossing: usize,
) -> Result<()> {
    if !(1..=MAX_FRAMES_PER_CROSSING).contains(&frames_per_crossing) {
        return Err(Error::invalid(
            "desc.frames_per_crossing",
            format!("{frames_per_crossing} frames per crossing"),
            format!("1..={MAX_FRAMES_PER_CROSSING}"),
        ));
    }
    if !(1..=MAX_FRAMES_IN_FLIGHT).contains(&frames_in_flight) {
        return Err(Error::invalid(
            "desc.frames_in_flight",
            format!("{frames_in_flight} frames in flight"),
            format!("1..={}", MAX_FRAMES_IN_FLIGHT),
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
pub(super) fn slot_queues(layout: QueueLayout, slot: usize, queue_count: usize) -> (usize, usize) {
    match layout {
        QueueLayout::PerSlot => (slot % queue_count, slot % queue_count),
        QueueLayout::Single => (0, 0),
        QueueLayout::Split => (0, 1 % queue_count),
    }
}

/// The capability `mode` needs beyond a matching device: exportable semaphore fds for
/// [`SyncMode::Semaphores`], the stream memory operations for [`SyncMode::LowLatency`]
/// (`memops` is the outcome of [`crate::cuda::Context::check_stream_memops`], asked only then).
pub(super) fn check_mode(
    mode: SyncMode,
    semaphore_fds: bool,
    memops: impl FnOnce() -> Result<()>,
) -> Result<()> {
    match mode {
        SyncMode::Semaphores if !semaphore_fds => Err(Error::missing_extension(
            "VK_KHR_external_semaphore_fd",
            "FrameSync in SyncMode::Semaphores (exported semaphore fds)",
        )),
        SyncMode::Semaphores => Ok(()),
        SyncMode::LowLatency => memops(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_in_flight_and_streams_are_bounded() {
        for n in 1..=MAX_FRAMES_IN_FLIGHT {
            for streams in 1..=n {
                assert!(check_counts(n, streams, 1).is_ok());
            }
            for streams in [0, n + 1] {
                let e = check_counts(n, streams, 1).unwrap_err();
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
        for n in [0, MAX_FRAMES_IN_FLIGHT + 1] {
            let e = check_counts(n, 1, 1).unwrap_err();
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
    fn frames_per_crossing_are_bounded() {
        for k in [1, 2, 64, MAX_FRAMES_PER_CROSSING] {
            assert!(check_counts(2, 1, k).is_ok());
        }
        for k in [0, MAX_FRAMES_PER_CROSSING + 1, usize::MAX] {
            let e = check_counts(2, 1, k).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidArgument {
                        arg: "desc.frames_per_crossing",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("1..=1024"), "{e}");
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
            matches!(
                e,
                Error::MissingExtension {
                    name: "VK_KHR_external_semaphore_fd",
                    ..
                }
            ),
            "{e}"
        );
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
        let batched = FrameSyncDesc::new(2).frames_per_crossing(64);
        assert_eq!(batched.layout(), (QueueLayout::Single, 1));
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
