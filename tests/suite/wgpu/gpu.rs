//! The CUDA half of the wgpu integration (ignored without CUDA; `VKCUDA_REQUIRE_GPU=1`
//! fails instead). Order is proven by data: each frame wgpu writes a new pattern, a CUDA
//! kernel that first spins for ~1 ms tone-maps it in place, and wgpu reads it back; a
//! CUDA read before wgpu's write, or a wgpu read before CUDA's write, shows as wrong bytes.
//! wgpu's validation layer is on where installed; any error it logs fails the trial.

use crate::common;
use libtest_mimic::Trial;

use std::sync::Arc;

use anyhow::ensure;
use common::{assert_bytes, pattern_bytes, trial};
use vkcuda::cuda;
use vkcuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use vkcuda::external::{DeviceIdentity, Uuid};
use vkcuda::wgpu;
use vkcuda::wgpu_interop::{WgpuContext, WgpuFrameSync, WgpuTexture};
use vkcuda_dev::scene;

const W: u32 = 256;
const H: u32 = 128;

/// A spin run before the demo's tone curve (`scene::POSTPROCESS_CU`), so that missing
/// waits would be seen.
const SPIN_CU: &str = r#"
extern "C" __global__ void spin(unsigned long long cycles) {
    long long start = clock64();
    while ((unsigned long long)(clock64() - start) < cycles) {}
}
"#;

struct Env {
    ctx: WgpuContext,
    cu: cuda::Context,
}

fn probe() -> common::Probe<Env> {
    let env = super::common::adapter().and_then(|adapter| {
        let ctx = WgpuContext::open(&adapter, &Default::default()).map_err(|e| e.to_string())?;
        let cu = cuda::Context::matching(ctx.vulkan().identity()).map_err(|e| e.to_string())?;
        ctx.check_semaphore_export().map_err(|e| e.to_string())?;
        Ok(Env { ctx, cu })
    });
    Arc::new(env)
}

fn curve(v: u8) -> u8 {
    (u32::from(v) * (255 + 64) / (u32::from(v) + 64)) as u8
}

fn texture(ctx: &WgpuContext) -> anyhow::Result<WgpuTexture> {
    let usage = wgpu::TextureUsages::COPY_SRC
        | wgpu::TextureUsages::COPY_DST
        | wgpu::TextureUsages::STORAGE_BINDING;
    Ok(ctx.create_texture(&super::common::rgba8_desc(W, H, usage))?)
}

fn write(ctx: &WgpuContext, t: &WgpuTexture, data: &[u8]) {
    ctx.queue().write_texture(
        t.texture().as_image_copy(),
        data,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(W * 4),
            rows_per_image: None,
        },
        t.texture().size(),
    );
}

/// A new mappable buffer and the recorded copy of `t` into it (not submitted).
fn copy_cmd(ctx: &WgpuContext, t: &WgpuTexture) -> (wgpu::Buffer, wgpu::CommandBuffer) {
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: u64::from(W * 4 * H),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_texture_to_buffer(
        t.texture().as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(W * 4),
                rows_per_image: None,
            },
        },
        t.texture().size(),
    );
    (buffer, encoder.finish())
}

/// Copies `t` into a new mappable buffer (submitted now); read it with [`read`].
fn copy_out(ctx: &WgpuContext, t: &WgpuTexture) -> (wgpu::Buffer, wgpu::SubmissionIndex) {
    let (buffer, cmd) = copy_cmd(ctx, t);
    let index = ctx.queue().submit([cmd]);
    (buffer, index)
}

fn read(
    ctx: &WgpuContext,
    (buffer, index): (wgpu::Buffer, wgpu::SubmissionIndex),
) -> anyhow::Result<Vec<u8>> {
    buffer
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    ctx.device().poll(wgpu::PollType::Wait {
        submission_index: Some(index),
        timeout: Some(std::time::Duration::from_secs(10)),
    })?;
    let bytes = buffer.slice(..).get_mapped_range()?.to_vec();
    Ok(bytes)
}

