//! Zero-copy images vs native CUDA arrays vs a staged host round trip.
//!
//! For a 3840 x 2160 RGBA8 and RGBA16F image, in one run:
//! * `surface/imported`: a kernel that reads every texel through a surface object, scales
//!   it and writes it back, on a Vulkan image imported as a mipmapped array
//!   ([`SharedImage`]); GPU time from CUDA events around the launches.
//! * `surface/native`: the same kernel on a native CUDA array of the same shape
//!   ([`MipmappedArray::new`] with the imported array's own description: same format,
//!   extent and `SURFACE_LDST`; its level 0 is a `CUarray`).
//! * `staged/roundtrip`: what zero-copy replaces: Vulkan image -> host (staged
//!   `vkCmdCopyImageToBuffer`) -> native array (`cuMemcpy3D`) -> the kernel -> host ->
//!   Vulkan image; wall time.
//!
//! Prints criterion's report, then a markdown table of medians and ratios (native/imported
//! time: >= 0.98 means zero-copy costs at most 2 %; staged/zero-copy time). Without a GPU
//! it registers nothing and says why.

use crate::common;

use std::time::Instant;

use common::{gpu_time, median, record, Samples};
use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use vkcuda::ash::vk;
use vkcuda::cuda::{self, MipmappedArray, SurfaceObject};
use vkcuda::interop::SharedImage;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, ExternalImage, ImageDesc};

const KERNELS: &str = vkcuda_dev::shaders::IMAGE_CU;
const WIDTH: u32 = 3840;
const HEIGHT: u32 = 2160;
/// `(label, format, bytes per texel, format code of surf_scale_rgba)`.
const FORMATS: [(&str, vk::Format, u64, i32); 2] = [
    ("rgba8", vk::Format::R8G8B8A8_UNORM, 4, 0),
    ("rgba16f", vk::Format::R16G16B16A16_SFLOAT, 8, 1),
];

/// One launch of `surf_scale_rgba` over the whole 4K surface.
fn scale(stream: &CudaStream, f: &CudaFunction, surf: &SurfaceObject, format: i32) {
    let (w, h) = (WIDTH as i32, HEIGHT as i32);
    let s = 1.0001f32;
    let cfg = LaunchConfig {
        grid_dim: (WIDTH.div_ceil(16), HEIGHT.div_ceil(16), 1),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    let mut l = stream.launch_builder(f);
    l.arg(surf).arg(&format).arg(&w).arg(&h).arg(&s);
    // SAFETY: surf_scale_rgba(surface, int, int, int, float) reads and writes the w x h
    // texels of a live 2D surface of that extent, 4 or 8 bytes each as `format` says.
    unsafe { l.launch(cfg) }.expect("launch surf_scale_rgba");
}

fn bench_format(
    c: &mut Criterion,
    samples: &Samples,
    (vk, cu): &(vulkan::Context, cuda::Context),
    kernel: &CudaFunction,
    (label, format, texel, code): (&str, vk::Format, u64, i32),
) -> anyhow::Result<()> {
    let stream = cu.new_stream()?;
    let desc = ImageDesc::d2(WIDTH, HEIGHT, format).usage(
        vk::ImageUsageFlags::STORAGE
            | vk::ImageUsageFlags::TRANSFER_SRC
            | vk::ImageUsageFlags::TRANSFER_DST,
    );
    let bytes = u64::from(WIDTH) * u64::from(HEIGHT) * texel;
    // Real data, not zeros: a byte ramp (finite halves for RGBA16F: high bytes below 0x7c).
    let data: Vec<u8> = (0..bytes).map(|i| (i % 61) as u8).collect();

    let imported = SharedImage::new(vk, cu, &desc)?;
    vk.write_image(imported.vulkan(), 0, 0..1, &data)?;
    imported.release_to_cuda()?;
    let imported_surf = imported.surface(0)?;

    let native = MipmappedArray::new(cu, imported.cuda().desc())?;
    let native_level = native.level(0)?;
    native_level.copy_from_host(&stream, &data)?;
    let native_surf = native_level.surface()?;

    let mut g = c.benchmark_group(format!("surface_{label}"));
    g.throughput(Throughput::Bytes(2 * bytes)); // read + write
    for (name, surf) in [("imported", &imported_surf), ("native", &native_surf)] {
        g.bench_function(BenchmarkId::new(name, "4k"), |b| {
            b.iter_custom(|iters| {
                let t = gpu_time(&stream, iters, || scale(&stream, kernel, surf, code));
                record(samples, &format!("{label}/{name}"), t, iters);
                t
            })
        });
    }
    g.finish();

    // The staged pipeline zero-copy replaces, on an ordinary (Vulkan-owned) image.
    let staged_image = ExternalImage::new(vk, &desc)?;
    vk.write_image(&staged_image, 0, 0..1, &data)?;
    let mut host = vec![0u8; bytes as usize];
    let mut g = c.benchmark_group(format!("staged_{label}"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(BenchmarkId::new("roundtrip", "4k"), |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                let from_vulkan = vk.read_image(&staged_image, 0, 0..1).expect("read_image");
                native_level
                    .copy_from_host(&stream, &from_vulkan)
                    .expect("copy to the array");
                scale(&stream, kernel, &native_surf, code);
                native_level
                    .copy_to_host(&stream, &mut host)
                    .expect("copy from the array");
                vk.write_image(&staged_image, 0, 0..1, &host)
                    .expect("write_image");
            }
            let t = t0.elapsed();
            record(samples, &format!("{label}/staged"), t, iters);
            t
        })
    });
    g.finish();
    stream.synchronize()?;
    imported.acquire_from_cuda(&stream, vk::ImageLayout::GENERAL)?;
    Ok(())
}

fn print_table(samples: &Samples) {
    let map = samples.lock().unwrap_or_else(|p| p.into_inner());
    let get = |k: String| map.get(&k).map(|v| median(v));
    println!(
        "\n| image | imported surface kernel | native cuArray kernel | ratio native/imported | \
         imported GB/s | native GB/s | staged round trip | zero-copy speedup vs staged |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, _, texel, _) in FORMATS {
        let (Some(imported), Some(native), Some(staged)) = (
            get(format!("{label}/imported")),
            get(format!("{label}/native")),
            get(format!("{label}/staged")),
        ) else {
            continue;
        };
        let bytes = 2.0 * f64::from(WIDTH) * f64::from(HEIGHT) * texel as f64;
        println!(
            "| {WIDTH}x{HEIGHT} {label} | {:.1} us | {:.1} us | {:.3} | {:.0} | {:.0} | {:.2} ms | {:.0}x |",
            imported * 1e6,
            native * 1e6,
            native / imported,
            bytes / imported / 1e9,
            bytes / native / 1e9,
            staged * 1e3,
            staged / imported,
        );
    }
}

/// Runs this group's benchmarks, then prints its table(s).
pub fn run() {
    let Some(env) = common::gpu_env("image") else {
        return;
    };
    let kernel = env
        .1
        .compile("image.cu", KERNELS)
        .map_err(anyhow::Error::from)
        .and_then(|m| Ok(m.load_function("surf_scale_rgba")?))
        .expect("compile dev/shaders/image.cu");
    let samples = Samples::default();
    let mut c = common::criterion();
    for format in FORMATS {
        if let Err(e) = bench_format(&mut c, &samples, &env, &kernel, format) {
            println!("{} skipped: {e:#}", format.0);
        }
    }
    c.final_summary();
    print_table(&samples);
}
