//! Frame throughput and latency of the compute-on-render-target loop (the demo's pipeline:
//! Vulkan render -> CUDA tone map in place -> Vulkan acquire) at 1080p and 4K, in one run.
//! Every row has the render and the tone map in each frame.
//! * `render_alone` / `tonemap_alone`: each stage back to back over 8 images in turn; their
//!   sum per frame is the GPU-busy bound.
//! * `staged`: what zero-copy replaces (render -> host -> CUDA array -> tone map -> host ->
//!   upload).
//! * The alternation floor (`alternation_floor`: Vulkan fill <-> CUDA empty kernel) measured
//!   in the same run; `choose_batch` picks K frames per crossing from it and the stage times.
//! * Pipeline modes, each in both FrameSync modes: `handoff` (1 in flight, 1 frame per
//!   crossing: the latency path, compared with the floor), `per_frame` (3 in flight) and
//!   `batched` (K frames per crossing, 2 in flight). fps from an untraced run; crossing
//!   latency p50/p99 from a traced run of the same configuration (`FrameSyncDesc::trace`;
//!   with `VKCUDA_TRACE_DIR` set each trace is written there); the latest frames are then
//!   checked by data against the CPU reference.
//!
//! Prints criterion's report, then a table. Without a GPU it registers nothing and says why.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{gpu_time, median, record, Samples, ROTATE};
use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use vkcuda::ash::vk;
use vkcuda::cuda::{self, MipmappedArray};
use vkcuda::interop::{alternation_floor, choose_batch, BatchGoal, SharedImage};
use vkcuda::util::{ComputeTarget, OneShot};
use vkcuda::vulkan::QueueId;
use vkcuda::vulkan::{self, ExternalImage, ImageDesc};
use vkcuda_dev::pipeline::{percentiles, Options, Pipeline};
use vkcuda_dev::scene;

const SIZES: [(&str, u32, u32); 2] = [("1080p", 1920, 1080), ("4K", 3840, 2160)];
/// The efficiency the batched rows ask `choose_batch` for.
const TARGET: f64 = 0.95;

fn options(width: u32, height: u32, low_latency: bool, batch: usize, in_flight: usize) -> Options {
    Options {
        frames: 0,
        width,
        height,
        in_flight,
        low_latency,
        batch,
        readback: false,
        single_queue: false,
        trace: None,
        auto_batch: None,
        out: std::env::temp_dir(),
    }
}

fn launch_config(width: u32, height: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (width.div_ceil(16), height.div_ceil(16), 1),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    }
}

