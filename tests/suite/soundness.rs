//! Soundness of the Vulkan side under hostile use (issue 10): one-shots that time out after
//! their submit, two threads taking vkcuda's locks in both orders, re-entrant calls while
//! a queue guard is held, bad enums and layouts, and hostile fds for imports. Runs on any
//! Vulkan device with `VK_KHR_external_memory_fd` (lavapipe in CI), with the validation
//! layer on when `VK_INSTANCE_LAYERS` names it.

use crate::common;
use libtest_mimic::Trial;
use vkcuda_dev::scene;

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use ash::vk;
use common::{
    assert_bytes, assert_no_validation_errors, expect_invalid_arg, open_fds, pattern_bytes, trial,
};
use vkcuda::external::{MemoryHandle, MemoryImport};
use vkcuda::util::{Commands, ComputeTarget, OneShot};
use vkcuda::vulkan::{
    BufferDesc, Context, ExternalBuffer, ExternalImage, ImageDesc, ImageOwner, Semaphore,
    SemaphoreKind,
};
use vkcuda::Error;

/// Stalls queue 0 behind a wait on a local timeline value nobody has signalled yet; the
/// returned semaphore releases it (`signal(1)`), and the `Commands` must outlive that.
fn stall_queue0(vk: &Context) -> anyhow::Result<(Arc<Semaphore>, Commands)> {
    let gate = Arc::new(Semaphore::local(vk, SemaphoreKind::Timeline, 0)?);
    let mut cmds = Commands::new(vk)?;
    cmds.submit(0, &[(&gate, 1)], &[], Duration::from_secs(5))?;
    Ok((gate, cmds))
}

fn expect_timeout<T>(r: vkcuda::Result<T>, what: &str) -> anyhow::Result<()> {
    match r {
        Err(Error::Timeout { .. }) => Ok(()),
        Err(e) => bail!("{what}: expected a timeout, got {e}"),
        Ok(_) => bail!("{what}: expected a timeout, got Ok"),
    }
}

/// Row 2: a one-shot whose wait times out after `vkQueueSubmit` keeps its staging buffer,
/// command buffer and fence alive; the next one-shot waits for it instead of re-recording
/// the pending command buffer; once the queue moves, both copies land in order.
fn one_shot_timeout_keeps_pending_work_alive(vk: &Context) -> anyhow::Result<()> {
    let size = 1 << 16;
    let buffer = ExternalBuffer::new(vk, &BufferDesc::new(size))?;
    let image = ExternalImage::new(vk, &ImageDesc::d2(16, 16, vk::Format::R8G8B8A8_UNORM))?;
    let first = pattern_bytes(size, 1);
    let second = pattern_bytes(size, 2);
    vk.set_one_shot_timeout(Duration::from_millis(200));
    let (gate, cmds) = stall_queue0(vk)?;
    let outcome = (|| {
        expect_timeout(vk.write_buffer(&buffer, 0, &first), "write behind a stall")?;
        // The copy above is pending: this one must wait for it, not re-begin its buffer.
        expect_timeout(
            vk.write_buffer(&buffer, 0, &second),
            "write after a timeout",
        )?;
        expect_timeout(vk.release_image(&image), "release after a timeout")?;
        ensure!(
            image.state().owner == ImageOwner::Vulkan,
            "a release that was never submitted changed the tracked state"
        );
        Ok(())
    })();
    gate.signal(1)?;
    vk.set_one_shot_timeout(Context::DEFAULT_ONE_SHOT_TIMEOUT);
    outcome?;
    drop(cmds);
    assert_bytes(&vk.read_buffer(&buffer, 0..size)?, &first, "pending write")?;
    vk.write_buffer(&buffer, 0, &second)?;
    assert_bytes(&vk.read_buffer(&buffer, 0..size)?, &second, "later write")?;

    // A release submitted before its wait times out is committed: the barrier will run.
    vk.set_one_shot_timeout(Duration::from_millis(200));
    let (gate, cmds) = stall_queue0(vk)?;
    let released = vk.release_image(&image);
    gate.signal(1)?;
    vk.set_one_shot_timeout(Context::DEFAULT_ONE_SHOT_TIMEOUT);
    expect_timeout(released, "release behind a stall")?;
    drop(cmds);
    ensure!(
        image.state().owner == ImageOwner::External,
        "a submitted release was not committed to the tracked state: {:?}",
        image.state()
    );
    vk.acquire_image(&image, vk::ImageLayout::GENERAL)?;
    assert_no_validation_errors(vk)
}

