//! The exportable pool's Vulkan half, on any Vulkan device with `VK_KHR_external_memory_fd`
//! (lavapipe in CI): buffers sub-allocated from exported blocks, each block exported and
//! imported back through Vulkan, and bytes read at every buffer's offset; every refusal;
//! and a leak loop of buffers and images.

use crate::common;
use libtest_mimic::Trial;

use std::collections::BTreeMap;

use anyhow::{ensure, Context as _};
use common::{
    assert_bytes, assert_no_validation_errors, expect_invalid_arg, expect_unsupported,
    pattern_bytes,
};
use vkcuda::external::MemoryHandleType;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{
    BufferDesc, Context, ExportPool, ExternalBuffer, ImageDesc, PoolDesc, MIN_SLOT,
};

fn small_pool(vk: &Context) -> vkcuda::Result<ExportPool> {
    ExportPool::new(
        vk,
        &PoolDesc {
            block_size: 1 << 20,
            ..PoolDesc::default()
        },
    )
}

/// Imports `block`'s export back as one buffer over the whole block.
fn reimport(vk: &Context, buffer: &ExternalBuffer) -> anyhow::Result<ExternalBuffer> {
    let (block, _) = buffer.pool_slot().context("a pooled buffer")?;
    let import = block.export()?;
    ensure!(!import.dedicated, "pool blocks are shared allocations");
    ensure!(import.size == block.size(), "export size is the block size");
    // SAFETY: the block's own export on the same device, of its whole size, not dedicated,
    // in the memory type a buffer of the pool's usage selects (the pool chose it that way).
    Ok(unsafe { ExternalBuffer::import(vk, &BufferDesc::new(block.size()), import) }?)
}

fn sub_allocations_read_back_at_their_offsets(vk: &Context) -> anyhow::Result<()> {
    let pool = small_pool(vk)?;
    let sizes = [
        1u64,
        3,
        255,
        256,
        257,
        1000,
        4096,
        4097,
        65_536,
        100_000,
        1 << 20,
    ];
    let mut buffers = Vec::new();
    for (i, &size) in sizes.iter().cycle().take(3 * sizes.len()).enumerate() {
        let b = pool.allocate(size)?;
        vk.write_buffer(&b, 0, &pattern_bytes(size, i as u32))?;
        buffers.push((b, size, i as u32));
    }
    // Offsets: aligned, inside the block, never overlapping within a block.
    let mut by_block: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
    for (b, size, _) in &buffers {
        let (block, offset) = b.pool_slot().context("pooled")?;
        ensure!(offset % MIN_SLOT == 0, "offset {offset} not 256-aligned");
        ensure!(
            offset % block.slot_size() == 0,
            "offset {offset} not slot-aligned"
        );
        ensure!(
            offset + size <= block.size(),
            "{size} bytes at {offset} overrun the block"
        );
        ensure!(b.allocation_size() >= *size, "slot smaller than the buffer");
        by_block
            .entry(std::sync::Arc::as_ptr(block) as usize)
            .or_default()
            .push((offset, offset + block.slot_size()));
    }
    for ranges in by_block.values_mut() {
        ranges.sort_unstable();
        ensure!(
            ranges.windows(2).all(|w| w[0].1 <= w[1].0),
            "overlapping slots {ranges:?}"
        );
    }
    // One export per block, read through the reimport at each buffer's offset.
    for (b, size, seed) in &buffers {
        let (_, offset) = b.pool_slot().context("pooled")?;
        let whole = reimport(vk, b)?;
        let got = vk.read_buffer(&whole, offset..offset + size)?;
        assert_bytes(
            &got,
            &pattern_bytes(*size, *seed),
            &format!("{size} B at {offset}"),
        )?;
    }
    ensure!(
        pool.live_blocks() == by_block.len(),
        "{} live blocks, {} used",
        pool.live_blocks(),
        by_block.len()
    );
    assert_no_validation_errors(vk)
}

fn writes_through_the_block_reach_the_buffer(vk: &Context) -> anyhow::Result<()> {
    let pool = small_pool(vk)?;
    let a = pool.allocate(4096)?;
    let b = pool.allocate(4096)?;
    let whole = reimport(vk, &b)?;
    let (_, offset) = b.pool_slot().context("pooled")?;
    vk.write_buffer(&whole, offset, &pattern_bytes(4096, 5))?;
    vk.fill_buffer(&a, 0..4096, 0x0102_0304)?;
    assert_bytes(&vk.read_buffer(&b, 0..4096)?, &pattern_bytes(4096, 5), "b")?;
    assert_no_validation_errors(vk)
}

