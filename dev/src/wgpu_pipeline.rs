//! The wgpu flavour of the demo pipeline (the `wgpu` feature): wgpu renders the scene
//! (`shaders/render.wgsl`, compiled by wgpu at run time) into vkcuda textures, CUDA
//! tone-maps them in place, wgpu reads them back; N frames in flight through
//! `WgpuFrameSync`. Used by the `wgpu_postprocess` example and the `wgpu` bench.

use std::time::Instant;

use anyhow::{bail, Result};
use vkcuda::cuda::{self, SurfaceObject};
use vkcuda::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use vkcuda::wgpu;
use vkcuda::wgpu_interop::{WgpuContext, WgpuFrameSync, WgpuTexture};

use crate::scene;

/// One frame in flight: its render target, the bind group that writes it, and a readback
/// buffer that still holds the frame it last received.
struct Slot {
    target: WgpuTexture,
    bind: wgpu::BindGroup,
    readback: wgpu::Buffer,
    /// (scene frame, the submission that copied it into `readback`, whether CUDA
    /// tone-mapped it).
    pending: Option<(u32, wgpu::SubmissionIndex, bool)>,
}

/// The CUDA half: the tone-map kernel and each slot's surface.
struct Cuda {
    sync: WgpuFrameSync,
    tonemap: CudaFunction,
    surfaces: Vec<SurfaceObject>,
}

/// Render (wgpu) -> tone map in place (CUDA, once [`WgpuPipeline::with_cuda`] succeeded)
/// -> read back and check (wgpu, when asked for).
pub struct WgpuPipeline {
    /// Host time spent in each step of a CUDA frame, summed over every one run:
    /// WgpuFrameSync::begin, recording the render, submitting it with release_to_cuda_after,
    /// the CUDA wait + launch + signal, acquire_from_cuda (with the readback, if any).
    pub host: [std::time::Duration; 5],
    width: u32,
    height: u32,
    /// Copy each frame back and check it against the CPU reference.
    readback: bool,
    cuda: Option<Cuda>,
    ctx: WgpuContext,
    pipeline: wgpu::ComputePipeline,
    slots: Vec<Slot>,
    padded_row: u32,
    /// Frames checked against the CPU reference so far.
    pub checked: u32,
    /// The texels of the latest frame checked.
    pub last: Vec<u8>,
}

