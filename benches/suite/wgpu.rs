//! The wgpu pipeline against the same pipeline on vkcuda's own Vulkan context, in one run,
//! at 1080p and 4K, 3 frames in flight, no readback:
//! * `wgpu`: wgpu renders the scene (WGSL compiled by wgpu), CUDA tone-maps in place, the
//!   texture goes back to wgpu (`WgpuFrameSync::new`: every wait and signal on wgpu's
//!   queue).
//! * `wgpu_own_queue`: the same with `WgpuFrameSync::with_own_queue`: each acquire on
//!   vkcuda's queue, the texture back at the slot's next frame
//!   (`acquire_from_cuda_deferred`), so the next renders overlap the crossing.
//! * `native`: the demo's pipeline (`FrameSync`, vkcuda's own device; its default queue
//!   layout, where the acquire that waits for CUDA goes to a second queue so the next
//!   frame's render does not queue behind it).
//! * `native_one_queue`: the same on one queue, as wgpu's one queue has it: the
//!   like-for-like baseline.
//!
//! Wall time per frame. Prints criterion's report, then fps and the ratio wgpu / native
//! (the goal is >= 0.95), and where each side's host time per frame goes. Without a GPU it
//! registers nothing and says why.

use crate::common;

use std::time::Instant;

use common::{median, record, Samples};
use criterion::{BenchmarkId, Criterion, Throughput};
use vkcuda::wgpu;
use vkcuda::wgpu_interop::WgpuContext;
use vkcuda::{cuda, vulkan};
use vkcuda_dev::pipeline::{Options, Pipeline};
use vkcuda_dev::wgpu_pipeline::WgpuPipeline;

const SIZES: [(&str, u32, u32); 2] = [("1080p", 1920, 1080), ("4K", 3840, 2160)];
const IN_FLIGHT: usize = 3;

/// A wgpu device that can share, opened for the scene shader (immediates).
fn wgpu_context() -> anyhow::Result<WgpuContext> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    Ok(WgpuContext::open(
        &adapter,
        &WgpuPipeline::device_descriptor(),
    )?)
}

/// Host time per frame of each step, in microseconds, as printed under the table.
fn host_line(
    side: &str,
    label: &str,
    steps: &[(&str, std::time::Duration)],
    frames: u32,
) -> String {
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / f64::from(frames.max(1));
    let total: f64 = steps.iter().map(|(_, d)| us(*d)).sum();
    let parts: Vec<String> = steps
        .iter()
        .map(|(name, d)| format!("{name} {:.1}", us(*d)))
        .collect();
    format!(
        "{label} {side} host per frame: {total:.1} us ({}; {frames} frames)",
        parts.join(", ")
    )
}

/// Registers `side` at `label`: `frames` submits the frame numbers it is given and waits
/// for them; wall time per frame. Returns how many frames ran.
fn bench_frames(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    samples: &Samples,
    (side, label): (&str, &str),
    mut frames: impl FnMut(std::ops::Range<u32>) -> anyhow::Result<()>,
) -> u32 {
    let mut next = 0u32;
    g.bench_function(BenchmarkId::new(side, label), |b| {
        b.iter_custom(|iters| {
            let n = u32::try_from(iters).expect("iteration count fits u32");
            let t0 = Instant::now();
            frames(next..next + n).expect("frames");
            let t = t0.elapsed();
            next += n;
            record(samples, &format!("{label}/{side}"), t, iters);
            t
        })
    });
    next
}

