//! The alternation floor: what the GPU charges for alternating work between a Vulkan
//! queue and a CUDA stream, measured with the least possible work on either side.
//!
//! Each step is a tiny piece of GPU work the host submits and then spins on (no sleep, no
//! cross-API wait): a Vulkan `vkCmdFillBuffer` of 4 KiB on a chosen queue ([`FillStep`])
//! and an empty CUDA kernel compiled with NVRTC ([`KernelStep`]). Timed alone, each gives
//! its launch-to-completion latency; alternated, one fill then one kernel per iteration,
//! they also pay whatever the GPU charges to switch between the two contexts. On NVIDIA
//! that switch is paid when both run on the graphics/compute engine; Vulkan work on a
//! transfer-only queue family runs on a copy engine and does not pay it (see
//! [`crate::vulkan::ContextDesc::transfer_queue`]). benches/RESULTS.md has the figures.
//!
//! [`FloorReport::switch_pair`] is the floor [`super::choose_batch`] takes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ash::vk;
use cudarc::driver::{CudaEvent, CudaFunction, CudaStream, LaunchConfig};

use super::check_same_device;
use crate::cuda::{self, CudaTimer};
use crate::error::{Error, Result};
use crate::trace::{self, Span, Trace, TrackKind};
use crate::vulkan::queues::Recorded;
use crate::vulkan::{self, Bracket, BufferDesc, ExternalBuffer, GpuTimer, QueueId};

/// Most iterations [`alternation_floor`] takes.
pub const MAX_FLOOR_ITERATIONS: usize = 1_000_000;

/// Bytes each [`FillStep`] fills.
pub const FILL_STEP_BYTES: u64 = 4096;

/// Untimed steps of each measurement before the timed ones ([`measure_steps`]).
pub const WARM_UP_STEPS: usize = 20;

/// Longest one step may take before it is reported as hung.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

const EMPTY_KERNEL: &str = r#"extern "C" __global__ void vkcuda_empty() {}"#;

/// The median and 99th percentile of a set of step times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// The median (nearest rank).
    pub p50: Duration,
    /// The 99th percentile (nearest rank).
    pub p99: Duration,
    /// How many times it was taken from.
    pub samples: usize,
}

impl Percentiles {
    /// The percentiles of `times` (sorted in place); `None` when it is empty.
    pub fn of(times: &mut [Duration]) -> Option<Self> {
        if times.is_empty() {
            return None;
        }
        times.sort_unstable();
        let rank = |q: f64| {
            let r = (q * times.len() as f64).ceil() as usize;
            times[r.clamp(1, times.len()) - 1]
        };
        Some(Self {
            p50: rank(0.50),
            p99: rank(0.99),
            samples: times.len(),
        })
    }
}

/// A 4 KiB `vkCmdFillBuffer` recorded once for one of the context's queues, submitted and
/// spun on by [`FillStep::run`].
pub struct FillStep {
    // Field order is drop order: the command buffer (which waits for its submission)
    // before the buffer it fills.
    cmd: Recorded,
    _buffer: ExternalBuffer,
    queue: QueueId,
    family: u32,
}

impl std::fmt::Debug for FillStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillStep")
            .field("queue", &self.queue)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl FillStep {
    /// A fill of a new 4 KiB buffer on `queue`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`queue`) when the context has no such queue; driver
    /// errors creating the buffer or the command buffer.
    pub fn new(vk: &vulkan::Context, queue: QueueId) -> Result<Self> {
        let family = vk.family_of(queue)?;
        let buffer = ExternalBuffer::new(vk, &BufferDesc::new(FILL_STEP_BYTES))?;
        let raw = buffer.raw();
        let cmd = Recorded::new(vk, queue, |d, cmd| {
            // SAFETY: `cmd` is recording; fills are allowed on every queue family; the
            // buffer (TRANSFER_DST) is dropped after the command buffer (field order), whose
            // drop waits for the last submission. The fill overwrites the whole buffer, so
            // using it from another family than its owner needs no ownership transfer.
            unsafe { d.cmd_fill_buffer(cmd, raw, 0, vk::WHOLE_SIZE, 0x5eed) };
        })?;
        Ok(Self {
            cmd,
            _buffer: buffer,
            queue,
            family,
        })
    }

    /// The queue family it runs on.
    pub fn family(&self) -> u32 {
        self.family
    }

    /// Submits the fill and spins until its fence signals; returns the host time from
    /// before the submission to the fence seen signalled.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the fill does not finish within 10 s; driver errors.
    pub fn run(&mut self) -> Result<Duration> {
        self.run_in(None)
    }

    /// [`FillStep::run`], with the fill between `bracket`'s timestamps in its batch.
    fn run_in(&mut self, bracket: Option<&Bracket>) -> Result<Duration> {
        let start = Instant::now();
        self.cmd.submit_bracketed(bracket)?;
        self.cmd.spin(STEP_TIMEOUT)?;
        Ok(start.elapsed())
    }
}

