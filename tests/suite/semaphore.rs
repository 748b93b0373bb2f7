//! Vulkan-side semaphore tests: run on any Vulkan device (lavapipe in CI, the NVIDIA driver
//! on the GPU host).
//!
//! lavapipe cannot export semaphore fds (no `VK_KHR_external_semaphore_fd`), so there the
//! export path must fail with a clear capability error, and the host operations and the
//! submit helper are exercised on plain (non-exportable) semaphores wrapped with
//! `Semaphore::from_raw`. Where the device can export (NVIDIA), the same checks
//! run on exported semaphores too; on lavapipe those trials are reported as `[skipped]`.

use crate::common;
use libtest_mimic::Trial;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use ash::vk;
use common::{
    open_fds, orphaned_counter_reads, trial, trial_if, validation_since, validation_snapshot,
};
use vkcuda::external::{SemaphoreHandle, SemaphoreHandleType};
use vkcuda::vulkan::{Context, Semaphore, SemaphoreDesc, SemaphoreKind};
use vkcuda::Error;

/// Generous bound for "returns quickly" on a loaded CI machine.
const QUICK: Duration = Duration::from_millis(100);
/// How late a timed-out wait may return.
const SLACK: Duration = Duration::from_millis(50);

/// A plain semaphore of `kind` (not exportable).
fn plain(vk: &Context, kind: SemaphoreKind, initial: u64) -> anyhow::Result<Semaphore> {
    Ok(Semaphore::local(vk, kind, initial)?)
}

/// Waits until the context's queue has finished everything submitted to it.
fn idle(vk: &Context) -> anyhow::Result<()> {
    let queue = vk.queue()?;
    // SAFETY: the queue is locked for the call.
    unsafe { vk.device().queue_wait_idle(*queue) }?;
    Ok(())
}

fn lacks_semaphore_fds(vk: &Context) -> Option<String> {
    (!vk.can_export_semaphore_fds())
        .then(|| "the device has no VK_KHR_external_semaphore_fd (lavapipe)".to_owned())
}

fn expect_invalid<T>(r: vkcuda::Result<T>, arg: &str, mentions: &[&str]) -> anyhow::Result<()> {
    match r {
        Err(e @ Error::InvalidArgument { .. }) if matches!(e, Error::InvalidArgument { arg: a, .. } if a == arg) =>
        {
            let text = e.to_string();
            for m in mentions {
                ensure!(text.contains(m), "{text:?} does not mention {m:?}");
            }
            Ok(())
        }
        Err(e) => bail!("expected InvalidArgument({arg}), got {e}"),
        Ok(_) => bail!("expected InvalidArgument({arg}), got Ok"),
    }
}

fn expect_unsupported<T>(r: vkcuda::Result<T>, mentions: &str) -> anyhow::Result<()> {
    match r {
        Err(e @ Error::Unsupported { .. }) => {
            ensure!(
                e.to_string().contains(mentions),
                "{e} does not mention {mentions:?}"
            );
            Ok(())
        }
        Err(e) => bail!("expected Unsupported, got {e}"),
        Ok(_) => bail!("expected Unsupported, got Ok"),
    }
}

