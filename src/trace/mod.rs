//! Frame timelines: spans on tracks (one per Vulkan queue, CUDA stream and host thread),
//! written as a Chrome/Perfetto trace (JSON) that opens in `ui.perfetto.dev` or
//! `chrome://tracing`.
//!
//! Nothing here runs unless the caller builds a [`Trace`]: the library records no timestamp
//! and allocates nothing for tracing otherwise. Every time is in nanoseconds on the host's
//! monotonic clock ([`now_ns`]); GPU timestamps are mapped onto it by
//! [`crate::vulkan::GpuTimer`] (Vulkan timestamp queries) and [`crate::cuda::CudaTimer`]
//! (CUDA events), so spans from both APIs and the host line up.
//!
//! ```no_run
//! # fn main() -> vkcuda::Result<()> {
//! use vkcuda::trace::{now_ns, Span, Trace, TrackKind};
//!
//! let mut trace = Trace::new();
//! let host = trace.track("frame loop", TrackKind::HostThread);
//! let start = now_ns();
//! // ... record and submit frame 0 ...
//! trace.push(host, Span::new("submit", start, now_ns()).frame(0))?;
//! trace.write_json("frames.json")?;
//! # Ok(()) }
//! ```

mod clock;
mod json;

use std::path::Path;

pub(crate) use clock::HOST_IS_CLOCK_MONOTONIC;
pub use clock::{now_ns, tightest, Bracketed, ClockPair, DeviceClock};

use crate::error::{Error, Result};

/// What a track stands for; it decides the group ("process") the track is shown in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrackKind {
    /// A Vulkan queue.
    VulkanQueue {
        /// Its queue family.
        family: u32,
        /// Its index in the family.
        index: u32,
    },
    /// A CUDA stream.
    CudaStream,
    /// A host thread.
    HostThread,
}

impl TrackKind {
    /// The group the track is shown in: its trace "process" id and name.
    fn group(&self) -> (u32, &'static str) {
        match self {
            TrackKind::HostThread => (1, "host"),
            TrackKind::VulkanQueue { .. } => (2, "Vulkan"),
            TrackKind::CudaStream => (3, "CUDA"),
        }
    }
}

/// A track of a [`Trace`], from [`Trace::track`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackId(usize);

/// A value attached to a span, shown in the viewer's details pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// A number (a frame index, a byte count).
    U64(u64),
    /// Text.
    Str(String),
}

impl From<u64> for ArgValue {
    fn from(v: u64) -> Self {
        ArgValue::U64(v)
    }
}

impl From<&str> for ArgValue {
    fn from(v: &str) -> Self {
        ArgValue::Str(v.to_owned())
    }
}

impl From<String> for ArgValue {
    fn from(v: String) -> Self {
        ArgValue::Str(v)
    }
}

/// One piece of work from `start_ns` to `end_ns` (host monotonic nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// What ran, e.g. `render` or `tonemap`.
    pub name: String,
    /// Start, [`now_ns`] axis.
    pub start_ns: u64,
    /// End, [`now_ns`] axis; not before `start_ns`.
    pub end_ns: u64,
    /// Details, in the order added.
    pub args: Vec<(String, ArgValue)>,
}

impl Span {
    /// A span without details.
    pub fn new(name: impl Into<String>, start_ns: u64, end_ns: u64) -> Self {
        Self {
            name: name.into(),
            start_ns,
            end_ns,
            args: Vec::new(),
        }
    }

    /// Adds a detail.
    pub fn arg(mut self, key: impl Into<String>, value: impl Into<ArgValue>) -> Self {
        self.args.push((key.into(), value.into()));
        self
    }

    /// Adds the frame index (the `frame` detail).
    pub fn frame(self, index: u64) -> Self {
        self.arg("frame", index)
    }
}

/// A timed piece of GPU work on the host clock, read back from a timer slot
/// ([`crate::vulkan::GpuTimer`], [`crate::cuda::CudaTimer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSpan {
    /// The timer slot it was read from.
    pub slot: usize,
    /// When the work started, [`now_ns`] axis.
    pub start_ns: u64,
    /// When it had all finished, [`now_ns`] axis; never before `start_ns`.
    pub end_ns: u64,
}

