//! The CUDA side: device selection by UUID, imports of external memory and semaphores
//! from any exporter described by [`crate::external`], and NVRTC kernels. Knows nothing of
//! Vulkan.
//!
//! * [`Context`] is the CUDA device with the exporter's UUID ([`Context::matching`]) and
//!   its primary context; never chosen by index.
//! * [`ExternalMemory`] (in `memory.rs`) is an imported allocation. [`ExternalMemory::map`]
//!   gives read-write [`MappedBuffer`]s (several per import, at offsets).
//! * [`MipmappedArray`] (in `array.rs`) is an image, mapped from an import
//!   ([`ExternalMemory::map_mipmapped_array`]) or native ([`MipmappedArray::new`]), with
//!   [`ArrayLevel`]s, [`SurfaceObject`]s and [`TextureObject`]s (per level or over the
//!   whole mip chain).
//! * [`ExternalSemaphore`] is an imported binary or timeline semaphore, signalled and
//!   waited on from streams, one at a time or batched in one driver call.
//! * [`CudaTimer`] times spans of a stream with events, read back as host times (for
//!   [`crate::trace`]).
//! * [`VmmAllocation`] (in `vmm.rs`) is memory CUDA allocates and owns (`cuMemCreate`),
//!   mapped read-write for CUDA and exported as a POSIX fd for Vulkan to import.
//! * [`PitchedBuffer`] (in `pitched.rs`) is rows at a pitch in a [`MappedBuffer`]: a LINEAR
//!   image as CUDA sees it.
//! * [`Context::compile`] builds `.cu` sources with NVRTC, once per process and device.
//!
//! cudarc's own safe layer is used for contexts, streams, events, modules and launches;
//! what it lacks (semaphores, arrays, read-write mappings of any handle type) is built on
//! `cudarc::driver::sys` in a small private `raw` module, with RAII types on top.
//!
//! # Drop order
//! Every mapping holds the import it maps (an [`Arc`](std::sync::Arc) inside), and an
//! import made with [`ExternalMemory::import_with_owner`] holds the exporter's resource, so
//! `cuMemFree` / `cuSurfObjectDestroy` / `cuMipmappedArrayDestroy` ->
//! `cuDestroyExternalMemory` -> exporter free run in that order whatever order handles are
//! dropped in. Errors in `Drop` are recorded on the cudarc context (`check_err`), never
//! panicked on.
//!
//! # Missing libraries
//! `libcuda` and NVRTC are loaded at run time. Every entry point checks that they load
//! first and returns [`Error::Missing`](crate::Error::Missing) instead of panicking; see
//! [`is_driver_present`].

mod array;
mod context;
pub(crate) mod memops;
mod memory;
mod module;
mod pitched;
mod raw;
mod semaphore;
mod timing;
mod vmm;

pub(crate) use array::HostCopyGate;
pub use array::{ArrayDesc, ArrayLevel, MipmappedArray, SurfaceObject, TextureDesc, TextureObject};
pub use context::{is_driver_present, Context};
pub(crate) use memory::WeakExternalMemory;
pub use memory::{ExternalMemory, MappedBuffer, MAP_OFFSET_ALIGNMENT};
pub use pitched::PitchedBuffer;
pub use semaphore::ExternalSemaphore;
pub use timing::{CudaTimer, MAX_CUDA_TIMER_SLOTS};
pub use vmm::{vmm_granularity, VmmAllocation};
