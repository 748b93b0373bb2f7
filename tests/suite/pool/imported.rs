//! The importing half of the pool, on any Vulkan device with `VK_KHR_external_memory_fd`
//! (lavapipe in CI): a block's export imported once ([`ImportedBlock`]), its buffers and
//! images bound again at the exporter's offsets, and every byte the exporter wrote found
//! through them, and the other way; the refusals; a leak loop.

use super::{pool, transfer};
use crate::common;
use libtest_mimic::Trial;

use std::collections::BTreeMap;
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
    BufferDesc, Context, ExternalBuffer, ExternalImage, ImageDesc, ImportedBlock, PoolBlock,
};

/// Each distinct block's export, imported once.
fn import_blocks<'a>(
    vk: &Context,
    blocks: impl IntoIterator<Item = &'a Arc<PoolBlock>>,
) -> anyhow::Result<BTreeMap<usize, Arc<ImportedBlock>>> {
    let mut imported = BTreeMap::new();
    for block in blocks {
        let key = Arc::as_ptr(block) as usize;
        if imported.contains_key(&key) {
            continue;
        }
        let export = block.export()?;
        // SAFETY: the block's own export on this device: its whole size, shared, naming
        // its memory type.
        let import = unsafe { ImportedBlock::import(vk, export) }?;
        ensure!(
            import.memory_type() == block.memory_type(),
            "imported into another type"
        );
        imported.insert(key, import);
    }
    Ok(imported)
}

/// Pool images and buffers written through the exporter's handles, read back through
/// resources bound at the same offsets of each block imported once; then written through
/// the imports and read back through the originals.
fn resources_rebound_in_one_import_per_block(vk: &Context) -> anyhow::Result<()> {
    let pool = pool(vk)?;
    let rgba = vk::Format::R8G8B8A8_UNORM;
    let descs = [
        ImageDesc::d2(64, 64, rgba),
        ImageDesc::d2(300, 200, rgba),
        ImageDesc::d2(17, 9, vk::Format::R32_SFLOAT),
        ImageDesc::d2(33, 7, rgba).tiling(vk::ImageTiling::LINEAR),
    ];
    let mut images = Vec::new();
    for (i, d) in descs.iter().cycle().take(2 * descs.len()).enumerate() {
        let image = pool.allocate_image(&transfer(d.clone()))?;
        let len = u64::try_from(vk.read_image(&image, 0, 0..1)?.len())?;
        vk.write_image(&image, 0, 0..1, &pattern_bytes(len, i as u32))?;
        images.push((image, len, i as u32));
    }
    let sizes = [256u64, 1000, 4096, 70_000];
    let mut buffers = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let b = pool.allocate(size)?;
        vk.write_buffer(&b, 0, &pattern_bytes(size, 100 + i as u32))?;
        buffers.push((b, size, 100 + i as u32));
    }
    let blocks: Vec<Arc<PoolBlock>> = images
        .iter()
        .filter_map(|(i, ..)| i.pool_slot().map(|(b, _)| b.clone()))
        .chain(
            buffers
                .iter()
                .filter_map(|(b, ..)| b.pool_slot().map(|(b, _)| b.clone())),
        )
        .collect();
    let imported = import_blocks(vk, &blocks)?;
    let block_of = |slot: Option<(&Arc<PoolBlock>, u64)>| -> anyhow::Result<_> {
        let (block, offset) = slot.context("pooled")?;
        let import = imported
            .get(&(Arc::as_ptr(block) as usize))
            .context("imported")?;
        Ok((import.clone(), offset))
    };

    let mut rebound = 0;
    for (image, len, seed) in &images {
        let (block, offset) = block_of(image.pool_slot())?;
        let bound = ExternalImage::bind_in(&block, offset, image.desc());
        let alias = if image.desc().tiling == vk::ImageTiling::LINEAR {
            match common::linear_import(vk, bound)? {
                Some(alias) => alias,
                None => continue,
            }
        } else {
            bound?
        };
        ensure!(alias.pool_slot().is_none(), "an alias is not a pool slot");
        vk.acquire_image(&alias, vk::ImageLayout::GENERAL)?;
        let what = format!("{:?} at {offset}", image.desc().extent);
        assert_bytes(
            &vk.read_image(&alias, 0, 0..1)?,
            &pattern_bytes(*len, *seed),
            &format!("{what}: exporter -> import"),
        )?;
        vk.write_image(&alias, 0, 0..1, &pattern_bytes(*len, seed + 50))?;
        assert_bytes(
            &vk.read_image(image, 0, 0..1)?,
            &pattern_bytes(*len, seed + 50),
            &format!("{what}: import -> exporter"),
        )?;
        expect_unsupported(alias.export(), &["imported block"])?;
        rebound += 1;
    }
    for (buffer, size, seed) in &buffers {
        let (block, offset) = block_of(buffer.pool_slot())?;
        let alias = ExternalBuffer::bind_in(&block, offset, &BufferDesc::new(*size))?;
        assert_bytes(
            &vk.read_buffer(&alias, 0..*size)?,
            &pattern_bytes(*size, *seed),
            &format!("{size} B at {offset}: exporter -> import"),
        )?;
        vk.write_buffer(&alias, 0, &pattern_bytes(*size, seed + 50))?;
        assert_bytes(
            &vk.read_buffer(buffer, 0..*size)?,
            &pattern_bytes(*size, seed + 50),
            &format!("{size} B at {offset}: import -> exporter"),
        )?;
    }
    println!(
        "  {rebound} of {} images and {} buffers rebound through {} imports",
        images.len(),
        buffers.len(),
        imported.len()
    );
    assert_no_validation_errors(vk)
}

