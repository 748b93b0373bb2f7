//! GPU tests of Vulkan <-> CUDA synchronisation: `SharedSemaphore` (timeline and binary,
//! batched waits) and `FrameSync` (both modes, N = 1..4 frames in flight). They need a CUDA
//! device with the Vulkan device's UUID; without one they are reported ignored.
//!
//! Ordering is proven by data, never by "it ran": for frame `i` Vulkan fills a region with
//! `k = key(i)`, a CUDA kernel counts the words that are not `k` and writes `k + 1` to all of
//! them, Vulkan copies three sample words of the region, and afterwards the host checks
//! that CUDA saw `k` everywhere (Vulkan -> CUDA order) and Vulkan read `k + 1` (CUDA ->
//! Vulkan order), frame by frame.

use crate::common;
use libtest_mimic::Trial;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use ash::vk;
use common::{trial, validation_since, validation_snapshot};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use vkcuda::cuda::{self, ExternalSemaphore, MappedBuffer};
use vkcuda::interop::{
    FrameSync, FrameSyncDesc, QueueLayout, SharedBuffer, SharedSemaphore, SyncMode,
};
use vkcuda::util::{Commands, OneShot};
use vkcuda::vulkan::{self, BufferDesc, ExternalBuffer, Semaphore, SemaphoreDesc, SemaphoreKind};
use vkcuda::Error;

const KERNELS: &str = vkcuda_dev::shaders::SYNC_CU;
/// Words of one frame region: one per CUDA thread of `bump`'s launch.
const WORDS: u64 = 16 * 1024;
/// Bytes of one frame region.
const REGION: u64 = 4 * WORDS;
/// Bytes of samples Vulkan copies per frame: the first, middle and last word, padded.
const SAMPLE: u64 = 16;
/// Where in a region the samples are taken.
const SAMPLED: [u64; 3] = [0, REGION / 2, REGION - 4];
/// Generous bound for every host wait of these tests.
const TIMEOUT: Duration = Duration::from_secs(20);
const ALL: vk::PipelineStageFlags = vk::PipelineStageFlags::ALL_COMMANDS;

type Env = (vulkan::Context, cuda::Context);

/// The value Vulkan writes for frame `i`; CUDA then writes `key(i) + 1`.
fn key(i: u64) -> u32 {
    0x1000_0000u32.wrapping_add(2 * i as u32)
}

/// Per-lane command pools with a "produce" and a "consume" command buffer each,
/// re-recorded for every frame.
struct Recorder {
    vk: vulkan::Context,
    pools: Vec<vk::CommandPool>,
    cmds: Vec<Vec<vk::CommandBuffer>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for &pool in &self.pools {
            // SAFETY: the pools belong to this device; every test drains the queues (or
            // drops its FrameSync, which does) before dropping the recorder.
            unsafe { self.vk.device().destroy_command_pool(pool, None) };
        }
    }
}

impl Recorder {
    fn new(vk: &vulkan::Context, lanes: usize) -> anyhow::Result<Self> {
        let mut r = Self {
            vk: vk.clone(),
            pools: Vec::new(),
            cmds: Vec::new(),
        };
        for _ in 0..lanes {
            let info =
                vk::CommandPoolCreateInfo::default().queue_family_index(vk.queue_family_index());
            // SAFETY: valid device and create info.
            let pool = unsafe { vk.device().create_command_pool(&info, None) }?;
            r.pools.push(pool);
            let alloc = vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(2);
            // SAFETY: the pool was just created from this device.
            r.cmds
                .push(unsafe { vk.device().allocate_command_buffers(&alloc) }?);
        }
        Ok(r)
    }

