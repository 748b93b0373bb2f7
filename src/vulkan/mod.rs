//! The Vulkan side: a device context, exportable (and importable) dedicated buffers and
//! images, exportable semaphores, and capability queries. Knows nothing of CUDA: what it
//! exports is described with the neutral types of [`crate::external`].
//!
//! * [`Context`] creates its own instance and device ([`Context::new`]) or wraps the
//!   caller's ([`Context::wrap`]).
//! * [`ExternalBuffer`] is a buffer bound to its own dedicated `VkDeviceMemory` that can be
//!   exported ([`ExternalBuffer::export`]) or was imported from a handle.
//! * [`ExportPool`]: many exportable buffers and images bound at offsets of a few exported
//!   blocks ([`PoolBlock`]), one block per class, so one export serves many resources;
//!   [`ImportedBlock`] is the importing half (one import, resources bound at the
//!   exporter's offsets).
//! * [`ExternalImage`] is the same for optimally (or linearly) tiled images, with the
//!   queue-family release/acquire to and from `VK_QUEUE_FAMILY_EXTERNAL` tracked for you.
//!   LINEAR 2D images are rows at a pitch ([`LinearLayout`]) and can be bound to memory
//!   made for no image in particular ([`ExternalImage::import_linear`]).
//! * [`Semaphore`]: timeline and binary semaphores, exportable as fds or local to Vulkan,
//!   with a fast bounded host wait; [`Context::submit_to`] submits batches that wait on and
//!   signal them.
//! * [`texel_block`]: the one texel-block table of Vulkan formats.
//! * [`GpuTimer`]: timestamp brackets around batches, read back as host times (for
//!   [`crate::trace`]); [`QueueId`] names the main queues and the optional transfer-only
//!   queue ([`ContextDesc::transfer_queue`]).
//! * `Presenter` (feature `window`): a swapchain on a window's (or a headless) surface that
//!   shows an [`ExternalImage`], for the last step of a frame.
//!
//! Command recording, compute passes and one-shot staged copies are helpers beside this
//! core, in [`crate::util`].

mod buffer;
mod buffer_owner;
mod capabilities;
mod context;
mod debug;
mod device;
mod format;
mod headless;
mod image;
mod imported_block;
mod memory;
mod memory_fd;
mod pool;
#[cfg(feature = "window")]
mod present;
mod queue_use;
pub(crate) mod queues;
mod semaphore;
mod submit;
mod timestamps;
mod transfer;

pub use buffer::{BufferDesc, ExternalBuffer};
pub(crate) use buffer_owner::{require_owned as require_buffer_owned, BufferStep};
pub use capabilities::{
    memory_handle_flags, semaphore_handle_flags, ExternalSupport, ImageSupport, SemaphoreKind,
};
pub(crate) use context::no_queue;
#[cfg(feature = "wgpu")]
pub(crate) use context::Borrowed;
pub use context::{Context, ContextDesc, DeviceSelection, WrapDesc};
pub use device::{enumerate_devices, instance_extension_names, PhysicalDeviceInfo};
pub(crate) use format::level_bytes;
pub use format::{texel_block, TexelBlock};
pub(crate) use image::linear_row_bytes;
pub(crate) use image::Step;
pub use image::{
    ExternalImage, ImageDesc, ImageKind, ImageOwner, ImageState, LinearLayout, LinearRequirements,
};
pub use imported_block::ImportedBlock;
pub use pool::{ExportPool, PoolBlock, PoolDesc, MIN_SLOT};
#[cfg(feature = "window")]
#[cfg_attr(docsrs, doc(cfg(feature = "window")))]
pub use present::{PresentMode, PresentOutcome, PresentTarget, Presenter, PresenterDesc};
#[cfg(feature = "wgpu")]
pub(crate) use queue_use::FOREIGN_QUEUE;
pub(crate) use queue_use::{QueueUse, Submission, Tracked};
pub use queues::QueueGuard;
pub use queues::QueueId;
pub(crate) use semaphore::backoff;
pub use semaphore::{Semaphore, SemaphoreDesc};
pub use timestamps::{Bracket, ClockSource, GpuTimer, MAX_TIMER_SLOTS};
pub(crate) use transfer::{Direction, FencedCommandBuffer, OneShotLock};