fn bench_size(
    c: &mut Criterion,
    samples: &Samples,
    (vk, cu): &(vulkan::Context, cuda::Context),
    (label, width, height): (&str, u32, u32),
) -> anyhow::Result<()> {
    let mut g = c.benchmark_group(format!("frames_{label}"));
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);

    common::bench_render_alone(&mut g, samples, vk, (label, width, height), "render_alone")?;
    let pass = scene::render_pass(vk)?;
    let desc = ImageDesc::d2(width, height, vk::Format::R8G8B8A8_UNORM);

    // The tone map alone, on ROTATE imported images in turn, CUDA events around the launches.
    let tonemap = cu
        .compile("postprocess.cu", scene::POSTPROCESS_CU)?
        .load_function("tonemap")?;
    let images = (0..ROTATE)
        .map(|_| SharedImage::new(vk, cu, &desc))
        .collect::<Result<Vec<_>, _>>()?;
    let surfaces = images
        .iter()
        .map(|i| i.surface(0))
        .collect::<Result<Vec<_>, _>>()?;
    let shared = &images[0];
    let stream = cu.new_stream()?;
    let cfg = launch_config(width, height);
    let launch = |surf: &cuda::SurfaceObject| {
        let mut k = stream.launch_builder(&tonemap);
        k.arg(surf).arg(&width).arg(&height);
        // SAFETY: tonemap(cudaSurfaceObject_t, uint, uint) touches width x height texels
        // of a live surface of that extent.
        unsafe { k.launch(cfg) }.expect("launch tonemap");
    };
    g.bench_function(BenchmarkId::new("tonemap_alone", label), |b| {
        b.iter_custom(|iters| {
            let mut i = 0;
            let t = gpu_time(&stream, iters, || {
                launch(&surfaces[i % ROTATE]);
                i += 1;
            });
            record(samples, &format!("{label}/tonemap_alone"), t, iters);
            t
        })
    });

    // The pipeline itself, each mode: per crossing one frame (3 in flight), or K frames
    // chosen for 0.95 of the bound from the alternation floor and the stage times measured
    // above (2 in flight). Throughput untraced; then latency from a traced run of the same
    // configuration; then the latest frames checked by data.
    let floor = alternation_floor(vk, cu, QueueId::Main(0), 200)?;
    let frame_gpu = {
        let map = samples.lock().unwrap_or_else(|p| p.into_inner());
        let m = |k: &str| {
            map.get(&format!("{label}/{k}"))
                .map(|v| median(v))
                .unwrap_or(0.0)
        };
        Duration::from_secs_f64(m("render_alone") + m("tonemap_alone"))
    };
    let plan = choose_batch(&BatchGoal {
        floor: floor.switch_pair(),
        frame_gpu,
        target_efficiency: TARGET,
        latency_budget: Duration::from_millis(20),
    })?;
    println!(
        "{label}: switch pair {:.1} us (alternation p50 {:.1} us), frame alone {:.1} us -> {} frames per crossing (efficiency {:.3}, latency {} frames / {:.2} ms)",
        floor.switch_pair().as_secs_f64() * 1e6,
        floor.alternating.p50.as_secs_f64() * 1e6,
        frame_gpu.as_secs_f64() * 1e6,
        plan.frames,
        plan.efficiency,
        plan.latency_frames,
        plan.latency.as_secs_f64() * 1e3
    );
    let k = plan.frames as usize;
    samples.lock().unwrap_or_else(|p| p.into_inner()).insert(
        format!("{label}/floor"),
        vec![floor.alternating.p50.as_secs_f64()],
    );
    for (name, low_latency, batch, in_flight) in [
        ("handoff", false, 1, 1),
        ("handoff_low_latency", true, 1, 1),
        ("per_frame", false, 1, 3),
        ("per_frame_low_latency", true, 1, 3),
        ("batched", false, k, 2),
        ("batched_low_latency", true, k, 2),
    ] {
        let o = options(width, height, low_latency, batch, in_flight);
        let mut pipeline = Pipeline::new(&o, false, vk, cu)?;
        let step = (batch * in_flight) as u32;
        pipeline.run(0..step)?;
        pipeline.finish()?;
        let mut next = step;
        g.bench_function(BenchmarkId::new(name, label), |b| {
            b.iter_custom(|iters| {
                let n = u32::try_from(iters).expect("iteration count fits u32");
                let t0 = Instant::now();
                pipeline.run(next..next + n).expect("pipeline frames");
                pipeline.finish().expect("pipeline finish");
                let t = t0.elapsed();
                next += n;
                record(samples, &format!("{label}/{name}"), t, iters);
                t
            })
        });
        let checked = pipeline.check_images(4)?;
        drop(pipeline);
        let mut traced = Pipeline::new(
            &Options {
                trace: Some(std::env::temp_dir().join("unused.json")),
                ..o
            },
            false,
            vk,
            cu,
        )?;
        traced.run(0..step * 20)?;
        let t = traced.take_trace()?.expect("traced");
        if let Some(dir) = std::env::var_os("VKCUDA_TRACE_DIR") {
            t.trace.write_json(
                std::path::Path::new(&dir).join(format!("frames-{label}-{name}.json")),
            )?;
        }
        let (p50, p99) = percentiles(&t.latencies);
        let mut map = samples.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(format!("{label}/{name}/latency"), vec![p50, p99]);
        map.insert(
            format!("{label}/{name}/k"),
            vec![batch as f64, checked as f64],
        );
    }

    // Staged: the frame crosses through host memory both ways, the kernel runs on a native
    // CUDA array of the same shape.
    let native = MipmappedArray::new(cu, shared.cuda().desc())?;
    let native_level = native.level(0)?;
    let native_surface = native_level.surface()?;
    let staged_target = ComputeTarget::new(&pass, Arc::new(ExternalImage::new(vk, &desc)?))?;
    let image = staged_target.image().clone();
    let mut host = vec![0u8; width as usize * height as usize * 4];
    g.bench_function(BenchmarkId::new("staged", label), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for i in 0..iters {
                let push = scene::push_constants(i as u32, width, height);
                vk.dispatch(&pass, &staged_target, &push).expect("render");
                let frame = vk.read_image(&image, 0, 0..1).expect("read back");
                native_level
                    .copy_from_host(&stream, &frame)
                    .expect("upload");
                launch(&native_surface);
                native_level
                    .copy_to_host(&stream, &mut host)
                    .expect("download");
                vk.write_image(&image, 0, 0..1, &host).expect("write back");
            }
            let t = t0.elapsed();
            record(samples, &format!("{label}/staged"), t, iters);
            t
        })
    });
    g.finish();
    Ok(())
}

