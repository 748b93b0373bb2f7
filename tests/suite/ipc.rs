//! Zero-copy frame sharing across a Unix socket (`vkcuda::ipc` and
//! `examples/frame_sharing/`).
//!
//! * On any Vulkan device (lavapipe in CI): an exported image's memory fd crosses a socket
//!   between two threads with the example's header, is imported back into Vulkan on the
//!   other side, and reads the bytes written on the sending side; fd counts stay flat.
//! * The example binary run as a child process: in its Vulkan-only mode on any Vulkan
//!   device, and on a GPU in its CUDA modes, CUDA as the consumer and CUDA as the producer
//!   (`--producer cuda`; ignored without a CUDA device matching the Vulkan device),
//!   asserting exit 0 and equal hashes on both sides.
//! * The header of the CUDA-producer mode carries the frames' LINEAR layout.

use crate::common;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, ensure, Context as _};
use ash::vk;
use libtest_mimic::Trial;
use vkcuda::external::{MemoryHandle, MemoryImport};
use vkcuda::util::OneShot;
use vkcuda::vulkan::{Context, ExternalImage, ImageDesc};
use vkcuda::{ipc, Error};
use vkcuda_dev::sharing::{Header, Mode};

/// Writes a pattern into an exported image on one thread, sends its fd with the header over
/// a socket pair, imports it back into Vulkan on another thread and reads the pattern.
fn image_fd_crosses_socket(vk: &Context) -> anyhow::Result<()> {
    let fds_before = common::open_fds();
    let (w, h) = (48, 32);
    let desc = ImageDesc::d2(w, h, vk::Format::R8G8B8A8_UNORM);
    let want = common::pattern_bytes(u64::from(w * h * 4), 7);
    let (tx, rx) = UnixStream::pair()?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let sender = s.spawn(|| -> anyhow::Result<ExternalImage> {
            let image = ExternalImage::new(vk, &desc)?;
            vk.write_image(&image, 0, 0..1, &want)?;
            vk.release_image(&image)?;
            let export = image.export()?;
            let MemoryHandle::OpaqueFd(fd) = export.handle else {
                bail!("expected an opaque fd");
            };
            let header = Header {
                mode: Mode::Vulkan,
                device: vk.identity().clone(),
                frames: 1,
                desc: desc.clone(),
                sizes: vec![export.size],
                layout: None,
                memory_type: export.memory_type,
            };
            ipc::send(&tx, &header.encode(), &[fd.as_fd()])?;
            // `fd` closes here; the receiver holds its own. The image lives until the
            // receiver has read it (returned to the scope).
            Ok(image)
        });
        let receiver = s.spawn(|| -> anyhow::Result<Vec<u8>> {
            let (payload, mut fds) = ipc::recv(&rx, 4)?;
            let header = Header::decode(&payload)?;
            ensure!(header.desc == desc, "{:?} != {desc:?}", header.desc);
            ensure!(fds.len() == 1, "{} fds", fds.len());
            let import = MemoryImport {
                handle: MemoryHandle::OpaqueFd(fds.remove(0)),
                size: header.sizes[0],
                dedicated: true,
                memory_type: header.memory_type,
            };
            // SAFETY: the fd is an export of a dedicated allocation of `size` bytes for an
            // image created with `header.desc` (checked equal to `desc`) on this device.
            let image = unsafe { ExternalImage::import(vk, &header.desc, import) }?;
            vk.acquire_image(&image, vk::ImageLayout::GENERAL)?;
            Ok(vk.read_image(&image, 0, 0..1)?)
        });
        let got = receiver.join().expect("receiver panicked")?;
        let image = sender.join().expect("sender panicked")?;
        drop(image);
        common::assert_bytes(&got, &want, "image read through the received fd")
    })?;
    drop((tx, rx));
    let fds_after = common::open_fds();
    ensure!(
        fds_after == fds_before,
        "open fds {fds_before} -> {fds_after}"
    );
    common::assert_no_validation_errors(vk)
}

/// The CUDA-producer header carries the layout CUDA writes, and decodes to what was sent.
fn cuda_producer_header_round_trips(vk: &Context) -> anyhow::Result<()> {
    let desc = ImageDesc::d2(97, 64, vk::Format::R8G8B8A8_UNORM).tiling(vk::ImageTiling::LINEAR);
    let header = Header {
        mode: Mode::CudaProducer,
        device: vk.identity().clone(),
        frames: 5,
        desc,
        sizes: vec![2 << 20, 2 << 20],
        layout: Some(vkcuda::vulkan::LinearLayout {
            offset: 0,
            row_pitch: 512,
            size: 512 * 64,
        }),
        memory_type: Some(3),
    };
    let back = Header::decode(&header.encode())?;
    ensure!(back == header, "{back:?} != {header:?}");
    Ok(())
}