    /// Resets `lane`'s pool and records its two command buffers with `produce` and
    /// `consume`.
    ///
    /// # Safety
    /// The lane's command buffers are not pending (its previous frame has finished).
    unsafe fn record(
        &self,
        lane: usize,
        produce: impl FnOnce(&ash::Device, vk::CommandBuffer),
        consume: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> anyhow::Result<[vk::CommandBuffer; 2]> {
        let d = self.vk.device();
        // SAFETY: the caller guarantees that nothing from the pool is pending.
        unsafe { d.reset_command_pool(self.pools[lane], vk::CommandPoolResetFlags::empty()) }?;
        let cmds = [self.cmds[lane][0], self.cmds[lane][1]];
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        for (cmd, record) in cmds.iter().zip([
            Box::new(produce) as Box<dyn FnOnce(&ash::Device, vk::CommandBuffer)>,
            Box::new(consume),
        ]) {
            // SAFETY: the buffer was reset with its pool.
            unsafe { d.begin_command_buffer(*cmd, &begin) }?;
            record(d, *cmd);
            // SAFETY: recording began above.
            unsafe { d.end_command_buffer(*cmd) }?;
        }
        Ok(cmds)
    }
}

/// The data of an ordering test: `lanes` shared regions, per-frame samples (Vulkan) and
/// per-frame mismatch counters (CUDA), and the kernel.
struct Rig {
    vk: vulkan::Context,
    bump: CudaFunction,
    /// Declared before `data`: the mapping goes first.
    map: MappedBuffer,
    data: SharedBuffer,
    samples: ExternalBuffer,
    errors: CudaSlice<u32>,
    errors_ptr: u64,
    host_stream: Arc<CudaStream>,
    frames: u64,
    rec: Recorder,
}

impl Rig {
    fn new(
        vk: &vulkan::Context,
        cu: &cuda::Context,
        lanes: usize,
        frames: u64,
    ) -> anyhow::Result<Self> {
        let bump = cu.compile("sync.cu", KERNELS)?.load_function("bump")?;
        let data = SharedBuffer::new(vk, cu, &BufferDesc::new(REGION * lanes as u64))?;
        let map = data.map(0..data.size())?;
        let samples = ExternalBuffer::new(vk, &BufferDesc::new(SAMPLE * frames))?;
        let host_stream = cu.new_stream()?;
        let errors = host_stream.alloc_zeros::<u32>(frames as usize)?;
        let errors_ptr = {
            let (ptr, _sync) = errors.device_ptr(&host_stream);
            ptr
        };
        // The kernels use raw pointers on other streams: the zeroing must be done first.
        host_stream.synchronize()?;
        Ok(Self {
            vk: vk.clone(),
            bump,
            map,
            data,
            samples,
            errors,
            errors_ptr,
            host_stream,
            frames,
            rec: Recorder::new(vk, lanes)?,
        })
    }

    /// Records frame `i` of `lane`: fill its region with `key(i)`; copy the samples.
    ///
    /// # Safety
    /// The lane's command buffers are not pending.
    unsafe fn record(&self, lane: usize, i: u64) -> anyhow::Result<[vk::CommandBuffer; 2]> {
        let buffer = self.data.vulkan().raw();
        let samples = self.samples.raw();
        let base = REGION * lane as u64;
        let produce = |d: &ash::Device, cmd| {
            // SAFETY: recording; the region lies in the buffer, offsets are multiples of 4.
            unsafe { d.cmd_fill_buffer(cmd, buffer, base, REGION, key(i)) };
        };
        let consume = |d: &ash::Device, cmd| {
            let regions: Vec<vk::BufferCopy> = SAMPLED
                .iter()
                .enumerate()
                .map(|(j, at)| {
                    vk::BufferCopy::default()
                        .src_offset(base + at)
                        .dst_offset(SAMPLE * i + 4 * j as u64)
                        .size(4)
                })
                .collect();
            // SAFETY: recording; every region lies in its buffer.
            unsafe { d.cmd_copy_buffer(cmd, buffer, samples, &regions) };
        };
        // SAFETY: forwarded from this function's contract.
        unsafe { self.rec.record(lane, produce, consume) }
    }

