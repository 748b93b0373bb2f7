//! The alternation floor ([`alternation_floor`]): the Vulkan half (fills on each queue
//! family, timed with the host spinning) on any Vulkan device, lavapipe included; the whole
//! measurement, Vulkan fills alternating with empty CUDA kernels, on a GPU with CUDA
//! (skipped without one, failed under `VKCUDA_REQUIRE_GPU=1`). Prints the figures.

use crate::common;
use libtest_mimic::Trial;

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use common::{assert_no_validation_errors, expect_invalid_arg, trial, trial_if};
use vkcuda::interop::{
    alternation_floor, alternation_trace, choose_batch, measure_steps, BatchGoal, FillStep,
    FloorReport, MAX_FLOOR_ITERATIONS,
};
use vkcuda::trace::Span;
use vkcuda::vulkan::{ContextDesc, QueueId};
use vkcuda::{cuda, vulkan};

/// The Vulkan context (with a transfer-only queue where the device has one) and, when
/// there is one, the CUDA context on the same GPU.
type Env = (vulkan::Context, Option<cuda::Context>);

fn queues(vk: &vulkan::Context) -> Vec<QueueId> {
    let mut q = vec![QueueId::Main(0)];
    if vk.transfer_family().is_some() {
        q.push(QueueId::Transfer);
    }
    q
}

fn fills_alone_on_every_family((vk, _): &Env) -> anyhow::Result<()> {
    for queue in queues(vk) {
        let mut fill = FillStep::new(vk, queue)?;
        let p = measure_steps(50, || fill.run())?;
        println!(
            "  fill alone on {queue:?} (family {}): p50 {:?}, p99 {:?}",
            fill.family(),
            p.p50,
            p.p99
        );
        ensure!(
            p.samples == 50 && p.p50 > Duration::ZERO && p.p99 >= p.p50,
            "{p:?}"
        );
        ensure!(fill.family() == vk.family_of(queue)?);
    }
    assert_no_validation_errors(vk)
}

fn bad_input_is_typed((vk, _): &Env) -> anyhow::Result<()> {
    expect_invalid_arg(FillStep::new(vk, QueueId::Main(99)), "queue")?;
    if vk.transfer_family().is_none() {
        expect_invalid_arg(FillStep::new(vk, QueueId::Transfer), "queue")?;
    }
    expect_invalid_arg(measure_steps(0, || Ok(Duration::ZERO)), "iterations")?;
    Ok(())
}

fn print(r: &FloorReport) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  {:?} (family {}{}): fill alone {:.1}/{:.1} us, kernel alone {:.1}/{:.1} us, \
         alternating {:.1}/{:.1} us (p50/p99); switch pair {:.1} us",
        r.queue,
        r.family,
        if r.transfer_only {
            ", transfer-only"
        } else {
            ""
        },
        us(r.fill_alone.p50),
        us(r.fill_alone.p99),
        us(r.kernel_alone.p50),
        us(r.kernel_alone.p99),
        us(r.alternating.p50),
        us(r.alternating.p99),
        us(r.switch_pair())
    );
}

fn floor_on_every_family((vk, cu): &Env) -> anyhow::Result<()> {
    let cu = cu.as_ref().expect("trial_if checked for CUDA");
    for bad in [0, MAX_FLOOR_ITERATIONS + 1] {
        expect_invalid_arg(
            alternation_floor(vk, cu, QueueId::Main(0), bad),
            "iterations",
        )?;
    }
    let mut reports = Vec::new();
    for queue in queues(vk) {
        let r = alternation_floor(vk, cu, queue, 500)?;
        print(&r);
        ensure!(r.alternating.samples == 500);
        ensure!(
            r.alternating.p50 >= r.fill_alone.p50.max(r.kernel_alone.p50),
            "alternating is faster than one of its steps alone: {r:?}"
        );
        reports.push(r);
    }
    // The measured floor feeds the batch chooser.
    let main = &reports[0];
    let plan = choose_batch(&BatchGoal {
        floor: main.switch_pair(),
        frame_gpu: Duration::from_micros(30),
        target_efficiency: 0.9,
        latency_budget: Duration::from_millis(100),
    })?;
    println!(
        "  30 us frames at 0.9 of the bound on {:?}: {plan:?}",
        main.queue
    );
    ensure!(plan.reached_target, "{plan:?}");
    assert_no_validation_errors(vk)
}

