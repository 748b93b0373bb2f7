//! Frame throughput of the compute-on-render-target loop (the demo's pipeline) at 1080p and
//! 4K, in one run:
//! * `zero_copy`: Vulkan render -> CUDA tone map in place -> Vulkan acquire, through
//!   FrameSync with 3 frames in flight (no readback), wall time per frame; and
//!   `zero_copy_low_latency`, the same in FrameSync's low-latency mode.
//! * `staged`: what zero-copy replaces: Vulkan render -> read back to the host -> copy into a
//!   CUDA array -> tone map -> copy to the host -> upload to Vulkan, wall time per frame.
//! * `render_alone` (Vulkan dispatches back to back, 3 command buffers in rotation, wall
//!   time) and `tonemap_alone` (the kernel back to back, CUDA events): their sum per frame
//!   is the GPU-busy bound the pipeline is compared with.
//!
//! Prints criterion's report, then a table of fps and ratios. Without a GPU it registers
//! nothing and says why.

#[path = "../examples/common/mod.rs"]
mod demo;

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{gpu_time, median, record, Samples};
use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use demo::pipeline::{Options, Pipeline};
use demo::scene;
use vkcuda::ash::vk;
use vkcuda::cuda::{self, MipmappedArray};
use vkcuda::interop::SharedImage;
use vkcuda::util::{Commands, ComputeTarget, OneShot};
use vkcuda::vulkan::{self, ExternalImage, ImageDesc};

const SIZES: [(&str, u32, u32); 2] = [("1080p", 1920, 1080), ("4K", 3840, 2160)];
const TIMEOUT: Duration = Duration::from_secs(10);
/// Images the stage-alone loops rotate over: together larger than the GPU's L2 cache
/// (50 MiB on an H100/H200) at 1080p and 4K.
const ROTATE: usize = 8;

fn options(width: u32, height: u32, low_latency: bool) -> Options {
    Options {
        frames: 0,
        width,
        height,
        in_flight: 3,
        low_latency,
        batch: 1,
        readback: true,
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

    for (name, low_latency) in [("zero_copy", false), ("zero_copy_low_latency", true)] {
        let mut pipeline = Pipeline::new(&options(width, height, low_latency), false, vk, cu)?;
        let mut next = 0u32;
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
    }

    // The render alone: the same dispatch, back to back, three command buffers in rotation,
    // over ROTATE targets in turn so that no frame finds the previous one in the L2 cache
    // (the pipeline's frames never do).
    let pass = scene::render_pass(vk)?;
    let desc = ImageDesc::d2(width, height, vk::Format::R8G8B8A8_UNORM);
    let targets = (0..ROTATE)
        .map(|_| -> anyhow::Result<_> {
            Ok(Arc::new(ComputeTarget::new(
                &pass,
                Arc::new(ExternalImage::new(vk, &desc)?),
            )?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut cmds = (0..3)
        .map(|_| Commands::new(vk))
        .collect::<Result<Vec<_>, _>>()?;
    g.bench_function(BenchmarkId::new("render_alone", label), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for i in 0..iters {
                let c = &mut cmds[(i % 3) as usize];
                let push = scene::push_constants(i as u32, width, height);
                c.dispatch(&targets[i as usize % ROTATE], &push)
                    .expect("dispatch");
                c.submit(0, &[], &[], TIMEOUT).expect("submit");
            }
            for c in &mut cmds {
                c.wait(TIMEOUT).expect("wait");
            }
            let t = t0.elapsed();
            record(samples, &format!("{label}/render_alone"), t, iters);
            t
        })
    });

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
    println!("\n| size | zero-copy fps (semaphores / low-latency) | staged fps | render alone | tone map alone | GPU-busy bound fps | zero-copy / bound | zero-copy / staged |");
    println!("|---|---|---|---|---|---|---|---|");
    for (label, _, _) in SIZES {
        let (Some(z), Some(l), Some(s), Some(r), Some(k)) = (
            get(format!("{label}/zero_copy")),
            get(format!("{label}/zero_copy_low_latency")),
            get(format!("{label}/staged")),
            get(format!("{label}/render_alone")),
            get(format!("{label}/tonemap_alone")),
        ) else {
            continue;
        };
        let bound = r + k;
        println!(
            "| {label} | {:.0} / {:.0} | {:.1} | {:.1} us | {:.1} us | {:.0} | {:.2} / {:.2} | {:.0}x / {:.0}x |",
            1.0 / z,
            1.0 / l,
            1.0 / s,
            r * 1e6,
            k * 1e6,
            1.0 / bound,
            bound / z,
            bound / l,
            s / z,
            s / l
        );
    }
}

fn main() {
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
