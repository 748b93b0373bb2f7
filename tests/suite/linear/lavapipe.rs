//! The Vulkan half of images in memory another API allocated, on any Vulkan device with
//! `VK_KHR_external_memory_fd` (lavapipe in CI): a LINEAR image imported from memory made
//! for no image in particular (a pool block stands in for CUDA's VMM fd), its texels found
//! by data at `offset + y * row_pitch` through a buffer on the same memory, both ways; and
//! every refusal, including the OPTIMAL image that CUDA cannot address as rows.

use crate::common;
use libtest_mimic::Trial;
use vkcuda_dev::rows::tight_rows;

use anyhow::{ensure, Context as _};
use ash::vk;
use common::{
    assert_bytes, assert_no_validation_errors, expect_invalid_arg, expect_unsupported, open_fds,
    pattern_bytes,
};
use vkcuda::external::{MemoryHandle, MemoryHandleType, MemoryImport};
use vkcuda::interop::pitched_row_bytes;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{
    Context, ExportPool, ExternalBuffer, ExternalImage, ImageDesc, ImageOwner, LinearRequirements,
    PoolDesc,
};

/// Odd and even widths, one row and many.
const SIZES: [(u32, u32); 7] = [
    (1, 1),
    (3, 5),
    (17, 9),
    (33, 33),
    (64, 2),
    (640, 360),
    (1023, 7),
];

const FORMATS: [vk::Format; 3] = [
    vk::Format::R8G8B8A8_UNORM,
    vk::Format::R8_UNORM,
    vk::Format::R16G16B16A16_SFLOAT,
];

fn linear(w: u32, h: u32, format: vk::Format) -> ImageDesc {
    ImageDesc::d2(w, h, format)
        .tiling(vk::ImageTiling::LINEAR)
        .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST)
}

/// A pool buffer alone at offset 0 of its block, at least `size` bytes: the stand-in for a
/// CUDA allocation (exported whole, not dedicated).
fn stand_in(vk: &Context, size: u64) -> anyhow::Result<ExternalBuffer> {
    let block = size.max(256).next_power_of_two();
    let pool = ExportPool::new(
        vk,
        &PoolDesc {
            block_size: block,
            ..PoolDesc::default()
        },
    )?;
    let buffer = pool.allocate(size)?;
    let (_, offset) = buffer.pool_slot().context("pooled")?;
    ensure!(offset == 0, "the stand-in must start its block");
    Ok(buffer)
}

fn export_block(buffer: &ExternalBuffer) -> anyhow::Result<MemoryImport> {
    let (block, _) = buffer.pool_slot().context("pooled")?;
    Ok(block.export()?)
}

/// Tight rows of `row_bytes` placed at `offset + y * pitch` in a `len`-byte image of
/// memory (padding left 0).
fn pitched(tight: &[u8], req: &LinearRequirements, rows: u32) -> Vec<u8> {
    let mut out = vec![0u8; req.size as usize];
    let (row, pitch, offset) = (
        req.row_bytes as usize,
        req.layout.row_pitch as usize,
        req.layout.offset as usize,
    );
    for y in 0..rows as usize {
        let at = offset + y * pitch;
        out[at..at + row].copy_from_slice(&tight[y * row..(y + 1) * row]);
    }
    out
}

/// The tight rows found at `offset + y * pitch` in `memory`.
fn rows_of(memory: &[u8], req: &LinearRequirements, rows: u32) -> Vec<u8> {
    let l = req.layout;
    tight_rows(
        memory,
        l.offset as usize,
        l.row_pitch as usize,
        req.row_bytes as usize,
        rows as usize,
    )
}

