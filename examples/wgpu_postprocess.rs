//! wgpu renders the demo scene into textures (the WGSL of `dev/shaders/render.wgsl`,
//! compiled by wgpu at run time), CUDA tone-maps each one in place
//! (`dev/shaders/postprocess.cu` through NVRTC), and wgpu reads it back; N frames in flight
//! through `WgpuFrameSync`. Every frame is checked against the CPU reference and the last
//! one is written as a PNG.
//!
//! Without CUDA (lavapipe) it runs the wgpu/Vulkan half (render, readback, checks) and says
//! what it could not do.
//!
//! ```text
//! cargo run --release --features wgpu --example wgpu_postprocess -- \
//!     [--size 640x360] [--frames 240] [--in-flight 3] [--out demo-out/wgpu_postprocess.png]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use vkcuda::wgpu;
use vkcuda::wgpu_interop::WgpuContext;
use vkcuda_dev::wgpu_pipeline::WgpuPipeline;

struct Options {
    width: u32,
    height: u32,
    frames: u32,
    in_flight: usize,
    out: PathBuf,
}

fn options() -> Result<Options> {
    let mut o = Options {
        width: 640,
        height: 360,
        frames: 240,
        in_flight: 3,
        out: PathBuf::from("demo-out/wgpu_postprocess.png"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--size" => (o.width, o.height) = vkcuda_dev::parse_size(&value()?)?,
            "--frames" => o.frames = value()?.parse()?,
            "--in-flight" => o.in_flight = value()?.parse()?,
            "--out" => o.out = value()?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        o.frames > 0 && o.in_flight > 0,
        "--frames and --in-flight must be positive"
    );
    Ok(o)
}

fn main() -> Result<()> {
    let o = options()?;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .context("no wgpu Vulkan adapter")?;
    let ctx = WgpuContext::open(&adapter, &WgpuPipeline::device_descriptor())?;
    println!(
        "wgpu device {:?}, {}x{}, {} frames, {} in flight",
        ctx.vulkan().identity().name,
        o.width,
        o.height,
        o.frames,
        o.in_flight
    );
    let mut app = WgpuPipeline::new(&ctx, (o.width, o.height), o.in_flight, true)?;
    if let Err(why) = app.with_cuda(false) {
        println!(
            "CUDA half unavailable ({why:#}): running the wgpu/Vulkan half only \
             (render + readback checked; no CUDA tone map, no semaphore hand-off)"
        );
    }
    let start = Instant::now();
    let frames = o.frames;
    app.run(0..frames)?;
    app.finish()?;
    let elapsed = start.elapsed();
    println!(
        "{} frames in {:.3} s: {:.0} frames/s; {} frames checked against the CPU reference",
        frames,
        elapsed.as_secs_f64(),
        f64::from(frames) / elapsed.as_secs_f64(),
        app.checked
    );
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    vkcuda_dev::png::write(&o.out, o.width, o.height, &app.last)?;
    println!("wrote {}", o.out.display());
    Ok(())
}
