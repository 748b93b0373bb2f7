//! The demo pipeline, shared by `examples/demo.rs` and `tests/suite/demo.rs`: Vulkan renders
//! the scene into exportable images; with CUDA, FrameSync hands each frame to a CUDA tone
//! map in place and back, N frames in flight; results are checked against the CPU twin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use vkcuda::ash::vk;
use vkcuda::cuda;
use vkcuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use vkcuda::interop::{FrameSync, FrameSyncDesc, QueueLayout, SharedImage, SyncMode};
use vkcuda::util::{Commands, ComputePass, ComputeTarget, OneShot};
use vkcuda::vulkan::{self, BufferDesc, ExternalBuffer, ExternalImage, ImageDesc};

use super::{png, scene};

/// What to run.
#[derive(Clone)]
pub struct Options {
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub in_flight: usize,
    pub low_latency: bool,
    /// Frames per crossing: each FrameSync frame carries this many images.
    pub batch: usize,
    /// Copy each frame back and check it (the demo); off: throughput only.
    pub readback: bool,
    /// Every FrameSync batch on one queue ([`QueueLayout::Single`]), as a wgpu device's one
    /// queue has them (the wgpu bench's like-for-like baseline); off: FrameSync's default.
    pub single_queue: bool,
    /// Record FrameSync's timeline and write it here (Perfetto JSON).
    pub trace: Option<PathBuf>,
    /// Choose `batch` at run time (`--batch auto`): the smallest K reaching `target` of the
    /// GPU-busy bound within `budget`, from the alternation floor and the frame's GPU time
    /// measured here.
    pub auto_batch: Option<AutoBatch>,
    pub out: PathBuf,
}

/// What `--batch auto` aims for.
#[derive(Clone, Copy)]
pub struct AutoBatch {
    /// Share of the GPU-busy bound, e.g. 0.9.
    pub target: f64,
    /// Longest batch latency (K frames of GPU time plus the floor).
    pub budget: std::time::Duration,
}

