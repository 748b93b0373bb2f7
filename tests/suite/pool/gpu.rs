//! GPU tests of memory shared the other way and in bulk: CUDA-owned (VMM) memory imported
//! into Vulkan ([`SharedBuffer::from_cuda`]) and pool sub-allocations imported into CUDA
//! once per block ([`SharedPool`]). Ordering is proven by data: one side writes a pattern,
//! the side that reads after it (stream sync / fence wait) must see every byte. Without a
//! CUDA device matching the Vulkan device the trials are reported ignored.

use crate::common;
use libtest_mimic::Trial;

use anyhow::{ensure, Context as _};
use common::{assert_bytes, assert_no_validation_errors, expect_invalid_arg, pattern_bytes};
use vkcuda::cuda::{self, VmmAllocation};
use vkcuda::external::MemoryHandleType;
use vkcuda::interop::{SharedBuffer, SharedPool};
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, BufferDesc, PoolDesc};

type Env = (vulkan::Context, cuda::Context);

/// Sizes around the granularity, slot sizes and alignment, unaligned ones included.
const SIZES: [u64; 12] = [
    1,
    3,
    255,
    256,
    257,
    4095,
    4097,
    65_536,
    100_003,
    (2 << 20) - 1,
    (2 << 20) + 1,
    (64 << 20) + 7,
];

/// CUDA copies a pattern in, the stream is synced, Vulkan reads it back; then Vulkan
/// writes another pattern and CUDA reads it back.
fn both_ways(
    vk: &vulkan::Context,
    cu: &cuda::Context,
    shared: &SharedBuffer,
    seed: u32,
) -> anyhow::Result<()> {
    let size = shared.size();
    let stream = cu.new_stream()?;
    let mut map = shared.map(0..size)?;
    stream.memcpy_htod(&pattern_bytes(size, seed), &mut map)?;
    stream.synchronize()?;
    let got = vk.read_buffer(shared.vulkan(), 0..size)?;
    assert_bytes(&got, &pattern_bytes(size, seed), "CUDA -> Vulkan")?;
    vk.write_buffer(shared.vulkan(), 0, &pattern_bytes(size, seed + 1))?;
    let got = stream.clone_dtoh(&map)?;
    assert_bytes(&got, &pattern_bytes(size, seed + 1), "Vulkan -> CUDA")
}

fn vmm_both_ways((vk, cu): &Env) -> anyhow::Result<()> {
    for (i, size) in SIZES.into_iter().enumerate() {
        let shared = SharedBuffer::from_cuda(vk, cu, &BufferDesc::new(size))?;
        let vmm = shared.vmm().context("CUDA owns it")?;
        ensure!(vmm.size() >= size && vmm.size() % cuda::vmm_granularity(cu)? == 0);
        both_ways(vk, cu, &shared, i as u32).with_context(|| format!("size {size}"))?;
    }
    assert_no_validation_errors(vk)
}

fn vmm_mappings_at_offsets((vk, cu): &Env) -> anyhow::Result<()> {
    let size = 4 << 20;
    let shared = SharedBuffer::from_cuda(vk, cu, &BufferDesc::new(size))?;
    let stream = cu.new_stream()?;
    let ranges = [0..4096u64, 4096..70_000, (1 << 20) + 256..size];
    for (i, r) in ranges.iter().enumerate() {
        let mut m = shared.map(r.clone())?;
        stream.memcpy_htod(&pattern_bytes(r.end - r.start, 40 + i as u32), &mut m)?;
    }
    stream.synchronize()?;
    for (i, r) in ranges.iter().enumerate() {
        let got = vk.read_buffer(shared.vulkan(), r.clone())?;
        assert_bytes(
            &got,
            &pattern_bytes(r.end - r.start, 40 + i as u32),
            &format!("{r:?}"),
        )?;
    }
    assert_no_validation_errors(vk)
}

fn vmm_drop_order_either_way((vk, cu): &Env) -> anyhow::Result<()> {
    // The CUDA allocation goes first: Vulkan still reads what CUDA wrote.
    let shared = SharedBuffer::from_cuda(vk, cu, &BufferDesc::new(1 << 16))?;
    let stream = cu.new_stream()?;
    let mut map = shared.map(0..1 << 16)?;
    stream.memcpy_htod(&pattern_bytes(1 << 16, 77), &mut map)?;
    stream.synchronize()?;
    let vulkan = shared.vulkan().clone();
    drop((shared, map));
    assert_bytes(
        &vk.read_buffer(&vulkan, 0..1 << 16)?,
        &pattern_bytes(1 << 16, 77),
        "after CUDA let go",
    )?;
    // The Vulkan buffer goes first: CUDA's mapping still works.
    let shared = SharedBuffer::from_cuda(vk, cu, &BufferDesc::new(1 << 16))?;
    let mut map = shared.map(0..1 << 16)?;
    drop(shared);
    stream.memcpy_htod(&pattern_bytes(1 << 16, 78), &mut map)?;
    ensure!(stream.clone_dtoh(&map)? == pattern_bytes(1 << 16, 78));
    assert_no_validation_errors(vk)
}