/// An empty CUDA kernel (one thread) launched on its own stream, spun on by
/// [`KernelStep::run`].
pub struct KernelStep {
    function: CudaFunction,
    stream: Arc<CudaStream>,
    done: CudaEvent,
}

impl std::fmt::Debug for KernelStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelStep").finish_non_exhaustive()
    }
}

impl KernelStep {
    /// Compiles the empty kernel with NVRTC ([`cuda::Context::compile`], cached) and makes
    /// a stream for it.
    ///
    /// # Errors
    /// [`Error::Missing`] without NVRTC; [`Error::Compile`]; [`Error::Cuda`].
    pub fn new(cu: &cuda::Context) -> Result<Self> {
        let module = cu.compile("vkcuda_empty.cu", EMPTY_KERNEL)?;
        let function = module
            .load_function("vkcuda_empty")
            .map_err(|e| Error::cuda("cuModuleGetFunction", e))?;
        let stream = cu.new_stream()?;
        let done = cu
            .cuda()
            .new_event(None)
            .map_err(|e| Error::cuda("cuEventCreate", e))?;
        Ok(Self {
            function,
            stream,
            done,
        })
    }

    /// Launches the kernel, records an event after it and spins until the event
    /// completes; returns the host time from before the launch to the completion seen.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the kernel does not finish within 10 s; [`Error::Cuda`].
    pub fn run(&mut self) -> Result<Duration> {
        self.run_in(None).map(|(took, _)| took)
    }

    /// [`KernelStep::run`], with the kernel between a span of `timer` (on this step's
    /// stream) when given; returns the span's slot too.
    fn run_in(&mut self, mut timer: Option<&mut CudaTimer>) -> Result<(Duration, Option<usize>)> {
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        let start = Instant::now();
        let slot = timer.as_mut().map(|t| t.begin()).transpose()?;
        let mut launch = self.stream.launch_builder(&self.function);
        // SAFETY: `vkcuda_empty()` takes no parameters and touches no memory.
        unsafe { launch.launch(one) }.map_err(|e| Error::cuda("cuLaunchKernel", e))?;
        if let (Some(t), Some(slot)) = (timer, slot) {
            t.end(slot)?;
        }
        self.done
            .record(&self.stream)
            .map_err(|e| Error::cuda("cuEventRecord", e))?;
        while !self
            .done
            .try_is_complete()
            .map_err(|e| Error::cuda("cuEventQuery", e))?
        {
            if start.elapsed() >= STEP_TIMEOUT {
                return Err(Error::Timeout {
                    what: "an empty CUDA kernel".into(),
                    waited: start.elapsed(),
                });
            }
            std::hint::spin_loop();
        }
        Ok((start.elapsed(), slot))
    }
}

/// What [`alternation_floor`] measured for one Vulkan queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorReport {
    /// The Vulkan queue the fills ran on.
    pub queue: QueueId,
    /// Its family.
    pub family: u32,
    /// Whether that family is transfer-only (a copy engine).
    pub transfer_only: bool,
    /// A fill alone, per step.
    pub fill_alone: Percentiles,
    /// An empty kernel alone, per step.
    pub kernel_alone: Percentiles,
    /// One fill then one kernel, per iteration.
    pub alternating: Percentiles,
}

