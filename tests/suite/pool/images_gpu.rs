//! GPU tests of images in the pool's blocks ([`SharedPool::allocate_image`]): each image's
//! CUDA array mapped from its block's one import at the image's offset, bytes checked both
//! ways (Vulkan writes, CUDA reads; CUDA writes, Vulkan reads, every hand-off waited for);
//! a buffer mapping that keeps its slot; a leak loop. Without a CUDA device matching the
//! Vulkan device the trials are reported ignored.

use super::transfer;
use crate::common;
use libtest_mimic::Trial;

use anyhow::{ensure, Context as _};
use ash::vk;
use common::{assert_bytes, assert_no_validation_errors, pattern_bytes};
use vkcuda::cuda;
use vkcuda::interop::{SharedImage, SharedPool};
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, ImageDesc, PoolDesc};

type Env = (vulkan::Context, cuda::Context);

fn pool(vk: &vulkan::Context, cu: &cuda::Context) -> vkcuda::Result<SharedPool> {
    SharedPool::new(
        vk,
        cu,
        &PoolDesc {
            block_size: 16 << 20,
            ..PoolDesc::default()
        },
    )
}

/// Vulkan writes every level, CUDA reads them back from the array; CUDA writes every level,
/// Vulkan reads them back.
fn both_ways(
    vk: &vulkan::Context,
    cu: &cuda::Context,
    image: &SharedImage,
    seed: u32,
) -> anyhow::Result<()> {
    let stream = cu.new_stream()?;
    let levels = image.desc().mip_levels;
    let layers = image.desc().layers;
    let mut lens = Vec::new();
    for level in 0..levels {
        let len = image.level(level)?.byte_len()?;
        vk.write_image(
            image.vulkan(),
            level,
            0..layers,
            &pattern_bytes(len as u64, seed + level),
        )?;
        lens.push(len);
    }
    image.release_to_cuda()?;
    for (level, &len) in (0..levels).zip(&lens) {
        let mut out = vec![0u8; len];
        image.level(level)?.copy_to_host(&stream, &mut out)?;
        assert_bytes(
            &out,
            &pattern_bytes(len as u64, seed + level),
            &format!("Vulkan -> CUDA, level {level}"),
        )?;
        image
            .level(level)?
            .copy_from_host(&stream, &pattern_bytes(len as u64, seed + 100 + level))?;
    }
    image.acquire_from_cuda(&stream, vk::ImageLayout::GENERAL)?;
    for (level, &len) in (0..levels).zip(&lens) {
        let got = vk.read_image(image.vulkan(), level, 0..layers)?;
        assert_bytes(
            &got,
            &pattern_bytes(len as u64, seed + 100 + level),
            &format!("CUDA -> Vulkan, level {level}"),
        )?;
    }
    Ok(())
}

/// Images of several shapes in shared blocks, each array mapped at its offset; one import
/// per block.
fn images_both_ways_at_their_offsets((vk, cu): &Env) -> anyhow::Result<()> {
    let pool = pool(vk, cu)?;
    let rgba = vk::Format::R8G8B8A8_UNORM;
    let descs = [
        ImageDesc::d2(64, 64, rgba),
        ImageDesc::d2(640, 360, rgba).mips(3),
        ImageDesc::d2(17, 9, vk::Format::R32_SFLOAT),
        ImageDesc::d2_array(32, 32, 3, rgba),
        ImageDesc::d3(16, 16, 4, rgba),
    ];
    let mut images = Vec::new();
    for d in descs.iter().cycle().take(2 * descs.len()) {
        images.push(
            pool.allocate_image(&transfer(d.clone()))
                .with_context(|| format!("{d:?}"))?,
        );
    }
    let mut offsets = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let (_, offset) = image.vulkan().pool_slot().context("a pooled image")?;
        offsets.push(offset);
        both_ways(vk, cu, image, 10 * i as u32)
            .with_context(|| format!("{:?} at offset {offset}", image.desc()))?;
    }
    ensure!(
        offsets.iter().any(|&o| o > 0),
        "every image at offset 0: {offsets:?}"
    );
    println!(
        "  {} images at offsets {offsets:?}: {} blocks, {} CUDA imports",
        images.len(),
        pool.vulkan().live_blocks(),
        pool.live_imports()
    );
    ensure!(
        pool.live_imports() == pool.vulkan().live_blocks(),
        "one CUDA import per block"
    );
    assert_no_validation_errors(vk)
}

/// A mapping of a pool buffer keeps its slot: while it lives, the next allocation gets
/// another offset; once it drops, the slot is free again.
fn a_mapping_keeps_its_slot((vk, cu): &Env) -> anyhow::Result<()> {
    let pool = pool(vk, cu)?;
    let keep = pool.allocate(4096)?;
    let shared = pool.allocate(4096)?;
    let (block, offset) = shared
        .vulkan()
        .pool_slot()
        .map(|(b, o)| (b.clone(), o))
        .context("pooled")?;
    let mapping = shared.map(0..4096)?;
    drop(shared);
    let next = pool.allocate(4096)?;
    let (_, next_offset) = next.vulkan().pool_slot().context("pooled")?;
    ensure!(
        next_offset != offset,
        "the slot at {offset} went to a new buffer while CUDA still maps it"
    );
    let free = block.free_slots();
    drop(mapping);
    ensure!(
        block.free_slots() == free + 1,
        "the slot was not returned with the mapping"
    );
    drop((keep, next));
    assert_no_validation_errors(vk)
}

/// 2,000 pool image allocate/import/map-level cycles: fds and device memory flat.
fn image_leaks_2000((vk, cu): &Env) -> anyhow::Result<()> {
    let pool = pool(vk, cu)?;
    let desc = transfer(ImageDesc::d2(256, 256, vk::Format::R8G8B8A8_UNORM));
    common::assert_cycles_leak_free(cu, 2_000, || {
        let image = pool.allocate_image(&desc)?;
        drop(image.level(0)?);
        Ok(())
    })?;
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::gpu_probe();
    let tests: [common::Test<Env>; 3] = [
        (
            "pool_images_both_ways_at_their_offsets",
            images_both_ways_at_their_offsets,
        ),
        ("pool_mapping_keeps_its_slot", a_mapping_keeps_its_slot),
        ("pool_image_allocate_free_2000_no_leaks", image_leaks_2000),
    ];
    common::trials_of(&probe, tests, "CUDA device matching the Vulkan device")
}
