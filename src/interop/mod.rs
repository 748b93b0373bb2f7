//! The bridge: a Vulkan resource paired with its CUDA import, the CUDA description derived
//! from the Vulkan one so that the two cannot disagree.
//!
//! * [`SharedBuffer`]: an [`ExternalBuffer`](crate::vulkan::ExternalBuffer) imported into
//!   CUDA, mapped as read-write device pointers.
//!   [`SharedBuffer::from_cuda`] is the other direction: memory CUDA allocates
//!   ([`VmmAllocation`](crate::cuda::VmmAllocation)) imported into Vulkan.
//! * [`SharedLinearImage`]: memory CUDA allocates, imported into Vulkan as a LINEAR 2D
//!   image and addressed by CUDA as rows at a pitch ([`PitchedBuffer`](crate::cuda::PitchedBuffer)),
//!   the pitch taken from the Vulkan driver's layout.
//! * [`SharedPool`]: many [`SharedBuffer`]s from a few exported blocks, each block imported
//!   into CUDA once.
//! * [`SharedSemaphore`]: an [`Semaphore`](crate::vulkan::Semaphore)
//!   (timeline or binary) imported into CUDA.
//! * [`FrameSync`]: N frames in flight from Vulkan to CUDA and back, over timeline
//!   semaphores ([`SyncMode::Semaphores`]) or stream memory operations and a host relay
//!   ([`SyncMode::LowLatency`]), on measured queue layouts ([`QueueLayout`]).
//! * [`SharedImage`]: an [`ExternalImage`](crate::vulkan::ExternalImage) imported into
//!   CUDA as a mipmapped array whose layout is derived from the image
//!   ([`cuda_array_desc`]), with levels, surfaces, textures and the hand-off to and from
//!   CUDA.
//! * [`alternation_floor`]: what alternating GPU work between a Vulkan queue and a CUDA
//!   stream costs, per queue family.
//! * [`choose_batch`]: how many frames to hand across at once for a target GPU efficiency
//!   within a latency budget, given the alternation floor.
//! * [`mod@format`]: the `VkFormat` ↔ `CUarray_format` table for sharing images.

mod alternation;
mod batch;
mod buffer;
pub mod format;
mod frame_sync;
mod image;
mod linear_image;
mod pool;
mod semaphore;

pub use alternation::{
    alternation_floor, alternation_trace, measure_steps, FillStep, FloorReport, KernelStep,
    Percentiles, FILL_STEP_BYTES, MAX_FLOOR_ITERATIONS, MAX_TRACE_ITERATIONS, WARM_UP_STEPS,
};
pub use batch::{choose_batch, efficiency, BatchGoal, BatchPlan, MAX_BATCH_FRAMES};
pub use buffer::SharedBuffer;
pub use frame_sync::{Frame, FrameSync, FrameSyncDesc, FrameTrace, QueueLayout, SyncMode};
pub use image::{cuda_array_desc, SharedImage};
pub use linear_image::{pitched_row_bytes, SharedLinearImage};
pub use pool::SharedPool;
pub use semaphore::SharedSemaphore;

use crate::error::{Error, Result};
use crate::external::MemoryHandleType;
use crate::{cuda, vulkan};

/// Checks that the CUDA context runs on the Vulkan context's GPU.
fn check_same_device(vk: &vulkan::Context, cu: &cuda::Context) -> Result<()> {
    let vulkan = vk.identity();
    if vulkan.uuid == cu.uuid() {
        return Ok(());
    }
    Err(Error::invalid(
        "cu",
        format!(
            "CUDA device #{} {:?} ({}) is not the Vulkan device {:?} ({})",
            cu.ordinal(),
            cu.name(),
            cu.uuid(),
            vulkan.name,
            vulkan.uuid
        ),
        "a CUDA context from cuda::Context::matching(vk.identity())",
    ))
}

/// Checks that Vulkan is asked to import what CUDA exports its own memory as: opaque fds.
fn check_vmm_handle_type(t: MemoryHandleType) -> Result<()> {
    if t == MemoryHandleType::OpaqueFd {
        return Ok(());
    }
    Err(Error::invalid(
        "desc.handle_type",
        format!("{t}, but CUDA exports its memory as opaque fds"),
        "MemoryHandleType::OpaqueFd",
    ))
}
