//! GPU tests of LINEAR images in memory CUDA allocates ([`SharedLinearImage::from_cuda`]):
//! a CUDA kernel writes pitched rows and Vulkan copies the image out, Vulkan writes the image
//! and CUDA reads the rows at the pitch, for several sizes (odd widths included) and
//! formats; ordering proven by data (stream sync / one-shot fences between the sides).
//! Plus drop order either way, the refusals, and a leak loop. Without a CUDA device matching
//! the Vulkan device the trials are reported ignored.

use crate::common;
use libtest_mimic::Trial;
use vkcuda_dev::rows::tight_rows;

use anyhow::{ensure, Context as _};
use ash::vk;
use common::{
    assert_bytes, assert_no_validation_errors, expect_invalid_arg, expect_unsupported,
    pattern_bytes,
};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::Arc;
use vkcuda::cuda::{self, PitchedBuffer};
use vkcuda::external::MemoryHandleType;
use vkcuda::interop::SharedLinearImage;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, ImageDesc, ImageOwner};

type Env = (vulkan::Context, cuda::Context);

const KERNELS: &str = vkcuda_dev::shaders::BUFFER_CU;

const SIZES: [(u32, u32); 7] = [
    (1, 1),
    (3, 5),
    (17, 9),
    (33, 33),
    (640, 360),
    (1023, 7),
    (1921, 1081),
];

const FORMATS: [vk::Format; 3] = [
    vk::Format::R8G8B8A8_UNORM,
    vk::Format::R8_UNORM,
    vk::Format::R32G32B32A32_SFLOAT,
];

fn linear(w: u32, h: u32, format: vk::Format) -> ImageDesc {
    ImageDesc::d2(w, h, format)
        .tiling(vk::ImageTiling::LINEAR)
        .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST)
}

struct Kernels {
    stream: Arc<CudaStream>,
    fill: CudaFunction,
}

impl Kernels {
    fn new(cu: &cuda::Context) -> anyhow::Result<Self> {
        let module = cu.compile("buffer.cu", KERNELS)?;
        Ok(Self {
            stream: cu.new_stream()?,
            fill: module.load_function("fill_pitched_pattern")?,
        })
    }

