//! The demo pipeline, shared by `examples/demo.rs` and `tests/demo.rs`: Vulkan renders
//! the scene into exportable images; with CUDA, FrameSync hands each frame to a CUDA tone
//! map in place and back, N frames in flight; results are checked against the CPU twin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Result};
use ash::vk;
use cudarc::driver::{LaunchConfig, PushKernelArg};
use vkcuda::cuda;
use vkcuda::interop::{FrameSync, FrameSyncDesc, SharedImage, SyncMode};
use vkcuda::vulkan::{
    self, BufferDesc, Commands, ComputePass, ComputeTarget, ExternalBuffer, ExternalImage,
    ImageDesc,
};

use super::{png, scene};

/// What to run.
pub struct Options {
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub in_flight: usize,
    pub low_latency: bool,
    pub out: PathBuf,
}

/// The render target of one frame slot.
fn render_target(
    vk: &vulkan::Context,
    pass: &Arc<ComputePass>,
    o: &Options,
) -> Result<ComputeTarget> {
    let desc = ImageDesc::d2(o.width, o.height, vk::Format::R8G8B8A8_UNORM);
    Ok(ComputeTarget::new(
        pass,
        Arc::new(ExternalImage::new(vk, &desc)?),
    )?)
}

/// Vulkan alone (lavapipe): render, read back, check, PNG; host-paced.
pub fn vulkan_only(o: &Options, vk: &vulkan::Context) -> Result<()> {
    let pass = ComputePass::new(vk, scene::RENDER_SPV, scene::WORKGROUP, scene::PUSH_SIZE)?;
    let target = render_target(vk, &pass, o)?;
    let image = target.image().clone();

    let start = Instant::now();
    let mut last = Vec::new();
    for frame in 0..o.frames {
        vk.dispatch(
            &pass,
            &target,
            &scene::push_constants(frame, o.width, o.height),
        )?;
        last = vk.read_image(&image, 0, 0..1)?;
        check(&last, &scene::reference(frame, o.width, o.height), frame)?;
    }
    let elapsed = start.elapsed();
    let path = o.out.join(format!("frame-{:04}.png", o.frames - 1));
    png::write(&path, o.width, o.height, &last)?;
    println!(
        "rendered {} frames of {}x{} with Vulkan, each read back and equal to the CPU reference ({:.1} ms/frame, host-paced)",
        o.frames,
        o.width,
        o.height,
        elapsed.as_secs_f64() * 1e3 / f64::from(o.frames)
    );
    println!("wrote {}", path.display());
    Ok(())
}

fn check(got: &[u8], want: &[u8], frame: u32) -> Result<()> {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        bail!(
            "frame {frame}: byte {i} is {}, the CPU reference says {}",
            got[i],
            want[i]
        );
    }
    ensure!(
        got.len() == want.len(),
        "frame {frame}: {} bytes, expected {}",
        got.len(),
        want.len()
    );
    Ok(())
}

/// One frame slot of the GPU pipeline.
struct Slot {
    target: Arc<ComputeTarget>,
    shared: SharedImage,
    surface: cuda::SurfaceObject,
    readback: Arc<ExternalBuffer>,
    produce: Commands,
    consume: Commands,
    /// The frame whose result `readback` holds.
    frame: Option<u32>,
}

/// Render (Vulkan) -> tone map in place (CUDA) -> readback (Vulkan), N frames in flight.
pub fn gpu_pipeline(o: &Options, vk: &vulkan::Context, cu: &cuda::Context) -> Result<()> {
    let pass = ComputePass::new(vk, scene::RENDER_SPV, scene::WORKGROUP, scene::PUSH_SIZE)?;
    let tonemap = cu
        .compile("postprocess.cu", scene::POSTPROCESS_CU)?
        .load_function("tonemap")?;
    let bytes = u64::from(o.width) * u64::from(o.height) * 4;
    let mut slots = (0..o.in_flight)
        .map(|_| -> Result<Slot> {
            let target = Arc::new(render_target(vk, &pass, o)?);
            let shared = SharedImage::from_vulkan(target.image().clone(), cu)?;
            let surface = shared.surface(0)?;
            Ok(Slot {
                target,
                shared,
                surface,
                readback: Arc::new(ExternalBuffer::new(vk, &BufferDesc::new(bytes))?),
                produce: Commands::new(vk)?,
                consume: Commands::new(vk)?,
                frame: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mode = if o.low_latency {
        SyncMode::LowLatency
    } else {
        SyncMode::Semaphores
    };
    let mut sync = FrameSync::new(vk, cu, &FrameSyncDesc::new(o.in_flight).mode(mode))?;
    let launch = LaunchConfig {
        grid_dim: (o.width.div_ceil(16), o.height.div_ceil(16), 1),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    let (width, height) = (o.width, o.height);

    let start = Instant::now();
    for frame in 0..o.frames {
        let mut f = sync.begin()?; // waits only for the frame that last used this slot
        let slot = &mut slots[f.slot()];
        slot.produce
            .dispatch(&slot.target, &scene::push_constants(frame, width, height))?;
        slot.produce.release_image(slot.shared.vulkan())?;
        f.submit_commands(&mut slot.produce)?;

        let stream = f.cuda_wait()?;
        let mut kernel = stream.launch_builder(&tonemap);
        kernel.arg(&slot.surface).arg(&width).arg(&height);
        // SAFETY: tonemap(cudaSurfaceObject_t, uint, uint) reads and writes texels inside
        // width x height of the surface's level, which is alive (held by the slot).
        unsafe { kernel.launch(launch) }?;
        f.cuda_signal()?;

        slot.consume
            .acquire_image(slot.shared.vulkan(), vk::ImageLayout::GENERAL)?;
        slot.consume
            .copy_image_to_buffer(slot.shared.vulkan(), &slot.readback)?;
        f.submit_commands_after_cuda(&mut slot.consume)?;
        slot.frame = Some(frame);
    }
    sync.wait_idle(std::time::Duration::from_secs(10))?;
    let elapsed = start.elapsed();

    // Check the last frame of every slot against render + tone curve on the CPU.
    let mut last = (0, Vec::new());
    for slot in &slots {
        let Some(frame) = slot.frame else { continue };
        let got = vk.read_buffer(&slot.readback, 0..bytes)?;
        check(
            &got,
            &scene::processed_reference(frame, width, height),
            frame,
        )?;
        if frame >= last.0 {
            last = (frame, got);
        }
    }
    let path = o.out.join(format!("frame-{:04}.png", last.0));
    png::write(&path, width, height, &last.1)?;
    let per_frame = elapsed.as_secs_f64() / f64::from(o.frames);
    println!(
        "GPU pipeline: {} frames of {}x{}, {} in flight ({mode:?}): Vulkan render -> CUDA tone map in place (zero copy) -> Vulkan readback",
        o.frames, width, height, o.in_flight
    );
    println!(
        "summary: {:.0} fps ({:.3} ms/frame); last frame of each of the {} slots equal to the CPU reference; wrote {}",
        1.0 / per_frame,
        per_frame * 1e3,
        slots.len(),
        path.display()
    );
    Ok(())
}