impl FloorReport {
    /// What alternating adds over the two steps alone (p50s, never negative): the cost of
    /// one switch pair, the floor [`super::choose_batch`] takes.
    pub fn switch_pair(&self) -> Duration {
        self.alternating
            .p50
            .saturating_sub(self.fill_alone.p50 + self.kernel_alone.p50)
    }
}

/// Measures, `iterations` times each after a short warm-up, with the host spinning between
/// steps and no cross-API wait: a [`FillStep`] on `queue` alone, a [`KernelStep`] alone,
/// and the two alternating.
///
/// Run it for [`QueueId::Main`] and, where the context has one, [`QueueId::Transfer`]: the
/// difference is the graphics/compute engine switch the transfer-only family avoids.
///
/// # Errors
/// * [`Error::InvalidArgument`] when `cu` is not on `vk`'s GPU (`cu`), `queue` is not a
///   queue of `vk` (`queue`), or `iterations` is not in `1..=`[`MAX_FLOOR_ITERATIONS`].
/// * As [`FillStep::new`], [`KernelStep::new`] and their `run`.
pub fn alternation_floor(
    vk: &vulkan::Context,
    cu: &cuda::Context,
    queue: QueueId,
    iterations: usize,
) -> Result<FloorReport> {
    check_same_device(vk, cu)?;
    if !(1..=MAX_FLOOR_ITERATIONS).contains(&iterations) {
        return Err(Error::invalid(
            "iterations",
            format!("{iterations}"),
            format!("1 to {MAX_FLOOR_ITERATIONS}"),
        ));
    }
    let mut fill = FillStep::new(vk, queue)?;
    let mut kernel = KernelStep::new(cu)?;
    let fill_alone = measure_steps(iterations, || fill.run())?;
    let kernel_alone = measure_steps(iterations, || kernel.run())?;
    let alternating = measure_steps(iterations, || Ok(fill.run()? + kernel.run()?))?;
    Ok(FloorReport {
        queue,
        family: fill.family(),
        transfer_only: queue == QueueId::Transfer,
        fill_alone,
        kernel_alone,
        alternating,
    })
}

/// Most iterations [`alternation_trace`] records.
pub const MAX_TRACE_ITERATIONS: usize = 10_000;

/// Records the alternating loop of [`alternation_floor`] as a [`Trace`]: per iteration,
/// the fill's GPU span on the Vulkan queue's track (timestamp brackets, [`GpuTimer`]), the
/// kernel's on the CUDA stream's track (events, [`CudaTimer`]), and the host's two steps
/// (submit to fence, launch to completion) on a host track, each with the iteration as its
/// `frame`. Where GPU time goes when the APIs alternate shows as the gaps between the GPU
/// spans: the steps themselves stay short, the switch sits between them.
///
/// The timers add two tiny command buffers to each fill's batch and two events around each
/// kernel, so the loop runs slightly slower than [`alternation_floor`]'s.
///
/// # Errors
/// As [`alternation_floor`], with `iterations` in `1..=`[`MAX_TRACE_ITERATIONS`]; as
/// [`GpuTimer::new`] and [`CudaTimer::new`].
pub fn alternation_trace(
    vk: &vulkan::Context,
    cu: &cuda::Context,
    queue: QueueId,
    iterations: usize,
) -> Result<Trace> {
    check_same_device(vk, cu)?;
    if !(1..=MAX_TRACE_ITERATIONS).contains(&iterations) {
        return Err(Error::invalid(
            "iterations",
            format!("{iterations}"),
            format!("1 to {MAX_TRACE_ITERATIONS}"),
        ));
    }
    let mut fill = FillStep::new(vk, queue)?;
    let mut kernel = KernelStep::new(cu)?;
    let mut vk_timer = GpuTimer::new(vk, queue, 1)?;
    let mut cu_timer = CudaTimer::new(cu, &kernel.stream, 1)?;
    let mut trace = Trace::new();
    let host = trace.track("host (spinning)", TrackKind::HostThread);
    let index = match queue {
        QueueId::Main(n) => u32::try_from(n).unwrap_or(u32::MAX),
        QueueId::Transfer => 0,
    };
    let queue_track = trace.track(
        format!("{queue:?} queue (family {})", fill.family()),
        TrackKind::VulkanQueue {
            family: fill.family(),
            index,
        },
    );
    let stream_track = trace.track("empty-kernel stream", TrackKind::CudaStream);
    for _ in 0..WARM_UP_STEPS {
        fill.run()?;
        kernel.run()?;
    }
    for i in 0..iterations as u64 {
        let h0 = trace::now_ns();
        let bracket = vk_timer.bracket()?;
        fill.run_in(Some(&bracket))?;
        let h1 = trace::now_ns();
        let (_, slot) = kernel.run_in(Some(&mut cu_timer))?;
        let h2 = trace::now_ns();
        let fill_span = vk_timer.read(bracket.slot, STEP_TIMEOUT)?;
        let kernel_span = cu_timer.read(slot.unwrap_or_default(), STEP_TIMEOUT)?;
        trace.push(host, Span::new("fill: submit to fence", h0, h1).frame(i))?;
        trace.push(host, Span::new("kernel: launch to done", h1, h2).frame(i))?;
        trace.push(queue_track, fill_span.named("vkCmdFillBuffer").frame(i))?;
        trace.push(stream_track, kernel_span.named("empty kernel").frame(i))?;
    }
    Ok(trace)
}

