//! Shared by the examples and the tests that run them: the demo scene (its SPIR-V and a CPU
//! twin for checking), the demo pipeline, and a dependency-free PNG writer.
#![allow(dead_code)] // each example uses its own subset

pub mod pipeline;
pub mod png;
pub mod scene;
pub mod sharing;