/// Row 4: one thread dispatches (one-shot state, then image state) while another reads
/// the same image back (formerly image state, then one-shot state). A watchdog turns a
/// deadlock into a failure.
fn dispatch_and_read_image_do_not_deadlock(vk: &Context) -> anyhow::Result<()> {
    let (w, h) = (16, 16);
    let pass = scene::render_pass(vk)?;
    let image = Arc::new(ExternalImage::new(
        vk,
        &ImageDesc::d2(w, h, vk::Format::R8G8B8A8_UNORM)
            .usage(vk::ImageUsageFlags::STORAGE | vk::ImageUsageFlags::TRANSFER_SRC),
    )?);
    let target = Arc::new(ComputeTarget::new(&pass, image.clone())?);
    let run_for = Duration::from_secs(3);
    let (done, finished) = mpsc::channel();
    let dispatcher = {
        let (vk, target, done) = (vk.clone(), target.clone(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut r = Ok(());
            let mut frame = 0;
            while r.is_ok() && start.elapsed() < run_for {
                r = vk.dispatch(target.pass(), &target, &scene::push_constants(frame, w, h));
                frame += 1;
            }
            let _ = done.send(r.map_err(anyhow::Error::from));
        })
    };
    let reader = {
        let (vk, image) = (vk.clone(), image.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut r = Ok(());
            while r.is_ok() && start.elapsed() < run_for {
                r = vk.read_image(&image, 0, 0..1).map(drop);
            }
            let _ = done.send(r.map_err(anyhow::Error::from));
        })
    };
    for _ in 0..2 {
        match finished.recv_timeout(run_for + Duration::from_secs(30)) {
            Ok(r) => r?,
            Err(_) => bail!("dispatch and read_image deadlocked (watchdog fired)"),
        }
    }
    dispatcher.join().ok();
    reader.join().ok();
    assert_no_validation_errors(vk)
}

/// Row 12: a vkcuda call made while this thread holds a queue guard is an error, not a
/// hang; after the guard is dropped the same call works.
fn reentrant_queue_use_is_an_error(vk: &Context) -> anyhow::Result<()> {
    let buffer = ExternalBuffer::new(vk, &BufferDesc::new(4096))?;
    let (tx, rx) = mpsc::channel();
    let worker = {
        let vk = vk.clone();
        std::thread::spawn(move || {
            let r = (|| -> anyhow::Result<()> {
                let queue = vk.queue()?;
                expect_invalid_arg(vk.fill_buffer(&buffer, 0..4096, 1), "queue")?;
                expect_invalid_arg(vk.queue_at(0), "queue")?;
                drop(queue);
                vk.fill_buffer(&buffer, 0..4096, 1)?;
                Ok(())
            })();
            let _ = tx.send(r);
        })
    };
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r?,
        Err(_) => bail!("a call under a held queue guard hung (watchdog fired)"),
    }
    worker.join().ok();
    assert_no_validation_errors(vk)
}

