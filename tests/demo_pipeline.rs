//! The main demo run as a test at small sizes: the Vulkan half on any Vulkan device
//! (lavapipe in CI), the whole Vulkan -> CUDA -> Vulkan pipeline on a GPU, 1 to 4 frames in
//! flight in both FrameSync modes. Every check is the demo's own: frames read back equal
//! the CPU reference of render (+ tone curve).

mod common;
#[path = "../examples/common/mod.rs"]
mod demo;

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use ash::vk;
use demo::pipeline::{gpu_pipeline, vulkan_only, Options};
use demo::scene;
use vkcuda::vulkan::{
    BufferDesc, Commands, ComputePass, ComputeTarget, Context, ExportableSemaphore, ExternalBuffer,
    ExternalImage, ImageDesc, ImageOwner, SemaphoreKind,
};
use vkcuda::Error;

/// `Commands` records at submission: render + copy through it equals the CPU reference, and
/// a sequence that does not fit the image's state is refused with nothing submitted and
/// the image's tracked state unchanged.
fn commands_record_at_submit(vk: &Context) -> anyhow::Result<()> {
    let (w, h) = (40, 24);
    let pass = ComputePass::new(vk, scene::RENDER_SPV, scene::WORKGROUP, scene::PUSH_SIZE)?;
    let image = Arc::new(ExternalImage::new(
        vk,
        &ImageDesc::d2(w, h, vk::Format::R8G8B8A8_UNORM),
    )?);
    let target = Arc::new(ComputeTarget::new(&pass, image.clone())?);
    let readback = Arc::new(ExternalBuffer::new(
        vk,
        &BufferDesc::new(u64::from(w * h * 4)),
    )?);
    let mut cmds = Commands::new(vk)?;
    let timeout = Duration::from_secs(10);
    for frame in [3, 11] {
        cmds.dispatch(&target, &scene::push_constants(frame, w, h))?;
        cmds.copy_image_to_buffer(&image, &readback)?;
        cmds.submit(0, &[], &[], timeout)?;
        cmds.wait(timeout)?;
        let got = vk.read_buffer(&readback, 0..u64::from(w * h * 4))?;
        ensure!(
            got == scene::reference(frame, w, h),
            "frame {frame} differs"
        );
    }
    let before = image.state();
    cmds.release_image(&image)?;
    cmds.release_image(&image)?; // the second release does not fit
    let e = cmds
        .submit(0, &[], &[], timeout)
        .expect_err("double release");
    ensure!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    ensure!(
        image.state() == before,
        "a refused submission changed the image state"
    );
    ensure!(before.owner == ImageOwner::Vulkan, "{before:?}");
    let binary = Arc::new(ExportableSemaphore::local(vk, SemaphoreKind::Binary, 0)?);
    let e = cmds
        .submit(0, &[(&binary, 0)], &[], timeout)
        .expect_err("binary wait");
    ensure!(e.to_string().contains("binary"), "{e}");
    let e = cmds
        .dispatch(&target, &[0; 4])
        .expect_err("wrong push size");
    ensure!(
        matches!(e, Error::InvalidArgument { arg: "push", .. }),
        "{e}"
    );
    drop(cmds);
    common::assert_no_validation_errors(vk)
}

fn options(frames: u32, in_flight: usize, low_latency: bool) -> Options {
    Options {
        frames,
        width: 96,
        height: 64,
        in_flight,
        low_latency,
        batch: 1,
        readback: true,
        out: std::env::temp_dir().join(format!("vkcuda-demo-test-{}", std::process::id())),
    }
}

fn main() {
    let vulkan = common::vulkan_probe();
    let gpu = common::gpu_probe();
    let mut trials = vec![
        common::trial("vulkan_half_matches_cpu_reference", &vulkan, |vk| {
            vulkan_only(&options(8, 1, false), vk)?;
            common::assert_no_validation_errors(vk)
        }),
        common::trial(
            "commands_record_at_submit",
            &vulkan,
            commands_record_at_submit,
        ),
    ];
    for low_latency in [false, true] {
        for in_flight in 1..=4 {
            let name = format!(
                "gpu_pipeline_{}_in_flight_{in_flight}",
                if low_latency {
                    "low_latency"
                } else {
                    "semaphores"
                }
            );
            trials.push(common::trial(&name, &gpu, move |(vk, cu)| {
                gpu_pipeline(&options(64, in_flight, low_latency), vk, cu)?;
                common::assert_no_validation_errors(vk)
            }));
        }
    }
    common::run(
        &gpu,
        "CUDA device matching the Vulkan device (GPU trials)",
        trials,
    )
}