fn refusals_are_typed(vk: &Context) -> anyhow::Result<()> {
    let pool = pool(vk)?;
    let desc = transfer(ImageDesc::d2(64, 64, vk::Format::R8G8B8A8_UNORM));
    let image = pool.allocate_image(&desc)?;
    let (block, offset) = image.pool_slot().context("pooled")?;
    // SAFETY: the block's own export, as in the trial above.
    let imported = unsafe { ImportedBlock::import(vk, block.export()?) }?;
    expect_invalid_arg(
        ExternalImage::bind_in(&imported, offset + 1, &desc),
        "offset",
    )?;
    expect_invalid_arg(
        ExternalImage::bind_in(&imported, block.size(), &desc),
        "offset",
    )?;
    expect_invalid_arg(ExternalImage::bind_in(&imported, u64::MAX, &desc), "offset")?;
    expect_invalid_arg(
        ExternalImage::bind_in(
            &imported,
            offset,
            &desc.clone().handle_type(MemoryHandleType::DmaBufFd),
        ),
        "desc.handle_type",
    )?;
    expect_invalid_arg(
        ExternalBuffer::bind_in(&imported, 0, &BufferDesc::new(block.size() + 1)),
        "offset",
    )?;
    expect_invalid_arg(
        ExternalBuffer::bind_in(&imported, 0, &BufferDesc::new(0)),
        "desc.size",
    )?;
    // A dedicated export is imported with its resource, not as a block.
    let own = ExternalImage::new(vk, &desc)?;
    // SAFETY: refused before the driver sees the handle.
    let r = unsafe { ImportedBlock::import(vk, own.export()?) };
    expect_invalid_arg(r, "import.dedicated")?;
    let mut wrong_type = block.export()?;
    wrong_type.memory_type = Some(32);
    // SAFETY: refused before the driver sees the handle.
    let r = unsafe { ImportedBlock::import(vk, wrong_type) };
    expect_invalid_arg(r, "import.memory_type")?;
    assert_no_validation_errors(vk)
}

/// 300 import/bind/drop cycles, the block dropped before and after its resources: open fds
/// stay flat.
fn import_cycles_keep_fds(vk: &Context) -> anyhow::Result<()> {
    let pool = pool(vk)?;
    let desc = transfer(ImageDesc::d2(64, 64, vk::Format::R8G8B8A8_UNORM));
    let image = pool.allocate_image(&desc)?;
    let (block, offset) = image.pool_slot().context("pooled")?;
    let mut i = 0u32;
    common::assert_cycles_keep_fds(300, || {
        // SAFETY: the block's own export, as in the first trial.
        let imported = unsafe { ImportedBlock::import(vk, block.export()?) }?;
        let alias = ExternalImage::bind_in(&imported, offset, &desc)?;
        let buffer = ExternalBuffer::bind_in(&imported, 0, &BufferDesc::new(256))?;
        // The resources hold the block: the last one out frees it, whichever it is.
        if i.is_multiple_of(2) {
            drop(imported);
            drop((alias, buffer));
        } else {
            drop((alias, buffer));
            drop(imported);
        }
        i += 1;
        Ok(())
    })?;
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::vulkan_probe();
    let tests: [common::Test<Context>; 3] = [
        (
            "resources_rebound_in_one_import_per_block",
            resources_rebound_in_one_import_per_block,
        ),
        ("imported_block_refusals_are_typed", refusals_are_typed),
        (
            "imported_block_300_cycles_no_fd_leak",
            import_cycles_keep_fds,
        ),
    ];
    common::trials_of(&probe, tests, "Vulkan device with external memory")
}