    /// Launches `bump` for frame `i` of `lane` on `stream`.
    fn launch(&self, stream: &CudaStream, lane: usize, i: u64) -> anyhow::Result<()> {
        let region = self.map.cu_device_ptr() + REGION * lane as u64;
        let bad = self.errors_ptr + 4 * i;
        let (n, k) = (WORDS, key(i));
        let cfg = LaunchConfig {
            grid_dim: ((WORDS / 256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&self.bump);
        launch.arg(&region).arg(&n).arg(&k).arg(&bad);
        // SAFETY: bump(uint*, u64, uint, uint*) touches WORDS words of a live region and
        // one counter of the live `errors` allocation (frame `i` < frames).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// Checks frames `0..frames`: CUDA saw `key(i)` in every word, Vulkan read
    /// `key(i) + 1` at every sample.
    fn check(&self, frames: u64) -> anyhow::Result<()> {
        let errors = self.host_stream.clone_dtoh(&self.errors)?;
        let samples = self
            .vk
            .read_buffer(&self.samples, 0..SAMPLE * self.frames)?;
        for i in 0..frames {
            let bad = errors[i as usize];
            ensure!(
                bad == 0,
                "frame {i}: CUDA ran before Vulkan's write: {bad} of {WORDS} words were not {:#x}",
                key(i)
            );
            for (j, at) in SAMPLED.iter().enumerate() {
                let o = (SAMPLE * i) as usize + 4 * j;
                let got = u32::from_ne_bytes(samples[o..o + 4].try_into()?);
                ensure!(
                    got == key(i) + 1,
                    "frame {i}: Vulkan read {got:#x} at byte {at} of its region, expected \
                     CUDA's {:#x} (Vulkan ran before CUDA finished)",
                    key(i) + 1
                );
            }
        }
        Ok(())
    }
}

/// Waits until every queue of the context has finished what was submitted to it (an empty
/// batch with a fence per queue, so the validation layer retires every earlier batch).
fn drain_queues(vk: &vulkan::Context) -> anyhow::Result<()> {
    // SAFETY: valid device and create info.
    let fence = unsafe {
        vk.device()
            .create_fence(&vk::FenceCreateInfo::default(), None)
    }?;
    let drained = (|| -> anyhow::Result<()> {
        for q in 0..vk.queue_count() {
            // SAFETY: an empty batch with an unsignalled fence of this device.
            unsafe { vk.submit_to(q, &[], &[], &[], fence) }?;
            // SAFETY: the fence belongs to this device.
            unsafe { vk.device().wait_for_fences(&[fence], true, 20_000_000_000) }
                .with_context(|| format!("draining queue {q}"))?;
            // SAFETY: signalled and no longer in use.
            unsafe { vk.device().reset_fences(&[fence]) }?;
        }
        Ok(())
    })();
    if drained.is_ok() {
        // SAFETY: every use of the fence has completed.
        unsafe { vk.device().destroy_fence(fence, None) };
    }
    drained
}

/// `frames` frames through a `FrameSync` made from `desc`, ordering checked by data.
fn frame_sync_ordering((vk, cu): &Env, desc: &FrameSyncDesc, frames: u64) -> anyhow::Result<()> {
    let before = validation_snapshot(vk);
    let n = desc.frames_in_flight;
    let rig = Rig::new(vk, cu, n, frames)?;
    let mut sync = FrameSync::new(vk, cu, &desc.clone().timeout(TIMEOUT))?;
    let t0 = Instant::now();
    for i in 0..frames {
        let mut f = sync.begin()?;
        ensure!(
            (f.index(), f.value(), f.slot()) == (i, i + 1, i as usize % n),
            "frame {i}: {f:?}"
        );
        // SAFETY: `begin` returned, so the slot's previous frame (its command buffers) is done.
        let [produce, consume] = unsafe { rig.record(f.slot(), i) }?;
        // SAFETY: recorded for the context's family; the rig outlives the FrameSync.
        unsafe { f.submit_vulkan(&[produce], &[], &[], vk::Fence::null()) }?;
        let stream = f.cuda_wait()?;
        rig.launch(&stream, f.slot(), i)?;
        f.cuda_signal()?;
        // SAFETY: as above.
        let value = unsafe { f.submit_vulkan_after_cuda(&[consume], &[], &[], vk::Fence::null()) }?;
        ensure!(value == i + 1, "frame {i} finished with value {value}");
    }
    sync.wait_idle(TIMEOUT)?;
    let took = t0.elapsed();
    drop(sync);
    rig.check(frames)?;
    println!(
        "  {frames} frames, {:?}, {n} in flight, lanes {:?}: {:.0} frames/s",
        desc.mode,
        desc.layout(),
        frames as f64 / took.as_secs_f64()
    );
    drop(rig);
    validation_since(vk, &before, &[])
}

/// Vulkan -> CUDA -> Vulkan through `SharedSemaphore`s of `kind`, without FrameSync:
/// `lanes` chains (own queue, stream, semaphore pair, Vulkan-only completion timeline),
/// frames dealt round-robin.
fn shared_chain(
    (vk, cu): &Env,
    kind: SemaphoreKind,
    lanes: usize,
    frames: u64,
) -> anyhow::Result<()> {
    let before = validation_snapshot(vk);
    let rig = Rig::new(vk, cu, lanes, frames)?;
    let desc = match kind {
        SemaphoreKind::Timeline => SemaphoreDesc::timeline(0),
        SemaphoreKind::Binary => SemaphoreDesc::binary(),
    };
    struct Lane {
        to_cuda: SharedSemaphore,
        to_vulkan: SharedSemaphore,
        done: Semaphore,
        stream: Arc<CudaStream>,
        queue: usize,
    }
    let chains = (0..lanes)
        .map(|l| -> anyhow::Result<Lane> {
            Ok(Lane {
                to_cuda: SharedSemaphore::new(vk, cu, &desc)?,
                to_vulkan: SharedSemaphore::new(vk, cu, &desc)?,
                done: Semaphore::local(vk, SemaphoreKind::Timeline, 0)?,
                stream: cu.new_stream()?,
                queue: l % vk.queue_count(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let run = || -> anyhow::Result<()> {
        for i in 0..frames {
            let l = i as usize % lanes;
            let lane = &chains[l];
            let v = i / lanes as u64 + 1; // the lane's own count, from 1
            let sv = if kind == SemaphoreKind::Timeline {
                v
            } else {
                0
            };
            if v > 1 {
                lane.done.wait(v - 1, TIMEOUT)?;
            }
            // SAFETY: the lane's previous frame is done (waited above).
            let [produce, consume] = unsafe { rig.record(l, i) }?;
            // SAFETY: recorded for the family; everything outlives the batches (drained
            // below before anything is dropped); the CUDA wait below consumes the signal.
            unsafe {
                vk.submit_to(
                    lane.queue,
                    &[produce],
                    &[],
                    &[(lane.to_cuda.vulkan(), sv)],
                    vk::Fence::null(),
                )
            }?;
            lane.to_cuda.cuda().wait(&lane.stream, sv)?;
            rig.launch(&lane.stream, l, i)?;
            lane.to_vulkan.cuda().signal(&lane.stream, sv)?;
            // SAFETY: as above; CUDA's signal of `sv` was enqueued just now.
            unsafe {
                vk.submit_to(
                    lane.queue,
                    &[consume],
                    &[(lane.to_vulkan.vulkan(), sv, ALL)],
                    &[(&lane.done, v)],
                    vk::Fence::null(),
                )
            }?;
        }
        Ok(())
    };
    let ran = run();
    let drained = drain_queues(vk);
    ran?;
    drained?;
    drop(chains);
    rig.check(frames)?;
    drop(rig);
    validation_since(vk, &before, &[])
}

fn timeline_chains(env: &Env) -> anyhow::Result<()> {
    for lanes in [1, 4] {
        shared_chain(env, SemaphoreKind::Timeline, lanes, 1000)
            .with_context(|| format!("{lanes} lane(s)"))?;
    }
    Ok(())
}

fn binary_chains(env: &Env) -> anyhow::Result<()> {
    for lanes in [1, 2] {
        shared_chain(env, SemaphoreKind::Binary, lanes, 1000)
            .with_context(|| format!("{lanes} lane(s)"))?;
    }
    Ok(())
}

/// Every queue layout with one stream and with a stream per slot, in both modes.
fn every_layout(env: &Env) -> anyhow::Result<()> {
    for mode in [SyncMode::Semaphores, SyncMode::LowLatency] {
        for layout in [
            QueueLayout::PerSlot,
            QueueLayout::Single,
            QueueLayout::Split,
        ] {
            for streams in [1, 3] {
                let desc = FrameSyncDesc::new(3).mode(mode).lanes(layout, streams);
                frame_sync_ordering(env, &desc, 600)
                    .with_context(|| format!("{mode:?} {layout:?} x {streams}"))?;
            }
        }
    }
    Ok(())
}

/// CUDA waits on four Vulkan-signalled timelines in one call and signals two in one call,
/// ordering checked by data per lane.
fn batched_waits((vk, cu): &Env) -> anyhow::Result<()> {
    const LANES: usize = 4;
    const ITERS: u64 = 300;
    let before = validation_snapshot(vk);
    let rig = Rig::new(vk, cu, LANES, ITERS * LANES as u64)?;
    let to_cuda = (0..LANES)
        .map(|_| SharedSemaphore::timeline(vk, cu, 0))
        .collect::<vkcuda::Result<Vec<_>>>()?;
    let back = [
        SharedSemaphore::timeline(vk, cu, 0)?,
        SharedSemaphore::timeline(vk, cu, 0)?,
    ];
    let done = Semaphore::local(vk, SemaphoreKind::Timeline, 0)?;
    let stream = cu.new_stream()?;
    let run = || -> anyhow::Result<()> {
        for it in 0..ITERS {
            let v = it + 1;
            if it > 0 {
                done.wait(it, TIMEOUT)?;
            }
            let mut consumes = Vec::new();
            for (lane, sem) in to_cuda.iter().enumerate() {
                let frame = it * LANES as u64 + lane as u64;
                // SAFETY: the previous iteration is done (waited above).
                let [produce, consume] = unsafe { rig.record(lane, frame) }?;
                consumes.push(consume);
                // SAFETY: recorded for the family; drained before anything is dropped.
                unsafe { vk.submit(&[produce], &[], &[(sem.vulkan(), v)], vk::Fence::null()) }?;
            }
            let waits: Vec<(&ExternalSemaphore, u64)> =
                to_cuda.iter().map(|s| (s.cuda(), v)).collect();
            ExternalSemaphore::wait_many(&stream, &waits)?;
            for lane in 0..LANES {
                rig.launch(&stream, lane, it * LANES as u64 + lane as u64)?;
            }
            ExternalSemaphore::signal_many(&stream, &[(back[0].cuda(), v), (back[1].cuda(), v)])?;
            // SAFETY: as above; both values were just enqueued by CUDA.
            unsafe {
                vk.submit(
                    &consumes,
                    &[(back[0].vulkan(), v, ALL), (back[1].vulkan(), v, ALL)],
                    &[(&done, v)],
                    vk::Fence::null(),
                )
            }?;
        }
        Ok(())
    };
    let ran = run();
    let drained = drain_queues(vk);
    ran?;
    drained?;
    rig.check(ITERS * LANES as u64)?;
    drop((to_cuda, back, done, rig));
    validation_since(vk, &before, &[])
}

/// Bounded waits time out with a typed error naming what they waited for; misuse of the
/// frame token is refused; a frame dropped half-way is finished for you.
fn timeouts_and_misuse((vk, cu): &Env) -> anyhow::Result<()> {
    let before = validation_snapshot(vk);
    for mode in [SyncMode::Semaphores, SyncMode::LowLatency] {
        let short = Duration::from_millis(50);
        let gate = Semaphore::local(vk, SemaphoreKind::Timeline, 0)?;
        let mut sync = FrameSync::new(vk, cu, &FrameSyncDesc::new(1).mode(mode).timeout(short))?;

        // Frame 0 waits on a gate nobody has opened yet: frame 1 cannot begin.
        let mut f = sync.begin()?;
        // SAFETY: no command buffers; the gate is signalled below, before anything drops.
        unsafe { f.submit_vulkan(&[], &[(&gate, 1, ALL)], &[], vk::Fence::null()) }?;
        f.cuda_wait()?;
        f.cuda_signal()?;
        // SAFETY: as above.
        unsafe { f.submit_vulkan_after_cuda(&[], &[], &[], vk::Fence::null()) }?;
        let t = Instant::now();
        match sync.begin() {
            Err(Error::Timeout { what, waited }) => {
                ensure!(what.contains("frame 0"), "{mode:?}: {what}");
                ensure!(waited >= short, "{mode:?}: waited {waited:?}");
            }
            Err(e) => bail!("{mode:?}: expected a timeout, got {e}"),
            Ok(f) => bail!(
                "{mode:?}: frame {} began while frame 0 was blocked",
                f.index()
            ),
        }
        ensure!(
            t.elapsed() < short + Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        match sync.wait_frame(1, short) {
            Err(Error::Timeout { .. }) => {}
            other => bail!("{mode:?}: wait_frame(1) on a blocked frame: {other:?}"),
        }
        // Waits on values no frame has are refused, not waited for.
        common::expect_invalid_arg(sync.wait_frame(2, TIMEOUT), "value")?;
        common::expect_invalid_arg(sync.wait_frame(0, TIMEOUT), "value")?;
        gate.signal(1)?;

        // Out of order: refused. Dropped half-way: finished with empty work.
        let mut f = sync.begin()?;
        ensure!(f.index() == 1);
        common::expect_invalid_arg(f.cuda_wait(), "frame")?;
        common::expect_invalid_arg(f.cuda_signal(), "frame")?;
        // SAFETY: no command buffers or semaphores.
        unsafe { f.submit_vulkan(&[], &[], &[], vk::Fence::null()) }?;
        // SAFETY: refused before submitting.
        let r = unsafe { f.submit_vulkan(&[], &[], &[], vk::Fence::null()) };
        common::expect_invalid_arg(r, "frame")?;
        drop(f); // after step 1: the rest is done for us
        let f = sync.begin()?;
        ensure!(f.index() == 2);
        drop(f); // before step 1
        sync.wait_idle(TIMEOUT)?;
        sync.wait_frame(3, TIMEOUT)?;
        ensure!(sync.frames_begun() == 3);
        drop(sync);
        drop(gate);
    }
    // A CUDA-side value nobody signals: the fast host wait times out, typed.
    let tl = SharedSemaphore::timeline(vk, cu, 0)?;
    match tl.vulkan().wait(5, Duration::from_millis(30)) {
        Err(Error::Timeout { what, .. }) => {
            ensure!(what.contains("timeline value 5 (current 0)"), "{what}")
        }
        other => bail!("expected a timeout, got {other:?}"),
    }
    // Out-of-range descriptions are typed.
    for n in [0, FrameSync::MAX_FRAMES_IN_FLIGHT + 1] {
        common::expect_invalid_arg(
            FrameSync::new(vk, cu, &FrameSyncDesc::new(n)),
            "desc.frames_in_flight",
        )?;
    }
    validation_since(vk, &before, &[])
}

/// Issue 10 row 15: a frame leaked with `mem::forget` (its drop never runs) is finished by
/// the next `begin`, so its slot does not stay stuck (that `begin` timed out before).
fn a_forgotten_frame_does_not_stick_its_slot((vk, cu): &Env) -> anyhow::Result<()> {
    let before = validation_snapshot(vk);
    for mode in [SyncMode::Semaphores, SyncMode::LowLatency] {
        let desc = FrameSyncDesc::new(1)
            .mode(mode)
            .timeout(Duration::from_millis(500));
        let mut sync = FrameSync::new(vk, cu, &desc)?;
        std::mem::forget(sync.begin()?); // before step 1
        let mut f = sync.begin()?;
        // SAFETY: no command buffers or semaphores.
        unsafe { f.submit_vulkan(&[], &[], &[], vk::Fence::null()) }?;
        f.cuda_wait()?;
        std::mem::forget(f); // after step 2
        let f = sync.begin().context("the slot stayed stuck")?;
        ensure!(f.index() == 2, "{mode:?}: frame {}", f.index());
        drop(f);
        sync.wait_idle(TIMEOUT)?;
        drop(sync);
    }
    validation_since(vk, &before, &[])
}

/// Issue 10 row 6 on the CUDA side: the two halves of a SharedSemaphore check signals
/// against one record of the highest value, so a CUDA signal never goes below a Vulkan one,
/// a Vulkan one never below a CUDA one, and a value is never signalled twice.
fn cuda_signals_never_go_backwards((vk, cu): &Env) -> anyhow::Result<()> {
    let before = validation_snapshot(vk);
    let stream = cu.new_stream()?;
    let tl = SharedSemaphore::timeline(vk, cu, 0)?;
    tl.cuda().signal(&stream, 5)?;
    common::expect_invalid_arg(tl.cuda().signal(&stream, 5), "ops")?;
    common::expect_invalid_arg(tl.cuda().signal(&stream, 3), "ops")?;
    // A Vulkan queue signal below CUDA's pending 5 is refused before submitting.
    // SAFETY: refused before vkQueueSubmit.
    let r = unsafe { vk.submit(&[], &[], &[(tl.vulkan(), 4)], vk::Fence::null()) };
    common::expect_invalid_arg(r, "signals")?;
    stream.synchronize()?;
    tl.vulkan().wait(5, TIMEOUT)?;
    tl.vulkan().signal(6)?;
    common::expect_invalid_arg(tl.cuda().signal(&stream, 6), "ops")?;
    tl.cuda().signal(&stream, 8)?;
    stream.synchronize()?;
    ensure!(tl.vulkan().value()? == 8, "value {}", tl.vulkan().value()?);
    ensure!(tl.cuda().highest_signalled() == 8);
    drop(tl);
    let known: Vec<_> = common::orphaned_counter_reads(vk, 1).into_iter().collect();
    validation_since(vk, &before, &known)
}

/// `Duration::MAX` ("wait for ever") as FrameSync's timeout and as `wait_idle`'s is no
/// deadline: `begin` on a reused slot, `wait_idle` and the drop do not panic (issue 10 row 11).
fn duration_max_is_no_deadline((vk, cu): &Env) -> anyhow::Result<()> {
    let before = validation_snapshot(vk);
    for mode in [SyncMode::Semaphores, SyncMode::LowLatency] {
        let desc = FrameSyncDesc::new(1).mode(mode).timeout(Duration::MAX);
        let mut sync = FrameSync::new(vk, cu, &desc)?;
        for _ in 0..3 {
            drop(sync.begin()?); // finished with empty work; the next begin reuses the slot
        }
        sync.wait_idle(Duration::MAX)?;
        sync.wait_frame(3, Duration::MAX)?;
        drop(sync);
    }
    validation_since(vk, &before, &[])
}

/// 2,000 create/export/import/use/destroy cycles of a timeline and a binary semaphore:
/// open fds and free device memory stay flat.
fn no_leaks_2000((vk, cu): &Env) -> anyhow::Result<()> {
    let before = validation_snapshot(vk);
    let stream = cu.new_stream()?;
    // SAFETY: valid device and create info.
    let fence = unsafe {
        vk.device()
            .create_fence(&vk::FenceCreateInfo::default(), None)
    }?;
    let cycle = || -> anyhow::Result<()> {
        let tl = SharedSemaphore::timeline(vk, cu, 0)?;
        let bin = SharedSemaphore::binary(vk, cu)?;
        // Vulkan signals both, CUDA waits for both in one call and signals the timeline
        // back, Vulkan waits for it.
        // SAFETY: no command buffers; the semaphores outlive the batch (fence waited).
        unsafe {
            vk.submit(
                &[],
                &[],
                &[(tl.vulkan(), 1), (bin.vulkan(), 0)],
                vk::Fence::null(),
            )
        }?;
        ExternalSemaphore::wait_many(&stream, &[(tl.cuda(), 1), (bin.cuda(), 0)])?;
        tl.cuda().signal(&stream, 2)?;
        // SAFETY: as above; CUDA's signal of 2 is enqueued.
        unsafe { vk.submit(&[], &[(tl.vulkan(), 2, ALL)], &[], fence) }?;
        // SAFETY: the fence belongs to this device.
        unsafe { vk.device().wait_for_fences(&[fence], true, 20_000_000_000) }?;
        // SAFETY: signalled, no longer in use.
        unsafe { vk.device().reset_fences(&[fence]) }?;
        drop((tl, bin)); // CUDA's imports wait for their operations, then go
        Ok(())
    };
    let run = || common::assert_cycles_leak_free(cu, 2000, cycle);
    let ran = run();
    let drained = drain_queues(vk);
    if drained.is_ok() {
        // SAFETY: every use of the fence has completed.
        unsafe { vk.device().destroy_fence(fence, None) };
    }
    ran?;
    drained?;
    validation_since(vk, &before, &[])
}

/// Issue 10 rows 5 and 18, with `Commands` on FrameSync's `Split` queues (produce on queue 0,
/// consume on queue 1): per-slot buffers are released to CUDA by the producing batch,
/// written by CUDA, acquired by the consuming batch and read back after the frame, with
/// CUDA's bytes (order by data); a buffer shared by two slots, whose last use (a consuming
/// batch on queue 1) has not finished, is refused for the next slot's producing batch on
/// queue 0, naming both queues.
fn commands_hand_off_buffers_across_split_queues((vk, cu): &Env) -> anyhow::Result<()> {
    ensure!(vk.queue_count() >= 2, "needs two queues for Split");
    let before = validation_snapshot(vk);
    let size = 4096u64;
    let byte = |i: u64| (i as u8).wrapping_mul(37).wrapping_add(1);
    let mut sync = FrameSync::new(
        vk,
        cu,
        &FrameSyncDesc::new(2)
            .lanes(QueueLayout::Split, 1)
            .timeout(TIMEOUT),
    )?;
    let mut slots = (0..2)
        .map(|_| -> anyhow::Result<_> {
            let buffer = SharedBuffer::new(vk, cu, &BufferDesc::new(size))?;
            let map = buffer.map(0..size)?;
            Ok((buffer, map, Commands::new(vk)?, Commands::new(vk)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for i in 0..64 {
        let mut f = sync.begin()?;
        let (buffer, map, produce, consume) = &mut slots[f.slot()];
        produce.release_buffer(buffer.vulkan())?;
        f.submit_commands(produce)?;
        let stream = f.cuda_wait()?;
        // SAFETY: `size` bytes of the live mapping, on the frame's stream.
        unsafe {
            cudarc::driver::result::memset_d8_async(
                map.cu_device_ptr(),
                byte(i),
                size as usize,
                stream.cu_stream(),
            )
        }?;
        f.cuda_signal()?;
        consume.acquire_buffer(buffer.vulkan())?;
        let v = f.submit_commands_after_cuda(consume)?;
        sync.wait_frame(v, TIMEOUT)?;
        // A one-shot on queue 0 after the consuming batch on queue 1: ordered by the
        // frame's completion value, which the host has seen.
        let got = vk.read_buffer(buffer.vulkan(), 0..size)?;
        ensure!(
            got.iter().all(|&b| b == byte(i)),
            "frame {i}: Vulkan read {:#x}, expected CUDA's {:#x}",
            got[0],
            byte(i)
        );
    }
    // One buffer for both slots, with queue 1 held up so frame 0's consume is pending.
    let shared = Arc::new(ExternalBuffer::new(vk, &BufferDesc::new(size))?);
    let gate = Arc::new(Semaphore::local(vk, SemaphoreKind::Timeline, 0)?);
    let mut stall = Commands::new(vk)?;
    stall.submit(1, &[(&gate, 1)], &[], TIMEOUT)?;
    let outcome = (|| -> anyhow::Result<()> {
        for k in 0..2 {
            let mut f = sync.begin()?;
            let (_, _, produce, consume) = &mut slots[f.slot()];
            produce.release_buffer(&shared)?;
            let r = f.submit_commands(produce);
            if k == 1 {
                let e = common::expect_invalid_arg(r, "buffer")?;
                ensure!(e.to_string().contains("queue 1"), "{e}");
                return Ok(()); // the dropped frame completes with empty work
            }
            r?;
            f.cuda_wait()?;
            f.cuda_signal()?;
            consume.acquire_buffer(&shared)?;
            f.submit_commands_after_cuda(consume)?;
        }
        bail!("the second slot's use of the shared buffer was not checked")
    })();
    gate.signal(1)?;
    outcome?;
    sync.wait_idle(TIMEOUT)?;
    stall.wait(TIMEOUT)?;
    drop(sync);
    validation_since(vk, &before, &[])
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::gpu_probe();
    const FRAMES: u64 = 3000;
    let mut trials = vec![trial(
        "validation_is_counted_when_requested",
        &probe,
        |(vk, _): &Env| common::validation_is_counted_when_requested(vk),
    )];
    for (mode, name) in [
        (SyncMode::Semaphores, "semaphores"),
        (SyncMode::LowLatency, "low_latency"),
    ] {
        for n in 1..=4 {
            trials.push(trial(
                &format!("frame_sync_{name}_{n}_in_flight_{FRAMES}_frames_ordered_by_data"),
                &probe,
                move |env: &Env| {
                    frame_sync_ordering(env, &FrameSyncDesc::new(n).mode(mode), FRAMES)
                },
            ));
        }
    }
    let tests: [common::Test<Env>; 10] = [
        ("every_queue_layout_ordered_by_data", every_layout),
        ("shared_timeline_chains_ordered_by_data", timeline_chains),
        ("shared_binary_chains_ordered_by_data", binary_chains),
        ("batched_waits_and_signals_ordered_by_data", batched_waits),
        ("timeouts_and_misuse_are_typed", timeouts_and_misuse),
        (
            "frame_sync_duration_max_is_no_deadline",
            duration_max_is_no_deadline,
        ),
        (
            "cuda_signals_never_go_backwards",
            cuda_signals_never_go_backwards,
        ),
        (
            "a_forgotten_frame_does_not_stick_its_slot",
            a_forgotten_frame_does_not_stick_its_slot,
        ),
        ("semaphore_import_destroy_2000_no_leaks", no_leaks_2000),
        (
            "commands_hand_off_buffers_across_split_queues",
            commands_hand_off_buffers_across_split_queues,
        ),
    ];
    trials.extend(tests.into_iter().map(|(name, f)| trial(name, &probe, f)));
    common::note(&probe, "CUDA device matching the Vulkan device");
    trials
}