/// Runs `step` [`WARM_UP_STEPS`] times untimed, then `iterations` times, and returns the
/// percentiles of the times it reports.
///
/// # Errors
/// [`Error::InvalidArgument`] (`iterations`) when it is 0; what `step` returns.
pub fn measure_steps(
    iterations: usize,
    mut step: impl FnMut() -> Result<Duration>,
) -> Result<Percentiles> {
    if iterations == 0 {
        return Err(Error::invalid("iterations", "0", "at least 1"));
    }
    for _ in 0..WARM_UP_STEPS {
        step()?;
    }
    let mut times = (0..iterations)
        .map(|_| step())
        .collect::<Result<Vec<_>>>()?;
    Percentiles::of(&mut times).ok_or_else(|| Error::invalid("iterations", "0", "at least 1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut times: Vec<Duration> = (1..=100).rev().map(|i| US * i).collect();
        let p = Percentiles::of(&mut times).unwrap();
        assert_eq!((p.p50, p.p99, p.samples), (US * 50, US * 99, 100));
        let p = Percentiles::of(&mut [US * 7]).unwrap();
        assert_eq!((p.p50, p.p99), (US * 7, US * 7));
        let p = Percentiles::of(&mut [US * 4, US, US * 3, US * 2]).unwrap();
        assert_eq!((p.p50, p.p99), (US * 2, US * 4));
        assert_eq!(Percentiles::of(&mut []), None);
    }

    #[test]
    fn the_switch_pair_is_what_alternating_adds() {
        let p = |us| Percentiles {
            p50: US * us,
            p99: US * us,
            samples: 1,
        };
        let mut report = FloorReport {
            queue: QueueId::Main(0),
            family: 0,
            transfer_only: false,
            fill_alone: p(13),
            kernel_alone: p(8),
            alternating: p(327),
        };
        assert_eq!(report.switch_pair(), US * 306);
        report.alternating = p(20);
        assert_eq!(report.switch_pair(), Duration::ZERO, "never negative");
    }

    #[test]
    fn measure_warms_up_and_counts() {
        let mut calls = 0;
        let p = measure_steps(5, || {
            calls += 1;
            Ok(US * calls)
        })
        .unwrap();
        assert_eq!(calls, WARM_UP_STEPS as u32 + 5);
        assert_eq!(p.samples, 5);
        assert_eq!(p.p99, US * (WARM_UP_STEPS as u32 + 5));
        let (arg, ..) = crate::error::invalid_arg(measure_steps(0, || Ok(US)));
        assert_eq!(arg, "iterations");
    }
}
