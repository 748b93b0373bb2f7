//! Interop with a wgpu device (Vulkan backend; the `wgpu` feature): textures and buffers
//! that wgpu draws into and CUDA reads and writes in place, and frames handed between
//! wgpu's queue and a CUDA stream without a host stall.
//!
//! * [`WgpuContext`]: opens a wgpu device that can share ([`WgpuContext::open`] enables
//!   the external memory and semaphore extensions through wgpu-hal's device-creation
//!   callback), or adopts one and says which extension it lacks
//!   ([`WgpuContext::from_wgpu`], [`crate::Error::MissingExtension`]). It carries vkcuda's
//!   [`vulkan::Context`](crate::vulkan::Context) on wgpu's own `VkDevice`.
//! * [`WgpuTexture`] / [`WgpuBuffer`]: a vkcuda [`ExternalImage`](crate::vulkan::ExternalImage)
//!   / [`ExternalBuffer`](crate::vulkan::ExternalBuffer) wrapped as a `wgpu::Texture` /
//!   `wgpu::Buffer` with a drop guard (the vkcuda object lives as long as wgpu holds it);
//!   [`WgpuTexture::share`] imports it into CUDA.
//! * [`WgpuFrameSync`]: N frames in flight, wgpu → CUDA → wgpu.
//!
//! ```no_run
//! # fn main() -> vkcuda::Result<()> {
//! use vkcuda::wgpu;
//! use vkcuda::wgpu_interop::{WgpuContext, WgpuFrameSync};
//! # let adapter: wgpu::Adapter = todo!();
//! let ctx = WgpuContext::open(&adapter, &wgpu::DeviceDescriptor::default())?;
//! let cu = vkcuda::cuda::Context::matching(ctx.vulkan().identity())?;
//! let target = ctx.create_texture(&wgpu::TextureDescriptor {
//!     label: Some("frame"),
//!     size: wgpu::Extent3d { width: 640, height: 360, depth_or_array_layers: 1 },
//!     mip_level_count: 1,
//!     sample_count: 1,
//!     dimension: wgpu::TextureDimension::D2,
//!     format: wgpu::TextureFormat::Rgba8Unorm,
//!     usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC,
//!     view_formats: &[],
//! })?;
//! let surface = target.share(&cu)?.surface(0)?; // for a CUDA kernel
//! let mut frames = WgpuFrameSync::new(&ctx, &cu, 3)?;
//! let mut f = frames.begin()?;
//! // ... wgpu renders into target.texture() and submits ...
//! f.release_to_cuda(&[&target], &[])?;
//! let stream = f.cuda_wait()?;
//! // ... a kernel on `stream` reads and writes `surface` ...
//! f.cuda_signal()?;
//! f.acquire_from_cuda()?;
//! // ... wgpu reads target.texture() ...
//! # Ok(()) }
//! ```
//!
//! # wgpu's queue stays wgpu's
//! vkcuda never calls `vkQueueSubmit` on the queue wgpu owns. Every Vulkan-side wait and
//! signal is added with wgpu-hal's `Queue::add_wait_semaphore` / `add_signal_semaphore`
//! and rides on a `wgpu::Queue::submit`. A signal is added *after* the submission it must
//! follow, so it is ordered after that work even when another thread submits in between.
//! The wgpu → CUDA signal, which CUDA waits for, is carried at once by an empty submission;
//! a frame's hand-back signal, which only vkcuda waits for, rides on whichever submission
//! comes next (the next frame's, usually), and [`WgpuFrameSync`] makes an empty one only
//! when it must wait for a signal nothing has carried yet. A wait is added before its
//! submission, and if another thread's submission takes it first, it still orders ours (a
//! `vkQueueSubmit` wait covers every later submission on the queue).
//!
//! [`WgpuFrameSync::with_own_queue`] submits each frame's acquire, which waits for CUDA, on
//! vkcuda's own queue of wgpu's family ([`WgpuContext::open`] creates it) instead: a second
//! queue, as vkcuda's own [`FrameSync`](crate::interop::FrameSync) uses, so the wait holds up
//! no wgpu work that does not need CUDA's result. The acquire there also waits for the
//! release's wgpu → CUDA value, which orders it after the release for vkcuda's trackers.
//!
//! A frame's own wgpu work can share the crossing's submissions
//! ([`WgpuFrame::release_to_cuda_after`], [`WgpuFrame::acquire_from_cuda_then`]): a frame
//! then costs three submissions on wgpu's queue (work + release, the wgpu → CUDA signal,
//! acquire + work).
//!
//! # Queue-family transfers without desynchronising wgpu's tracker
//! wgpu records no transfers to or from `VK_QUEUE_FAMILY_EXTERNAL` (wgpu#2948), and it
//! tracks each texture's state (hence its layout) itself. vkcuda records the transfers as
//! raw barriers through wgpu-hal's command encoder (`CommandEncoder::as_hal_mut`) and keeps
//! wgpu's belief true at every point wgpu looks:
//! 1. **Park.** [`WgpuFrame::release_to_cuda`] first submits a wgpu encoder with
//!    `transition_resources(texture → STORAGE_READ_WRITE)`: wgpu itself moves the texture
//!    from whatever it was into `GENERAL` (the layout wgpu-hal gives every storage state of
//!    a colour texture) and records that its state is `STORAGE_READ_WRITE`.
//! 2. **Release**, in a separate encoder used only through the hal (wgpu forbids mixing
//!    the two APIs in one encoder, and tracks nothing in a raw one): queue family →
//!    `EXTERNAL`, staying in `GENERAL`. Submitted in the same `submit` right after the
//!    park, then the wgpu → CUDA signal.
//! 3. CUDA works on the image in `GENERAL`.
//! 4. **Acquire**, again a raw encoder, submitted waiting on the CUDA → wgpu value:
//!    `EXTERNAL` → family, staying in `GENERAL`.
//!
//! After 4 the image is exactly where wgpu's tracker left it in 1 (`STORAGE_READ_WRITE`,
//! `GENERAL`), so wgpu's next barrier on it starts from the right layout. Only wgpu's own
//! barriers change the layout: a texture that wgpu writes as storage crosses with no
//! layout transition at all. Between 1 and 4
//! wgpu must not use the texture (it belongs to CUDA), including through
//! `Queue::write_texture`, whose copies run at the start of wgpu's next submission. wgpu
//! does not know that the raw encoders use the image, so [`WgpuFrameSync`] holds the images
//! until the hand-back has executed.
//!
//! Buffers have no layout: a release or acquire is one raw barrier, and wgpu's own buffer
//! barriers (which name no queue family) are left as they are.
//!
//! # vkcuda's trackers see wgpu's queue
//! Each hand-over is planned and committed like any vkcuda submission: the images' and
//! buffers' tracked owners and layouts move only when the submission went through, as a
//! use on wgpu's queue, so a use on one of vkcuda's own queues (the spare queue of
//! [`WgpuContext::open`]) is refused until it is ordered after it (and the other way
//! round). Every timeline value signalled on wgpu's queue is checked against, and recorded
//! in, the semaphore's high-water mark under the same lock as the submission, as
//! [`Context::submit_to`](crate::vulkan::Context::submit_to) does.

mod device;
mod frame_sync;
mod ownership;
mod resources;

pub use device::WgpuContext;
pub use frame_sync::{WgpuFrame, WgpuFrameSync, MAX_FRAMES_IN_FLIGHT};
pub use resources::{vulkan_format, WgpuBuffer, WgpuTexture};
