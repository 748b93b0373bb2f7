//! GPU timestamps on the host clock: [`GpuTimer`] brackets around real work on any Vulkan
//! device (lavapipe in CI, where the clocks are correlated by the timer itself; the NVIDIA
//! driver on the GPU host, where they are calibrated by the driver), and the optional
//! transfer-only queue of [`ContextDesc::transfer_queue`].

use crate::common;
use libtest_mimic::Trial;

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use common::{assert_no_validation_errors, expect_invalid_arg};
use vkcuda::ash::vk;
use vkcuda::trace::{now_ns, Span, Trace, TrackKind};
use vkcuda::util::OneShot;
use vkcuda::vulkan::{
    BufferDesc, ClockSource, Context, ContextDesc, ExternalBuffer, GpuTimer, QueueId,
};
use vkcuda::Error;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Big enough that lavapipe's CPU fill takes a visible time.
const FILL_BYTES: u64 = 64 << 20;

/// Fills `buffer` with `value` on `timer`'s queue and returns the span, checking that the
/// host saw the whole span between its own reads of the clock.
fn timed_fill(
    vk: &Context,
    timer: &mut GpuTimer,
    buffer: &ExternalBuffer,
    value: u32,
) -> anyhow::Result<vkcuda::trace::GpuSpan> {
    let before = now_ns();
    let span = timer.time(TIMEOUT, |cmd| {
        // SAFETY: `cmd` is recording for the timer's family (fills are allowed on every
        // family); the buffer outlives the wait inside `time`.
        unsafe {
            vk.device()
                .cmd_fill_buffer(cmd, buffer.raw(), 0, vk::WHOLE_SIZE, value)
        };
    })?;
    let after = now_ns();
    // The anchor's uncertainty, plus 1 ms for rounding and clock drift.
    let slack = timer.clock().anchor().uncertainty_ns + 1_000_000;
    ensure!(
        span.start_ns + slack >= before && span.end_ns <= after + slack,
        "span {}..{} ns outside the host's {before}..{after} ns (slack {slack} ns)",
        span.start_ns,
        span.end_ns
    );
    Ok(span)
}

fn source_matches_the_extension(vk: &Context) -> anyhow::Result<()> {
    let timer = GpuTimer::new(vk, QueueId::Main(0), 2)?;
    let expected = if vk.has_calibrated_timestamps() {
        ClockSource::Calibrated
    } else {
        ClockSource::Correlated
    };
    ensure!(timer.source() == expected, "{timer:?}");
    println!(
        "  calibrated timestamps: {}, source {:?}, period {} ns, {} valid bits, anchor +-{} ns",
        vk.has_calibrated_timestamps(),
        timer.source(),
        timer.clock().period_ns(),
        timer.clock().valid_bits(),
        timer.clock().anchor().uncertainty_ns
    );
    Ok(())
}

fn spans_of_real_work_are_monotonic_host_times(vk: &Context) -> anyhow::Result<()> {
    let buffer = ExternalBuffer::new(vk, &BufferDesc::new(FILL_BYTES))?;
    let mut timer = GpuTimer::new(vk, QueueId::Main(0), 4)?;
    let mut trace = Trace::new();
    let track = trace.track(
        "queue 0",
        TrackKind::VulkanQueue {
            family: timer.family(),
            index: 0,
        },
    );
    let mut last_end = 0;
    for i in 0..6u32 {
        let span = timed_fill(vk, &mut timer, &buffer, i)?;
        ensure!(span.end_ns >= span.start_ns);
        // Allow the anchor's uncertainty between consecutive batches.
        let slack = timer.clock().anchor().uncertainty_ns;
        ensure!(
            span.start_ns + slack >= last_end,
            "fill {i} starts at {} ns, before the previous end {last_end} ns",
            span.start_ns
        );
        last_end = span.end_ns;
        trace.push(track, span.named("fill").frame(u64::from(i)))?;
        let head = vk.read_buffer(&buffer, 0..4)?;
        ensure!(head == i.to_ne_bytes(), "fill {i} left {head:?}");
    }
    let busy: Vec<u64> = trace.spans().map(|(_, s)| s.end_ns - s.start_ns).collect();
    println!("  64 MiB fills: {busy:?} ns");
    ensure!(
        busy.iter().any(|&ns| ns > 0),
        "every fill took 0 ns: timestamps are not being written"
    );
    let json = trace.to_json();
    ensure!(json.matches("\"ph\":\"X\"").count() == 6, "{json}");
    assert_no_validation_errors(vk)
}

fn recalibration_keeps_the_axis(vk: &Context) -> anyhow::Result<()> {
    let buffer = ExternalBuffer::new(vk, &BufferDesc::new(4096))?;
    let mut timer = GpuTimer::new(vk, QueueId::Main(0), 1)?;
    let first = timed_fill(vk, &mut timer, &buffer, 1)?;
    timer.calibrate()?;
    let second = timed_fill(vk, &mut timer, &buffer, 2)?;
    ensure!(
        second.start_ns + timer.clock().anchor().uncertainty_ns >= first.end_ns,
        "{first:?} then {second:?}"
    );
    assert_no_validation_errors(vk)
}

