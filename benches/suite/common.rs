//! Shared by the bench groups: the GPU environment (or why there is none), criterion's
//! settings and the group selection, CUDA-event timing, per-iteration samples for the
//! printed ratio tables, and the saxpy bandwidth kernel.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use criterion::{BenchmarkFilter, Criterion};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use vkcuda::{cuda, vulkan};

/// The Vulkan context and the CUDA context on the same GPU, or `None` after printing why
/// `bench` registers nothing.
pub fn gpu_env(bench: &str) -> Option<(vulkan::Context, cuda::Context)> {
    gpu_env_with(bench, &vulkan::ContextDesc::default())
}

/// [`gpu_env`] with the Vulkan context made from `desc`.
pub fn gpu_env_with(
    bench: &str,
    desc: &vulkan::ContextDesc,
) -> Option<(vulkan::Context, cuda::Context)> {
    let env = vulkan::Context::new(desc).and_then(|vk| {
        let cu = cuda::Context::matching(vk.identity())?;
        Ok((vk, cu))
    });
    match env {
        Ok(env) => Some(env),
        Err(why) => {
            println!("{bench} bench: nothing registered, no CUDA device matching a Vulkan device ({why})");
            None
        }
    }
}

/// Criterion's options that take a value: the next argument, unless written `--opt=value`.
const VALUED: &[&str] = &[
    "-c",
    "--color",
    "--colour",
    "-s",
    "--save-baseline",
    "-b",
    "--baseline",
    "--baseline-lenient",
    "--format",
    "--profile-time",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
];

/// The FILTER of criterion's command line (its first positional argument), if any.
pub fn filter_arg() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if VALUED.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

/// The filter (a regex, `None`: all) inside the one group the command line named (see the
/// bench root's `main`).
static WITHIN: OnceLock<Option<String>> = OnceLock::new();

/// Runs only the benchmarks of the named group that `within` (a regex) matches, or all of
/// them (`None`), whatever criterion read from the command line.
pub fn select_within(within: Option<&str>) {
    let _ = WITHIN.set(within.map(str::to_owned));
}

/// `c` (configured from the command line) with the filter of [`select_within`] if it was set.
pub fn select(c: Criterion) -> Criterion {
    match WITHIN.get() {
        Some(Some(within)) => c.with_filter(within.as_str()),
        Some(None) => c.with_benchmark_filter(BenchmarkFilter::AcceptAll),
        None => c,
    }
}

/// Criterion as every GPU bench here uses it: 20 samples, short warm-up and measurement.
pub fn criterion() -> Criterion {
    select(Criterion::default().configure_from_args())
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

/// Per-iteration times of every benchmark, for the ratio table.
pub type Samples = Arc<Mutex<BTreeMap<String, Vec<f64>>>>;

/// Records one `iter_custom` measurement as its time per iteration.
pub fn record(samples: &Samples, key: &str, total: Duration, iters: u64) {
    let per = total.as_secs_f64() / iters as f64;
    let mut map = samples.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(key.to_owned()).or_default().push(per);
}

/// The median of `v` (not empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `iters` launches of `work` on `stream` with CUDA events (GPU time only).
pub fn gpu_time(stream: &Arc<CudaStream>, iters: u64, mut work: impl FnMut()) -> Duration {
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let start = stream.record_event(flags).expect("record start event");
    for _ in 0..iters {
        work();
    }
    let end = stream.record_event(flags).expect("record end event");
    end.synchronize().expect("synchronize end event");
    let ms = start.elapsed_ms(&end).expect("event elapsed time");
    Duration::from_secs_f64(f64::from(ms) / 1e3)
}

/// `saxpy4` (`y = a*x + y` over float4s), compiled for `cu`.
pub fn load_saxpy(cu: &cuda::Context) -> CudaFunction {
    cu.compile("buffer.cu", vkcuda_dev::shaders::BUFFER_CU)
        .map_err(anyhow::Error::from)
        .and_then(|m| Ok(m.load_function("saxpy4")?))
        .expect("compile dev/shaders/buffer.cu")
}

/// Launches `saxpy4` over `size` bytes at device pointers `x` and `y` on `stream`.
pub fn launch_saxpy(stream: &CudaStream, f: &CudaFunction, x: u64, y: u64, size: u64) {
    let n4 = size / 16;
    let a = 1.0001f32;
    let cfg = LaunchConfig {
        grid_dim: (132 * 16, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = stream.launch_builder(f);
    l.arg(&x).arg(&y).arg(&n4).arg(&a);
    // SAFETY: saxpy4(float4*, float4*, u64, float) touches n4 float4s of two live buffers
    // of `size` bytes each (the caller's).
    unsafe { l.launch(cfg) }.expect("launch saxpy4");
}

/// Images a stage-alone loop rotates over: together larger than the GPU's L2 cache
/// (50 MiB on an H100/H200) at 1080p and 4K, so no frame finds the previous one there (the
/// pipeline's frames never do).
pub const ROTATE: usize = 8;

/// Registers `name`: the demo's render dispatch on vkcuda's own context alone, back to
/// back, three command buffers in rotation, over [`ROTATE`] targets in turn; samples
/// recorded as `LABEL/name`.
pub fn bench_render_alone(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    samples: &Samples,
    vk: &vulkan::Context,
    (label, width, height): (&str, u32, u32),
    name: &str,
) -> anyhow::Result<()> {
    use vkcuda::ash::vk;
    use vkcuda::util::{Commands, ComputeTarget};
    let timeout = Duration::from_secs(10);
    let pass = vkcuda_dev::scene::render_pass(vk)?;
    let desc = vulkan::ImageDesc::d2(width, height, vk::Format::R8G8B8A8_UNORM);
    let targets = (0..ROTATE)
        .map(|_| -> anyhow::Result<_> {
            Ok(Arc::new(ComputeTarget::new(
                &pass,
                Arc::new(vulkan::ExternalImage::new(vk, &desc)?),
            )?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut cmds = (0..3)
        .map(|_| Commands::new(vk))
        .collect::<Result<Vec<_>, _>>()?;
    g.bench_function(criterion::BenchmarkId::new(name, label), |b| {
        b.iter_custom(|iters| {
            let t0 = std::time::Instant::now();
            for i in 0..iters {
                let c = &mut cmds[(i % 3) as usize];
                let push = vkcuda_dev::scene::push_constants(i as u32, width, height);
                c.dispatch(&targets[i as usize % ROTATE], &push)
                    .expect("dispatch");
                c.submit(0, &[], &[], timeout).expect("submit");
            }
            for c in &mut cmds {
                c.wait(timeout).expect("wait");
            }
            let t = t0.elapsed();
            record(samples, &format!("{label}/{name}"), t, iters);
            t
        })
    });
    Ok(())
}
