//! GPU timestamps around the caller's batches, read back as host times.
//!
//! A [`GpuTimer`] owns a timestamp query pool and, per slot, two tiny command buffers
//! recorded once at creation: `before` writes a timestamp at the top of the pipe, `after`
//! one at the bottom. The caller puts them first and last in a batch it submits anyway
//! ([`GpuTimer::bracket`]), so timing costs two command buffers per batch and no extra
//! submission. Results are read without blocking ([`GpuTimer::try_read`]) and mapped onto
//! the host's monotonic clock ([`crate::trace::now_ns`]):
//!
//! * with `VK_KHR_calibrated_timestamps` (or the EXT twin), which [`Context::new`] enables
//!   where the device has it, from `vkGetCalibratedTimestamps` pairs of the device and
//!   `CLOCK_MONOTONIC` domains ([`ClockSource::Calibrated`]);
//! * without it (lavapipe, wrapped contexts), from a timestamp written on the queue and
//!   bracketed by host reads, the tightest of a few tries ([`ClockSource::Correlated`]).
//!
//! Slots are reset from the host (`vkResetQueryPool`, the Vulkan 1.2 `hostQueryReset`
//! feature, which [`Context::new`] enables where supported), so the brackets work on any
//! queue that supports timestamps, transfer-only ones included (`vkCmdResetQueryPool` is
//! not allowed there).

use std::ffi::CStr;
use std::time::{Duration, Instant};

use ash::vk;

use super::queues::{QueueId, Recorded};
use super::Context;
use crate::error::{Error, Result};
use crate::trace::{self, tightest, Bracketed, ClockPair, DeviceClock, GpuSpan};

/// Most slots one [`GpuTimer`] holds.
pub const MAX_TIMER_SLOTS: usize = 4096;

/// Tries per calibration; the best (least deviation, or tightest bracket) is kept.
const CALIBRATION_TRIES: usize = 8;

/// How long one correlation try may wait for its timestamp.
const CORRELATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The functions of whichever calibrated-timestamps extension the device has enabled.
pub(crate) enum Calibrator {
    Khr(ash::khr::calibrated_timestamps::Device),
    Ext(ash::ext::calibrated_timestamps::Device),
}

