//! Images in the exportable pool, Vulkan half, on any Vulkan device with
//! `VK_KHR_external_memory_fd` (lavapipe in CI): OPTIMAL images bound at aligned offsets of
//! blocks that hold no buffer, their texels intact while their neighbours are written; a
//! LINEAR image found by data at its slot offset through the block's export, both ways; and
//! the refusals. (The leak loop of `lavapipe` cycles images too.)

use super::{pool, transfer};
use crate::common;
use libtest_mimic::Trial;
use vkcuda_dev::rows::tight_rows;

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{ensure, Context as _};
use ash::vk;
use common::{
    assert_bytes, assert_no_validation_errors, expect_invalid_arg, expect_unsupported,
    pattern_bytes,
};
use vkcuda::external::MemoryHandleType;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{
    texel_block, BufferDesc, Context, ExternalBuffer, ExternalImage, ImageDesc, PoolBlock, MIN_SLOT,
};

/// The block's address, to tell blocks apart.
fn block_id(block: &Arc<PoolBlock>) -> usize {
    Arc::as_ptr(block) as usize
}

/// Every level and layer of `image`, written with `seed`-derived patterns.
fn write_all(vk: &Context, image: &ExternalImage, seed: u32) -> anyhow::Result<()> {
    let d = image.desc();
    let texel = texel_block(d.format).context("an uncompressed format")?;
    for level in 0..d.mip_levels {
        let e = d.level_extent(level);
        let len = u64::from(texel.bytes)
            * u64::from(e.width)
            * u64::from(e.height)
            * u64::from(e.depth)
            * u64::from(d.layers);
        vk.write_image(image, level, 0..d.layers, &pattern_bytes(len, seed + level))?;
    }
    Ok(())
}

fn read_all(vk: &Context, image: &ExternalImage, seed: u32, what: &str) -> anyhow::Result<()> {
    let d = image.desc();
    for level in 0..d.mip_levels {
        let got = vk.read_image(image, level, 0..d.layers)?;
        let want = pattern_bytes(got.len() as u64, seed + level);
        assert_bytes(&got, &want, &format!("{what}, level {level}"))?;
    }
    Ok(())
}

/// OPTIMAL images of several shapes beside buffers: aligned, non-overlapping slots in
/// blocks of their memory type that hold no buffer; each image keeps its texels while all
/// the others and the buffers are written.
fn optimal_images_share_blocks_of_their_own(vk: &Context) -> anyhow::Result<()> {
    let pool = pool(vk)?;
    let rgba = vk::Format::R8G8B8A8_UNORM;
    let descs = [
        ImageDesc::d2(64, 64, rgba),
        ImageDesc::d2(640, 360, rgba).mips(3),
        ImageDesc::d2(17, 9, vk::Format::R32_SFLOAT),
        ImageDesc::d2_array(32, 32, 3, rgba),
        ImageDesc::d3(16, 16, 4, rgba),
        ImageDesc::d2(1, 1, rgba),
    ];
    let mut images = Vec::new();
    for (i, d) in descs.iter().cycle().take(2 * descs.len()).enumerate() {
        let image = pool
            .allocate_image(&transfer(d.clone()))
            .with_context(|| format!("{d:?}"))?;
        images.push((image, i as u32 * 16));
    }
    let buffers: Vec<ExternalBuffer> = (0..4)
        .map(|_| pool.allocate(4096))
        .collect::<Result<_, _>>()?;

    let mut image_blocks = BTreeSet::new();
    let mut ranges: Vec<(usize, u64, u64)> = Vec::new();
    for (image, _) in &images {
        let (block, offset) = image.pool_slot().context("a pooled image")?;
        ensure!(offset % MIN_SLOT == 0, "offset {offset} not 256-aligned");
        ensure!(
            offset % block.slot_size() == 0,
            "offset {offset} not slot-aligned"
        );
        ensure!(
            offset + image.allocation_size() <= block.size(),
            "{:?}: {} bytes at {offset} overrun the block",
            image.desc(),
            image.allocation_size()
        );
        ensure!(
            block.memory_type() == image.memory_type(),
            "the image is not in its block's memory type"
        );
        image_blocks.insert(block_id(block));
        ranges.push((block_id(block), offset, offset + block.slot_size()));
    }
    ranges.sort_unstable();
    ensure!(
        ranges
            .windows(2)
            .all(|w| w[0].0 != w[1].0 || w[0].2 <= w[1].1),
        "overlapping slots {ranges:?}"
    );
    for b in &buffers {
        let (block, _) = b.pool_slot().context("a pooled buffer")?;
        ensure!(
            !image_blocks.contains(&block_id(block)),
            "a buffer shares a block with OPTIMAL images (bufferImageGranularity)"
        );
    }

    for (image, seed) in &images {
        vk.fill_buffer(&buffers[0], 0..4096, 0)?;
        write_all(vk, image, *seed)?;
    }
    for (i, b) in buffers.iter().enumerate() {
        vk.fill_buffer(b, 0..4096, i as u32 * 0x0101_0101)?;
    }
    for (image, seed) in &images {
        read_all(vk, image, *seed, &format!("{:?}", image.desc()))?;
    }
    let blocks = pool.live_blocks();
    drop((images, buffers));
    ensure!(
        pool.live_blocks() == 0,
        "{blocks} blocks, some outlived their resources"
    );
    assert_no_validation_errors(vk)
}