/// Row 7: layouts and enum values the resource cannot take are typed errors before the
/// driver sees them (the validation layer stays silent).
fn bad_enums_and_layouts_are_refused(vk: &Context) -> anyhow::Result<()> {
    let image = ExternalImage::new(vk, &ImageDesc::d2(16, 16, vk::Format::R8G8B8A8_UNORM))?;
    vk.release_image(&image)?;
    for layout in [
        vk::ImageLayout::DEPTH_STENCIL_ATTACHMENT_OPTIMAL,
        vk::ImageLayout::DEPTH_STENCIL_READ_ONLY_OPTIMAL,
        vk::ImageLayout::PRESENT_SRC_KHR,
        vk::ImageLayout::from_raw(123_456),
        vk::ImageLayout::from_raw(-7),
        vk::ImageLayout::UNDEFINED,
    ] {
        expect_invalid_arg(vk.acquire_image(&image, layout), "layout")?;
        ensure!(
            image.state().owner == ImageOwner::External,
            "a refused acquire into {layout:?} changed the tracked state"
        );
    }
    vk.acquire_image(&image, vk::ImageLayout::GENERAL)?;
    for format in [vk::Format::from_raw(123_456), vk::Format::from_raw(-3)] {
        expect_invalid_arg(
            ExternalImage::new(vk, &ImageDesc::d2(16, 16, format)),
            "desc.format",
        )?;
    }
    expect_invalid_arg(
        ExternalImage::new(
            vk,
            &ImageDesc::d2(16, 16, vk::Format::R8G8B8A8_UNORM)
                .usage(vk::ImageUsageFlags::from_raw(1 << 30)),
        ),
        "desc.usage",
    )?;
    // Row 17: an empty or unknown buffer usage.
    for usage in [
        vk::BufferUsageFlags::empty(),
        vk::BufferUsageFlags::from_raw(1 << 30),
    ] {
        expect_invalid_arg(
            ExternalBuffer::new(vk, &BufferDesc::new(4096).usage(usage)),
            "desc.usage",
        )?;
    }
    assert_no_validation_errors(vk)
}

/// Imports `fd`, wrapped by `handle`, as a 4096-byte buffer of that handle type.
fn import_fd(
    vk: &Context,
    fd: OwnedFd,
    handle: fn(OwnedFd) -> MemoryHandle,
) -> vkcuda::Result<ExternalBuffer> {
    let handle = handle(fd);
    let desc = BufferDesc::new(4096).handle_type(handle.handle_type());
    let import = MemoryImport {
        handle,
        size: 4096,
        dedicated: true,
        memory_type: None,
    };
    // SAFETY: every fd passed here is refused before the driver sees it (the trial checks
    // that): nothing is imported.
    unsafe { ExternalBuffer::import(vk, &desc, import) }
}

fn expect_invalid_handle<T>(r: vkcuda::Result<T>, what: &str) -> anyhow::Result<()> {
    match r {
        Err(Error::InvalidExternalHandle { .. }) => Ok(()),
        Err(e) => bail!("{what}: expected InvalidExternalHandle, got {e}"),
        Ok(_) => bail!("{what}: expected InvalidExternalHandle, got Ok"),
    }
}

/// Row 16: fds that cannot be memory are refused before the driver sees them (lavapipe
/// would block reading a pipe or a socket), as InvalidExternalHandle, and closed; a closed
/// fd is reported as such. Runs under a watchdog.
fn hostile_fds_are_refused(vk: &Context) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let worker = {
        let vk = vk.clone();
        std::thread::spawn(move || {
            let _ = tx.send((|| -> anyhow::Result<()> {
                let fds = open_fds();
                let mut ends = [0; 2];
                // SAFETY: `ends` has room for the two fds pipe() writes.
                ensure!(unsafe { libc::pipe(ends.as_mut_ptr()) } == 0, "pipe failed");
                // SAFETY: both fds were just opened and are owned by nobody else.
                let pipe_read = unsafe { OwnedFd::from_raw_fd(ends[0]) };
                // SAFETY: as above.
                let pipe_write = unsafe { OwnedFd::from_raw_fd(ends[1]) };
                let (sock, peer) = std::os::unix::net::UnixStream::pair()?;
                let dir = std::fs::File::open("/")?;
                let path = std::env::temp_dir()
                    .join(format!("vkcuda_soundness_file_{}", std::process::id()));
                std::fs::write(&path, [0u8; 4096])?;
                let file = std::fs::File::open(&path)?;
                std::fs::remove_file(&path)?;
                let null = std::fs::File::open("/dev/null")?;
                // SAFETY: plain syscall; the result is checked and owned at once.
                let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
                ensure!(efd >= 0, "eventfd failed");
                // SAFETY: `efd` was just opened and is owned by nobody else.
                let efd = unsafe { OwnedFd::from_raw_fd(efd) };
                let cases: [(&str, OwnedFd); 6] = [
                    ("pipe", pipe_read),
                    ("socket", sock.into()),
                    ("directory", dir.into()),
                    ("regular file", file.into()),
                    ("/dev/null", null.into()),
                    ("eventfd", efd),
                ];
                for (what, fd) in cases {
                    expect_invalid_handle(import_fd(&vk, fd, MemoryHandle::OpaqueFd), what)?;
                }
                drop((pipe_write, peer));
                ensure!(
                    open_fds() == fds,
                    "refused fds leaked: {fds} -> {}",
                    open_fds()
                );
                // A number that is not open: reported as such (and not closed again).
                let closed = (900..4000)
                    .find(|n| !std::path::Path::new(&format!("/proc/self/fd/{n}")).exists())
                    .unwrap_or(4000);
                // SAFETY: deliberately a number that is not open; vkcuda must neither use
                // nor close it (it forgets it).
                let bogus = unsafe { OwnedFd::from_raw_fd(closed) };
                match import_fd(&vk, bogus, MemoryHandle::OpaqueFd) {
                    Err(Error::InvalidExternalHandle { detail, .. })
                        if detail.contains("not open") => {}
                    other => bail!("closed fd: expected 'not open', got {:?}", other.err()),
                }
                // Row 19: DmaBufFd imports need VK_EXT_external_memory_dma_buf, as exports do.
                if !vk.can_export_dma_buf() {
                    let memfd = std::fs::File::open("/dev/zero")?;
                    match import_fd(&vk, memfd.into(), MemoryHandle::DmaBufFd) {
                        Err(Error::MissingExtension { name, .. }) if name.contains("dma_buf") => {}
                        other => bail!("DmaBufFd without the extension: got {:?}", other.err()),
                    }
                }
                Ok(())
            })());
        })
    };
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r?,
        Err(_) => bail!("an import of a hostile fd hung (watchdog fired)"),
    }
    worker.join().ok();
    assert_no_validation_errors(vk)
}

