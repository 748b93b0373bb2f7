//! The main demo run as a test at small sizes: the Vulkan half on any Vulkan device
//! (lavapipe in CI), the whole Vulkan -> CUDA -> Vulkan pipeline on a GPU, 1 to 4 frames in
//! flight in both FrameSync modes. Every check is the demo's own: frames read back equal
//! the CPU reference of render (+ tone curve).

use crate::common;
use libtest_mimic::Trial;

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use ash::vk;
use vkcuda::util::{Commands, ComputeTarget, OneShot};
use vkcuda::vulkan::{
    BufferDesc, Context, ContextDesc, ExternalBuffer, ExternalImage, ImageDesc, ImageOwner,
    Semaphore, SemaphoreKind,
};
use vkcuda::Error;
use vkcuda_dev::pipeline::{gpu_pipeline, vulkan_only, Options};
use vkcuda_dev::scene;

/// `Commands` records at submission: render + copy through it equals the CPU reference, and
/// a sequence that does not fit the image's state is refused with nothing submitted and
/// the image's tracked state unchanged.
fn commands_record_at_submit(vk: &Context) -> anyhow::Result<()> {
    let (w, h) = (40, 24);
    let pass = scene::render_pass(vk)?;
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
    let binary = Arc::new(Semaphore::local(vk, SemaphoreKind::Binary, 0)?);
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
        single_queue: false,
        trace: None,
        auto_batch: None,
        out: std::env::temp_dir().join(format!("vkcuda-demo-test-{}", std::process::id())),
    }
}

/// A compute target or pass of another context (a second `VkDevice` on the same GPU, so the
/// same UUID) is refused by `ComputeTarget::new`, `OneShot::dispatch` and
/// `Commands::dispatch`, naming the argument.
fn another_contexts_compute_is_refused(a: &Context) -> anyhow::Result<()> {
    let b = Context::new(&ContextDesc::default())?;
    let desc = ImageDesc::d2(16, 16, vk::Format::R8G8B8A8_UNORM);
    let their_pass = scene::render_pass(&b)?;
    let mine = Arc::new(ExternalImage::new(a, &desc)?);
    common::expect_invalid_arg(ComputeTarget::new(&their_pass, mine), "image")?;
    let their_target = Arc::new(ComputeTarget::new(
        &their_pass,
        Arc::new(ExternalImage::new(&b, &desc)?),
    )?);
    let push = scene::push_constants(1, 16, 16);
    common::expect_invalid_arg(a.dispatch(&their_pass, &their_target, &push), "pass")?;
    let my_pass = scene::render_pass(a)?;
    common::expect_invalid_arg(a.dispatch(&my_pass, &their_target, &push), "target")?;
    let mut cmds = Commands::new(a)?;
    common::expect_invalid_arg(cmds.dispatch(&their_target, &push), "image")?;
    b.dispatch(&their_pass, &their_target, &push)?;
    drop(cmds);
    common::assert_no_validation_errors(a)?;
    common::assert_no_validation_errors(&b)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
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
        common::trial(
            "another_contexts_compute_is_refused",
            &vulkan,
            another_contexts_compute_is_refused,
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
    common::note(&gpu, "CUDA device matching the Vulkan device (GPU trials)");
    trials
}