/// A LINEAR image from the pool lies at its slot's offset, rows at the driver's pitch: read
/// through the block's export (a buffer over the whole block) both ways.
fn linear_image_rows_are_at_its_slot(vk: &Context) -> anyhow::Result<()> {
    let pool = pool(vk)?;
    let desc =
        transfer(ImageDesc::d2(33, 7, vk::Format::R8G8B8A8_UNORM).tiling(vk::ImageTiling::LINEAR));
    // A neighbour first, so the image is not at offset 0.
    let _before = pool.allocate_image(&desc)?;
    let image = pool.allocate_image(&desc)?;
    let (block, offset) = image.pool_slot().context("a pooled image")?;
    ensure!(offset > 0, "the second slot starts at 0");
    let layout = image.linear_layout().context("a LINEAR layout")?;
    let import = block.export()?;
    ensure!(
        import.memory_type == Some(image.memory_type()),
        "the block's export names another type"
    );
    // SAFETY: the block's own export on this device, of its whole size, not dedicated,
    // naming its memory type (which the import uses, or refuses for this buffer).
    let whole = unsafe { ExternalBuffer::import(vk, &BufferDesc::new(block.size()), import) };
    let whole = match whole {
        Err(vkcuda::Error::InvalidArgument {
            arg: "import.memory_type",
            problem,
            ..
        }) => {
            println!("  not checked by data: buffers cannot live in the image's type: {problem}");
            return assert_no_validation_errors(vk);
        }
        other => other?,
    };
    let (row, h) = (33 * 4, 7u64);
    let at = |y: u64| offset + layout.offset + y * layout.row_pitch;
    let texels = pattern_bytes(row * h, 3);
    vk.write_image(&image, 0, 0..1, &texels)?;
    let memory = vk.read_buffer(&whole, at(0)..at(h - 1) + row)?;
    let rows = tight_rows(
        &memory,
        0,
        layout.row_pitch as usize,
        row as usize,
        h as usize,
    );
    assert_bytes(&rows, &texels, "image -> block")?;
    let texels = pattern_bytes(row * h, 4);
    for y in 0..h {
        let r = (y * row) as usize..((y + 1) * row) as usize;
        vk.write_buffer(&whole, at(y), &texels[r])?;
    }
    assert_bytes(&vk.read_image(&image, 0, 0..1)?, &texels, "block -> image")?;
    assert_no_validation_errors(vk)
}

fn refusals_are_typed(vk: &Context) -> anyhow::Result<()> {
    let pool = pool(vk)?;
    let rgba = transfer(ImageDesc::d2(16, 16, vk::Format::R8G8B8A8_UNORM));
    expect_invalid_arg(
        pool.allocate_image(&rgba.clone().handle_type(MemoryHandleType::DmaBufFd)),
        "desc.handle_type",
    )?;
    expect_invalid_arg(
        pool.allocate_image(&transfer(ImageDesc::d2(0, 16, vk::Format::R8G8B8A8_UNORM))),
        "desc.extent.width",
    )?;
    expect_invalid_arg(
        pool.allocate_image(&rgba.clone().mips(9)),
        "desc.mip_levels",
    )?;
    let image = pool.allocate_image(&rgba)?;
    expect_unsupported(image.export(), &["pooled", "offset"])?;
    expect_unsupported(image.alias(), &["pooled"])?;
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::vulkan_probe();
    let tests: [common::Test<Context>; 3] = [
        (
            "optimal_images_share_blocks_of_their_own",
            optimal_images_share_blocks_of_their_own,
        ),
        (
            "linear_image_rows_are_at_its_slot",
            linear_image_rows_are_at_its_slot,
        ),
        ("image_refusals_are_typed", refusals_are_typed),
    ];
    common::trials_of(&probe, tests, "Vulkan device with external memory")
}