/// lavapipe: a clear capability error naming the extension. NVIDIA: timeline and binary
/// semaphores, each exported twice as two distinct fds of the right type.
fn export_or_capability_error(vk: &Context) -> anyhow::Result<()> {
    if !vk.can_export_semaphore_fds() {
        for desc in [SemaphoreDesc::timeline(0), SemaphoreDesc::binary()] {
            match Semaphore::new(vk, &desc) {
                Err(Error::MissingExtension {
                    name: "VK_KHR_external_semaphore_fd",
                    ..
                }) => {}
                other => bail!("{desc:?}: expected MissingExtension, got {other:?}"),
            }
        }
        eprintln!("export_or_capability_error: no semaphore fds here; checked the error only");
        return Ok(());
    }
    let fds = open_fds();
    let timeline = Semaphore::timeline(vk, 10)?;
    ensure!(timeline.kind() == SemaphoreKind::Timeline);
    ensure!(timeline.handle_type() == Some(SemaphoreHandleType::TimelineFd));
    ensure!(
        timeline.value()? == 10,
        "initial value {}",
        timeline.value()?
    );
    let binary = Semaphore::binary(vk)?;
    ensure!(binary.kind() == SemaphoreKind::Binary);
    for (sem, want) in [
        (&timeline, SemaphoreHandleType::TimelineFd),
        (&binary, SemaphoreHandleType::OpaqueFd),
    ] {
        let (a, b) = (sem.export()?, sem.export()?);
        ensure!(
            a.handle_type() == want && b.handle_type() == want,
            "{a:?} {b:?}"
        );
        let raw = |h: &SemaphoreHandle| match h {
            SemaphoreHandle::TimelineFd(fd) | SemaphoreHandle::OpaqueFd(fd) => fd.as_raw_fd(),
            _ => -1,
        };
        ensure!(
            raw(&a) >= 0 && raw(&a) != raw(&b),
            "two exports, fds {} and {}",
            raw(&a),
            raw(&b)
        );
    }
    drop((timeline, binary));
    ensure!(open_fds() == fds, "fds grew from {fds} to {}", open_fds());
    Ok(())
}

fn capability_queries(vk: &Context) -> anyhow::Result<()> {
    for (kind, t) in [
        (SemaphoreKind::Timeline, SemaphoreHandleType::TimelineFd),
        (SemaphoreKind::Binary, SemaphoreHandleType::OpaqueFd),
    ] {
        let s = vk.semaphore_support(kind, t)?;
        if vk.can_export_semaphore_fds() {
            ensure!(s.exportable && s.importable, "{kind:?} {t}: {s:?}");
        } else {
            ensure!(
                !s.exportable,
                "{kind:?} {t} exportable without the extension: {s:?}"
            );
        }
    }
    for t in [
        SemaphoreHandleType::NvSciSync,
        SemaphoreHandleType::D3D11KeyedMutex,
        SemaphoreHandleType::D3D11KeyedMutexKmt,
    ] {
        let kind = if t.is_timeline() {
            SemaphoreKind::Timeline
        } else {
            SemaphoreKind::Binary
        };
        expect_unsupported(vk.semaphore_support(kind, t), "no such")?;
        let desc = SemaphoreDesc {
            kind,
            initial_value: 0,
            handle_type: t,
        };
        expect_unsupported(Semaphore::new(vk, &desc), "no such")?;
    }
    // Win32 types are modelled but not exported by vkcuda (untested on Windows).
    let win32 = SemaphoreDesc::timeline(0).handle_type(SemaphoreHandleType::TimelineWin32);
    expect_unsupported(Semaphore::new(vk, &win32), "POSIX fds")?;
    let win32 = SemaphoreDesc::binary().handle_type(SemaphoreHandleType::OpaqueWin32);
    expect_unsupported(Semaphore::new(vk, &win32), "POSIX fds")?;
    Ok(())
}

