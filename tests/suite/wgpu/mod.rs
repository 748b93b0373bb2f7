//! Interop with a wgpu device (the `wgpu` feature): the Vulkan half on any Vulkan device wgpu
//! opens (`lavapipe`), and the CUDA half (`gpu`), ignored without a CUDA device on wgpu's
//! GPU. Any error wgpu logs during a trial fails it.

use libtest_mimic::Trial;

pub mod common;
mod gpu;
mod lavapipe;

/// The trials of both halves, each over its own probe.
pub fn trials() -> Vec<Trial> {
    let mut trials = lavapipe::trials();
    trials.extend(gpu::trials());
    trials
}
