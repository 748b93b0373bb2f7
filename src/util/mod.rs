//! Helpers beside the core, as `wgpu::util` is beside wgpu: what demos, tests, benches and
//! setup code need around the resources, imports and synchronisation of [`crate::vulkan`],
//! [`crate::cuda`] and [`crate::interop`], none of which the core needs.
//!
//! * [`Commands`]: a command buffer recorded and submitted without `unsafe`; barriers for
//!   tracked images are planned at submission, so they always match the image's state.
//! * [`ComputePass`] and [`ComputeTarget`]: a minimal compute pipeline over one storage
//!   image, for demos and tests.
//! * [`OneShot`]: staged copies to and from buffers and images, fills, image hand-offs and
//!   dispatches, each one submission that waits (setup, tests, readback, baselines).

mod commands;
mod compute;
mod one_shot;

use ash::vk;

#[cfg(feature = "wgpu")]
pub(crate) use commands::distinct;
pub use commands::Commands;
pub use compute::{ComputePass, ComputeTarget};
pub use one_shot::OneShot;

/// Records a memory barrier `src` -> `dst` (stages and accesses) into `cmd`.
///
/// # Safety
/// `cmd` is in the recording state, allocated from `device`.
unsafe fn memory_barrier(
    device: &ash::Device,
    cmd: vk::CommandBuffer,
    src: (vk::PipelineStageFlags, vk::AccessFlags),
    dst: (vk::PipelineStageFlags, vk::AccessFlags),
) {
    let m = vk::MemoryBarrier::default()
        .src_access_mask(src.1)
        .dst_access_mask(dst.1);
    // SAFETY: the caller's precondition.
    unsafe {
        device.cmd_pipeline_barrier(
            cmd,
            src.0,
            dst.0,
            vk::DependencyFlags::empty(),
            &[m],
            &[],
            &[],
        )
    };
}

/// Makes the transfer writes recorded so far in `cmd` visible to the host (readbacks) and
/// to every later command, whatever resource reaches the memory (a buffer and an image may
/// alias one allocation, e.g. a pool block and a LINEAR image).
///
/// # Safety
/// As [`memory_barrier`].
unsafe fn record_transfer_writes_visible(device: &ash::Device, cmd: vk::CommandBuffer) {
    let later =
        vk::AccessFlags::HOST_READ | vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE;
    // SAFETY: the caller's precondition.
    unsafe {
        memory_barrier(
            device,
            cmd,
            (
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            ),
            (
                vk::PipelineStageFlags::HOST | vk::PipelineStageFlags::ALL_COMMANDS,
                later,
            ),
        )
    };
}