fn bad_descriptions(vk: &Context) -> anyhow::Result<()> {
    let fds = open_fds();
    let d = SemaphoreDesc::timeline(0).handle_type(SemaphoreHandleType::OpaqueFd);
    expect_invalid(Semaphore::new(vk, &d), "desc.handle_type", &["OpaqueFd"])?;
    let d = SemaphoreDesc::binary().handle_type(SemaphoreHandleType::TimelineFd);
    expect_invalid(Semaphore::new(vk, &d), "desc.handle_type", &["TimelineFd"])?;
    let d = SemaphoreDesc {
        initial_value: 3,
        ..SemaphoreDesc::binary()
    };
    expect_invalid(Semaphore::new(vk, &d), "desc.initial_value", &["3"])?;

    // from_raw checks the pairing too, and leaves the semaphore to the caller on error.
    let info = vk::SemaphoreCreateInfo::default();
    // SAFETY: valid device and create info.
    let raw = unsafe { vk.device().create_semaphore(&info, None) }?;
    // SAFETY: a binary semaphore of this device; the call fails before taking it.
    let r = unsafe {
        Semaphore::from_raw(
            vk,
            raw,
            SemaphoreKind::Binary,
            Some(SemaphoreHandleType::TimelineFd),
            true,
        )
    };
    let checked = expect_invalid(r, "exported_as", &["TimelineFd"]);
    // SAFETY: the semaphore was never used or wrapped.
    unsafe { vk.device().destroy_semaphore(raw, None) };
    checked?;

    // A wrapped semaphore that is not exportable refuses export.
    let p = plain(vk, SemaphoreKind::Timeline, 0)?;
    expect_unsupported(p.export(), "not created exportable")?;
    drop(p);
    ensure!(open_fds() == fds, "fds grew from {fds} to {}", open_fds());
    Ok(())
}

/// value/signal/wait/wait_blocking on a timeline semaphore whose value is `start`.
/// Returns how many host signals reached the driver (see [`validation_since`]).
fn host_ops(sem: &Semaphore, start: u64) -> anyhow::Result<u64> {
    ensure!(sem.value()? == start, "value {} != {start}", sem.value()?);
    sem.signal(start + 1)?;
    ensure!(sem.value()? == start + 1, "after signal: {}", sem.value()?);
    let t = Instant::now();
    sem.wait(start + 1, Duration::from_secs(5))?;
    sem.wait(start, Duration::ZERO)?; // already passed: a single poll
    sem.wait_blocking(start + 1, Duration::from_secs(5))?;
    ensure!(
        t.elapsed() < QUICK,
        "waits on a reached value took {:?}",
        t.elapsed()
    );

    // Timeline values only grow: the error names the current and requested values.
    let (cur, same, back) = (
        (start + 1).to_string(),
        (start + 1).to_string(),
        start.to_string(),
    );
    expect_invalid(
        sem.signal(start + 1),
        "value",
        &[&same, &format!("current value {cur}")],
    )?;
    expect_invalid(
        sem.signal(start),
        "value",
        &[&back, &format!("current value {cur}")],
    )?;

    // Timeouts: typed, on time, naming the value waited for and the value seen.
    let timeout = Duration::from_millis(50);
    let want = format!("timeline value {} (current {cur})", start + 2);
    for (name, wait) in [
        ("wait", Semaphore::wait as WaitFn),
        ("wait_blocking", Semaphore::wait_blocking),
    ] {
        let t = Instant::now();
        let r = wait(sem, start + 2, timeout);
        let took = t.elapsed();
        match r {
            Err(Error::Timeout { what, waited }) => {
                ensure!(what == want, "{name}: {what:?}, expected {want:?}");
                ensure!(waited >= timeout, "{name}: waited {waited:?}");
            }
            Err(e) => bail!("{name}: expected a timeout, got {e}"),
            Ok(()) => bail!("{name}: returned Ok for an unsignalled value"),
        }
        ensure!(
            took >= timeout && took < timeout + SLACK,
            "{name} took {took:?}"
        );
    }

    // A signal from another thread wakes the waiter: inside the spin window and after it.
    for delay in [Duration::ZERO, Duration::from_millis(20)] {
        let target = sem.value()? + 1;
        let (signalled, seen) = std::thread::scope(|s| {
            let signaller = s.spawn(|| {
                std::thread::sleep(delay);
                let at = Instant::now();
                sem.signal(target).map(|()| at)
            });
            let waited = sem
                .wait(target, Duration::from_secs(5))
                .map(|()| Instant::now());
            (signaller.join(), waited)
        });
        let signalled = signalled.map_err(|_| anyhow::anyhow!("signaller panicked"))??;
        let seen = seen?;
        let latency = seen.saturating_duration_since(signalled);
        eprintln!("host wait saw a host signal sent after {delay:?} in {latency:?}");
        ensure!(
            latency < QUICK,
            "host wait took {latency:?} to see the signal"
        );
    }
    Ok(3) // start + 1, then one per delay from the other thread
}

