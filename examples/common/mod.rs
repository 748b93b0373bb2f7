//! Shared by the examples and the tests that run them: the demo scene (its SPIR-V and a CPU
//! twin for checking), the demo pipeline, and a dependency-free PNG writer.
#![allow(dead_code)] // each example uses its own subset

pub mod pipeline;
pub mod png;
pub mod scene;
pub mod sharing;
#[cfg(feature = "wgpu")]
pub mod wgpu_pipeline;
#[cfg(feature = "window")]
pub mod window;

/// Parses a `--size` value `WxH` into (width, height).
pub fn parse_size(v: &str) -> anyhow::Result<(u32, u32)> {
    use anyhow::Context as _;
    let (w, h) = v.split_once('x').context("--size WxH")?;
    Ok((
        w.parse().context("--size width")?,
        h.parse().context("--size height")?,
    ))
}
