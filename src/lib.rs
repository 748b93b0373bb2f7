//! # vkcuda: zero-copy interop between Vulkan and CUDA
//!
//! A Vulkan application allocates exportable memory and semaphores with [`vulkan`]; CUDA
//! imports them with [`cuda`]; [`interop`] pairs the two so that the CUDA description is
//! derived from the Vulkan resource and cannot disagree with it.
//!
//! ```text
//! examples/, benches/          anyhow; unsafe only for CUDA kernel launches
//! interop/                     SharedBuffer, SharedImage, SharedSemaphore: a Vulkan resource
//!                              + its CUDA import (or CUDA VMM memory + its Vulkan import:
//!                              SharedBuffer::from_cuda, SharedLinearImage::from_cuda);
//!                              SharedPool: a pool's blocks imported once each; FrameSync:
//!                              N frames in flight across both
//!    |          \
//! vulkan/       cuda/          each side alone: vulkan/ knows no CUDA, cuda/ knows no ash;
//!                              vulkan/ExportPool sub-allocates exported blocks,
//!                              cuda/VmmAllocation is exportable memory CUDA owns
//!    \          /
//! external                     neutral vocabulary: handle types, owned handles, imports
//! error                        one typed error for the library
//! ipc                          exported fds + a payload to another process (SCM_RIGHTS)
//! util                         helpers beside the core: Commands, ComputePass, OneShot copies
//! trace                        frame timelines (host clock, GPU clock mapping, Perfetto JSON)
//! wgpu_interop (feature wgpu)  a wgpu device's textures/buffers shared with CUDA, frames
//!                              handed between wgpu's queue and a CUDA stream
//! ```
//!
//! ```no_run
//! # fn main() -> vkcuda::Result<()> {
//! use vkcuda::{cuda, interop::SharedBuffer, vulkan};
//!
//! let vk = vulkan::Context::new(&vulkan::ContextDesc::default())?;
//! let cu = cuda::Context::matching(vk.identity())?; // same UUID, or an error naming both sides
//! let shared = SharedBuffer::new(&vk, &cu, &vulkan::BufferDesc::new(64 << 20))?;
//! let whole = shared.map(0..shared.size())?; // read-write CUdeviceptr for kernels
//! # Ok(()) }
//! ```
//!
//! # Drop order
//! A CUDA mapping holds the import it maps, and the import holds the Vulkan resource it came
//! from, so `cuMemFree` → `cuDestroyExternalMemory` → `vkDestroyBuffer`/`vkFreeMemory` run
//! in that order whatever order handles are dropped in. Ordering GPU *work* is separate:
//! wait for it (stream or semaphore) before the last handle goes.
//!
//! # Synchronisation
//! [`interop::SharedSemaphore`] is an exported timeline or binary semaphore imported into
//! CUDA. [`interop::FrameSync`] drives N frames in flight Vulkan → CUDA → Vulkan, with
//! monotonic checked values, bounded host waits and a frame token that enforces the step
//! order; its default mode crosses with semaphores (spec-defined, crossings overlapped
//! across frames), its low-latency mode with stream memory operations and a host relay.
//! Host waits poll the counter ([`vulkan::Semaphore::wait`]) instead of sleeping in
//! `vkWaitSemaphores`. What each costs on a GPU is measured by the benches and recorded in
//! `benches/RESULTS.md`, not here.
//!
//! # Helpers
//! [`util`] holds what sits beside the core, as `wgpu::util` does: [`util::Commands`]
//! records Vulkan work without `unsafe`, planning the barriers of tracked images (the release
//! to and acquire from `VK_QUEUE_FAMILY_EXTERNAL`) at submission, and FrameSync's frames
//! submit it; [`util::ComputePass`] is a minimal compute pipeline; [`util::OneShot`] gives
//! the context staged copies, fills, hand-offs and dispatches that wait.
//!
//! # Threads
//! Every public type is `Send` and `Sync` (checked by a unit test), so contexts, resources
//! and semaphores may be shared between threads behind an `Arc` or a reference. What that
//! means per type:
//!
//! * [`vulkan::Context`] and [`cuda::Context`] are cheap clones of one shared device; all
//!   their methods take `&self`. Vulkan queue access is serialised by one lock per queue
//!   ([`vulkan::Context::queue_at`]): hold that guard only for your own `vkQueue*` calls;
//!   a vkcuda call that needs the same queue on the same thread then returns an error.
//! * [`vulkan::ExternalImage`] tracks its owner and layout behind a lock; concurrent users
//!   of one image see the state of the last recorded transition.
//! * Timeline signals ([`vulkan::Semaphore::signal`], [`vulkan::Context::submit_to`],
//!   [`cuda::ExternalSemaphore::signal_many`]) are checked and submitted under one lock per
//!   timeline, so values never go backwards whatever the threads do.
//! * [`interop::FrameSync`] and [`util::Commands`] take `&mut self` for everything that
//!   submits: one thread drives each, and they may move between threads.
//!
//! The locks inside vkcuda and the one order they are taken in are listed on
//! [`vulkan::Context`](vulkan::Context#locks-and-their-order).
//!
//! # Logging
//! The library never prints. What it cannot return as an error (a failure inside a `Drop`,
//! a leak chosen over freeing memory the GPU may still use, a relay thread that panicked)
//! goes to the [`log`](https://docs.rs/log) facade: `log::error!` when something was leaked
//! or lost, `log::warn!` otherwise. Validation-layer messages use the target
//! `vkcuda::validation` (errors at `error`, warnings at `warn`). Install any logger
//! (`env_logger`, `tracing-log`, ...) to see them.
//!
//! # Presenting (feature `window`)
//! `vulkan::Presenter` shows an image in a window: a surface from any raw window handle (or
//! `VK_EXT_headless_surface`), a swapchain recreated on resize, `SUBOPTIMAL` and
//! `OUT_OF_DATE`, and per present one submission (copy or blit, barriers planned by the
//! image's tracker) and `vkQueuePresentKHR`, after the frame's last Vulkan batch.
//!
//! # Platforms
//! Tested on Linux with opaque fds. Every handle type CUDA accepts is modelled in
//! [`external`] and compiles everywhere; the Windows and NvSci ones are untested.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cuda;
pub mod error;
pub mod external;
pub mod interop;
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub mod ipc;
mod timeline;
pub mod trace;
pub mod util;
pub mod vulkan;
#[cfg(feature = "wgpu")]
#[cfg_attr(docsrs, doc(cfg(feature = "wgpu")))]
pub mod wgpu_interop;