fn host_ops_plain(vk: &Context) -> anyhow::Result<()> {
    host_ops(&plain(vk, SemaphoreKind::Timeline, 7)?, 7).map(drop)
}

fn host_ops_exported(vk: &Context) -> anyhow::Result<u64> {
    let sem = Semaphore::timeline(vk, 7)?;
    let _fd = sem.export()?; // an exported payload behaves the same
    host_ops(&sem, 7)
}

fn binary_has_no_counter(vk: &Context) -> anyhow::Result<()> {
    let b = plain(vk, SemaphoreKind::Binary, 0)?;
    expect_invalid(b.value(), "semaphore", &["binary"])?;
    expect_invalid(b.signal(1), "semaphore", &["binary"])?;
    expect_invalid(b.wait(1, Duration::ZERO), "semaphore", &["binary"])?;
    expect_invalid(b.wait_blocking(1, Duration::ZERO), "semaphore", &["binary"])?;
    Ok(())
}

/// Queue batches that signal and wait: ordering shown by the counter's value, not by
/// "it ran". `tl` starts at 0; `bin` is unsignalled. Returns how many host signals reached
/// the driver (see [`validation_since`]).
fn submit_roundtrip(vk: &Context, tl: &Semaphore, bin: &Semaphore) -> anyhow::Result<u64> {
    let all = vk::PipelineStageFlags::ALL_COMMANDS;
    let none = vk::Fence::null();
    // Vulkan submit signals 5; the host sees it quickly.
    let t = Instant::now();
    // SAFETY: no command buffers; the semaphores outlive the batch (idle below).
    unsafe { vk.submit(&[], &[], &[(tl, 5)], none) }?;
    tl.wait(5, Duration::from_secs(5))?;
    let latency = t.elapsed();
    eprintln!("queue signal 5 -> host wait(5) returned after {latency:?}");
    ensure!(
        latency < QUICK,
        "host wait for a queue signal took {latency:?}"
    );

    // Wait-before-signal: the batch waits for 7 (signalled later by the host) and signals 8.
    // SAFETY: as above; the host signals 7 below, so the wait is satisfied.
    unsafe { vk.submit(&[], &[(tl, 7, all)], &[(tl, 8)], none) }?;
    std::thread::sleep(Duration::from_millis(10));
    ensure!(
        tl.value()? == 5,
        "the batch ran before its wait: value {}",
        tl.value()?
    );
    tl.signal(7)?;
    tl.wait(8, Duration::from_secs(5))?;

    // Binary: one batch signals it, the next waits on it and signals the timeline 9, with
    // a fence.
    // SAFETY: valid device and create info.
    let fence = unsafe {
        vk.device()
            .create_fence(&vk::FenceCreateInfo::default(), None)
    }?;
    let chained = (|| -> anyhow::Result<()> {
        // SAFETY: the binary wait below has this signal pending; the fence is unsignalled.
        unsafe { vk.submit(&[], &[], &[(bin, 0)], none) }?;
        // SAFETY: as above.
        unsafe { vk.submit(&[], &[(bin, 0, all)], &[(tl, 9)], fence) }?;
        tl.wait(9, Duration::from_secs(5))?;
        // SAFETY: the fence belongs to this device.
        unsafe { vk.device().wait_for_fences(&[fence], true, 5_000_000_000) }?;
        Ok(())
    })();
    let idled = idle(vk);
    // SAFETY: the queue is idle (or the device lost): the fence is no longer in use.
    unsafe { vk.device().destroy_fence(fence, None) };
    chained?;
    idled?;
    ensure!(tl.value()? == 9, "value {}", tl.value()?);
    Ok(1) // the host signal of 7
}

