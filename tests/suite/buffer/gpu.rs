//! GPU buffer tests: Vulkan buffers used by CUDA kernels with zero copies. They need a
//! CUDA device with the Vulkan device's UUID; without one they are reported ignored.

use crate::common;
use libtest_mimic::Trial;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use anyhow::{ensure, Context as _};
use common::{assert_bytes, assert_no_validation_errors, open_fds, pattern_bytes};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use vkcuda::cuda::{self, ExternalMemory, MappedBuffer};
use vkcuda::external::{DeviceIdentity, MemoryHandle, MemoryImport, Uuid};
use vkcuda::interop::SharedBuffer;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, BufferDesc, ExternalBuffer};
use vkcuda::Error;

const KERNELS: &str = vkcuda_dev::shaders::BUFFER_CU;

type Env = (vulkan::Context, cuda::Context);

struct Kernels {
    stream: Arc<CudaStream>,
    fill: CudaFunction,
    check: CudaFunction,
}

impl Kernels {
    fn new(cu: &cuda::Context) -> anyhow::Result<Self> {
        let module = cu.compile("buffer.cu", KERNELS)?;
        Ok(Self {
            stream: cu.new_stream()?,
            fill: module.load_function("fill_pattern")?,
            check: module.load_function("check_pattern")?,
        })
    }

