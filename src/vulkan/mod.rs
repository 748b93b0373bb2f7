//! The Vulkan side: a device context, exportable (and importable) dedicated buffers and
//! images, exportable semaphores, and capability queries. Knows nothing of CUDA: what it
//! exports is described with the neutral types of [`crate::external`].
//!
//! * [`Context`] creates its own instance and device ([`Context::new`]) or wraps the
//!   caller's ([`Context::wrap`]).
//! * [`ExternalBuffer`] is a buffer bound to its own dedicated `VkDeviceMemory` that can be
//!   exported ([`ExternalBuffer::export`]) or was imported from a handle.
//! * [`ExternalImage`] is the same for optimally (or linearly) tiled images, with the
//!   queue-family release/acquire to and from `VK_QUEUE_FAMILY_EXTERNAL` tracked for you.
//! * [`ExportableSemaphore`]: timeline and binary semaphores exported as fds, with a fast
//!   bounded host wait.
//! * [`ComputePass`]: a minimal compute pipeline over one storage image, for demos and tests.
//! * [`Commands`]: a command buffer recorded and submitted without `unsafe`; barriers for
//!   tracked images are planned at submission, so they always match the image's state.
//! * [`Context::read_buffer`] / [`Context::write_buffer`] (and the image twins) are staged
//!   transfers for tests, examples and the staged-copy baselines.

mod buffer;
mod capabilities;
mod commands;
mod compute;
mod context;
mod debug;
mod image;
mod memory;
mod semaphore;
mod transfer;

pub use buffer::{BufferDesc, ExternalBuffer};
pub use capabilities::{
    memory_handle_flags, semaphore_handle_flags, ExternalSupport, SemaphoreKind,
};
pub use commands::Commands;
pub use compute::{ComputePass, ComputeTarget};
pub(crate) use context::no_queue;
#[cfg(feature = "wgpu")]
pub(crate) use context::Borrowed;
pub use context::{
    enumerate_devices, Context, ContextDesc, DeviceSelection, PhysicalDeviceInfo, WrapDesc,
};
pub use image::{
    texel_block, ExternalImage, ImageDesc, ImageKind, ImageOwner, ImageState, ImageSupport,
    TexelBlock,
};
pub(crate) use semaphore::backoff;
pub use semaphore::{ExportableSemaphore, SemaphoreDesc};