fn submit_plain(vk: &Context) -> anyhow::Result<()> {
    let tl = plain(vk, SemaphoreKind::Timeline, 0)?;
    let bin = plain(vk, SemaphoreKind::Binary, 0)?;
    submit_roundtrip(vk, &tl, &bin).map(drop)
}

fn submit_exported(vk: &Context) -> anyhow::Result<u64> {
    let tl = Semaphore::timeline(vk, 0)?;
    let bin = Semaphore::binary(vk)?;
    let _fds = (tl.export()?, bin.export()?);
    submit_roundtrip(vk, &tl, &bin)
}

/// Bad submissions are refused before anything reaches the queue.
fn submit_rejects_bad_values(vk: &Context) -> anyhow::Result<()> {
    let all = vk::PipelineStageFlags::ALL_COMMANDS;
    let none = vk::Fence::null();
    let tl = plain(vk, SemaphoreKind::Timeline, 5)?;
    let bin = plain(vk, SemaphoreKind::Binary, 0)?;
    // SAFETY: each call below is refused before vkQueueSubmit.
    let r = unsafe { vk.submit(&[], &[], &[(&bin, 3)], none) };
    expect_invalid(r, "signals", &["entry 0", "binary"])?;
    // SAFETY: as above.
    let r = unsafe { vk.submit(&[], &[(&bin, 1, all)], &[], none) };
    expect_invalid(r, "waits", &["entry 0", "binary"])?;
    // SAFETY: as above.
    let r = unsafe { vk.submit(&[], &[], &[(&tl, 6), (&tl, 7)], none) };
    expect_invalid(r, "signals", &["entries 0 and 1", "same timeline"])?;
    let tl2 = plain(vk, SemaphoreKind::Timeline, 0)?;
    // SAFETY: as above.
    let r = unsafe { vk.submit(&[], &[], &[(&tl2, 6), (&tl, 5)], none) };
    expect_invalid(r, "signals", &["entry 1", "not above 5"])?;
    // SAFETY: as above.
    let r = unsafe { vk.submit(&[], &[(&tl, 6, vk::PipelineStageFlags::empty())], &[], none) };
    expect_invalid(r, "waits", &["stage"])?;
    let other = Context::new(&Default::default())?;
    let foreign = plain(&other, SemaphoreKind::Timeline, 0)?;
    // SAFETY: as above.
    let r = unsafe { vk.submit(&[], &[], &[(&foreign, 1)], none) };
    expect_invalid(r, "signals", &["another device"])?;
    ensure!(tl.value()? == 5, "a refused submission ran");
    Ok(())
}

/// Issue 10 row 6: timeline values never go backwards. A queue signal of 5 is pending
/// (its batch waits on a gate): a host signal of 5 or more would be overtaken by it
/// (VUID-VkSemaphoreSignalInfo-value-03259), and a queue signal of 5 or less would run after
/// it; both are refused although the counter is still 0. Below the pending value the host
/// may signal. Two threads racing host and queue signals never go backwards either.
fn signals_never_go_backwards(vk: &Context) -> anyhow::Result<()> {
    let all = vk::PipelineStageFlags::ALL_COMMANDS;
    let none = vk::Fence::null();
    let gate = plain(vk, SemaphoreKind::Timeline, 0)?;
    let tl = plain(vk, SemaphoreKind::Timeline, 0)?;
    // SAFETY: no command buffers; the gate is signalled below, and `idle` runs before the
    // semaphores drop.
    unsafe { vk.submit(&[], &[(&gate, 1, all)], &[(&tl, 5)], none) }?;
    let checks = (|| -> anyhow::Result<()> {
        expect_invalid(tl.signal(7), "value", &["signal of 5 is still pending"])?;
        expect_invalid(tl.signal(5), "value", &["signal of 5 is still pending"])?;
        // SAFETY: refused before vkQueueSubmit.
        let r = unsafe { vk.submit(&[], &[], &[(&tl, 4)], none) };
        expect_invalid(r, "signals", &["entry 0", "not above 5"])?;
        tl.signal(3)?; // below the pending 5: allowed
        ensure!(tl.value()? == 3);
        Ok(())
    })();
    gate.signal(1)?;
    idle(vk)?;
    checks?;
    ensure!(tl.value()? == 5, "value {}", tl.value()?);

    // Host and queue signals from two threads: whatever interleaving, each accepted value
    // is above the one before, so the counter ends at the highest accepted one.
    let accepted = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (tl, accepted) = (&tl, &accepted);
            s.spawn(move || {
                for i in 0..200u64 {
                    let v = 10 + i * 2 + t;
                    let r = if t == 0 {
                        tl.signal(v)
                    } else {
                        // SAFETY: no command buffers or waits; `idle` runs before drop.
                        unsafe { vk.submit(&[], &[], &[(tl, v)], none) }
                    };
                    if r.is_ok() {
                        accepted.lock().unwrap().push(v);
                    }
                }
            });
        }
    });
    idle(vk)?;
    let top = accepted.lock().unwrap().iter().copied().max().unwrap_or(5);
    ensure!(
        tl.value()? == top,
        "value {} != highest accepted {top}",
        tl.value()?
    );
    Ok(())
}

