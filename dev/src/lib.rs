//! What vkcuda's examples, tests and benches share (unpublished): the demo scene (its
//! SPIR-V, built from `shaders/render.wgsl` by this crate's `build.rs`, and a CPU twin for
//! checking), the demo pipeline, a dependency-free PNG writer, pitched rows packed tight,
//! the frame-sharing protocol,
//! the windowed demo (feature `window`) and the CUDA sources the tests and benches compile.

pub mod pipeline;
pub mod png;
pub mod rows;
pub mod scene;
pub mod shaders;
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