fn print_table(samples: &Samples) {
    let map = samples.lock().unwrap_or_else(|p| p.into_inner());
    let get = |k: String| map.get(&k).map(|v| median(v));
    println!("\n| size | mode | frames per crossing | in flight | fps | crossing latency p50 / p99 | ratio to the GPU-busy bound | vs staged | frames checked |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, _, _) in SIZES {
        let (Some(r), Some(k), Some(s)) = (
            get(format!("{label}/render_alone")),
            get(format!("{label}/tonemap_alone")),
            get(format!("{label}/staged")),
        ) else {
            continue;
        };
        let bound = r + k;
        println!(
            "| {label} | GPU-busy bound (render alone {:.1} us + tone map alone {:.1} us) | - | - | {:.0} | - | 1 | - | - |",
            r * 1e6,
            k * 1e6,
            1.0 / bound
        );
        println!(
            "| {label} | staged through the host | 1 | 1 | {:.1} | - | {:.3} | 1x | - |",
            1.0 / s,
            bound / s
        );
        for (name, in_flight) in [
            ("handoff", 1),
            ("handoff_low_latency", 1),
            ("per_frame", 3),
            ("per_frame_low_latency", 3),
            ("batched", 2),
            ("batched_low_latency", 2),
        ] {
            let (Some(t), Some(lat), Some(kc)) = (
                get(format!("{label}/{name}")),
                map.get(&format!("{label}/{name}/latency")),
                map.get(&format!("{label}/{name}/k")),
            ) else {
                continue;
            };
            let name = match get(format!("{label}/floor")) {
                Some(f) if in_flight == 1 => format!("{name} (p50 = {:.2}x the floor)", lat[0] / f),
                _ => name.to_owned(),
            };
            println!(
                "| {label} | {name} | {} | {in_flight} | {:.0} | {:.3} / {:.3} ms | {:.3} | {:.0}x | {} |",
                kc[0],
                1.0 / t,
                lat[0] * 1e3,
                lat[1] * 1e3,
                bound / t,
                s / t,
                kc[1]
            );
        }
    }
}

/// Runs this group's benchmarks, then prints its table(s).
pub fn run() {
    let Some(env) = common::gpu_env("frames") else {
        return;
    };
    if !env.0.can_export_semaphore_fds() {
        println!("frames bench: nothing registered, the Vulkan device cannot export semaphores");
        return;
    }
    let samples = Samples::default();
    let mut c = common::criterion();
    for size in SIZES {
        if let Err(e) = bench_size(&mut c, &samples, &env, size) {
            println!("{} skipped: {e:#}", size.0);
        }
    }
    c.final_summary();
    print_table(&samples);
}