/// Create/export/drop 1000 times: open fds stay flat.
fn no_fd_growth(vk: &Context) -> anyhow::Result<u64> {
    let cycle = |i: u64| -> anyhow::Result<()> {
        let tl = Semaphore::timeline(vk, i)?;
        drop(tl.export()?);
        let bin = Semaphore::binary(vk)?;
        let fd = bin.export()?;
        drop((tl, bin, fd));
        Ok(())
    };
    cycle(0)?; // warm caches before counting
    let fds = open_fds();
    for i in 0..1000 {
        cycle(i).with_context(|| format!("cycle {i}"))?;
    }
    ensure!(open_fds() == fds, "fds grew from {fds} to {}", open_fds());
    Ok(0)
}

type Test = fn(&Context) -> anyhow::Result<()>;
/// A test on exported semaphores; returns how many host signals it made on them.
type ExportTest = fn(&Context) -> anyhow::Result<u64>;
type WaitFn = fn(&Semaphore, u64, Duration) -> vkcuda::Result<()>;

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::vulkan_probe();
    let always: [(&str, Test); 9] = [
        (
            "validation_is_counted_when_requested",
            common::validation_is_counted_when_requested,
        ),
        ("export_or_capability_error", export_or_capability_error),
        ("capability_queries", capability_queries),
        ("bad_descriptions_are_typed", bad_descriptions),
        ("host_timeline_ops_plain", host_ops_plain),
        ("binary_has_no_counter", binary_has_no_counter),
        ("submit_signal_wait_plain", submit_plain),
        ("submit_rejects_bad_values", submit_rejects_bad_values),
        (
            "timeline_signals_never_go_backwards",
            signals_never_go_backwards,
        ),
    ];
    let exporting: [(&str, ExportTest); 3] = [
        ("host_timeline_ops_exported", host_ops_exported),
        ("submit_signal_wait_exported", submit_exported),
        ("create_export_drop_1000_no_fd_growth", no_fd_growth),
    ];
    let mut trials: Vec<_> = always
        .into_iter()
        .map(|(name, f)| {
            trial(name, &probe, move |vk: &Context| {
                let before = validation_snapshot(vk);
                f(vk)?;
                validation_since(vk, &before, &[])
            })
        })
        .collect();
    trials.extend(exporting.into_iter().map(|(name, f)| {
        trial_if(name, &probe, lacks_semaphore_fds, move |vk: &Context| {
            let before = validation_snapshot(vk);
            let host_signals = f(vk)?;
            let known: Vec<_> = orphaned_counter_reads(vk, host_signals)
                .into_iter()
                .collect();
            validation_since(vk, &before, &known)
        })
    }));
    common::note(&probe, "Vulkan device");
    trials
}