/// For every size and format: the image imported from a foreign block is laid out as
/// `linear_requirements` said; texels written through the image are at the pitched
/// positions of the block, and bytes written there are the image's texels.
fn rows_are_where_the_layout_says(vk: &Context) -> anyhow::Result<()> {
    let mut seed = 0;
    for format in FORMATS {
        for (w, h) in SIZES {
            seed += 2;
            let what = format!("{w}x{h} {format:?}");
            let desc = linear(w, h, format);
            let req = ExternalImage::linear_requirements(vk, &desc).context(what.clone())?;
            let l = req.layout;
            ensure!(
                req.row_bytes == pitched_row_bytes(&desc)?,
                "{what}: row bytes"
            );
            ensure!(l.row_pitch >= req.row_bytes, "{what}: pitch {l:?}");
            ensure!(
                l.offset + l.row_pitch * u64::from(h - 1) + req.row_bytes <= l.offset + l.size
                    && l.offset + l.size <= req.size,
                "{what}: {l:?} does not fit {} bytes",
                req.size
            );
            if format == vk::Format::R8G8B8A8_UNORM {
                println!(
                    "  {what}: {l:?}, row bytes {}, memory {} bytes",
                    req.row_bytes, req.size
                );
            }
            // A Vulkan-allocated LINEAR image of the same description has the same layout.
            let own = ExternalImage::new(vk, &desc)?;
            ensure!(own.linear_layout() == Some(l), "{what}: own image differs");

            let block = stand_in(vk, req.size)?;
            // SAFETY: the block's own export, on this device, of its whole size, not
            // dedicated; it names the block's memory type, which the import uses (or
            // refuses, where LINEAR images cannot live in the type the pool chose).
            let attempt =
                unsafe { ExternalImage::import_linear(vk, &desc, export_block(&block)?, &l) };
            let Some(image) = common::linear_import(vk, attempt).context(what.clone())? else {
                return assert_no_validation_errors(vk);
            };
            ensure!(image.linear_layout() == Some(l), "{what}: imported layout");
            ensure!(
                image.state().owner == ImageOwner::External,
                "{what}: an import starts released"
            );
            let tight_len = req.row_bytes * u64::from(h);
            // Vulkan writes the image; the texels are at the pitched positions of the block.
            vk.acquire_image(&image, vk::ImageLayout::GENERAL)?;
            let texels = pattern_bytes(tight_len, seed);
            vk.write_image(&image, 0, 0..1, &texels)?;
            let memory = vk.read_buffer(&block, 0..req.size)?;
            assert_bytes(
                &rows_of(&memory, &req, h),
                &texels,
                &format!("{what}: image -> memory"),
            )?;
            // Bytes written at the pitched positions are the image's texels.
            let texels = pattern_bytes(tight_len, seed + 1);
            vk.write_buffer(&block, 0, &pitched(&texels, &req, h))?;
            let got = vk.read_image(&image, 0, 0..1)?;
            assert_bytes(&got, &texels, &format!("{what}: memory -> image"))?;
        }
    }
    assert_no_validation_errors(vk)
}

/// The import is tracked like every image: released until acquired; Vulkan's helpers
/// refuse it meanwhile, and the release/acquire cycle works.
fn hand_off_is_tracked(vk: &Context) -> anyhow::Result<()> {
    let desc = linear(31, 4, vk::Format::R8G8B8A8_UNORM);
    let req = ExternalImage::linear_requirements(vk, &desc)?;
    let block = stand_in(vk, req.size)?;
    // SAFETY: as in `rows_are_where_the_layout_says`.
    let attempt =
        unsafe { ExternalImage::import_linear(vk, &desc, export_block(&block)?, &req.layout) };
    let Some(image) = common::linear_import(vk, attempt)? else {
        return assert_no_validation_errors(vk);
    };
    let len = req.row_bytes * 4;
    ensure!(
        vk.read_image(&image, 0, 0..1).is_err(),
        "read while released"
    );
    vk.acquire_image(&image, vk::ImageLayout::GENERAL)?;
    vk.write_image(&image, 0, 0..1, &pattern_bytes(len, 9))?;
    vk.release_image(&image)?;
    ensure!(image.state().owner == ImageOwner::External);
    vk.acquire_image(&image, vk::ImageLayout::TRANSFER_SRC_OPTIMAL)?;
    assert_bytes(
        &vk.read_image(&image, 0, 0..1)?,
        &pattern_bytes(len, 9),
        "kept",
    )?;
    assert_no_validation_errors(vk)
}