impl GpuSpan {
    /// A trace [`Span`] named `name` over the same times.
    pub fn named(self, name: impl Into<String>) -> Span {
        Span::new(name, self.start_ns, self.end_ns)
    }
}

struct Track {
    name: String,
    kind: TrackKind,
}

/// Tracks and their spans, written as Chrome/Perfetto trace JSON ([`Trace::to_json`]).
///
/// Tracks are grouped by API (host, Vulkan, CUDA) and shown in the order they were made.
#[derive(Default)]
pub struct Trace {
    tracks: Vec<Track>,
    spans: Vec<(TrackId, Span)>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("tracks", &self.tracks.len())
            .field("spans", &self.spans.len())
            .finish()
    }
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a track named `name` (e.g. `queue 0 (family 0)`, `stream tonemap`, `main`).
    pub fn track(&mut self, name: impl Into<String>, kind: TrackKind) -> TrackId {
        self.tracks.push(Track {
            name: name.into(),
            kind,
        });
        TrackId(self.tracks.len() - 1)
    }

    /// Adds `span` to `track`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `track` is not a track of this trace (`track`) or the
    /// span ends before it starts (`span.end_ns`).
    pub fn push(&mut self, track: TrackId, span: Span) -> Result<()> {
        if track.0 >= self.tracks.len() {
            return Err(Error::invalid(
                "track",
                format!(
                    "track #{} of a trace with {} tracks",
                    track.0,
                    self.tracks.len()
                ),
                "a TrackId returned by this trace's track()",
            ));
        }
        if span.end_ns < span.start_ns {
            return Err(Error::invalid(
                "span.end_ns",
                format!(
                    "{} ns is before the start {} ns of {:?}",
                    span.end_ns, span.start_ns, span.name
                ),
                "an end at or after the start",
            ));
        }
        self.spans.push((track, span));
        Ok(())
    }

    /// Every span with its track, in the order added.
    pub fn spans(&self) -> impl Iterator<Item = (TrackId, &Span)> {
        self.spans.iter().map(|(t, s)| (*t, s))
    }

    /// The trace as Chrome trace-event JSON: one complete event (`"ph":"X"`) per span with
    /// `ts`/`dur` in microseconds, and metadata events naming every group and track.
    pub fn to_json(&self) -> String {
        json::write(self)
    }

    /// Writes [`Trace::to_json`] to `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.to_json()).map_err(|source| Error::Io {
            call: "write (trace JSON)",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::invalid_arg;

    #[test]
    fn spans_need_a_track_of_this_trace_and_a_forward_duration() {
        let mut other = Trace::new();
        other.track("a", TrackKind::HostThread);
        let foreign = other.track("b", TrackKind::HostThread);
        let mut t = Trace::new();
        let host = t.track("main", TrackKind::HostThread);
        let (arg, ..) = invalid_arg(t.push(foreign, Span::new("x", 0, 1)));
        assert_eq!(arg, "track");
        let (arg, problem, _) = invalid_arg(t.push(host, Span::new("back", 10, 9)));
        assert_eq!(arg, "span.end_ns");
        assert!(problem.contains("\"back\""), "{problem}");
        t.push(host, Span::new("empty", 10, 10)).unwrap();
        assert_eq!(t.spans().count(), 1);
    }

    #[test]
    fn the_json_file_is_written() {
        let mut t = Trace::new();
        let host = t.track("main", TrackKind::HostThread);
        t.push(host, Span::new("frame", 1_000, 3_500).frame(4))
            .unwrap();
        let path = std::env::temp_dir().join(format!("vkcuda-trace-{}.json", std::process::id()));
        t.write_json(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, t.to_json());
        match t.write_json(std::env::temp_dir().join("no-such-dir/x/trace.json")) {
            Err(Error::Io { .. }) => {}
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