fn vmm_refusals((vk, cu): &Env) -> anyhow::Result<()> {
    expect_invalid_arg(VmmAllocation::new(cu, 0), "size")?;
    expect_invalid_arg(VmmAllocation::new(cu, u64::MAX), "size")?;
    let dma = BufferDesc::new(4096).handle_type(MemoryHandleType::DmaBufFd);
    expect_invalid_arg(SharedBuffer::from_cuda(vk, cu, &dma), "desc.handle_type")?;
    expect_invalid_arg(SharedBuffer::from_cuda(vk, cu, &BufferDesc::new(0)), "size")?;
    let alloc = VmmAllocation::new(cu, 1)?;
    expect_invalid_arg(alloc.map(1..2), "range.start")?;
    expect_invalid_arg(alloc.map(0..alloc.size() + 1), "range.end")?;
    Ok(())
}

fn pool_both_ways_at_many_offsets((vk, cu): &Env) -> anyhow::Result<()> {
    let pool = SharedPool::new(vk, cu, &PoolDesc::default())?;
    let mut buffers = Vec::new();
    for (i, size) in SIZES.into_iter().cycle().take(3 * SIZES.len()).enumerate() {
        let shared = pool.allocate(size)?;
        both_ways(vk, cu, &shared, 200 + i as u32).with_context(|| format!("#{i}: {size} B"))?;
        buffers.push((shared, size, 200 + i as u32));
    }
    // Every buffer still holds what Vulkan last wrote: no neighbour overwrote it.
    let stream = cu.new_stream()?;
    for (shared, size, seed) in &buffers {
        let map = shared.map(0..*size)?;
        assert_bytes(
            &stream.clone_dtoh(&map)?,
            &pattern_bytes(*size, seed + 1),
            "neighbours",
        )?;
        ensure!(map.cu_device_ptr() % 256 == 0, "pointer not 256-aligned");
    }
    ensure!(
        pool.live_imports() == pool.vulkan().live_blocks(),
        "{} imports for {} blocks",
        pool.live_imports(),
        pool.vulkan().live_blocks()
    );
    drop(buffers);
    ensure!(
        pool.live_imports() == 0 && pool.vulkan().live_blocks() == 0,
        "blocks outlived their buffers"
    );
    assert_no_validation_errors(vk)
}

fn pool_1000_buffers_one_import((vk, cu): &Env) -> anyhow::Result<()> {
    let pool = SharedPool::new(vk, cu, &PoolDesc::default())?;
    let buffers: Vec<_> = (0..1000)
        .map(|_| pool.allocate(64 << 10))
        .collect::<Result<_, _>>()?;
    ensure!(pool.live_imports() == 1, "{} imports", pool.live_imports());
    let maps: Vec<_> = buffers
        .iter()
        .map(|b| b.map(0..64 << 10))
        .collect::<Result<_, _>>()?;
    let base = maps.iter().map(|m| m.cu_device_ptr()).min().unwrap_or(0);
    for (b, m) in buffers.iter().zip(&maps) {
        let (_, offset) = b.vulkan().pool_slot().context("pooled")?;
        ensure!(
            m.cu_device_ptr() - base == offset,
            "CUDA pointer not at the Vulkan offset"
        );
    }
    assert_no_validation_errors(vk)
}

/// 10,000 pool allocate/map/free cycles, each sharing a new block.
fn pool_leaks_10000((vk, cu): &Env) -> anyhow::Result<()> {
    let pool = SharedPool::new(
        vk,
        cu,
        &PoolDesc {
            block_size: 1 << 20,
            ..PoolDesc::default()
        },
    )?;
    common::assert_cycles_leak_free(cu, 10_000, || {
        let shared = pool.allocate(4096)?;
        drop(shared.map(0..4096)?);
        Ok(())
    })?;
    assert_no_validation_errors(vk)
}

/// 2,000 VMM create/export/import/map cycles.
fn vmm_leaks_2000((vk, cu): &Env) -> anyhow::Result<()> {
    common::assert_cycles_leak_free(cu, 2_000, || {
        let shared = SharedBuffer::from_cuda(vk, cu, &BufferDesc::new(1 << 16))?;
        drop(shared.map(0..1 << 16)?);
        Ok(())
    })?;
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::gpu_probe();
    let tests: [common::Test<Env>; 8] = [
        ("vmm_cuda_and_vulkan_both_ways", vmm_both_ways),
        ("vmm_mappings_at_offsets", vmm_mappings_at_offsets),
        ("vmm_drop_order_either_way", vmm_drop_order_either_way),
        ("vmm_refusals_are_typed", vmm_refusals),
        (
            "pool_both_ways_at_many_offsets",
            pool_both_ways_at_many_offsets,
        ),
        ("pool_1000_buffers_one_import", pool_1000_buffers_one_import),
        ("pool_allocate_free_10000_no_leaks", pool_leaks_10000),
        ("vmm_create_export_import_2000_no_leaks", vmm_leaks_2000),
    ];
    common::trials_of(&probe, tests, "CUDA device matching the Vulkan device")
}