fn refusals_are_typed(vk: &Context) -> anyhow::Result<()> {
    let rgba = vk::Format::R8G8B8A8_UNORM;
    let ok = linear(16, 16, rgba);
    // OPTIMAL: rows at a pitch cannot describe it.
    expect_unsupported(
        pitched_row_bytes(&ImageDesc::d2(16, 16, rgba)),
        &["CUDA cannot express", "OPTIMAL"],
    )?;
    let optimal = ok.clone().tiling(vk::ImageTiling::OPTIMAL);
    expect_invalid_arg(
        ExternalImage::linear_requirements(vk, &optimal),
        "desc.tiling",
    )?;
    // Shapes and formats that are not one plane of rows.
    let array = ImageDesc::d2_array(16, 16, 2, rgba).tiling(vk::ImageTiling::LINEAR);
    expect_invalid_arg(ExternalImage::linear_requirements(vk, &array), "desc.kind")?;
    expect_invalid_arg(
        ExternalImage::linear_requirements(vk, &ok.clone().mips(2)),
        "desc.mip_levels",
    )?;
    expect_unsupported(
        ExternalImage::linear_requirements(vk, &linear(16, 16, vk::Format::D32_SFLOAT)),
        &["single-plane"],
    )?;
    expect_unsupported(
        pitched_row_bytes(&linear(16, 16, vk::Format::BC1_RGB_UNORM_BLOCK)),
        &["block-compressed"],
    )?;
    // Extent: zero, and above what LINEAR images of this format may have.
    expect_invalid_arg(
        ExternalImage::linear_requirements(vk, &linear(0, 4, rgba)),
        "desc.extent.width",
    )?;
    let max = vk.properties().limits.max_image_dimension2_d;
    expect_invalid_arg(
        ExternalImage::linear_requirements(vk, &linear(max + 1, 1, rgba)),
        "desc.extent.width",
    )?;
    // Usage a LINEAR image of this format cannot have: the driver's refusal, explained.
    expect_unsupported(
        ExternalImage::linear_requirements(
            vk,
            &ok.clone()
                .usage(vk::ImageUsageFlags::DEPTH_STENCIL_ATTACHMENT),
        ),
        &["LINEAR", "DEPTH_STENCIL_ATTACHMENT"],
    )?;

    let req = ExternalImage::linear_requirements(vk, &ok)?;
    let block = stand_in(vk, req.size)?;
    let fds = open_fds();
    // A layout other than the driver's: refused before the memory is bound, fd closed.
    let mut wrong = req.layout;
    wrong.row_pitch += 64;
    // SAFETY: as in `rows_are_where_the_layout_says`; refused before the import.
    let r = unsafe { ExternalImage::import_linear(vk, &ok, export_block(&block)?, &wrong) };
    let e = expect_invalid_arg(r, "expected.row_pitch")?;
    ensure!(e.to_string().contains("row pitch"), "{e}");
    // Memory smaller than the image needs.
    let mut small = export_block(&block)?;
    small.size = req.size - 1;
    // SAFETY: as above; refused by the size check before the import.
    let r = unsafe { ExternalImage::import_linear(vk, &ok, small, &req.layout) };
    if !common::linear_imports_refused(vk) {
        expect_invalid_arg(r, "import.size")?;
    } else {
        // Where LINEAR imports are refused, the refusal comes first.
        expect_unsupported(r, &["NVIDIA"])?;
    }
    // The handle is not of the described type.
    let dma = ok.clone().handle_type(MemoryHandleType::DmaBufFd);
    // SAFETY: refused by the type check before anything is created.
    let r = unsafe { ExternalImage::import_linear(vk, &dma, export_block(&block)?, &req.layout) };
    ensure!(
        r.is_err(),
        "a DmaBufFd description of an opaque fd was accepted"
    );
    ensure!(open_fds() == fds, "a refused import leaked its fd");
    // An OPTIMAL image has no linear layout.
    ensure!(ExternalImage::new(vk, &ImageDesc::d2(8, 8, rgba))?
        .linear_layout()
        .is_none());
    let MemoryHandle::OpaqueFd(_) = export_block(&block)?.handle else {
        anyhow::bail!("pool blocks export opaque fds");
    };
    assert_no_validation_errors(vk)
}

/// 300 requirement/import/use/drop cycles: open fds flat.
fn import_cycles_leak_no_fds(vk: &Context) -> anyhow::Result<()> {
    let desc = linear(129, 17, vk::Format::R8G8B8A8_UNORM);
    let refused = common::linear_imports_refused(vk);
    let cycle = || -> anyhow::Result<()> {
        let req = ExternalImage::linear_requirements(vk, &desc)?;
        let block = stand_in(vk, req.size)?;
        // SAFETY: as in `rows_are_where_the_layout_says`.
        let attempt =
            unsafe { ExternalImage::import_linear(vk, &desc, export_block(&block)?, &req.layout) };
        // Where the import is refused, the cycle is the refusal's, which closes the fd.
        match attempt {
            Err(vkcuda::Error::Unsupported { .. }) if refused => {}
            other => vk.acquire_image(&other?, vk::ImageLayout::GENERAL)?,
        }
        Ok(())
    };
    common::assert_cycles_keep_fds(300, cycle)?;
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::vulkan_probe();
    let tests: [common::Test<Context>; 4] = [
        (
            "rows_are_where_the_layout_says",
            rows_are_where_the_layout_says,
        ),
        ("hand_off_is_tracked", hand_off_is_tracked),
        ("refusals_are_typed", refusals_are_typed),
        ("import_cycles_300_no_fd_leak", import_cycles_leak_no_fds),
    ];
    common::trials_of(&probe, tests, "Vulkan device with external memory")
}
