//! Sharing many buffers, and the bandwidth of memory CUDA owns.
//!
//! * `share1000`: creating 1,000 buffers of 64 KiB and mapping each into CUDA, through a
//!   [`SharedPool`] (one export and import per block) vs one dedicated export each
//!   ([`SharedBuffer::new`]); wall time per 1,000, and the fds held while they live.
//! * `copy` / `saxpy` at 256 MiB: device-to-device copy and a bandwidth-bound kernel over
//!   CUDA-owned VMM memory ([`SharedBuffer::from_cuda`]) vs Vulkan-exported memory vs
//!   `cuMemAlloc`; GPU time from CUDA events.
//!
//! Prints criterion's report, then markdown tables with ratios. Without a GPU it registers
//! nothing and says why.

use crate::common;

use std::sync::Arc;
use std::time::Instant;

use common::{gpu_time, launch_saxpy, load_saxpy, median, record, Samples};
use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::driver::{CudaFunction, CudaStream, DevicePtr};
use vkcuda::cuda;
use vkcuda::interop::{SharedBuffer, SharedPool};
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, BufferDesc, PoolDesc};

const COUNT: usize = 1000;
const SMALL: u64 = 64 << 10;
const BIG: u64 = 256 << 20;

type Env = (vulkan::Context, cuda::Context);

/// Open fds of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// 1,000 shared and mapped buffers, the pool way or the dedicated way.
fn share(env: &Env, pooled: bool) -> anyhow::Result<Vec<(SharedBuffer, cuda::MappedBuffer)>> {
    let (vk, cu) = env;
    let pool = SharedPool::new(vk, cu, &PoolDesc::default())?;
    (0..COUNT)
        .map(|_| {
            let b = if pooled {
                pool.allocate(SMALL)?
            } else {
                SharedBuffer::new(vk, cu, &BufferDesc::new(SMALL))?
            };
            let m = b.map(0..SMALL)?;
            Ok((b, m))
        })
        .collect()
}

fn bench_sharing(c: &mut Criterion, samples: &Samples, env: &Env) -> anyhow::Result<Vec<String>> {
    let mut g = c.benchmark_group("share1000");
    g.sample_size(10);
    let mut fds = Vec::new();
    for (name, pooled) in [("pool", true), ("dedicated", false)] {
        let before = open_fds();
        let held = share(env, pooled)?;
        fds.push(format!("{name}: {} fds", open_fds().saturating_sub(before)));
        drop(held);
        g.bench_function(BenchmarkId::new(name, "64KiB"), |bench| {
            bench.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    drop(share(env, pooled).expect("share 1,000 buffers"));
                }
                let t = t0.elapsed();
                record(samples, &format!("share1000/{name}"), t, iters);
                t
            })
        });
    }
    g.finish();
    Ok(fds)
}

