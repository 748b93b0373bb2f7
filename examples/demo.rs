//! `cargo run --release --example demo`: the main demo.
//!
//! Vulkan renders frames of a small animated scene with a compute shader into an exportable
//! image. Where a CUDA device matches the Vulkan device, CUDA post-processes each frame in
//! place through the shared memory (no copy); everywhere else (lavapipe in CI) the Vulkan
//! half runs alone and the demo says what it could not do. Frames are read back, checked
//! against a CPU reference of the render, and the last one is written as a PNG.
//!
//! On the GPU the frames run through [`FrameSync`] with N frames in flight and no host
//! stall: per frame, Vulkan renders and releases the image (one submission that signals
//! CUDA), a CUDA stream waits, tone-maps the image in place through a surface object and
//! signals, and Vulkan acquires the image back and copies it to a readback buffer (a
//! submission that waits on CUDA). The last frame of every slot is then checked against a
//! CPU reference of render + tone curve.
//!
//! Options: `--frames N` (default 240), `--size WxH` (default 640x360), `--in-flight N`
//! (default 3), `--low-latency` (FrameSync's low-latency mode), `--batch K` (frames per
//! Vulkan <-> CUDA crossing; `auto` measures the alternation floor and a frame's GPU time
//! and picks the smallest K reaching `--target F` (default 0.9) of the GPU-busy bound
//! within `--latency-budget-ms MS` (default 20), printing the plan), `--no-readback`,
//! `--trace FILE` (FrameSync's timeline as Perfetto JSON, with crossing latencies),
//! `--out DIR` (default `demo-out`).
//!
//! `--window` (feature `window`) runs the same pipeline live in a window and presents each
//! frame (`dev/src/window.rs`, which lists its own options; one frame per crossing,
//! no trace).

use std::path::PathBuf;
use std::time::Duration;

/// `--batch auto` without `--target`/`--latency-budget-ms`: 0.9 of the bound within 20 ms.
const AUTO: AutoBatch = AutoBatch {
    target: 0.9,
    budget: Duration::from_millis(20),
};

use anyhow::{bail, Context as _, Result};
use vkcuda::{cuda, vulkan, Error};
use vkcuda_dev::pipeline::{gpu_pipeline, vulkan_only, AutoBatch, Options};

fn parse(args: Vec<String>) -> Result<Options> {
    let mut o = Options {
        frames: 240,
        width: 640,
        height: 360,
        in_flight: 3,
        low_latency: false,
        batch: 1,
        readback: true,
        single_queue: false,
        trace: None,
        auto_batch: None,
        out: PathBuf::from("demo-out"),
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--frames" => o.frames = value()?.parse().context("--frames")?,
            "--size" => (o.width, o.height) = vkcuda_dev::parse_size(&value()?)?,
            "--in-flight" => o.in_flight = value()?.parse().context("--in-flight")?,
            "--low-latency" => o.low_latency = true,
            "--batch" => match value()?.as_str() {
                "auto" => o.auto_batch = Some(o.auto_batch.unwrap_or(AUTO)),
                k => o.batch = k.parse().context("--batch K or auto")?,
            },
            "--target" => {
                let auto = o.auto_batch.get_or_insert(AUTO);
                auto.target = value()?.parse().context("--target")?;
            }
            "--latency-budget-ms" => {
                let auto = o.auto_batch.get_or_insert(AUTO);
                auto.budget = Duration::from_secs_f64(
                    value()?.parse::<f64>().context("--latency-budget-ms")? / 1e3,
                );
            }
            "--trace" => o.trace = Some(PathBuf::from(value()?)),
            "--no-readback" => o.readback = false,
            "--out" => o.out = PathBuf::from(value()?),
            // cargo test / bundle runners pass these to every executable.
            "--bench" | "--nocapture" => {}
            other => bail!(
                "unknown option {other}; use --frames N, --size WxH, --in-flight N, --low-latency, --batch K|auto, --target F, --latency-budget-ms MS, --no-readback, --trace FILE, --out DIR, --window"
            ),
        }
    }
    if o.frames == 0 || o.width < 2 || o.height < 2 {
        bail!("need at least 1 frame of at least 2x2 pixels");
    }
    Ok(o)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    #[cfg(feature = "window")]
    if let Some((rest, window)) = vkcuda_dev::window::Args::take(&args)? {
        return vkcuda_dev::window::run(parse(rest)?, window);
    }
    #[cfg(not(feature = "window"))]
    if args.iter().any(|a| a == "--window") {
        bail!("--window needs the window feature: cargo run --release --features window --example demo -- --window");
    }
    let o = parse(args)?;
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

    match &cuda {
        Some(cu) if vk.can_export_semaphore_fds() => gpu_pipeline(&o, &vk, cu),
        _ => {
            vulkan_only(&o, &vk)?;
            println!("not done here: CUDA post-processing of the shared image (needs an NVIDIA GPU whose UUID matches the Vulkan device, and semaphore fds)");
            Ok(())
        }
    }
}