/// Row 5: an image used on queue 1 is refused on queue 0 (one-shot and `Commands`) while
/// nothing orders the two; a submission that waits for a value the first one signals is
/// accepted, and so is any use once the host has seen the first one finish.
fn cross_queue_use_must_be_ordered(vk: &Context) -> anyhow::Result<()> {
    let t = Duration::from_secs(5);
    let image = Arc::new(ExternalImage::new(
        vk,
        &ImageDesc::d2(16, 16, vk::Format::R8G8B8A8_UNORM),
    )?);
    let buffer = Arc::new(ExternalBuffer::new(vk, &BufferDesc::new(256))?);
    // Queue 1 stalls behind a gate, so its work is certainly not done below.
    let gate = Arc::new(Semaphore::local(vk, SemaphoreKind::Timeline, 0)?);
    let done = Arc::new(Semaphore::local(vk, SemaphoreKind::Timeline, 0)?);
    let mut stall = Commands::new(vk)?;
    stall.submit(1, &[(&gate, 1)], &[], t)?;
    let mut on1 = Commands::new(vk)?;
    on1.release_image(&image)?;
    on1.release_buffer(&buffer)?;
    on1.submit(1, &[], &[(&done, 1)], t)?;
    let outcome = (|| {
        let e = expect_invalid_arg(vk.acquire_image(&image, vk::ImageLayout::GENERAL), "image")?;
        ensure!(e.to_string().contains("queue 1"), "{e}");
        expect_invalid_arg(vk.acquire_buffer(&buffer), "buffer")?;
        let mut on0 = Commands::new(vk)?;
        on0.acquire_image(&image, vk::ImageLayout::GENERAL)?;
        expect_invalid_arg(on0.submit(0, &[], &[], t), "image")?;
        ensure!(
            image.state().owner == ImageOwner::External,
            "a refused submission changed the tracked state"
        );
        // Ordered by a wait for the value queue 1's use signals: accepted.
        on0.acquire_image(&image, vk::ImageLayout::GENERAL)?;
        on0.acquire_buffer(&buffer)?;
        on0.submit(0, &[(&done, 1)], &[], t)?;
        Ok(on0)
    })();
    gate.signal(1)?;
    let mut on0 = outcome?;
    on0.wait(t)?;
    ensure!(image.state().owner == ImageOwner::Vulkan);
    ensure!(buffer.owner() == ImageOwner::Vulkan);
    // Seen complete on the host (Commands::wait): any queue may use them now.
    let mut on1 = Commands::new(vk)?;
    on1.release_buffer(&buffer)?;
    on1.submit(1, &[], &[], t)?;
    let mut again = Commands::new(vk)?;
    again.acquire_buffer(&buffer)?;
    expect_invalid_arg(again.submit(0, &[], &[], t), "buffer")?;
    on1.wait(t)?;
    vk.acquire_buffer(&buffer)?;
    stall.wait(t)?;
    assert_no_validation_errors(vk)
}