    fn config() -> LaunchConfig {
        LaunchConfig {
            grid_dim: (1024, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Kernel writes the pattern of `seed` into the mapping, then the stream is synced.
    fn fill(&self, buf: &MappedBuffer, seed: u32) -> anyhow::Result<()> {
        let (ptr, n) = (buf.cu_device_ptr(), buf.len() as u64);
        let mut launch = self.stream.launch_builder(&self.fill);
        launch.arg(&ptr).arg(&n).arg(&seed);
        // SAFETY: fill_pattern(uchar*, u64, u32) writes bytes [0, n) of a live mapping.
        unsafe { launch.launch(Self::config()) }?;
        self.stream.synchronize()?;
        Ok(())
    }

    /// Kernel counts bytes of the mapping that differ from the pattern of `seed`.
    fn check(&self, buf: &MappedBuffer, seed: u32) -> anyhow::Result<()> {
        let (ptr, n) = (buf.cu_device_ptr(), buf.len() as u64);
        let mut bad = self.stream.alloc_zeros::<u64>(1)?;
        let mut first = self.stream.clone_htod(&[u64::MAX])?;
        let mut launch = self.stream.launch_builder(&self.check);
        launch
            .arg(&ptr)
            .arg(&n)
            .arg(&seed)
            .arg(&mut bad)
            .arg(&mut first);
        // SAFETY: check_pattern reads bytes [0, n) of a live mapping and writes one u64
        // to each of two live device allocations.
        unsafe { launch.launch(Self::config()) }?;
        let bad = self.stream.clone_dtoh(&bad)?[0];
        let first = self.stream.clone_dtoh(&first)?[0];
        ensure!(
            bad == 0,
            "CUDA saw {bad} wrong bytes of {n}, first at {first}"
        );
        Ok(())
    }
}

fn cuda_writes_vulkan_reads((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    for size in [1u64, 255, 4097, (1 << 20) + 3, 256 << 20, 1 << 30] {
        let shared = SharedBuffer::new(vk, cu, &BufferDesc::new(size))?;
        let map = shared.map(0..size)?;
        k.fill(&map, 7)?;
        let got = vk.read_buffer(shared.vulkan(), 0..size)?;
        assert_bytes(&got, &pattern_bytes(size, 7), &format!("size {size}"))?;
    }
    assert_no_validation_errors(vk)
}

fn vulkan_writes_cuda_reads((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    for size in [1u64, 255, 4097, (1 << 20) + 3, 256 << 20, 1 << 30] {
        let shared = SharedBuffer::new(vk, cu, &BufferDesc::new(size))?;
        vk.write_buffer(shared.vulkan(), 0, &pattern_bytes(size, 9))?;
        let map = shared.map(0..size)?;
        k.check(&map, 9).with_context(|| format!("size {size}"))?;
    }
    assert_no_validation_errors(vk)
}

fn mappings_at_offsets((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let size = 1 << 20;
    let shared = SharedBuffer::new(vk, cu, &BufferDesc::new(size))?;
    let ranges = [0..4096u64, 4096..65_536 + 17, 1 << 19..size];
    let maps: Vec<_> = ranges
        .iter()
        .map(|r| shared.map(r.clone()))
        .collect::<Result<_, _>>()?;
    for (i, m) in maps.iter().enumerate() {
        k.fill(m, 100 + i as u32)?;
    }
    for (i, r) in ranges.iter().enumerate() {
        let got = vk.read_buffer(shared.vulkan(), r.clone())?;
        assert_bytes(
            &got,
            &pattern_bytes(r.end - r.start, 100 + i as u32),
            &format!("{r:?}"),
        )?;
    }
    // Two mappings of one range alias the same bytes.
    let again = shared.map(0..4096)?;
    k.check(&again, 100)?;
    assert_no_validation_errors(vk)
}

fn map_errors((vk, cu): &Env) -> anyhow::Result<()> {
    let shared = SharedBuffer::new(vk, cu, &BufferDesc::new(4096))?;
    let arg = |r: vkcuda::Result<MappedBuffer>| match r {
        Err(Error::InvalidArgument { arg, .. }) => Ok(arg),
        Err(e) => Err(anyhow::anyhow!("expected InvalidArgument, got {e}")),
        Ok(_) => Err(anyhow::anyhow!("expected InvalidArgument, got a mapping")),
    };
    ensure!(arg(shared.map(0..4097))? == "range", "past the end");
    ensure!(arg(shared.map(8..8))? == "range", "empty");
    ensure!(
        arg(shared.map(1..64))? == "range.start",
        "misaligned offset"
    );
    let e = shared.map(1..64).expect_err("misaligned");
    ensure!(
        e.to_string().contains("256"),
        "the error names the alignment: {e}"
    );
    Ok(())
}

fn drop_order_is_safe_either_way((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    // Shared buffer dropped first: the mapping keeps the import and the Vulkan memory alive.
    let shared = SharedBuffer::new(vk, cu, &BufferDesc::new(65_536))?;
    let map = shared.map(0..65_536)?;
    let vulkan = shared.vulkan().clone();
    drop(shared);
    k.fill(&map, 3)?;
    assert_bytes(
        &vk.read_buffer(&vulkan, 0..65_536)?,
        &pattern_bytes(65_536, 3),
        "after drop",
    )?;
    drop(vulkan);
    drop(map);
    // Mapping dropped first, then the buffer.
    let shared = SharedBuffer::new(vk, cu, &BufferDesc::new(65_536))?;
    drop(shared.map(0..4096)?);
    drop(shared);
    assert_no_validation_errors(vk)
}

/// Issue 10 row 9: a cudarc operation on a MappedBuffer is tracked, so dropping the buffer
/// waits for it instead of unmapping under it. The stream is held back by a semaphore the
/// host opens 200 ms later; the memset queued behind it must finish before `drop` returns.
fn drop_waits_for_pending_cudarc_work((vk, cu): &Env) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    let shared = SharedBuffer::new(vk, cu, &BufferDesc::new(65_536))?;
    let k = Kernels::new(cu)?;
    let mut map = shared.map(0..65_536)?;
    k.fill(&map, 5)?;
    let gate = vkcuda::interop::SharedSemaphore::timeline(vk, cu, 0)?;
    let stream = cu.new_stream()?;
    gate.cuda().wait(&stream, 1)?;
    let opened = std::thread::scope(|s| -> anyhow::Result<Duration> {
        let opener = s.spawn(|| -> vkcuda::Result<()> {
            std::thread::sleep(Duration::from_millis(200));
            // A queue signal (a host signal of an exported timeline after a counter read
            // trips the old validation layer's VVL#8212 false positive).
            // SAFETY: no command buffers or waits; the queue is drained below.
            unsafe {
                vk.submit(
                    &[],
                    &[],
                    &[(gate.vulkan(), 1)],
                    vkcuda::ash::vk::Fence::null(),
                )
            }
        });
        let t = Instant::now();
        // Without multi-stream tracking the memset itself waits (it synchronises).
        stream.memset_zeros(&mut map)?;
        drop(map);
        let took = t.elapsed();
        opener.join().expect("opener thread")?;
        Ok(took)
    })?;
    ensure!(
        opened >= Duration::from_millis(150),
        "drop returned after {opened:?}, before the gated memset could run"
    );
    assert_bytes(
        &vk.read_buffer(shared.vulkan(), 0..65_536)?,
        &vec![0; 65_536],
        "memset done",
    )?;
    stream.synchronize()?;
    let queue = vk.queue()?;
    // SAFETY: the queue is locked for the call.
    unsafe { vk.device().queue_wait_idle(*queue) }?;
    drop(queue);
    drop(gate);
    assert_no_validation_errors(vk)
}

fn second_export_imports_fine((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let buffer = Arc::new(ExternalBuffer::new(vk, &BufferDesc::new(8192))?);
    let first = SharedBuffer::from_vulkan(buffer.clone(), cu)?;
    let second = SharedBuffer::from_vulkan(buffer, cu)?;
    k.fill(&first.map(0..8192)?, 11)?;
    k.check(&second.map(0..8192)?, 11)?;
    Ok(())
}

fn mismatched_device_lists_both_sides((_, cu): &Env) -> anyhow::Result<()> {
    let fake = DeviceIdentity {
        name: "not a GPU".into(),
        uuid: Uuid([0xab; 16]),
        luid: None,
        node_mask: 0,
    };
    match cuda::Context::matching(&fake) {
        Err(Error::NoMatchingCudaDevice { cuda_seen, .. }) => {
            ensure!(
                cuda_seen.iter().any(|d| d.uuid == cu.uuid()),
                "the error lists the real device: {cuda_seen:?}"
            );
            Ok(())
        }
        Err(e) => anyhow::bail!("expected NoMatchingCudaDevice, got {e}"),
        Ok(c) => anyhow::bail!("matched device #{} for a fake UUID", c.ordinal()),
    }
}

fn foreign_fd_is_refused_by_cuda((_, cu): &Env) -> anyhow::Result<()> {
    let fds = open_fds();
    let dev_null: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let bogus = MemoryImport {
        handle: MemoryHandle::OpaqueFd(dev_null),
        size: 1 << 20,
        dedicated: true,
        memory_type: None,
    };
    // SAFETY: deliberately a lie about the handle; the driver must refuse it.
    let r = unsafe { ExternalMemory::import(cu, bogus) };
    ensure!(r.is_err(), "CUDA imported /dev/null as memory");
    ensure!(
        open_fds() == fds,
        "the refused fd leaked: {fds} -> {}",
        open_fds()
    );
    Ok(())
}

/// 10,000 create/import/map/drop cycles: open fds and free device memory stay flat.
fn no_leaks_10000((vk, cu): &Env) -> anyhow::Result<()> {
    let cycle = || -> anyhow::Result<()> {
        let shared = SharedBuffer::new(vk, cu, &BufferDesc::new(1 << 16))?;
        let a = shared.map(0..1 << 15)?;
        let b = shared.map(1 << 15..1 << 16)?;
        drop((shared, a, b));
        Ok(())
    };
    common::assert_cycles_leak_free(cu, 10_000, cycle)?;
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::gpu_probe();
    let tests: [common::Test<Env>; 10] = [
        (
            "cuda_writes_vulkan_reads_1b_to_1gib",
            cuda_writes_vulkan_reads,
        ),
        (
            "vulkan_writes_cuda_reads_1b_to_1gib",
            vulkan_writes_cuda_reads,
        ),
        ("several_mappings_at_offsets", mappings_at_offsets),
        ("map_errors_are_typed", map_errors),
        (
            "drop_order_is_safe_either_way",
            drop_order_is_safe_either_way,
        ),
        ("second_export_imports_fine", second_export_imports_fine),
        (
            "drop_waits_for_pending_cudarc_work",
            drop_waits_for_pending_cudarc_work,
        ),
        (
            "mismatched_device_lists_both_sides",
            mismatched_device_lists_both_sides,
        ),
        (
            "foreign_fd_is_refused_by_cuda",
            foreign_fd_is_refused_by_cuda,
        ),
        ("create_import_map_drop_10000_no_leaks", no_leaks_10000),
    ];
    common::trials_of(&probe, tests, "CUDA device matching the Vulkan device")
}
