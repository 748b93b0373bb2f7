//! wgpu renders the demo scene into textures (the WGSL of `shaders/render.wgsl`, compiled by
//! wgpu at run time), CUDA tone-maps each one in place (`shaders/postprocess.cu` through
//! NVRTC), and wgpu reads it back; N frames in flight through `WgpuFrameSync`. Every frame
//! is checked against the CPU reference and the last one is written as a PNG.
//!
//! Without CUDA (lavapipe) it runs the wgpu/Vulkan half (render, readback, checks) and says
//! what it could not do.
//!
//! ```text
//! cargo run --release --features wgpu --example wgpu_postprocess -- \
//!     [--size 640x360] [--frames 240] [--in-flight 3] [--out demo-out/wgpu_postprocess.png]
//! ```

mod common;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use common::scene;
use vkcuda::cuda::{self, SurfaceObject};
use vkcuda::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use vkcuda::wgpu;
use vkcuda::wgpu_interop::{WgpuContext, WgpuFrameSync, WgpuTexture};

struct Options {
    width: u32,
    height: u32,
    frames: u32,
    in_flight: usize,
    out: PathBuf,
}

fn options() -> Result<Options> {
    let mut o = Options {
        width: 640,
        height: 360,
        frames: 240,
        in_flight: 3,
        out: PathBuf::from("demo-out/wgpu_postprocess.png"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--size" => (o.width, o.height) = common::parse_size(&value()?)?,
            "--frames" => o.frames = value()?.parse()?,
            "--in-flight" => o.in_flight = value()?.parse()?,
            "--out" => o.out = value()?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        o.frames > 0 && o.in_flight > 0,
        "--frames and --in-flight must be positive"
    );
    Ok(o)
}

/// One frame in flight: its render target, the bind group that writes it, and a readback
/// buffer that still holds the frame it last received.
struct Slot {
    target: WgpuTexture,
    bind: wgpu::BindGroup,
    readback: wgpu::Buffer,
    /// (scene frame, the submission that copied it into `readback`).
    pending: Option<(u32, wgpu::SubmissionIndex)>,
}

/// The CUDA half: the tone-map kernel and each slot's surface.
struct Cuda {
    sync: WgpuFrameSync,
    tonemap: CudaFunction,
    surfaces: Vec<SurfaceObject>,
}

struct App {
    o: Options,
    ctx: WgpuContext,
    pipeline: wgpu::ComputePipeline,
    slots: Vec<Slot>,
    padded_row: u32,
    /// Frames go through CUDA's tone map (what the CPU reference must include).
    processed: bool,
    checked: u32,
    last: Vec<u8>,
}

fn main() -> Result<()> {
    let o = options()?;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .context("no wgpu Vulkan adapter")?;
    let ctx = WgpuContext::open(
        &adapter,
        &wgpu::DeviceDescriptor {
            required_features: wgpu::Features::IMMEDIATES,
            required_limits: wgpu::Limits {
                max_immediate_size: scene::PUSH_SIZE,
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    println!(
        "wgpu device {:?}, {}x{}, {} frames, {} in flight",
        ctx.vulkan().identity().name,
        o.width,
        o.height,
        o.frames,
        o.in_flight
    );
    let mut app = App::new(o, ctx)?;
    let cuda = match app.cuda() {
        Ok(cuda) => Some(cuda),
        Err(why) => {
            println!("CUDA half unavailable ({why:#}): running the wgpu/Vulkan half only");
            None
        }
    };
    let start = Instant::now();
    let frames = app.o.frames;
    match cuda {
        Some(mut cuda) => {
            app.processed = true;
            for frame in 0..frames {
                app.cuda_frame(&mut cuda, frame)?;
            }
            cuda.sync.wait_idle()?;
        }
        None => {
            for frame in 0..frames {
                app.wgpu_frame(frame)?;
            }
        }
    }
    app.drain()?;
    let elapsed = start.elapsed();
    println!(
        "{} frames in {:.3} s: {:.0} frames/s; {} frames checked against the CPU reference",
        frames,
        elapsed.as_secs_f64(),
        f64::from(frames) / elapsed.as_secs_f64(),
        app.checked
    );
    if let Some(dir) = app.o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    common::png::write(&app.o.out, app.o.width, app.o.height, &app.last)?;
    println!("wrote {}", app.o.out.display());
    Ok(())
}

impl App {
    fn new(o: Options, ctx: WgpuContext) -> Result<Self> {
        let device = ctx.device();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("render.wgsl"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../shaders/render.wgsl").into()),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: None,
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::StorageTexture {
                    access: wgpu::StorageTextureAccess::WriteOnly,
                    format: wgpu::TextureFormat::Rgba8Unorm,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
                count: None,
            }],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: None,
            bind_group_layouts: &[Some(&layout)],
            immediate_size: scene::PUSH_SIZE,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("render"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let padded_row = (o.width * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        let slots = (0..o.in_flight)
            .map(|_| -> Result<Slot> {
                let target = ctx.create_texture(&wgpu::TextureDescriptor {
                    label: Some("frame"),
                    size: wgpu::Extent3d {
                        width: o.width,
                        height: o.height,
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: wgpu::TextureFormat::Rgba8Unorm,
                    usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC,
                    view_formats: &[],
                })?;
                let view = target.texture().create_view(&Default::default());
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &layout,
                    entries: &[wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::TextureView(&view),
                    }],
                });
                let readback = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: u64::from(padded_row * o.height),
                    usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
                    mapped_at_creation: false,
                });
                Ok(Slot {
                    target,
                    bind,
                    readback,
                    pending: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            o,
            ctx,
            pipeline,
            slots,
            padded_row,
            processed: false,
            checked: 0,
            last: Vec::new(),
        })
    }

    /// The CUDA half, or why it cannot run here.
    fn cuda(&self) -> Result<Cuda> {
        let cu = cuda::Context::matching(self.ctx.vulkan().identity())?;
        let sync = WgpuFrameSync::new(&self.ctx, &cu, self.o.in_flight)?;
        let tonemap = cu
            .compile("postprocess.cu", scene::POSTPROCESS_CU)?
            .load_function("tonemap")?;
        let surfaces = self
            .slots
            .iter()
            .map(|s| s.target.share(&cu)?.surface(0))
            .collect::<vkcuda::Result<Vec<_>>>()?;
        Ok(Cuda {
            sync,
            tonemap,
            surfaces,
        })
    }

    /// Renders `frame` into its slot's texture and submits it.
    fn render(&mut self, frame: u32) -> Result<usize> {
        let i = frame as usize % self.slots.len();
        self.check_slot(i)?; // the frame this slot last held, before it is overwritten
        let slot = &self.slots[i];
        let mut encoder = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &slot.bind, &[]);
            pass.set_immediates(
                0,
                &scene::push_constants(frame, self.o.width, self.o.height),
            );
            pass.dispatch_workgroups(
                self.o.width.div_ceil(scene::WORKGROUP[0]),
                self.o.height.div_ceil(scene::WORKGROUP[1]),
                1,
            );
        }
        self.ctx.queue().submit([encoder.finish()]);
        Ok(i)
    }

    /// Copies slot `i`'s texture into its readback buffer.
    fn read_back(&mut self, i: usize, frame: u32) {
        let slot = &mut self.slots[i];
        let mut encoder = self
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        encoder.copy_texture_to_buffer(
            slot.target.texture().as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &slot.readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(self.padded_row),
                    rows_per_image: None,
                },
            },
            slot.target.texture().size(),
        );
        let index = self.ctx.queue().submit([encoder.finish()]);
        slot.pending = Some((frame, index));
    }

    /// Without CUDA: render, read back.
    fn wgpu_frame(&mut self, frame: u32) -> Result<()> {
        let i = self.render(frame)?;
        self.read_back(i, frame);
        Ok(())
    }

    /// Render (wgpu) -> tone map in place (CUDA) -> read back (wgpu).
    fn cuda_frame(&mut self, cuda: &mut Cuda, frame: u32) -> Result<()> {
        let mut f = cuda.sync.begin()?;
        let i = self.render(frame)?;
        f.release_to_cuda(&[&self.slots[i].target])?;
        let stream = f.cuda_wait()?;
        let (w, h) = (self.o.width, self.o.height);
        let mut kernel = stream.launch_builder(&cuda.tonemap);
        kernel.arg(&cuda.surfaces[i]).arg(&w).arg(&h);
        let config = LaunchConfig {
            grid_dim: (w.div_ceil(16), h.div_ceil(16), 1),
            block_dim: (16, 16, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: tonemap(cudaSurfaceObject_t, uint, uint) reads and writes texels inside
        // w x h of the surface's level, which the slot keeps alive.
        unsafe { kernel.launch(config) }?;
        f.cuda_signal()?;
        f.acquire_from_cuda()?;
        self.read_back(i, frame);
        Ok(())
    }

    /// Maps slot `i`'s readback (waiting for its copy only) and checks the frame in it.
    fn check_slot(&mut self, i: usize) -> Result<()> {
        let Some((frame, index)) = self.slots[i].pending.take() else {
            return Ok(());
        };
        let (w, h) = (self.o.width, self.o.height);
        let slice = self.slots[i].readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| {
            r.expect("mapping the readback buffer")
        });
        self.ctx.device().poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(std::time::Duration::from_secs(10)),
        })?;
        let got: Vec<u8> = slice
            .get_mapped_range()?
            .chunks(self.padded_row as usize)
            .flat_map(|row| &row[..w as usize * 4])
            .copied()
            .collect();
        self.slots[i].readback.unmap();
        let want = if self.processed {
            scene::processed_reference(frame, w, h)
        } else {
            scene::reference(frame, w, h)
        };
        if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
            bail!(
                "frame {frame}: byte {at} (pixel {}, {}) is {} but the CPU reference says {}",
                at / 4 % w as usize,
                at / 4 / w as usize,
                got[at],
                want[at]
            );
        }
        self.checked += 1;
        self.last = got;
        Ok(())
    }

    /// Checks every slot's pending frame (the last `in_flight` frames).
    fn drain(&mut self) -> Result<()> {
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        order.sort_by_key(|&i| self.slots[i].pending.as_ref().map(|p| p.0));
        for i in order {
            self.check_slot(i)?;
        }
        Ok(())
    }
}
