//! # vkcuda: zero-copy interop between Vulkan and CUDA
//!
//! A Vulkan application allocates exportable memory and semaphores with [`vulkan`]; CUDA
//! imports them with [`cuda`]; [`interop`] pairs the two so that the CUDA description is
//! derived from the Vulkan resource and cannot disagree with it.
//!
//! ```text
//! examples/, benches/          anyhow; no unsafe
//! interop/                     SharedBuffer, SharedImage: a Vulkan resource + its CUDA import
//!    |          \
//! vulkan/       cuda/          each side alone: vulkan/ knows no CUDA, cuda/ knows no ash
//!    \          /
//! external                     neutral vocabulary: handle types, owned handles, imports
//! error                        one typed error for the library
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
//! # Platforms
//! Tested on Linux with opaque fds. Every handle type CUDA accepts is modelled in
//! [`external`] and compiles everywhere; the Windows and NvSci ones are untested.

pub mod cuda;
pub mod error;
pub mod external;
pub mod interop;
pub mod vulkan;

/// The ash version vkcuda is built against, so callers name the same `vk` types.
pub use ash;
/// The cudarc version vkcuda is built against (streams, modules, launches).
pub use cudarc;
pub use error::{Error, Result};