/// Which queue acquires, and how the frame comes back to wgpu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Back {
    /// `WgpuFrameSync::new`, `acquire_from_cuda`, then a copy submitted.
    OneQueue,
    /// `with_own_queue`, `acquire_from_cuda`, then a copy submitted.
    Now,
    /// `with_own_queue`, `acquire_from_cuda_then(copy)`.
    Then,
    /// `with_own_queue`, `acquire_from_cuda_deferred`; the copy at the slot's next `begin`.
    Deferred,
}

fn frame_sync(env: &Env, in_flight: usize, back: Back) -> vkcuda::Result<WgpuFrameSync> {
    match back {
        Back::OneQueue => WgpuFrameSync::new(&env.ctx, &env.cu, in_flight),
        _ => WgpuFrameSync::with_own_queue(&env.ctx, &env.cu, in_flight),
    }
}

/// `frames` frames, `in_flight` at a time, on `textures.len()` textures: every frame's
/// bytes must be the tone curve of what wgpu wrote for that very frame.
fn frames(env: &Env, in_flight: usize, frames: u32, back: Back) -> anyhow::Result<()> {
    let before = super::common::errors();
    let ctx = &env.ctx;
    let (spin, tonemap) = (
        env.cu.compile("spin.cu", SPIN_CU)?.load_function("spin")?,
        env.cu
            .compile("postprocess.cu", scene::POSTPROCESS_CU)?
            .load_function("tonemap")?,
    );
    let targets: Vec<WgpuTexture> = (0..in_flight)
        .map(|_| texture(ctx))
        .collect::<Result<_, _>>()?;
    let surfaces = targets
        .iter()
        .map(|t| t.share(&env.cu)?.surface(0))
        .collect::<vkcuda::Result<Vec<_>>>()?;
    let mut sync = frame_sync(env, in_flight, back)?;
    let mut pending = Vec::new();
    // With `Back::Deferred`: the frame each slot holds, read at the slot's next begin.
    let mut held: Vec<Option<(u32, Vec<u8>)>> = vec![None; in_flight];
    for frame in 0..frames {
        let i = frame as usize % in_flight;
        let written = pattern_bytes(u64::from(W * H * 4), frame);
        let mut f = sync.begin()?;
        if let Some((earlier, want)) = held[i].take() {
            pending.push((earlier, copy_out(ctx, &targets[i]), want));
        }
        write(ctx, &targets[i], &written);
        f.release_to_cuda(&[&targets[i]], &[])?;
        let stream = f.cuda_wait()?;
        let mut k = stream.launch_builder(&spin);
        let cycles: u64 = 2_000_000;
        k.arg(&cycles);
        // SAFETY: spin(unsigned long long) touches no memory.
        unsafe { k.launch(LaunchConfig::for_num_elems(1)) }?;
        let mut k = stream.launch_builder(&tonemap);
        k.arg(&surfaces[i]).arg(&W).arg(&H);
        let config = LaunchConfig {
            grid_dim: (W.div_ceil(16), H.div_ceil(16), 1),
            block_dim: (16, 16, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: tonemap(cudaSurfaceObject_t, uint, uint) stays inside W x H of the
        // surface, whose texture `targets` keeps alive.
        unsafe { k.launch(config) }?;
        f.cuda_signal()?;
        let mut want = written;
        for px in want.chunks_exact_mut(4) {
            for c in &mut px[..3] {
                *c = curve(*c);
            }
        }
        match back {
            Back::OneQueue | Back::Now => {
                f.acquire_from_cuda()?;
                pending.push((frame, copy_out(ctx, &targets[i]), want));
            }
            Back::Then => {
                let (buffer, cmd) = copy_cmd(ctx, &targets[i]);
                let index = f.acquire_from_cuda_then([cmd])?;
                pending.push((frame, (buffer, index), want));
            }
            Back::Deferred => {
                // SAFETY: slot i's texture is next used after the slot's next begin (the
                // copy above) or after wait_idle (below).
                unsafe { f.acquire_from_cuda_deferred() }?;
                held[i] = Some((frame, want));
            }
        }
    }
    sync.wait_idle()?;
    for (i, h) in held.iter_mut().enumerate() {
        if let Some((frame, want)) = h.take() {
            pending.push((frame, copy_out(ctx, &targets[i]), want));
        }
    }
    for (frame, copy, want) in pending {
        assert_bytes(&read(ctx, copy)?, &want, &format!("frame {frame}"))?;
    }
    super::common::no_errors_since(before)
}

/// A frame dropped after its release is completed with empty work: the next frames run,
/// and the texture is wgpu's again.
fn dropped_frame_completes(env: &Env, back: Back) -> anyhow::Result<()> {
    let ctx = &env.ctx;
    let t = texture(ctx)?;
    let mut sync = frame_sync(env, 2, back)?;
    {
        let mut f = sync.begin()?;
        f.release_to_cuda(&[&t], &[])?;
    }
    {
        let _unused = sync.begin()?;
    }
    let written = pattern_bytes(u64::from(W * H * 4), 9);
    write(ctx, &t, &written);
    let mut f = sync.begin()?;
    f.release_to_cuda(&[&t], &[])?;
    f.cuda_wait()?;
    f.cuda_signal()?;
    f.acquire_from_cuda()?;
    sync.wait_idle()?;
    assert_bytes(
        &read(ctx, copy_out(ctx, &t))?,
        &written,
        "after dropped frames",
    )
}

/// `cuda::Context::adopt` takes the caller's context on the right GPU and names both
/// devices otherwise.
fn adopt_checks_the_uuid(env: &Env) -> anyhow::Result<()> {
    let identity = env.ctx.vulkan().identity();
    let cu = cuda::Context::adopt(env.cu.cuda().clone(), identity)?;
    ensure!(cu.uuid() == identity.uuid);
    let other = DeviceIdentity {
        name: "another GPU".into(),
        uuid: Uuid([7; 16]),
        luid: None,
        node_mask: 0,
    };
    let e = common::expect_invalid_arg(cuda::Context::adopt(env.cu.cuda().clone(), &other), "ctx")?;
    let text = e.to_string();
    ensure!(
        text.contains("another GPU") && text.contains(&cu.uuid().to_string()),
        "{text}"
    );
    Ok(())
}

/// This half's trials over its probe.
pub fn trials() -> Vec<Trial> {
    let probe = probe();
    let trials = vec![
        trial("frames_1_in_flight_ordered_by_data", &probe, |e| {
            frames(e, 1, 8, Back::OneQueue)
        }),
        trial("frames_3_in_flight_ordered_by_data", &probe, |e| {
            frames(e, 3, 24, Back::OneQueue)
        }),
        trial(
            "own_queue_frames_1_in_flight_ordered_by_data",
            &probe,
            |e| frames(e, 1, 8, Back::Now),
        ),
        trial(
            "own_queue_frames_3_in_flight_ordered_by_data",
            &probe,
            |e| frames(e, 3, 24, Back::Now),
        ),
        trial("own_queue_then_3_in_flight_ordered_by_data", &probe, |e| {
            frames(e, 3, 24, Back::Then)
        }),
        trial(
            "own_queue_deferred_3_in_flight_ordered_by_data",
            &probe,
            |e| frames(e, 3, 24, Back::Deferred),
        ),
        trial("dropped_frame_completes_the_chain", &probe, |e| {
            dropped_frame_completes(e, Back::OneQueue)
        }),
        trial("own_queue_dropped_frame_completes_the_chain", &probe, |e| {
            dropped_frame_completes(e, Back::Now)
        }),
        trial("adopt_checks_the_uuid", &probe, adopt_checks_the_uuid),
    ];
    common::note(&probe, "wgpu device with CUDA on the same GPU");
    trials
}