fn bench_size(
    c: &mut Criterion,
    samples: &Samples,
    host: &mut Vec<String>,
    ctx: &WgpuContext,
    (vk, cu): &(vulkan::Context, cuda::Context),
    (label, width, height): (&str, u32, u32),
) -> anyhow::Result<()> {
    let mut g = c.benchmark_group(format!("wgpu_{label}"));
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);

    // Each side's render alone, over ROTATE textures in turn, one submission per frame.
    let mut alone = WgpuPipeline::new(ctx, (width, height), common::ROTATE, false)?;
    bench_frames(&mut g, samples, ("wgpu_render_alone", label), |frames| {
        alone.run(frames)?;
        alone.finish()
    });
    drop(alone);
    common::bench_render_alone(
        &mut g,
        samples,
        vk,
        (label, width, height),
        "native_render_alone",
    )?;

    for (side, own_queue) in [("wgpu", false), ("wgpu_own_queue", true)] {
        let mut wgpu_pipeline = WgpuPipeline::new(ctx, (width, height), IN_FLIGHT, false)?;
        wgpu_pipeline.with_cuda(own_queue)?;
        let next = bench_frames(&mut g, samples, (side, label), |frames| {
            wgpu_pipeline.run(frames)?;
            wgpu_pipeline.finish()
        });
        let [begin, render, release, cuda, acquire] = wgpu_pipeline.host;
        host.push(host_line(
            side,
            label,
            &[
                ("begin", begin),
                ("render record", render),
                ("render submit + release_to_cuda_after", release),
                ("CUDA wait+launch+signal", cuda),
                ("acquire", acquire),
            ],
            next,
        ));
    }

    for (side, single_queue) in [("native", false), ("native_one_queue", true)] {
        let options = Options {
            frames: 0,
            width,
            height,
            in_flight: IN_FLIGHT,
            low_latency: false,
            batch: 1,
            readback: false,
            single_queue,
            trace: None,
            auto_batch: None,
            out: std::env::temp_dir(),
        };
        let mut native = Pipeline::new(&options, false, vk, cu)?;
        let next = bench_frames(&mut g, samples, (side, label), |frames| {
            native.run(frames)?;
            native.finish()
        });
        let [begin, render, cuda, acquire] = native.host;
        host.push(host_line(
            side,
            label,
            &[
                ("begin", begin),
                ("render+release submit", render),
                ("CUDA wait+launch+signal", cuda),
                ("acquire submit", acquire),
            ],
            next,
        ));
    }
    g.finish();
    Ok(())
}

fn print_table(samples: &Samples) {
    let map = samples.lock().unwrap_or_else(|p| p.into_inner());
    let get = |k: String| map.get(&k).map(|v| median(v));
    println!(
        "\n| size | wgpu fps, own queue | native fps, two queues | wgpu own queue / native | \
         wgpu fps, one queue | native fps, one queue | wgpu / native, one queue each |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, _, _) in SIZES {
        let (Some(w2), Some(n2), Some(w1), Some(n1)) = (
            get(format!("{label}/wgpu_own_queue")),
            get(format!("{label}/native")),
            get(format!("{label}/wgpu")),
            get(format!("{label}/native_one_queue")),
        ) else {
            continue;
        };
        println!(
            "| {label} | {:.0} | {:.0} | {:.3} | {:.0} | {:.0} | {:.3} |",
            1.0 / w2,
            1.0 / n2,
            n2 / w2,
            1.0 / w1,
            1.0 / n1,
            n1 / w1
        );
    }
    println!();
    for (label, _, _) in SIZES {
        if let (Some(w), Some(n)) = (
            get(format!("{label}/wgpu_render_alone")),
            get(format!("{label}/native_render_alone")),
        ) {
            println!(
                "{label} render alone per frame: wgpu {:.1} us, native {:.1} us",
                w * 1e6,
                n * 1e6
            );
        }
    }
}

/// Runs this group's benchmarks, then prints its table.
pub fn run() {
    let Some(env) = common::gpu_env("wgpu") else {
        return;
    };
    let ctx = match wgpu_context().and_then(|ctx| Ok(ctx.check_semaphore_export().map(|()| ctx)?)) {
        Ok(ctx) => ctx,
        Err(why) => {
            println!("wgpu bench: nothing registered, no wgpu device that can share ({why:#})");
            return;
        }
    };
    let samples = Samples::default();
    let mut host = Vec::new();
    let mut c = common::criterion();
    for size in SIZES {
        if let Err(e) = bench_size(&mut c, &samples, &mut host, &ctx, &env, size) {
            println!("{} skipped: {e:#}", size.0);
        }
    }
    c.final_summary();
    print_table(&samples);
    println!();
    for line in host {
        println!("{line}");
    }
}