impl Calibrator {
    /// The calibrated-timestamps extension to enable among `exts`, KHR first.
    pub(crate) fn extension(exts: &[vk::ExtensionProperties]) -> Option<&'static CStr> {
        [
            ash::khr::calibrated_timestamps::NAME,
            ash::ext::calibrated_timestamps::NAME,
        ]
        .into_iter()
        .find(|name| {
            exts.iter()
                .any(|e| e.extension_name_as_c_str() == Ok(*name))
        })
    }

    /// The functions of `enabled` (an extension [`Calibrator::extension`] chose and the
    /// device was created with), when the device can calibrate its timestamps against the
    /// host clock [`trace::now_ns`] reads; `None` otherwise.
    pub(crate) fn load(
        entry: &ash::Entry,
        instance: &ash::Instance,
        physical: vk::PhysicalDevice,
        device: &ash::Device,
        enabled: Option<&CStr>,
    ) -> Option<Self> {
        let enabled = enabled?;
        if !trace::HOST_IS_CLOCK_MONOTONIC {
            return None;
        }
        let (domains, calibrator) = if enabled == ash::khr::calibrated_timestamps::NAME {
            let i = ash::khr::calibrated_timestamps::Instance::new(entry, instance);
            // SAFETY: valid physical device of this instance.
            let domains = unsafe { i.get_physical_device_calibrateable_time_domains(physical) };
            let d = ash::khr::calibrated_timestamps::Device::new(instance, device);
            (domains, Self::Khr(d))
        } else {
            let i = ash::ext::calibrated_timestamps::Instance::new(entry, instance);
            // SAFETY: valid physical device of this instance.
            let domains = unsafe { i.get_physical_device_calibrateable_time_domains(physical) };
            let d = ash::ext::calibrated_timestamps::Device::new(instance, device);
            (domains, Self::Ext(d))
        };
        let domains = domains.ok()?;
        let has = |d| domains.contains(&d);
        (has(vk::TimeDomainKHR::DEVICE) && has(vk::TimeDomainKHR::CLOCK_MONOTONIC))
            .then_some(calibrator)
    }

    /// One calibrated pair: device ticks and `CLOCK_MONOTONIC` nanoseconds, with the
    /// driver's maximum deviation as uncertainty.
    fn sample(&self) -> Result<ClockPair> {
        let infos = [
            vk::CalibratedTimestampInfoKHR::default().time_domain(vk::TimeDomainKHR::DEVICE),
            vk::CalibratedTimestampInfoKHR::default()
                .time_domain(vk::TimeDomainKHR::CLOCK_MONOTONIC),
        ];
        let sampled = match self {
            // SAFETY: the extension is enabled on the device these functions were loaded
            // from, and both domains are calibrateable (checked in `load`).
            Self::Khr(d) => unsafe { d.get_calibrated_timestamps(&infos) },
            // SAFETY: as above.
            Self::Ext(d) => unsafe { d.get_calibrated_timestamps(&infos) },
        };
        let (values, deviation) =
            sampled.map_err(|r| Error::vk("vkGetCalibratedTimestampsKHR", r))?;
        match values[..] {
            [device, host_ns] => Ok(ClockPair {
                device,
                host_ns,
                uncertainty_ns: deviation,
            }),
            _ => Err(Error::vk(
                "vkGetCalibratedTimestampsKHR",
                vk::Result::ERROR_UNKNOWN,
            )),
        }
    }
}

impl Context {
    /// Whether the device calibrates its timestamps against the host's monotonic clock
    /// (`VK_KHR_calibrated_timestamps` or `VK_EXT_calibrated_timestamps`, enabled by
    /// [`Context::new`] where available, with the device and `CLOCK_MONOTONIC` domains).
    /// Without it [`GpuTimer`] correlates the clocks itself ([`ClockSource::Correlated`]).
    pub fn has_calibrated_timestamps(&self) -> bool {
        self.calibrator().is_some()
    }
}

/// How a [`GpuTimer`]'s ticks are tied to the host clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSource {
    /// `vkGetCalibratedTimestamps` of the device and `CLOCK_MONOTONIC` domains.
    Calibrated,
    /// A timestamp written on the timer's queue, bracketed by host clock reads.
    Correlated,
}

/// The two command buffers that time one batch, from [`GpuTimer::bracket`].
///
/// Submit `before` as the first and `after` as the last command buffer of the batch, on
/// a queue of [`GpuTimer::family`], at most once (submitting is the caller's unsafe
/// act: keep the timer alive until the batch has completed, and read the slot back with
/// [`GpuTimer::try_read`] or [`GpuTimer::read`] before its next use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bracket {
    /// The slot to read back.
    pub slot: usize,
    /// Writes the start timestamp (top of pipe).
    pub before: vk::CommandBuffer,
    /// Writes the end timestamp (bottom of pipe: after all earlier work of the queue).
    pub after: vk::CommandBuffer,
}

struct Slot {
    before: vk::CommandBuffer,
    after: vk::CommandBuffer,
    /// Handed out by `bracket` and not read back yet.
    handed: bool,
}

