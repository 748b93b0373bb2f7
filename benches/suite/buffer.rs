//! Zero-copy buffers vs native CUDA memory vs a staged host round trip.
//!
//! For 1 MiB .. 1 GiB, in one run:
//! * `copy`: device-to-device copy between two imported (Vulkan) buffers vs between two
//!   `cuMemAlloc` buffers, GPU time from CUDA events around the launches.
//! * `saxpy`: a bandwidth-bound kernel (`y = a*x + y`, float4) over imported vs native memory.
//! * `staged`: what zero-copy replaces — Vulkan -> host -> CUDA and back (staging copies,
//!   `cuMemcpyHtoD`/`DtoH`), wall time.
//!
//! Prints criterion's report, then a table of medians and ratios (imported/native
//! throughput; staged/zero-copy time). Without a GPU it registers nothing and says why.

use crate::common;

use std::sync::Arc;
use std::time::Instant;

use common::{gpu_time, launch_saxpy, load_saxpy, median, record, Samples};
use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream};
use vkcuda::cuda::{self, MappedBuffer};
use vkcuda::interop::SharedBuffer;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, BufferDesc};

const MIB: u64 = 1 << 20;
const SIZES: [u64; 4] = [MIB, 16 * MIB, 256 * MIB, 1024 * MIB];

struct Buffers {
    src: MappedBuffer,
    dst: MappedBuffer,
    _shared: (SharedBuffer, SharedBuffer),
    native_src: CudaSlice<u8>,
    native_dst: CudaSlice<u8>,
}

fn buffers(
    vk: &vulkan::Context,
    cu: &cuda::Context,
    stream: &Arc<CudaStream>,
    size: u64,
) -> anyhow::Result<Buffers> {
    let a = SharedBuffer::new(vk, cu, &BufferDesc::new(size))?;
    let b = SharedBuffer::new(vk, cu, &BufferDesc::new(size))?;
    let (src, dst) = (a.map(0..size)?, b.map(0..size)?);
    // Real data, not zeros: ones as floats in x, twos in y.
    let ones: Vec<u8> = 1.0f32.to_ne_bytes().repeat(size as usize / 4);
    vk.write_buffer(a.vulkan(), 0, &ones)?;
    vk.write_buffer(
        b.vulkan(),
        0,
        &2.0f32.to_ne_bytes().repeat(size as usize / 4),
    )?;
    let native_src = stream.clone_htod(&ones)?;
    let native_dst = stream.clone_htod(&ones)?;
    Ok(Buffers {
        src,
        dst,
        _shared: (a, b),
        native_src,
        native_dst,
    })
}