/// A message with more fds than the receiver allows is refused and every fd that arrived is
/// closed; the stream stays usable.
fn excess_fds_are_closed() -> anyhow::Result<()> {
    let (tx, rx) = UnixStream::pair()?;
    let file = std::fs::File::open("/proc/self/exe")?;
    let before = common::open_fds();
    let many = vec![file.as_fd(); 5];
    ipc::send(&tx, b"five", &many)?;
    ipc::send(&tx, b"after", &[file.as_fd()])?;
    match ipc::recv(&rx, 2) {
        Err(Error::Io {
            call: "recvmsg", ..
        }) => {}
        other => bail!("expected Error::Io from recvmsg, got {other:?}"),
    }
    let after_refusal = common::open_fds();
    ensure!(
        after_refusal == before,
        "open fds {before} -> {after_refusal} after the refused message"
    );
    let (payload, fds) = ipc::recv(&rx, 2)?;
    ensure!(payload == b"after" && fds.len() == 1, "stream out of step");
    drop(fds);
    ensure!(common::open_fds() == before, "received fd not closed");
    Ok(())
}

/// The example binary: `$BUNDLE_BIN/example-frame_sharing` on the GPU host, else the one
/// cargo built beside this test (`target/<profile>/examples/frame_sharing`).
fn example_binary() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("BUNDLE_BIN") {
        let path = PathBuf::from(dir).join("example-frame_sharing");
        return if path.exists() {
            Ok(path)
        } else {
            Err(format!("{} is not in the bundle", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("frame_sharing"))
        .ok_or("no target directory above the test binary")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not built (cargo build --example frame_sharing) and BUNDLE_BIN unset",
            path.display()
        ))
    }
}

/// `frame_sharing --producer cuda` with 3 images of `size`, `frames` frames.
fn cuda_producer_trial(
    name: &str,
    size: &'static str,
    frames: &'static str,
    gpu: &common::Probe<(Context, vkcuda::cuda::Context)>,
) -> Trial {
    common::trial_if(name, gpu, lacks_example::<_>, move |_| {
        run_example(
            &[
                "--producer",
                "cuda",
                "--frames",
                frames,
                "--size",
                size,
                "--images",
                "3",
            ],
            "written by CUDA into 3 CUDA allocations, read by Vulkan in another process",
        )
    })
}

/// Runs the example with `args`; checks exit 0, equal hashes, and `expect` in its output.
fn run_example(args: &[&str], expect: &str) -> anyhow::Result<()> {
    let bin = example_binary().map_err(anyhow::Error::msg)?;
    let out_dir =
        std::env::temp_dir().join(format!("vkcuda-frame-sharing-test-{}", std::process::id()));
    let output = Command::new(&bin)
        .args(args)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&out_dir);
    ensure!(
        output.status.success(),
        "{}: {}\n{text}",
        bin.display(),
        output.status
    );
    ensure!(
        text.contains("hashes equal on both sides"),
        "no equal hashes:\n{text}"
    );
    ensure!(text.contains(expect), "output lacks {expect:?}:\n{text}");
    Ok(())
}

/// Why the example cannot run (not built, not bundled), for [`common::trial_if`].
fn lacks_example<T>(_: &T) -> Option<String> {
    example_binary().err()
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let vulkan = common::vulkan_probe();
    let gpu = common::gpu_probe();
    let trials = vec![
        Trial::test(common::named("excess_fds_are_closed"), || {
            excess_fds_are_closed().map_err(|e| format!("{e:#}").into())
        }),
        common::trial("image_fd_crosses_socket", &vulkan, image_fd_crosses_socket),
        common::trial_if(
            "example_any_vulkan_device",
            &vulkan,
            lacks_example::<_>,
            |_| {
                // On a GPU this runs the CUDA mode; elsewhere the Vulkan-only mode.
                run_example(&["--frames", "3", "--size", "64x48"], "frame_sharing: ")
            },
        ),
        common::trial_if("example_cuda_consumer", &gpu, lacks_example::<_>, |_| {
            run_example(
                &["--frames", "120", "--size", "96x64", "--images", "3"],
                "read by CUDA in another process",
            )
        }),
        common::trial(
            "cuda_producer_header_round_trips",
            &vulkan,
            cuda_producer_header_round_trips,
        ),
        // 1920x1080 is the size at which the second of several images read back zeros on
        // the H200 (driver 580), while 97x64 passed.
        cuda_producer_trial("example_cuda_producer", "97x64", "120", &gpu),
        cuda_producer_trial("example_cuda_producer_1080p", "1920x1080", "60", &gpu),
    ];
    common::note(&gpu, "CUDA device matching the Vulkan device (GPU trials)");
    trials
}