/// Timestamp brackets for the batches of one queue family, read back as host times.
///
/// ```no_run
/// # fn main() -> vkcuda::Result<()> {
/// # let vk: vkcuda::vulkan::Context = todo!();
/// use vkcuda::vulkan::{GpuTimer, QueueId};
/// let mut timer = GpuTimer::new(&vk, QueueId::Main(0), 8)?;
/// let b = timer.bracket()?;
/// // submit [b.before, <the frame's command buffers>, b.after] on queue 0 ...
/// let span = timer.read(b.slot, std::time::Duration::from_secs(1))?;
/// println!("GPU busy for {} ns", span.end_ns - span.start_ns);
/// # Ok(()) }
/// ```
pub struct GpuTimer {
    ctx: Context,
    queue: QueueId,
    family: u32,
    query_pool: vk::QueryPool,
    cmd_pool: vk::CommandPool,
    slots: Vec<Slot>,
    next: usize,
    clock: DeviceClock,
    source: ClockSource,
}

impl std::fmt::Debug for GpuTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTimer")
            .field("queue", &self.queue)
            .field("family", &self.family)
            .field("slots", &self.slots.len())
            .field("source", &self.source)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Drop for GpuTimer {
    fn drop(&mut self) {
        let d = self.ctx.device();
        // SAFETY: the brackets' contract keeps the timer alive until every batch that
        // submitted them has completed; the objects were made from `d`, destroyed once.
        unsafe { d.destroy_command_pool(self.cmd_pool, None) };
        // SAFETY: as above.
        unsafe { d.destroy_query_pool(self.query_pool, None) };
    }
}