/// Where a trial leaves a file for the reader: `$OUT` when set (the GPU bundle brings it
/// back), else the temp directory.
fn out_path(name: &str) -> std::path::PathBuf {
    std::env::var_os("OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(name)
}

/// How far `inner` sticks out of `outer`, in ns (0 when inside).
fn outside(inner: &Span, outer: &Span) -> u64 {
    outer.start_ns.saturating_sub(inner.start_ns) + inner.end_ns.saturating_sub(outer.end_ns)
}

fn trace_places_gpu_spans_inside_host_steps((vk, cu): &Env) -> anyhow::Result<()> {
    let cu = cu.as_ref().expect("trial_if checked for CUDA");
    for queue in queues(vk) {
        let trace = alternation_trace(vk, cu, queue, 200)?;
        let path = out_path(&format!("alternation-{queue:?}.json"));
        trace.write_json(&path)?;
        // Per iteration: host fill step, host kernel step, GPU fill, GPU kernel.
        let spans: Vec<&Span> = trace.spans().map(|(_, s)| s).collect();
        ensure!(spans.len() == 4 * 200, "{} spans", spans.len());
        let mut worst = 0;
        let (mut gaps, mut fills, mut kernels) = (Vec::new(), Vec::new(), Vec::new());
        for (i, it) in spans.chunks_exact(4).enumerate() {
            let [host_fill, host_kernel, fill, kernel] = it else {
                unreachable!("chunks of 4")
            };
            worst = worst
                .max(outside(fill, host_fill))
                .max(outside(kernel, host_kernel));
            fills.push(fill.end_ns - fill.start_ns);
            kernels.push(kernel.end_ns - kernel.start_ns);
            gaps.push(kernel.start_ns.saturating_sub(fill.end_ns));
            ensure!(
                kernel.start_ns + 50_000 >= fill.end_ns,
                "iteration {i}: the kernel starts before the fill ends: {fill:?} {kernel:?}"
            );
        }
        for v in [&mut gaps, &mut fills, &mut kernels] {
            v.sort_unstable();
        }
        println!(
            "  {queue:?}: GPU fill p50 {} ns, kernel p50 {} ns, fill end -> kernel start p50 \
             {} ns; GPU spans stick out of their host steps by at most {worst} ns; trace in {}",
            fills[100],
            kernels[100],
            gaps[100],
            path.display()
        );
        // Calibrated or bracketed anchors are good to microseconds; an axis mix-up is off by
        // milliseconds or more.
        ensure!(
            worst <= 50_000,
            "a GPU span lies {worst} ns outside its host step"
        );
    }
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe: common::Probe<Env> = Arc::new(
        vulkan::Context::new(&ContextDesc {
            transfer_queue: true,
            ..ContextDesc::default()
        })
        .map(|vk| {
            let cu = cuda::Context::matching(vk.identity()).ok();
            (vk, cu)
        })
        .map_err(|e| e.to_string()),
    );
    let trials = vec![
        trial(
            "fills_alone_on_every_family",
            &probe,
            fills_alone_on_every_family,
        ),
        trial("bad_input_is_typed", &probe, bad_input_is_typed),
        trial_if(
            "floor_on_every_family",
            &probe,
            |(_, cu)| {
                cu.is_none()
                    .then(|| "no CUDA device matches the Vulkan device".into())
            },
            floor_on_every_family,
        ),
        trial_if(
            "trace_places_gpu_spans_inside_host_steps",
            &probe,
            |(_, cu)| {
                cu.is_none()
                    .then(|| "no CUDA device matches the Vulkan device".into())
            },
            trace_places_gpu_spans_inside_host_steps,
        ),
    ];
    common::note(&probe, "Vulkan device");
    trials
}