    /// The pattern of `seed` into the rows (tightly packed it is `pattern_bytes`).
    fn fill(&self, rows: &PitchedBuffer, seed: u32) -> anyhow::Result<()> {
        let (pitch, row_bytes, n) = (rows.pitch(), rows.row_bytes(), rows.rows());
        let mut l = self.stream.launch_builder(&self.fill);
        l.arg(rows).arg(&pitch).arg(&row_bytes).arg(&n).arg(&seed);
        let config = LaunchConfig {
            grid_dim: (256, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: fill_pitched_pattern(uchar*, u64, u64, u32, u32) writes bytes
        // `y * pitch + x` for x < row_bytes, y < rows of a live mapping that holds them
        // (PitchedBuffer::new checked the span).
        unsafe { l.launch(config) }?;
        Ok(())
    }

    /// The rows read back at their pitch, tightly packed.
    fn read(&self, rows: &PitchedBuffer) -> anyhow::Result<Vec<u8>> {
        let whole = self.stream.clone_dtoh(rows.buffer())?;
        let start = (rows.cu_device_ptr() - rows.buffer().cu_device_ptr()) as usize;
        Ok(tight_rows(
            &whole,
            start,
            rows.pitch() as usize,
            rows.row_bytes() as usize,
            rows.rows() as usize,
        ))
    }
}

/// CUDA writes -> Vulkan reads -> Vulkan writes -> CUDA reads -> CUDA writes again ->
/// Vulkan reads, every hand-off ordered by a stream sync or a waited one-shot.
fn both_ways(
    vk: &vulkan::Context,
    k: &Kernels,
    image: &SharedLinearImage,
    seed: u32,
) -> anyhow::Result<()> {
    let rows = image.pitched()?;
    let len = image.row_bytes() * u64::from(image.desc().extent.height);
    ensure!(
        rows.pitch() == image.layout().row_pitch,
        "pitch not the driver's"
    );
    ensure!(
        rows.cu_device_ptr() == image.vmm().cu_device_ptr() + image.layout().offset,
        "rows not at the layout's offset"
    );
    k.fill(&rows, seed)?;
    k.stream.synchronize()?;
    vk.acquire_image(image.vulkan(), vk::ImageLayout::GENERAL)?;
    let got = vk.read_image(image.vulkan(), 0, 0..1)?;
    assert_bytes(&got, &pattern_bytes(len, seed), "CUDA -> Vulkan")?;
    vk.write_image(image.vulkan(), 0, 0..1, &pattern_bytes(len, seed + 1))?;
    vk.release_image(image.vulkan())?;
    assert_bytes(
        &k.read(&rows)?,
        &pattern_bytes(len, seed + 1),
        "Vulkan -> CUDA",
    )?;
    k.fill(&rows, seed + 2)?;
    k.stream.synchronize()?;
    vk.acquire_image(image.vulkan(), vk::ImageLayout::TRANSFER_SRC_OPTIMAL)?;
    let got = vk.read_image(image.vulkan(), 0, 0..1)?;
    assert_bytes(&got, &pattern_bytes(len, seed + 2), "CUDA -> Vulkan again")
}

/// Whether `e` is vkcuda's typed refusal.
fn unsupported(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<vkcuda::Error>(),
        Some(vkcuda::Error::Unsupported { .. })
    )
}

fn rows_both_ways((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let mut seed = 0;
    for format in FORMATS {
        for (w, h) in SIZES {
            seed += 3;
            let what = format!("{w}x{h} {format:?}");
            let attempt = SharedLinearImage::from_cuda(vk, cu, &linear(w, h, format));
            let image = match common::linear_import(vk, attempt) {
                Ok(Some(image)) => image,
                Ok(None) => return assert_no_validation_errors(vk),
                // Where the driver refuses a format as LINEAR, it must say so (RGBA8 is the
                // format every driver has).
                Err(e) if format != vk::Format::R8G8B8A8_UNORM && unsupported(&e) => {
                    println!("  {what}: refused: {e:#}");
                    continue;
                }
                Err(e) => return Err(e).context(what),
            };
            if format == vk::Format::R8G8B8A8_UNORM {
                println!(
                    "  {what}: {:?}, row bytes {}, CUDA allocation {} bytes",
                    image.layout(),
                    image.row_bytes(),
                    image.vmm().size()
                );
            }
            ensure!(
                image.vulkan().state().owner == ImageOwner::External,
                "{what}: starts released (CUDA holds the contents)"
            );
            both_ways(vk, &k, &image, seed).context(what)?;
        }
    }
    assert_no_validation_errors(vk)
}

/// Three 1080p frames alive at once, as `frame_sharing --producer cuda` holds them, in one
/// process: every round CUDA writes each with its own seed, then Vulkan reads each back.
/// (Across processes the second of three read back zeros on the H200; this tells whether
/// one process does too.)
fn three_frames_alive_at_once((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let desc = linear(1920, 1080, vk::Format::R8G8B8A8_UNORM);
    let Some(images) = common::linear_import(
        vk,
        (0..3)
            .map(|_| SharedLinearImage::from_cuda(vk, cu, &desc))
            .collect::<vkcuda::Result<Vec<_>>>(),
    )?
    else {
        return assert_no_validation_errors(vk);
    };
    let rows = images
        .iter()
        .map(SharedLinearImage::pitched)
        .collect::<vkcuda::Result<Vec<_>>>()?;
    let len = images[0].row_bytes() * 1080;
    for round in 0..3u32 {
        for (i, r) in (0u32..).zip(&rows) {
            k.fill(r, 10 * round + i)?;
        }
        k.stream.synchronize()?;
        for (i, image) in (0u32..).zip(&images) {
            vk.acquire_image(image.vulkan(), vk::ImageLayout::GENERAL)?;
            let got = vk.read_image(image.vulkan(), 0, 0..1)?;
            vk.release_image(image.vulkan())?;
            assert_bytes(
                &got,
                &pattern_bytes(len, 10 * round + i),
                &format!("round {round}, frame {i}"),
            )?;
        }
    }
    assert_no_validation_errors(vk)
}

/// Storage and sampled usage too, where the driver allows them on LINEAR images; a
/// typed refusal otherwise.
fn default_usage_or_typed_refusal((vk, cu): &Env) -> anyhow::Result<()> {
    let desc = ImageDesc::d2(255, 3, vk::Format::R8G8B8A8_UNORM).tiling(vk::ImageTiling::LINEAR);
    match common::linear_import(vk, SharedLinearImage::from_cuda(vk, cu, &desc)) {
        Ok(Some(image)) => both_ways(vk, &Kernels::new(cu)?, &image, 90),
        Ok(None) => Ok(()),
        Err(e) if unsupported(&e) => {
            println!("  LINEAR with {:?}: {e:#}", desc.usage);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn drop_order_either_way((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let desc = linear(97, 13, vk::Format::R8G8B8A8_UNORM);
    let len = 97 * 4 * 13;
    // CUDA's side goes first: Vulkan still reads what CUDA wrote.
    let Some(image) = common::linear_import(vk, SharedLinearImage::from_cuda(vk, cu, &desc))?
    else {
        return assert_no_validation_errors(vk);
    };
    let rows = image.pitched()?;
    k.fill(&rows, 5)?;
    k.stream.synchronize()?;
    let vulkan = image.vulkan().clone();
    drop((image, rows));
    vk.acquire_image(&vulkan, vk::ImageLayout::GENERAL)?;
    assert_bytes(
        &vk.read_image(&vulkan, 0, 0..1)?,
        &pattern_bytes(len, 5),
        "after CUDA let go",
    )?;
    drop(vulkan);
    // Vulkan's side goes first: CUDA's rows still work.
    let image = SharedLinearImage::from_cuda(vk, cu, &desc)?;
    let rows = image.pitched()?;
    drop(image);
    k.fill(&rows, 6)?;
    k.stream.synchronize()?;
    assert_bytes(
        &k.read(&rows)?,
        &pattern_bytes(len, 6),
        "after Vulkan let go",
    )?;
    assert_no_validation_errors(vk)
}

fn refusals_are_typed((vk, cu): &Env) -> anyhow::Result<()> {
    let rgba = vk::Format::R8G8B8A8_UNORM;
    expect_unsupported(
        SharedLinearImage::from_cuda(vk, cu, &ImageDesc::d2(64, 64, rgba)),
        &["CUDA cannot express", "OPTIMAL"],
    )?;
    let dma = linear(64, 64, rgba).handle_type(MemoryHandleType::DmaBufFd);
    expect_invalid_arg(
        SharedLinearImage::from_cuda(vk, cu, &dma),
        "desc.handle_type",
    )?;
    let array = ImageDesc::d2_array(16, 16, 2, rgba).tiling(vk::ImageTiling::LINEAR);
    expect_invalid_arg(SharedLinearImage::from_cuda(vk, cu, &array), "desc.kind")?;
    expect_invalid_arg(
        SharedLinearImage::from_cuda(vk, cu, &linear(16, 16, rgba).mips(2)),
        "desc.mip_levels",
    )?;
    expect_unsupported(
        SharedLinearImage::from_cuda(vk, cu, &linear(16, 16, vk::Format::D32_SFLOAT)),
        &["single-plane"],
    )?;
    expect_unsupported(
        SharedLinearImage::from_cuda(
            vk,
            cu,
            &linear(16, 16, rgba).usage(vk::ImageUsageFlags::DEPTH_STENCIL_ATTACHMENT),
        ),
        &["LINEAR"],
    )?;
    expect_invalid_arg(
        SharedLinearImage::from_cuda(vk, cu, &linear(0, 16, rgba)),
        "desc.extent.width",
    )?;
    assert_no_validation_errors(vk)
}

/// 500 create/export/import/map/hand-off cycles: fds and device memory flat.
fn leaks_500((vk, cu): &Env) -> anyhow::Result<()> {
    let desc = linear(321, 17, vk::Format::R8G8B8A8_UNORM);
    // Where the import is refused, the cycle is the refusal's (CUDA allocates and exports,
    // Vulkan refuses and closes the fd), which must leak nothing either.
    let refused = common::linear_imports_refused(vk);
    common::assert_cycles_leak_free(cu, 500, || {
        let image = match SharedLinearImage::from_cuda(vk, cu, &desc) {
            Err(vkcuda::Error::Unsupported { .. }) if refused => return Ok(()),
            other => other?,
        };
        drop(image.pitched()?);
        vk.acquire_image(image.vulkan(), vk::ImageLayout::GENERAL)?;
        Ok(())
    })?;
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::gpu_probe();
    let tests: [common::Test<Env>; 6] = [
        ("linear_rows_cuda_and_vulkan_both_ways", rows_both_ways),
        (
            "linear_three_frames_alive_at_once",
            three_frames_alive_at_once,
        ),
        (
            "linear_default_usage_or_typed_refusal",
            default_usage_or_typed_refusal,
        ),
        ("linear_drop_order_either_way", drop_order_either_way),
        ("linear_refusals_are_typed", refusals_are_typed),
        ("linear_create_import_500_no_leaks", leaks_500),
    ];
    common::trials_of(&probe, tests, "CUDA device matching the Vulkan device")
}