impl WgpuPipeline {
    /// What a device must be opened with for the scene shader: `IMMEDIATES`, and
    /// `max_immediate_size` of at least `scene::PUSH_SIZE`.
    pub fn device_descriptor() -> wgpu::DeviceDescriptor<'static> {
        wgpu::DeviceDescriptor {
            required_features: wgpu::Features::IMMEDIATES,
            required_limits: wgpu::Limits {
                max_immediate_size: scene::PUSH_SIZE,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Sets up `in_flight` slots on `ctx` (opened with
    /// [`WgpuPipeline::device_descriptor`]), wgpu-only until [`WgpuPipeline::with_cuda`].
    pub fn new(
        ctx: &WgpuContext,
        (width, height): (u32, u32),
        in_flight: usize,
        readback: bool,
    ) -> Result<Self> {
        let ctx = ctx.clone();
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
        let padded_row = (width * 4).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        let slots = (0..in_flight)
            .map(|_| -> Result<Slot> {
                let target = ctx.create_texture(&wgpu::TextureDescriptor {
                    label: Some("frame"),
                    size: wgpu::Extent3d {
                        width,
                        height,
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
                    size: u64::from(padded_row * height),
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
            width,
            height,
            readback,
            cuda: None,
            ctx,
            pipeline,
            slots,
            padded_row,
            checked: 0,
            last: Vec::new(),
            host: Default::default(),
        })
    }

    /// Adds the CUDA half (tone map through `WgpuFrameSync`), or says why it cannot run
    /// here (the pipeline stays wgpu-only then). With `own_queue` the acquires go to
    /// vkcuda's own queue (`WgpuFrameSync::with_own_queue`) and, without readback, each
    /// frame comes back to wgpu only when its slot comes round again, so the next frames'
    /// renders overlap its crossing.
    pub fn with_cuda(&mut self, own_queue: bool) -> Result<()> {
        let cu = cuda::Context::matching(self.ctx.vulkan().identity())?;
        let sync = if own_queue {
            WgpuFrameSync::with_own_queue(&self.ctx, &cu, self.slots.len())?
        } else {
            WgpuFrameSync::new(&self.ctx, &cu, self.slots.len())?
        };
        let tonemap = cu
            .compile("postprocess.cu", scene::POSTPROCESS_CU)?
            .load_function("tonemap")?;
        let surfaces = self
            .slots
            .iter()
            .map(|s| s.target.share(&cu)?.surface(0))
            .collect::<vkcuda::Result<Vec<_>>>()?;
        self.cuda = Some(Cuda {
            sync,
            tonemap,
            surfaces,
        });
        Ok(())
    }

    /// Whether frames go through CUDA.
    pub fn has_cuda(&self) -> bool {
        self.cuda.is_some()
    }

    /// Submits `frames` (scene frame numbers); the host waits only when a slot is reused.
    pub fn run(&mut self, frames: std::ops::Range<u32>) -> Result<()> {
        let mut cuda = self.cuda.take();
        let result = frames
            .into_iter()
            .try_for_each(|frame| match cuda.as_mut() {
                Some(cuda) => self.cuda_frame(cuda, frame),
                None => self.wgpu_frame(frame),
            });
        self.cuda = cuda;
        result
    }

    /// Waits (bounded) until every frame has finished, and checks the frames still
    /// pending.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(cuda) = &self.cuda {
            cuda.sync.wait_idle()?;
        }
        self.ctx.device().poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(std::time::Duration::from_secs(10)),
        })?;
        self.drain()
    }

    /// Records the render of `frame` into its slot's texture; returns the slot and the
    /// commands, not yet submitted.
    fn render(&mut self, frame: u32) -> Result<(usize, wgpu::CommandBuffer)> {
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
            pass.set_immediates(0, &scene::push_constants(frame, self.width, self.height));
            pass.dispatch_workgroups(
                self.width.div_ceil(scene::WORKGROUP[0]),
                self.height.div_ceil(scene::WORKGROUP[1]),
                1,
            );
        }
        Ok((i, encoder.finish()))
    }

    /// Records the copy of slot `i`'s texture into its readback buffer (when reading back).
    fn read_back(&self, i: usize) -> Option<wgpu::CommandBuffer> {
        if !self.readback {
            return None;
        }
        let slot = &self.slots[i];
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
        Some(encoder.finish())
    }

    /// Without CUDA: render, read back, in one submission.
    fn wgpu_frame(&mut self, frame: u32) -> Result<()> {
        let (i, render) = self.render(frame)?;
        let read_back = self.read_back(i);
        let checked = read_back.is_some();
        let index = self
            .ctx
            .queue()
            .submit([render].into_iter().chain(read_back));
        if checked {
            self.slots[i].pending = Some((frame, index, false));
        }
        Ok(())
    }

    /// Render (wgpu) -> tone map in place (CUDA) -> read back (wgpu).
    fn cuda_frame(&mut self, cuda: &mut Cuda, frame: u32) -> Result<()> {
        let mut clock = Instant::now();
        let mut lap = |host: &mut [std::time::Duration; 5], i: usize| {
            let now = Instant::now();
            host[i] += now - clock;
            clock = now;
        };
        let mut f = cuda.sync.begin()?;
        lap(&mut self.host, 0);
        let (i, render) = self.render(frame)?;
        lap(&mut self.host, 1);
        f.release_to_cuda_after([render], &[&self.slots[i].target], &[])?;
        lap(&mut self.host, 2);
        let stream = f.cuda_wait()?;
        let (w, h) = (self.width, self.height);
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
        lap(&mut self.host, 3);
        if let Some(read_back) = self.read_back(i) {
            let index = f.acquire_from_cuda_then([read_back])?;
            self.slots[i].pending = Some((frame, index, true));
        } else {
            // SAFETY: slot i's texture is used again only by the render of the slot's next
            // frame, recorded after `begin` returned for it (or after `finish`'s wait_idle).
            unsafe { f.acquire_from_cuda_deferred() }?;
        }
        lap(&mut self.host, 4);
        Ok(())
    }

    /// Maps slot `i`'s readback (waiting for its copy only) and checks the frame in it.
    fn check_slot(&mut self, i: usize) -> Result<()> {
        let Some((frame, index, processed)) = self.slots[i].pending.take() else {
            return Ok(());
        };
        let (w, h) = (self.width, self.height);
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
        // Whether CUDA processed it is recorded with the frame: `run` holds the CUDA half
        // outside `self` while it submits.
        let want = if processed {
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

    /// Checks every slot's pending frame (the last `in_flight` frames), oldest first.
    fn drain(&mut self) -> Result<()> {
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        order.sort_by_key(|&i| self.slots[i].pending.as_ref().map(|p| p.0));
        for i in order {
            self.check_slot(i)?;
        }
        Ok(())
    }
}
