//! # vkcuda: zero-copy interop between Vulkan and CUDA
//!
//! A Vulkan application allocates exportable memory and semaphores with [`vulkan`]; CUDA
//! imports them with [`cuda`]; [`interop`] pairs the two so that the CUDA description is
//! derived from the Vulkan resource and cannot disagree with it.
//!
//! ```text
//! examples/, benches/          anyhow; unsafe only for CUDA kernel launches
//! interop/                     SharedBuffer, SharedImage, SharedSemaphore: a Vulkan resource
//!                              + its CUDA import; FrameSync: N frames in flight across both
//!    |          \
//! vulkan/       cuda/          each side alone: vulkan/ knows no CUDA, cuda/ knows no ash
//!    \          /
//! external                     neutral vocabulary: handle types, owned handles, imports
//! error                        one typed error for the library
//! ipc                          exported fds + a payload to another process (SCM_RIGHTS)
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
//! order; its default mode crosses with semaphores (spec-defined, ~300 us a crossing on an
//! H100, overlapped across frames), its low-latency mode with stream memory operations and
//! a host relay (27 us a hand-off, 35,000-48,000 hand-offs/s). Host waits spin
//! ([`vulkan::ExportableSemaphore::wait`], 3 us) instead of sleeping in `vkWaitSemaphores`
//! (10 ms). [`vulkan::Commands`] records Vulkan work without `unsafe`, planning the
//! barriers of tracked images (the release to and acquire from `VK_QUEUE_FAMILY_EXTERNAL`)
//! at submission, and FrameSync's frames submit it.
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