impl GpuTimer {
    /// A timer with `slots` brackets (batches in flight at once) for batches submitted on
    /// `queue`'s family, calibrated against the host clock ([`GpuTimer::calibrate`]).
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] when `slots` is not in `1..=`[`MAX_TIMER_SLOTS`]
    ///   (`slots`), or the context has no such queue (`queue`).
    /// * [`Error::Unsupported`] when the family has no timestamps (`timestampValidBits`
    ///   is 0), the device reports no usable `timestampPeriod`, or host query reset is not
    ///   enabled (a wrapped context).
    /// * Driver errors creating the pools or recording.
    pub fn new(ctx: &Context, queue: QueueId, slots: usize) -> Result<Self> {
        if !(1..=MAX_TIMER_SLOTS).contains(&slots) {
            return Err(Error::invalid(
                "slots",
                format!("{slots}"),
                format!("1 to {MAX_TIMER_SLOTS}"),
            ));
        }
        let family = ctx.family_of(queue)?;
        let clock = timestamp_clock(ctx, family)?;
        if !ctx.host_query_reset() {
            return Err(Error::Unsupported {
                what: "GpuTimer".into(),
                reason: "the device was not created with the hostQueryReset feature \
                         (Context::new enables it where supported; a wrapped context \
                         does not say)"
                    .into(),
            });
        }
        let d = ctx.device();
        // Two queries per slot, and one for correlating the clocks.
        let queries = u32::try_from(2 * slots + 1).unwrap_or(u32::MAX);
        let info = vk::QueryPoolCreateInfo::default()
            .query_type(vk::QueryType::TIMESTAMP)
            .query_count(queries);
        // SAFETY: valid device and create info.
        let query_pool = unsafe { d.create_query_pool(&info, None) }
            .map_err(|r| Error::vk("vkCreateQueryPool", r))?;
        // SAFETY: the pool was just made and is unused; hostQueryReset is enabled.
        unsafe { d.reset_query_pool(query_pool, 0, queries) };
        let info = vk::CommandPoolCreateInfo::default().queue_family_index(family);
        // SAFETY: valid device and create info.
        let cmd_pool = match unsafe { d.create_command_pool(&info, None) } {
            Ok(p) => p,
            Err(r) => {
                // SAFETY: the query pool is unused.
                unsafe { d.destroy_query_pool(query_pool, None) };
                return Err(Error::vk("vkCreateCommandPool", r));
            }
        };
        // From here on `timer` owns both pools, so an error destroys them.
        let mut timer = Self {
            ctx: ctx.clone(),
            queue,
            family,
            query_pool,
            cmd_pool,
            slots: Vec::with_capacity(slots),
            next: 0,
            clock,
            source: ClockSource::Correlated,
        };
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(cmd_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(queries - 1);
        // SAFETY: valid device; the pool was just made.
        let cmds = unsafe { d.allocate_command_buffers(&alloc) }
            .map_err(|r| Error::vk("vkAllocateCommandBuffers", r))?;
        for (i, pair) in cmds.chunks_exact(2).enumerate() {
            let first = u32::try_from(2 * i).unwrap_or(u32::MAX);
            record_timestamp(
                d,
                pair[0],
                vk::PipelineStageFlags::TOP_OF_PIPE,
                query_pool,
                first,
            )?;
            record_timestamp(
                d,
                pair[1],
                vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                query_pool,
                first + 1,
            )?;
            timer.slots.push(Slot {
                before: pair[0],
                after: pair[1],
                handed: false,
            });
        }
        timer.calibrate()?;
        Ok(timer)
    }

    /// The queue family the brackets must be submitted on.
    pub fn family(&self) -> u32 {
        self.family
    }

    /// How the ticks are tied to the host clock.
    pub fn source(&self) -> ClockSource {
        self.source
    }

    /// The tick clock: `timestampPeriod`, `timestampValidBits` and the anchor (with its
    /// uncertainty) from the last calibration.
    pub fn clock(&self) -> &DeviceClock {
        &self.clock
    }

    /// Re-anchors the tick clock to the host clock, with calibrated timestamps where the
    /// device has them ([`Context::has_calibrated_timestamps`]), by correlation otherwise
    /// (see [`GpuTimer::calibrate_with`]). Call it again after long runs: the clocks drift
    /// apart.
    ///
    /// # Errors
    /// As [`GpuTimer::calibrate_with`].
    pub fn calibrate(&mut self) -> Result<()> {
        let source = if self.ctx.has_calibrated_timestamps() {
            ClockSource::Calibrated
        } else {
            ClockSource::Correlated
        };
        self.calibrate_with(source)
    }

    /// Re-anchors the tick clock to the host clock through `source`:
    /// * [`ClockSource::Calibrated`]: the `vkGetCalibratedTimestamps` pair with the least
    ///   deviation of a few;
    /// * [`ClockSource::Correlated`]: a timestamp written on the timer's queue, bracketed
    ///   by host clock reads, the tightest of a few tries (each waits for the queue's
    ///   earlier work, so call it while the queue is idle).
    ///
    /// Correlating on a device that also calibrates is a check of one against the other.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for [`ClockSource::Calibrated`] without calibrated
    /// timestamps; [`Error::Timeout`] when a correlation timestamp does not arrive within
    /// 5 s; driver errors.
    pub fn calibrate_with(&mut self, source: ClockSource) -> Result<()> {
        let anchor = match source {
            ClockSource::Calibrated => {
                let calibrator = self.ctx.calibrator().ok_or_else(|| Error::Unsupported {
                    what: "ClockSource::Calibrated".into(),
                    reason: "the device has no calibrated timestamps against CLOCK_MONOTONIC \
                             (VK_KHR/EXT_calibrated_timestamps)"
                        .into(),
                })?;
                let mut best: Option<ClockPair> = None;
                for _ in 0..CALIBRATION_TRIES {
                    let pair = calibrator.sample()?;
                    if best.is_none_or(|b| pair.uncertainty_ns < b.uncertainty_ns) {
                        best = Some(pair);
                    }
                }
                best
            }
            ClockSource::Correlated => self.correlate()?,
        };
        let anchor = anchor.ok_or_else(|| Error::Unsupported {
            what: "correlating GPU timestamps with the host clock".into(),
            reason: "the host clock went backwards in every try".into(),
        })?;
        self.clock = DeviceClock::new(anchor, self.clock.period_ns(), self.clock.valid_bits())?;
        self.source = source;
        Ok(())
    }

    /// The tightest of a few bracketed timestamps written on the timer's queue.
    fn correlate(&self) -> Result<Option<ClockPair>> {
        let d = self.ctx.device();
        let probe = u32::try_from(2 * self.slots.len()).unwrap_or(u32::MAX);
        let pool = self.query_pool;
        let mut cmd = Recorded::new(&self.ctx, self.queue, |d, cmd| {
            // SAFETY: `cmd` is recording; the pool outlives the recorded buffer (dropped at
            // the end of this function, after its last submission completed).
            unsafe { d.cmd_write_timestamp(cmd, vk::PipelineStageFlags::TOP_OF_PIPE, pool, probe) };
        })?;
        let mut samples = Vec::with_capacity(CALIBRATION_TRIES);
        for _ in 0..CALIBRATION_TRIES {
            // SAFETY: the probe query is not in use: each try below waits for its
            // submission to complete.
            unsafe { d.reset_query_pool(pool, probe, 1) };
            let before_ns = trace::now_ns();
            cmd.submit()?;
            let start = Instant::now();
            let device = loop {
                if let Some(ticks) = self.available(probe)? {
                    break ticks;
                }
                if start.elapsed() >= CORRELATION_TIMEOUT {
                    // Let the submission finish (bounded) before the buffer is dropped.
                    cmd.wait(CORRELATION_TIMEOUT)?;
                    return Err(Error::Timeout {
                        what: format!("a correlation timestamp on {:?}", self.queue),
                        waited: start.elapsed(),
                    });
                }
                std::hint::spin_loop();
            };
            let after_ns = trace::now_ns();
            cmd.wait(CORRELATION_TIMEOUT)?;
            samples.push(Bracketed {
                before_ns,
                device,
                after_ns,
            });
        }
        Ok(tightest(&samples))
    }

    /// The value of query `query` if it is available.
    fn available(&self, query: u32) -> Result<Option<u64>> {
        let mut data = [[0u64; 2]; 1];
        self.results(query, &mut data)?;
        Ok((data[0][1] != 0).then_some(data[0][0]))
    }

    /// Reads `data.len()` queries from `first` with their availability, without waiting.
    fn results(&self, first: u32, data: &mut [[u64; 2]]) -> Result<()> {
        let flags = vk::QueryResultFlags::TYPE_64 | vk::QueryResultFlags::WITH_AVAILABILITY;
        // SAFETY: the queries exist in the pool and were reset (at creation, or from the
        // host after their last read); each element holds a value and its availability.
        match unsafe {
            self.ctx
                .device()
                .get_query_pool_results(self.query_pool, first, data, flags)
        } {
            Ok(()) | Err(vk::Result::NOT_READY) => Ok(()),
            Err(r) => Err(Error::vk("vkGetQueryPoolResults", r)),
        }
    }

    /// The command buffers that time the next batch (see [`Bracket`] for how to submit
    /// them).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`slots`) when the next slot of the ring still holds a
    /// bracket that was not read back.
    pub fn bracket(&mut self) -> Result<Bracket> {
        let count = self.slots.len();
        let index = self.next;
        let slot = &mut self.slots[index];
        if slot.handed {
            return Err(Error::invalid(
                "slots",
                format!("slot {index} of {count} still holds a bracket not read back"),
                "try_read() or read() of the oldest bracket first, or a timer with more slots",
            ));
        }
        slot.handed = true;
        self.next = (index + 1) % count;
        Ok(Bracket {
            slot: index,
            before: slot.before,
            after: slot.after,
        })
    }

    /// Takes back a bracket that was never submitted, so its slot is free again.
    pub(crate) fn unsubmitted(&mut self, bracket: &Bracket) {
        if let Some(s) = self.slots.get_mut(bracket.slot) {
            s.handed = false;
        }
    }

    /// The span of slot `slot` if both its timestamps have been written, without waiting;
    /// the slot is then free for a new bracket.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`slot`) when `slot` is not a bracket handed out and not
    /// read back yet.
    pub fn try_read(&mut self, slot: usize) -> Result<Option<GpuSpan>> {
        if !self.slots.get(slot).is_some_and(|s| s.handed) {
            return Err(Error::invalid(
                "slot",
                format!("slot {slot} is not awaiting a read"),
                "the slot of a bracket from bracket() not read back yet",
            ));
        }
        let first = u32::try_from(2 * slot).unwrap_or(u32::MAX);
        let mut data = [[0u64; 2]; 2];
        self.results(first, &mut data)?;
        let [[start, start_ready], [end, end_ready]] = data;
        if start_ready == 0 || end_ready == 0 {
            return Ok(None);
        }
        // SAFETY: both timestamps are written, so no submitted command still writes these
        // queries; hostQueryReset is enabled (checked in `new`).
        unsafe {
            self.ctx
                .device()
                .reset_query_pool(self.query_pool, first, 2)
        };
        self.slots[slot].handed = false;
        Ok(Some(span(&self.clock, slot, start, end)))
    }

    /// Waits (spinning, then sleeping) until slot `slot` can be read, at most `timeout`.
    ///
    /// # Errors
    /// As [`GpuTimer::try_read`], and [`Error::Timeout`] when the timestamps are not
    /// written in time (the batch was not submitted, or is still running).
    pub fn read(&mut self, slot: usize, timeout: Duration) -> Result<GpuSpan> {
        let start = Instant::now();
        let mut sleeps = 0u32;
        loop {
            if let Some(span) = self.try_read(slot)? {
                return Ok(span);
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(Error::Timeout {
                    what: format!("the timestamps of slot {slot}"),
                    waited: elapsed,
                });
            }
            match super::backoff(elapsed, sleeps) {
                None => std::hint::spin_loop(),
                Some(d) => {
                    std::thread::sleep(d.min(timeout - elapsed));
                    sleeps = sleeps.saturating_add(1);
                }
            }
        }
    }

    /// Records one command buffer with `record`, submits it on the timer's queue between
    /// a bracket, waits for it (bounded) and returns its span: timing a one-off piece of
    /// work without writing the submission. Allocates a command pool per call, so it is
    /// for tests and diagnostics, not per-frame work.
    ///
    /// `record` must record only commands the timer's family supports, on resources that
    /// stay alive until this returns.
    ///
    /// # Errors
    /// As [`GpuTimer::bracket`]; [`Error::Timeout`] when the work does not finish within
    /// `timeout`; driver errors.
    pub fn time(
        &mut self,
        timeout: Duration,
        record: impl FnOnce(vk::CommandBuffer),
    ) -> Result<GpuSpan> {
        let mut cmd = Recorded::new(&self.ctx, self.queue, |_, cmd| record(cmd))?;
        let bracket = self.bracket()?;
        if let Err(e) = cmd.submit_bracketed(Some(&bracket)) {
            self.unsubmitted(&bracket);
            return Err(e);
        }
        cmd.wait(timeout)?;
        self.read(bracket.slot, timeout)
    }
}