fn correlation_agrees_with_calibration(vk: &Context) -> anyhow::Result<()> {
    let buffer = ExternalBuffer::new(vk, &BufferDesc::new(4096))?;
    let mut timer = GpuTimer::new(vk, QueueId::Main(0), 1)?;
    timer.calibrate_with(ClockSource::Correlated)?;
    ensure!(timer.source() == ClockSource::Correlated);
    let correlated = *timer.clock();
    // The correlated clock places real work inside the host's window too.
    timed_fill(vk, &mut timer, &buffer, 3)?;
    if !vk.has_calibrated_timestamps() {
        match timer.calibrate_with(ClockSource::Calibrated) {
            Err(Error::Unsupported { .. }) => {}
            other => anyhow::bail!("expected Unsupported, got {other:?}"),
        }
        return Ok(());
    }
    timer.calibrate_with(ClockSource::Calibrated)?;
    let calibrated = *timer.clock();
    // The same tick, placed by both anchors.
    let tick = calibrated.anchor().device;
    let apart = correlated.host_ns(tick).abs_diff(calibrated.host_ns(tick));
    let allowed =
        correlated.anchor().uncertainty_ns + calibrated.anchor().uncertainty_ns + 1_000_000;
    println!(
        "  correlated anchor +-{} ns; it places the calibrated anchor {apart} ns away",
        correlated.anchor().uncertainty_ns
    );
    ensure!(apart <= allowed, "{apart} ns apart, allowed {allowed} ns");
    assert_no_validation_errors(vk)
}

fn the_ring_refuses_misuse(vk: &Context) -> anyhow::Result<()> {
    for slots in [0, vkcuda::vulkan::MAX_TIMER_SLOTS + 1] {
        expect_invalid_arg(GpuTimer::new(vk, QueueId::Main(0), slots), "slots")?;
    }
    expect_invalid_arg(GpuTimer::new(vk, QueueId::Main(99), 1), "queue")?;
    let mut timer = GpuTimer::new(vk, QueueId::Main(0), 1)?;
    let bracket = timer.bracket()?;
    expect_invalid_arg(timer.bracket(), "slots")?;
    expect_invalid_arg(timer.try_read(1), "slot")?;
    // Never submitted: never readable, and the wait is bounded.
    ensure!(timer.try_read(bracket.slot)?.is_none());
    match timer.read(bracket.slot, Duration::from_millis(20)) {
        Err(Error::Timeout { .. }) => {}
        other => anyhow::bail!("expected Timeout, got {other:?}"),
    }
    assert_no_validation_errors(vk)
}

fn transfer_queue_where_the_device_has_one(vk: &Context) -> anyhow::Result<()> {
    println!("  transfer-only family: {:?}", vk.transfer_family());
    match vk.transfer_family() {
        None => {
            expect_invalid_arg(vk.family_of(QueueId::Transfer), "queue")?;
            expect_invalid_arg(GpuTimer::new(vk, QueueId::Transfer, 1), "queue")?;
            expect_invalid_arg(vk.submit_and_wait_on(QueueId::Transfer, |_| {}), "queue")?;
        }
        Some(family) => {
            ensure!(vk.family_of(QueueId::Transfer)? == family);
            ensure!(family != vk.queue_family_index());
            let buffer = ExternalBuffer::new(vk, &BufferDesc::new(FILL_BYTES))?;
            let mut timer = GpuTimer::new(vk, QueueId::Transfer, 2)?;
            timed_fill(vk, &mut timer, &buffer, 7)?;
            // A one-off on the copy engine, seen from the main queue afterwards. The
            // buffer is exclusive to the main family: a fill that overwrites it whole
            // needs no ownership transfer (its old contents are discarded).
            vk.submit_and_wait_on(QueueId::Transfer, |cmd| {
                // SAFETY: `cmd` is recording for the transfer family; the buffer outlives
                // the wait.
                unsafe {
                    vk.device()
                        .cmd_fill_buffer(cmd, buffer.raw(), 0, vk::WHOLE_SIZE, 9)
                };
            })?;
            println!("  one-off fill on the transfer queue (family {family}) done");
        }
    }
    assert_no_validation_errors(vk)
}

fn host_spans_sit_on_the_same_axis(_: &Context) -> anyhow::Result<()> {
    let mut trace = Trace::new();
    let host = trace.track("test thread", TrackKind::HostThread);
    let start = now_ns();
    std::thread::sleep(Duration::from_millis(2));
    trace.push(host, Span::new("sleep", start, now_ns()))?;
    let (_, span) = trace.spans().next().expect("one span");
    ensure!(span.end_ns - span.start_ns >= 2_000_000, "{span:?}");
    Ok(())
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = Arc::new(
        Context::new(&ContextDesc {
            transfer_queue: true,
            ..ContextDesc::default()
        })
        .map_err(|e| e.to_string()),
    );
    let tests: [common::Test<Context>; 7] = [
        ("source_matches_the_extension", source_matches_the_extension),
        (
            "spans_of_real_work_are_monotonic_host_times",
            spans_of_real_work_are_monotonic_host_times,
        ),
        ("recalibration_keeps_the_axis", recalibration_keeps_the_axis),
        (
            "correlation_agrees_with_calibration",
            correlation_agrees_with_calibration,
        ),
        ("the_ring_refuses_misuse", the_ring_refuses_misuse),
        (
            "transfer_queue_where_the_device_has_one",
            transfer_queue_where_the_device_has_one,
        ),
        (
            "host_spans_sit_on_the_same_axis",
            host_spans_sit_on_the_same_axis,
        ),
    ];
    common::trials_of(&probe, tests, "Vulkan device")
}