fn bench_size(
    c: &mut Criterion,
    samples: &Samples,
    (vk, cu): &(vulkan::Context, cuda::Context),
    saxpy: &CudaFunction,
    size: u64,
) -> anyhow::Result<()> {
    let stream = cu.new_stream()?;
    let mut b = buffers(vk, cu, &stream, size)?;
    let label = format!("{}MiB", size / MIB);

    let mut g = c.benchmark_group("copy");
    g.throughput(Throughput::Bytes(2 * size)); // read + write
    g.bench_function(BenchmarkId::new("imported", &label), |bench| {
        bench.iter_custom(|iters| {
            let t = gpu_time(&stream, iters, || {
                stream.memcpy_dtod(&b.src, &mut b.dst).expect("dtod")
            });
            record(samples, &format!("copy/imported/{label}"), t, iters);
            t
        })
    });
    g.bench_function(BenchmarkId::new("native", &label), |bench| {
        bench.iter_custom(|iters| {
            let t = gpu_time(&stream, iters, || {
                stream
                    .memcpy_dtod(&b.native_src, &mut b.native_dst)
                    .expect("dtod")
            });
            record(samples, &format!("copy/native/{label}"), t, iters);
            t
        })
    });
    g.finish();

    let mut g = c.benchmark_group("saxpy");
    g.throughput(Throughput::Bytes(3 * size)); // read x, read y, write y
    let (x, y) = (b.src.cu_device_ptr(), b.dst.cu_device_ptr());
    g.bench_function(BenchmarkId::new("imported", &label), |bench| {
        bench.iter_custom(|iters| {
            let t = gpu_time(&stream, iters, || launch_saxpy(&stream, saxpy, x, y, size));
            record(samples, &format!("saxpy/imported/{label}"), t, iters);
            t
        })
    });
    let (nx, ny) = {
        let (px, _gx) = cudarc::driver::DevicePtr::device_ptr(&b.native_src, &stream);
        let (py, _gy) = cudarc::driver::DevicePtr::device_ptr(&b.native_dst, &stream);
        (px, py)
    };
    g.bench_function(BenchmarkId::new("native", &label), |bench| {
        bench.iter_custom(|iters| {
            let t = gpu_time(&stream, iters, || {
                launch_saxpy(&stream, saxpy, nx, ny, size)
            });
            record(samples, &format!("saxpy/native/{label}"), t, iters);
            t
        })
    });
    g.finish();

    // The staged pipeline zero-copy replaces: Vulkan -> host -> CUDA -> host -> Vulkan.
    let mut g = c.benchmark_group("staged");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size));
    let shared = &b._shared.0;
    g.bench_function(BenchmarkId::new("roundtrip", &label), |bench| {
        bench.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                let host = vk.read_buffer(shared.vulkan(), 0..size).expect("read");
                stream.memcpy_htod(&host, &mut b.native_dst).expect("htod");
                let back = stream.clone_dtoh(&b.native_dst).expect("dtoh");
                vk.write_buffer(shared.vulkan(), 0, &back).expect("write");
            }
            let t = t0.elapsed();
            record(samples, &format!("staged/roundtrip/{label}"), t, iters);
            t
        })
    });
    g.finish();
    Ok(())
}

fn print_table(samples: &Samples) {
    let map = samples.lock().unwrap_or_else(|p| p.into_inner());
    let get = |k: String| map.get(&k).map(|v| median(v));
    println!("\n| size | copy imported GB/s | copy native GB/s | copy ratio | saxpy imported GB/s | saxpy native GB/s | saxpy ratio | staged round trip | zero-copy speedup vs staged |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for size in SIZES {
        let l = format!("{}MiB", size / MIB);
        let (Some(ci), Some(cn), Some(si), Some(sn), Some(st)) = (
            get(format!("copy/imported/{l}")),
            get(format!("copy/native/{l}")),
            get(format!("saxpy/imported/{l}")),
            get(format!("saxpy/native/{l}")),
            get(format!("staged/roundtrip/{l}")),
        ) else {
            continue;
        };
        let gbs = |bytes: u64, t: f64| bytes as f64 / t / 1e9;
        println!(
            "| {l} | {:.0} | {:.0} | {:.3} | {:.0} | {:.0} | {:.3} | {:.2} ms | {:.0}x |",
            gbs(2 * size, ci),
            gbs(2 * size, cn),
            cn / ci,
            gbs(3 * size, si),
            gbs(3 * size, sn),
            sn / si,
            st * 1e3,
            // Zero-copy hands the same bytes over with no copy at all; compare the staged
            // round trip with one pass of the kernel over the imported memory.
            st / si,
        );
    }
}

/// Runs this group's benchmarks, then prints its table(s).
pub fn run() {
    let Some(env) = common::gpu_env("buffer") else {
        return;
    };
    let saxpy = load_saxpy(&env.1);
    let samples = Samples::default();
    let mut c = common::criterion();
    for size in SIZES {
        if let Err(e) = bench_size(&mut c, &samples, &env, &saxpy, size) {
            println!("size {} MiB skipped: {e:#}", size / MIB);
        }
    }
    c.final_summary();
    print_table(&samples);
}