/// The span of a slot whose timestamps are `start` and `end` ticks: the start mapped onto
/// the host clock, the end that plus the (wrap-aware, never negative) tick distance.
fn span(clock: &DeviceClock, slot: usize, start: u64, end: u64) -> GpuSpan {
    let start_ns = clock.host_ns(start);
    let ticks = u64::try_from(clock.ticks_between(start, end).max(0)).unwrap_or(u64::MAX);
    let busy = u64::try_from(clock.ticks_to_duration(ticks).as_nanos()).unwrap_or(u64::MAX);
    GpuSpan {
        slot,
        start_ns,
        end_ns: start_ns.saturating_add(busy),
    }
}

/// The tick clock of `family`'s timestamps (anchored at zero until calibrated).
///
/// # Errors
/// [`Error::Unsupported`] when the family has no timestamps or the period is unusable;
/// [`Error::InvalidArgument`] (`queue`) when the family does not exist.
fn timestamp_clock(ctx: &Context, family: u32) -> Result<DeviceClock> {
    // SAFETY: valid physical device of this instance.
    let families = unsafe {
        ctx.instance()
            .get_physical_device_queue_family_properties(ctx.physical_device())
    };
    let props = families.get(family as usize).ok_or_else(|| {
        Error::invalid(
            "queue",
            format!("queue family {family}"),
            format!("a family below {}", families.len()),
        )
    })?;
    let bits = props.timestamp_valid_bits;
    if bits == 0 {
        return Err(Error::Unsupported {
            what: format!("timestamps on queue family {family}"),
            reason: "its timestampValidBits is 0".into(),
        });
    }
    let period = f64::from(ctx.properties().limits.timestamp_period);
    let anchor = ClockPair {
        device: 0,
        host_ns: 0,
        uncertainty_ns: 0,
    };
    DeviceClock::new(anchor, period, bits.min(64)).map_err(|_| Error::Unsupported {
        what: format!("timestamps on queue family {family}"),
        reason: format!("timestampPeriod {period} ns is not a positive number"),
    })
}