fn many_buffers_share_one_block(vk: &Context) -> anyhow::Result<()> {
    let pool = ExportPool::new(vk, &PoolDesc::default())?;
    let buffers: Vec<_> = (0..1000)
        .map(|_| pool.allocate(64 << 10))
        .collect::<Result<_, _>>()?;
    ensure!(
        pool.live_blocks() == 1,
        "{} blocks for 1000 x 64 KiB",
        pool.live_blocks()
    );
    let (block, _) = buffers[0].pool_slot().context("pooled")?;
    ensure!(
        block.free_slots() == 24,
        "{} free slots",
        block.free_slots()
    );
    drop(buffers);
    ensure!(pool.live_blocks() == 0, "the block outlived its buffers");
    Ok(())
}

fn freeing_returns_the_range(vk: &Context) -> anyhow::Result<()> {
    let pool = small_pool(vk)?;
    let keep = pool.allocate(1000)?;
    let a = pool.allocate(1000)?;
    let (block, offset) = a
        .pool_slot()
        .map(|(b, o)| (b.clone(), o))
        .context("pooled")?;
    let free = block.free_slots();
    drop(a);
    ensure!(block.free_slots() == free + 1, "the slot was not returned");
    let again = pool.allocate(1000)?;
    let (_, reused) = again.pool_slot().context("pooled")?;
    ensure!(
        reused == offset,
        "freed offset {offset} not reused (got {reused})"
    );
    drop((keep, again, block));
    ensure!(pool.live_blocks() == 0, "block alive after its last buffer");
    Ok(())
}

fn block_outlives_the_pool_while_used(vk: &Context) -> anyhow::Result<()> {
    let pool = small_pool(vk)?;
    let a = pool.allocate(512)?;
    drop(pool);
    vk.write_buffer(&a, 0, &[1, 2, 3])?;
    assert_bytes(
        &vk.read_buffer(&a, 0..3)?,
        &[1, 2, 3],
        "after the pool dropped",
    )?;
    assert_no_validation_errors(vk)
}

fn refusals_are_typed(vk: &Context) -> anyhow::Result<()> {
    let pool = small_pool(vk)?;
    expect_invalid_arg(pool.allocate(0), "size")?;
    expect_invalid_arg(pool.allocate(u64::MAX), "size")?;
    let bad = |block_size| {
        ExportPool::new(
            vk,
            &PoolDesc {
                block_size,
                ..PoolDesc::default()
            },
        )
    };
    expect_invalid_arg(bad(0), "desc.block_size")?;
    expect_invalid_arg(bad(MIN_SLOT - 1), "desc.block_size")?;
    expect_invalid_arg(bad(u64::MAX), "desc.block_size")?;
    let win32 = ExportPool::new(
        vk,
        &PoolDesc {
            handle_type: MemoryHandleType::OpaqueWin32,
            ..PoolDesc::default()
        },
    );
    expect_unsupported(win32, &["OpaqueWin32"])?;
    let a = pool.allocate(64)?;
    expect_unsupported(a.export(), &["pooled", "offset"])?;
    expect_unsupported(a.alias(), &["pooled"])?;
    expect_invalid_arg(vk.read_buffer(&a, 0..65), "range")?;
    assert_no_validation_errors(vk)
}

/// 1,000 allocate/free cycles of a buffer and an image, each making, exporting and freeing
/// their blocks: open fds stay flat and no block outlives its resources.
fn allocate_free_cycles_leak_no_fds(vk: &Context) -> anyhow::Result<()> {
    let pool = small_pool(vk)?;
    let desc = super::transfer(ImageDesc::d2(256, 256, ash::vk::Format::R8G8B8A8_UNORM));
    let cycle = || -> anyhow::Result<()> {
        let a = pool.allocate(4096)?;
        let image = pool.allocate_image(&desc)?;
        for (block, _) in [a.pool_slot(), image.pool_slot()].into_iter().flatten() {
            drop(block.export()?);
        }
        Ok(())
    };
    common::assert_cycles_keep_fds(1000, cycle)?;
    ensure!(pool.live_blocks() == 0, "blocks left alive");
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::vulkan_probe();
    let tests: [common::Test<Context>; 7] = [
        (
            "sub_allocations_read_back_at_their_offsets",
            sub_allocations_read_back_at_their_offsets,
        ),
        (
            "writes_through_the_block_reach_the_buffer",
            writes_through_the_block_reach_the_buffer,
        ),
        ("many_buffers_share_one_block", many_buffers_share_one_block),
        ("freeing_returns_the_range", freeing_returns_the_range),
        (
            "block_outlives_the_pool_while_used",
            block_outlives_the_pool_while_used,
        ),
        ("refusals_are_typed", refusals_are_typed),
        (
            "allocate_free_1000_no_fd_leak",
            allocate_free_cycles_leak_no_fds,
        ),
    ];
    common::trials_of(&probe, tests, "Vulkan device with external memory")
}