fn bench_bandwidth(
    c: &mut Criterion,
    samples: &Samples,
    (vk, cu): &Env,
    saxpy: &CudaFunction,
) -> anyhow::Result<()> {
    let stream: Arc<CudaStream> = cu.new_stream()?;
    let ones = 1.0f32.to_ne_bytes().repeat(BIG as usize / 4);
    let vmm = [
        SharedBuffer::from_cuda(vk, cu, &BufferDesc::new(BIG))?,
        SharedBuffer::from_cuda(vk, cu, &BufferDesc::new(BIG))?,
    ];
    let exported = [
        SharedBuffer::new(vk, cu, &BufferDesc::new(BIG))?,
        SharedBuffer::new(vk, cu, &BufferDesc::new(BIG))?,
    ];
    let mut maps = Vec::new();
    for b in vmm.iter().chain(&exported) {
        vk.write_buffer(b.vulkan(), 0, &ones)?;
        maps.push(b.map(0..BIG)?);
    }
    let native = [stream.clone_htod(&ones)?, stream.clone_htod(&ones)?];
    let ptrs = |i: usize| (maps[i].cu_device_ptr(), maps[i + 1].cu_device_ptr());
    let native_ptrs = {
        let (x, _gx) = native[0].device_ptr(&stream);
        let (y, _gy) = native[1].device_ptr(&stream);
        (x, y)
    };
    let kinds = [
        ("vmm", ptrs(0)),
        ("exported", ptrs(2)),
        ("native", native_ptrs),
    ];

    let mut g = c.benchmark_group("copy");
    g.throughput(Throughput::Bytes(2 * BIG));
    for (name, (x, y)) in kinds {
        g.bench_function(BenchmarkId::new(name, "256MiB"), |bench| {
            bench.iter_custom(|iters| {
                let t = gpu_time(&stream, iters, || {
                    // SAFETY: x and y are live device buffers of BIG bytes each, not
                    // overlapping, on this stream's context.
                    unsafe {
                        cudarc::driver::result::memcpy_dtod_async(
                            y,
                            x,
                            BIG as usize,
                            stream.cu_stream(),
                        )
                    }
                    .expect("dtod")
                });
                record(samples, &format!("copy/{name}"), t, iters);
                t
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("saxpy");
    g.throughput(Throughput::Bytes(3 * BIG));
    for (name, (x, y)) in kinds {
        g.bench_function(BenchmarkId::new(name, "256MiB"), |bench| {
            bench.iter_custom(|iters| {
                let t = gpu_time(&stream, iters, || launch_saxpy(&stream, saxpy, x, y, BIG));
                record(samples, &format!("saxpy/{name}"), t, iters);
                t
            })
        });
    }
    g.finish();
    Ok(())
}

fn print_tables(samples: &Samples, fds: &[String]) {
    let map = samples.lock().unwrap_or_else(|p| p.into_inner());
    let get = |k: &str| map.get(k).map(|v| median(v));
    if let (Some(p), Some(d)) = (get("share1000/pool"), get("share1000/dedicated")) {
        println!("\n| 1,000 x 64 KiB shared + mapped | time | fds held |");
        println!("|---|---|---|");
        println!(
            "| pool | {:.2} ms | {} |",
            p * 1e3,
            fds.first().map_or("", String::as_str)
        );
        println!(
            "| dedicated | {:.2} ms | {} |",
            d * 1e3,
            fds.get(1).map_or("", String::as_str)
        );
        println!("| dedicated / pool | {:.1}x | |", d / p);
    }
    println!(
        "\n| 256 MiB | vmm GB/s | exported GB/s | native GB/s | vmm/native | exported/native |"
    );
    println!("|---|---|---|---|---|---|");
    for (op, bytes) in [("copy", 2 * BIG), ("saxpy", 3 * BIG)] {
        let (Some(v), Some(e), Some(n)) = (
            get(&format!("{op}/vmm")),
            get(&format!("{op}/exported")),
            get(&format!("{op}/native")),
        ) else {
            continue;
        };
        let gbs = |t: f64| bytes as f64 / t / 1e9;
        println!(
            "| {op} | {:.0} | {:.0} | {:.0} | {:.3} | {:.3} |",
            gbs(v),
            gbs(e),
            gbs(n),
            n / v,
            n / e
        );
    }
}

/// Runs this group's benchmarks, then prints its table(s).
pub fn run() {
    let Some(env) = common::gpu_env("pool") else {
        return;
    };
    let saxpy = load_saxpy(&env.1);
    let samples = Samples::default();
    let mut c = common::criterion();
    let fds = bench_sharing(&mut c, &samples, &env).unwrap_or_else(|e| {
        println!("share1000 skipped: {e:#}");
        Vec::new()
    });
    if let Err(e) = bench_bandwidth(&mut c, &samples, &env, &saxpy) {
        println!("bandwidth skipped: {e:#}");
    }
    c.final_summary();
    print_tables(&samples, &fds);
}