/// Chooses K for `auto`: measures the alternation floor and, from a short traced run with
/// one frame per crossing, the GPU time of a frame (render batch + CUDA work, p50).
pub fn choose_frames_per_crossing(
    o: &Options,
    auto: AutoBatch,
    vk: &vulkan::Context,
    cu: &cuda::Context,
) -> Result<vkcuda::interop::BatchPlan> {
    use vkcuda::interop::{alternation_floor, choose_batch, BatchGoal};
    let floor = alternation_floor(vk, cu, vkcuda::vulkan::QueueId::Main(0), 200)?;
    let probe = Options {
        frames: 64,
        in_flight: 1,
        batch: 1,
        readback: false,
        trace: Some(o.out.join("probe.json")),
        auto_batch: None,
        ..o.clone()
    };
    let mut pipeline = Pipeline::new(&probe, false, vk, cu)?;
    pipeline.run(0..probe.frames)?;
    let trace = pipeline.take_trace()?.context("the probe was traced")?;
    let median = |prefix: &str| -> Result<f64> {
        let mut v: Vec<f64> = trace
            .trace
            .spans()
            .filter(|(_, s)| s.name.starts_with(prefix))
            .map(|(_, s)| (s.end_ns - s.start_ns) as f64 * 1e-9)
            .collect();
        ensure!(!v.is_empty(), "no {prefix} spans in the probe's trace");
        v.sort_by(f64::total_cmp);
        Ok(v[v.len() / 2])
    };
    let frame_gpu = median("produce")? + median("CUDA work")?;
    let plan = choose_batch(&BatchGoal {
        floor: floor.switch_pair(),
        frame_gpu: std::time::Duration::from_secs_f64(frame_gpu),
        target_efficiency: auto.target,
        latency_budget: auto.budget,
    })?;
    println!(
        "batch auto: switch pair {:.1} us, frame on the GPU {:.1} us -> {} frames per crossing (expected {:.3} of the bound{}, latency {} frames / {:.2} ms)",
        floor.switch_pair().as_secs_f64() * 1e6,
        frame_gpu * 1e6,
        plan.frames,
        plan.efficiency,
        if plan.reached_target { "" } else { ", capped by the latency budget" },
        plan.latency_frames,
        plan.latency.as_secs_f64() * 1e3
    );
    Ok(plan)
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
    let pass = scene::render_pass(vk)?;
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

/// One image of a frame slot.
struct Image {
    target: Arc<ComputeTarget>,
    shared: SharedImage,
    surface: cuda::SurfaceObject,
    readback: Arc<ExternalBuffer>,
    /// The frame whose result `readback` holds.
    frame: Option<u32>,
}

/// One frame slot of the GPU pipeline: `batch` images per crossing.
struct Slot {
    images: Vec<Image>,
    produce: Commands,
    consume: Commands,
}

/// Render (Vulkan) -> tone map in place (CUDA) -> acquire (+ readback copy) (Vulkan), N
/// frames in flight through [`FrameSync`].
pub struct Pipeline {
    /// Host time spent in each step, summed over every frame run: FrameSync::begin,
    /// recording + submitting the Vulkan render, the CUDA wait + launch + signal, recording +
    /// submitting the Vulkan acquire.
    pub host: [std::time::Duration; 4],
    width: u32,
    height: u32,
    readback: bool,
    mode: SyncMode,
    tonemap: vkcuda::cudarc::driver::CudaFunction,
    launch: LaunchConfig,
    slots: Vec<Slot>,
    sync: FrameSync,
    vk: vulkan::Context,
}

impl Pipeline {
    /// Sets up `o.in_flight` slots; `readback` adds the copy of each frame into a buffer
    /// (what [`Pipeline::check`] reads).
    pub fn new(
        o: &Options,
        readback: bool,
        vk: &vulkan::Context,
        cu: &cuda::Context,
    ) -> Result<Self> {
        let pass = scene::render_pass(vk)?;
        let tonemap = cu
            .compile("postprocess.cu", scene::POSTPROCESS_CU)?
            .load_function("tonemap")?;
        let bytes = u64::from(o.width) * u64::from(o.height) * 4;
        let slots = (0..o.in_flight)
            .map(|_| -> Result<Slot> {
                let images = (0..o.batch.max(1))
                    .map(|_| -> Result<Image> {
                        let target = Arc::new(render_target(vk, &pass, o)?);
                        let shared = SharedImage::from_vulkan(target.image().clone(), cu)?;
                        let surface = shared.surface(0)?;
                        let readback = Arc::new(ExternalBuffer::new(
                            vk,
                            &BufferDesc::new(if readback { bytes } else { 4 }),
                        )?);
                        Ok(Image {
                            target,
                            shared,
                            surface,
                            readback,
                            frame: None,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Slot {
                    images,
                    produce: Commands::new(vk)?,
                    consume: Commands::new(vk)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mode = if o.low_latency {
            SyncMode::LowLatency
        } else {
            SyncMode::Semaphores
        };
        Ok(Self {
            host: Default::default(),
            width: o.width,
            height: o.height,
            readback,
            mode,
            tonemap,
            launch: LaunchConfig {
                grid_dim: (o.width.div_ceil(16), o.height.div_ceil(16), 1),
                block_dim: (16, 16, 1),
                shared_mem_bytes: 0,
            },
            slots,
            sync: FrameSync::new(vk, cu, &{
                let desc = FrameSyncDesc::new(o.in_flight)
                    .mode(mode)
                    .frames_per_crossing(o.batch.max(1))
                    .trace(o.trace.is_some());
                if o.single_queue {
                    desc.lanes(QueueLayout::Single, 1)
                } else {
                    desc
                }
            })?,
            vk: vk.clone(),
        })
    }

    /// Submits `frames` (scene frame numbers) without waiting for them to finish; the host
    /// waits only when a slot is reused.
    pub fn run(&mut self, frames: std::ops::Range<u32>) -> Result<()> {
        let (width, height) = (self.width, self.height);
        let batch = self.sync.frames_per_crossing() as u32;
        let mut first = frames.start;
        while first < frames.end {
            let count = batch.min(frames.end - first);
            let mut clock = Instant::now();
            let mut lap = |host: &mut [std::time::Duration; 4], i: usize| {
                let now = Instant::now();
                host[i] += now - clock;
                clock = now;
            };
            let mut f = self.sync.begin()?; // waits only for the frame that last used this slot
            lap(&mut self.host, 0);
            let slot = &mut self.slots[f.slot()];
            let images = &mut slot.images[..count as usize];
            for (i, image) in images.iter().enumerate() {
                let frame = first + i as u32;
                slot.produce
                    .dispatch(&image.target, &scene::push_constants(frame, width, height))?;
                slot.produce.release_image(image.shared.vulkan())?;
            }
            f.submit_commands(&mut slot.produce)?;
            lap(&mut self.host, 1);

            let stream = f.cuda_wait()?;
            for image in images.iter() {
                let mut kernel = stream.launch_builder(&self.tonemap);
                kernel.arg(&image.surface).arg(&width).arg(&height);
                // SAFETY: tonemap(cudaSurfaceObject_t, uint, uint) reads and writes texels
                // inside width x height of the surface's level, alive (held by the slot).
                unsafe { kernel.launch(self.launch) }?;
            }
            f.cuda_signal()?;
            lap(&mut self.host, 2);

            for (i, image) in images.iter_mut().enumerate() {
                slot.consume
                    .acquire_image(image.shared.vulkan(), vk::ImageLayout::GENERAL)?;
                if self.readback {
                    slot.consume
                        .copy_image_to_buffer(image.shared.vulkan(), &image.readback)?;
                }
                image.frame = Some(first + i as u32);
            }
            f.submit_commands_after_cuda(&mut slot.consume)?;
            lap(&mut self.host, 3);
            first += count;
        }
        Ok(())
    }

    /// Waits (on the host, bounded) until every submitted frame has finished.
    pub fn finish(&self) -> Result<()> {
        Ok(self.sync.wait_idle(std::time::Duration::from_secs(10))?)
    }

    /// FrameSync's timeline so far (with `Options::trace`), after every frame finished.
    pub fn take_trace(&mut self) -> Result<Option<vkcuda::interop::FrameTrace>> {
        Ok(self.sync.take_trace(std::time::Duration::from_secs(10))?)
    }

    /// Checks the last frame of every slot against render + tone curve on the CPU (needs
    /// `readback` and [`Pipeline::finish`]); returns the latest frame and its texels.
    pub fn check(&self) -> Result<(u32, Vec<u8>)> {
        ensure!(self.readback, "this pipeline copies no frames back");
        let bytes = u64::from(self.width) * u64::from(self.height) * 4;
        let mut last = (0, Vec::new());
        for image in self.slots.iter().flat_map(|s| &s.images) {
            let Some(frame) = image.frame else { continue };
            let got = self.vk.read_buffer(&image.readback, 0..bytes)?;
            check(
                &got,
                &scene::processed_reference(frame, self.width, self.height),
                frame,
            )?;
            if frame >= last.0 {
                last = (frame, got);
            }
        }
        Ok(last)
    }

    /// Checks the `n` latest frames in the images themselves (read back with a one-shot
    /// copy, after [`Pipeline::finish`]) against render + tone curve on the CPU: the check
    /// of a pipeline that copies nothing back. Returns how many were checked.
    pub fn check_images(&self, n: usize) -> Result<usize> {
        let mut images: Vec<_> = self
            .slots
            .iter()
            .flat_map(|s| &s.images)
            .filter_map(|i| Some((i.frame?, i)))
            .collect();
        images.sort_by_key(|(frame, _)| std::cmp::Reverse(*frame));
        for (frame, image) in images.iter().take(n) {
            let got = self.vk.read_image(image.shared.vulkan(), 0, 0..1)?;
            check(
                &got,
                &scene::processed_reference(*frame, self.width, self.height),
                *frame,
            )?;
        }
        Ok(images.len().min(n))
    }
}

/// p50 and p99 of `v`, in seconds (0 when empty).
pub fn percentiles(v: &[std::time::Duration]) -> (f64, f64) {
    let mut v: Vec<f64> = v.iter().map(|d| d.as_secs_f64()).collect();
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// The demo's GPU path: runs `o.frames` frames, checks every slot's last frame, writes it
/// as a PNG and prints fps.
pub fn gpu_pipeline(o: &Options, vk: &vulkan::Context, cu: &cuda::Context) -> Result<()> {
    let chosen;
    let o = match o.auto_batch {
        Some(auto) => {
            let plan = choose_frames_per_crossing(o, auto, vk, cu)?;
            chosen = Options {
                batch: plan.frames as usize,
                ..o.clone()
            };
            &chosen
        }
        None => o,
    };
    let mut pipeline = Pipeline::new(o, o.readback, vk, cu)?;
    // Warm-up (module load, first submissions) outside the timed region.
    pipeline.run(0..(o.in_flight * o.batch) as u32)?;
    pipeline.finish()?;
    pipeline.host = Default::default();
    let start = Instant::now();
    pipeline.run(0..o.frames)?;
    pipeline.finish()?;
    let elapsed = start.elapsed();
    let checked = if o.readback {
        let (frame, texels) = pipeline.check()?;
        let path = o.out.join(format!("frame-{frame:04}.png"));
        png::write(&path, o.width, o.height, &texels)?;
        format!(
            "last frame of each of the {} images equal to the CPU reference; wrote {}",
            pipeline.slots.len() * o.batch,
            path.display()
        )
    } else {
        let n = pipeline.check_images(4)?;
        format!(
            "no per-frame readback; the latest {n} frames, read from their images after the \
             timed run, equal to the CPU reference"
        )
    };
    if let Some(file) = &o.trace {
        if let Some(t) = pipeline.take_trace()? {
            t.trace.write_json(file)?;
            let (p50, p99) = percentiles(&t.latencies);
            println!(
                "trace: {} crossings written to {}; crossing latency (submit of the render -> last result back in Vulkan) p50 {:.3} ms, p99 {:.3} ms{}",
                t.latencies.len(),
                file.display(),
                p50 * 1e3,
                p99 * 1e3,
                t.error.map(|e| format!(" (tracing stopped early: {e})")).unwrap_or_default()
            );
        }
    }
    let per_frame = elapsed.as_secs_f64() / f64::from(o.frames);
    println!(
        "GPU pipeline: {} frames of {}x{}, {} in flight x {} frames per crossing ({:?}): Vulkan render -> CUDA tone map in place (zero copy) -> Vulkan{}",
        o.frames,
        o.width,
        o.height,
        o.in_flight,
        o.batch,
        pipeline.mode,
        if o.readback { " readback" } else { " acquire" }
    );
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / f64::from(o.frames);
    let [begin, render, cuda, acquire] = pipeline.host.map(us);
    println!(
        "host time per frame: begin {begin:.1} us, render submit {render:.1} us, CUDA wait+launch+signal {cuda:.1} us, acquire+readback submit {acquire:.1} us"
    );
    println!(
        "summary: {:.0} fps ({:.3} ms/frame); {checked}",
        1.0 / per_frame,
        per_frame * 1e3,
    );
    Ok(())
}