/// Row 18: a buffer is released to `VK_QUEUE_FAMILY_EXTERNAL` and acquired back, one-shot
/// and through `Commands`; while released, Vulkan uses of it are refused; its contents
/// survive the round trip.
fn buffer_ownership_is_tracked(vk: &Context) -> anyhow::Result<()> {
    let t = Duration::from_secs(5);
    let size = 4096;
    let buffer = Arc::new(ExternalBuffer::new(vk, &BufferDesc::new(size))?);
    ensure!(
        buffer.owner() == ImageOwner::Vulkan,
        "a new buffer starts owned by Vulkan"
    );
    let data = pattern_bytes(size, 7);
    vk.write_buffer(&buffer, 0, &data)?;
    vk.release_buffer(&buffer)?;
    ensure!(buffer.owner() == ImageOwner::External);
    expect_invalid_arg(vk.read_buffer(&buffer, 0..size), "buffer")?;
    expect_invalid_arg(vk.write_buffer(&buffer, 0, &data), "buffer")?;
    expect_invalid_arg(vk.fill_buffer(&buffer, 0..size, 1), "buffer")?;
    expect_invalid_arg(vk.release_buffer(&buffer), "buffer")?;
    let image = Arc::new(ExternalImage::new(
        vk,
        &ImageDesc::d2(16, 16, vk::Format::R8G8B8A8_UNORM)
            .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST),
    )?);
    vk.write_image(&image, 0, 0..1, &pattern_bytes(1024, 3))?;
    let mut cmds = Commands::new(vk)?;
    cmds.copy_image_to_buffer(&image, &buffer)?;
    expect_invalid_arg(cmds.submit(0, &[], &[], t), "buffer")?;
    cmds.acquire_buffer(&buffer)?;
    cmds.submit(0, &[], &[], t)?;
    cmds.wait(t)?;
    ensure!(buffer.owner() == ImageOwner::Vulkan);
    assert_bytes(
        &vk.read_buffer(&buffer, 0..size)?,
        &data,
        "after release/acquire",
    )?;
    expect_invalid_arg(vk.acquire_buffer(&buffer), "buffer")?;
    cmds.release_buffer(&buffer)?;
    cmds.submit(0, &[], &[], t)?;
    cmds.wait(t)?;
    vk.acquire_buffer(&buffer)?;
    vk.fill_buffer(&buffer, 0..size, 0x0101_0101)?;
    assert_bytes(
        &vk.read_buffer(&buffer, 0..size)?,
        &vec![1; size as usize],
        "fill after acquire",
    )?;
    assert_no_validation_errors(vk)
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::vulkan_probe();
    let tests: Vec<common::Test<Context>> = vec![
        (
            "one_shot_timeout_keeps_pending_work_alive",
            one_shot_timeout_keeps_pending_work_alive,
        ),
        (
            "dispatch_and_read_image_do_not_deadlock",
            dispatch_and_read_image_do_not_deadlock,
        ),
        (
            "reentrant_queue_use_is_an_error",
            reentrant_queue_use_is_an_error,
        ),
        (
            "bad_enums_and_layouts_are_refused",
            bad_enums_and_layouts_are_refused,
        ),
        ("hostile_fds_are_refused", hostile_fds_are_refused),
        ("buffer_ownership_is_tracked", buffer_ownership_is_tracked),
    ];
    let mut trials: Vec<_> = tests
        .into_iter()
        .map(|(name, f)| trial(name, &probe, f))
        .collect();
    trials.push(common::trial_if(
        "cross_queue_use_must_be_ordered",
        &probe,
        |vk| (vk.queue_count() < 2).then(|| "the device has one queue".to_owned()),
        cross_queue_use_must_be_ordered,
    ));
    common::note(&probe, "Vulkan device with VK_KHR_external_memory_fd");
    trials
}
