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

#[cfg(feature = "wgpu")]
pub(crate) use commands::distinct;
pub use commands::Commands;
pub use compute::{ComputePass, ComputeTarget};
pub use one_shot::OneShot;