/// The ash version vkcuda is built against, so callers name the same `vk` types.
pub use ash;
/// The cudarc version vkcuda is built against (streams, modules, launches).
pub use cudarc;
pub use error::{Error, Result};
/// The wgpu version [`wgpu_interop`] is built against.
#[cfg(feature = "wgpu")]
#[cfg_attr(docsrs, doc(cfg(feature = "wgpu")))]
pub use wgpu;

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate docs promise these are `Send` and `Sync`.
    #[test]
    fn public_types_are_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<vulkan::Context>();
        both::<vulkan::Semaphore>();
        both::<vulkan::ExternalBuffer>();
        both::<vulkan::ExternalImage>();
        both::<cuda::Context>();
        both::<cuda::ExternalMemory>();
        both::<cuda::MappedBuffer>();
        both::<cuda::MipmappedArray>();
        both::<cuda::ArrayLevel>();
        both::<cuda::SurfaceObject>();
        both::<cuda::TextureObject>();
        both::<cuda::ExternalSemaphore>();
        both::<interop::SharedBuffer>();
        both::<interop::SharedImage>();
        both::<interop::SharedSemaphore>();
        both::<interop::FrameSync>();
        both::<interop::Frame<'static>>();
        both::<util::Commands>();
        both::<util::ComputePass>();
        both::<util::ComputeTarget>();
        both::<Error>();
    }
}
