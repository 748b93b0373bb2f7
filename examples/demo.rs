//! `cargo run --release --example demo`: the main demo.
//!
//! Vulkan renders frames of a small animated scene with a compute shader into an exportable
//! image. Where a CUDA device matches the Vulkan device, CUDA post-processes each frame in
//! place through the shared memory (no copy); everywhere else (lavapipe in CI) the Vulkan
//! half runs alone and the demo says what it could not do. Frames are read back, checked
//! against a CPU reference of the render, and the last one is written as a PNG.
//!
//! Options: `--frames N` (default 60), `--size WxH` (default 640x360), `--out DIR`
//! (default `demo-out`).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use ash::vk;
use common::{png, scene};
use vkcuda::vulkan::{self, ComputePass, ComputeTarget, ExternalImage, ImageDesc};
use vkcuda::{cuda, Error};

struct Options {
    frames: u32,
    width: u32,
    height: u32,
    out: PathBuf,
}

fn parse() -> Result<Options> {
    let mut o = Options {
        frames: 60,
        width: 640,
        height: 360,
        out: PathBuf::from("demo-out"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--frames" => o.frames = value()?.parse().context("--frames")?,
            "--size" => {
                let v = value()?;
                let (w, h) = v.split_once('x').context("--size WxH")?;
                (o.width, o.height) = (
                    w.parse().context("--size width")?,
                    h.parse().context("--size height")?,
                );
            }
            "--out" => o.out = PathBuf::from(value()?),
            // cargo test / bundle runners pass these to every executable.
            "--bench" | "--nocapture" => {}
            other => bail!("unknown option {other}; use --frames N, --size WxH, --out DIR"),
        }
    }
    if o.frames == 0 || o.width < 2 || o.height < 2 {
        bail!("need at least 1 frame of at least 2x2 pixels");
    }
    Ok(o)
}

fn main() -> Result<()> {
    let o = parse()?;
    let vk = vulkan::Context::new(&vulkan::ContextDesc::default()).context(
        "no usable Vulkan device (Debian: apt-get install mesa-vulkan-drivers libvulkan1)",
    )?;
    println!("Vulkan: {} ({})", vk.identity().name, vk.identity().uuid);
    let cuda = match cuda::Context::matching(vk.identity()) {
        Ok(cu) => Some(cu),
        Err(e @ (Error::Missing { .. } | Error::NoMatchingCudaDevice { .. })) => {
            println!("CUDA: not available ({e}).");
            println!("      Running the Vulkan half only: render, read back, check, PNG. The CUDA post-process does not run here.");
            None
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(cu) = &cuda {
        println!(
            "CUDA: device #{} {} matches by UUID",
            cu.ordinal(),
            cu.name()
        );
    }

    let desc = ImageDesc::d2(o.width, o.height, vk::Format::R8G8B8A8_UNORM);
    let image = Arc::new(ExternalImage::new(&vk, &desc)?);
    let pass = ComputePass::new(&vk, scene::RENDER_SPV, scene::WORKGROUP, scene::PUSH_SIZE)?;
    let target = ComputeTarget::new(&pass, image.clone())?;

    let start = Instant::now();
    let mut last = Vec::new();
    for frame in 0..o.frames {
        vk.dispatch(
            &pass,
            &target,
            &scene::push_constants(frame, o.width, o.height),
        )?;
        last = vk.read_image(&image, 0, 0..1)?;
        let want = scene::reference(frame, o.width, o.height);
        if last != want {
            let i = last
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!("frame {frame}: Vulkan render differs from the CPU reference at byte {i}");
        }
    }
    let elapsed = start.elapsed();
    let path = o.out.join(format!("frame-{:04}.png", o.frames - 1));
    png::write(&path, o.width, o.height, &last)?;
    println!(
        "rendered {} frames of {}x{} with Vulkan, each read back and equal to the CPU reference ({:.1} ms/frame, host-paced)",
        o.frames,
        o.width,
        o.height,
        elapsed.as_secs_f64() * 1e3 / f64::from(o.frames)
    );
    println!("wrote {}", path.display());
    if cuda.is_none() {
        println!("not done here: CUDA post-processing of the shared image (needs an NVIDIA GPU whose UUID matches the Vulkan device)");
    }
    Ok(())
}