/// Records `cmd` (once, resubmittable while pending) as a timestamp write of `query`.
fn record_timestamp(
    d: &ash::Device,
    cmd: vk::CommandBuffer,
    stage: vk::PipelineStageFlags,
    pool: vk::QueryPool,
    query: u32,
) -> Result<()> {
    let begin =
        vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::SIMULTANEOUS_USE);
    // SAFETY: `cmd` was just allocated and is in the initial state.
    unsafe { d.begin_command_buffer(cmd, &begin) }
        .map_err(|r| Error::vk("vkBeginCommandBuffer", r))?;
    // SAFETY: recording; the query exists and the pool outlives the buffer (same owner).
    unsafe { d.cmd_write_timestamp(cmd, stage, pool, query) };
    // SAFETY: recording began above.
    unsafe { d.end_command_buffer(cmd) }.map_err(|r| Error::vk("vkEndCommandBuffer", r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_never_end_before_they_start() {
        let anchor = ClockPair {
            device: 1_000,
            host_ns: 50_000,
            uncertainty_ns: 10,
        };
        let clock = DeviceClock::new(anchor, 1.0, 64).unwrap();
        let s = span(&clock, 3, 1_100, 1_350);
        assert_eq!((s.slot, s.start_ns, s.end_ns), (3, 50_100, 50_350));
        let s = span(&clock, 0, 1_100, 1_050);
        assert_eq!(
            s.start_ns, s.end_ns,
            "an end tick before the start is clamped"
        );
        // 36 valid bits, end past the wrap.
        let wrap = 1u64 << 36;
        let clock = DeviceClock::new(
            ClockPair {
                device: wrap - 100,
                ..anchor
            },
            10.0,
            36,
        )
        .unwrap();
        let s = span(&clock, 1, wrap - 5, 5);
        assert_eq!(s.start_ns, 50_950);
        assert_eq!(s.end_ns - s.start_ns, 100);
    }

    #[test]
    fn khr_calibration_is_preferred() {
        let ext = |name: &CStr| {
            let mut e = vk::ExtensionProperties::default();
            for (dst, src) in e.extension_name.iter_mut().zip(name.to_bytes()) {
                *dst = *src as std::ffi::c_char;
            }
            e
        };
        let both = [
            ext(ash::ext::calibrated_timestamps::NAME),
            ext(ash::khr::calibrated_timestamps::NAME),
        ];
        assert_eq!(
            Calibrator::extension(&both),
            Some(ash::khr::calibrated_timestamps::NAME)
        );
        assert_eq!(
            Calibrator::extension(&both[..1]),
            Some(ash::ext::calibrated_timestamps::NAME)
        );
        assert_eq!(Calibrator::extension(&[]), None);
    }
}
