//! The windowed demo (`demo --window`, feature `window`) in a real X11 window under Xvfb, on
//! any Vulkan device (lavapipe in CI):
//!
//! * it runs a fixed number of frames in each present mode (FIFO resizing the window
//!   mid-run with `--resize-at`; MAILBOX and IMMEDIATE, or the typed error of a surface
//!   that lacks them), with the validation layer on, then holds the last frame on screen;
//! * `xwd` takes a screenshot of the window, which must equal the CPU reference of the frame
//!   the demo says it showed, at the new size: every channel within 1 (the blit converts
//!   RGBA8 to the swapchain's BGRA8 exactly; 1 allows a rounding driver), and the size
//!   exactly;
//! * the swapchain was recreated, the demo exits 0 when its standard input closes, and the
//!   validation layer reported nothing.
//!
//! Uses `$DISPLAY` when set, else starts `Xvfb` on a free display number and stops it at the
//! end. Without a display (no `Xvfb`, or no `xwd`), or without the demo binary, the trials
//! are reported **ignored**, never passed, whatever `VKCUDA_REQUIRE_GPU` says (a display is
//! not the GPU's to provide). The screenshot is written to
//! `target/tmp/window-xvfb-MODE/screenshot.png`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use libtest_mimic::Trial;
use vkcuda::vulkan::{self, Presenter, PresenterDesc};
use vkcuda::Error;

/// Frames the demo runs, the frame at which it resizes, and the sizes before and after.
const FRAMES: u32 = 24;
const RESIZE_AT: u32 = 12;
const FIRST: (u32, u32) = (160, 96);
const RESIZED: (u32, u32) = (224, 136);
/// Largest difference allowed in any channel of any pixel.
const TOLERANCE: u8 = 1;

/// An Xvfb server this test started, stopped on drop.
struct Xvfb(Child);

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM lets it remove its socket and lock file; SIGKILL if it lingers.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the demo can open a window.
struct Display {
    name: String,
    /// `Some` when this test started the server.
    _server: Option<Xvfb>,
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `$DISPLAY`, or an Xvfb started on the first free display number from 90.
fn display() -> Result<Display, String> {
    if !on_path("xwd") {
        return Err("no xwd to take the screenshot (Debian: apt-get install x11-apps)".into());
    }
    if let Ok(name) = std::env::var("DISPLAY") {
        if !name.is_empty() {
            return Ok(Display {
                name,
                _server: None,
            });
        }
    }
    if !on_path("Xvfb") {
        return Err("DISPLAY is unset and there is no Xvfb (Debian: apt-get install xvfb)".into());
    }
    let n = (90..200)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .ok_or("no free X display number in 90..200")?;
    let child = Command::new("Xvfb")
        .args([
            &format!(":{n}"),
            "-screen",
            "0",
            "1024x768x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start Xvfb: {e}"))?;
    let server = Xvfb(child);
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(format!("Xvfb :{n} did not start within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Display {
        name: format!(":{n}"),
        _server: Some(server),
    })
}

/// The demo binary: `$BUNDLE_BIN/example-demo` on the GPU host, else the one cargo built
/// beside this test (`cargo build --features window --example demo`).
fn demo_binary() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("BUNDLE_BIN") {
        let path = PathBuf::from(dir).join("example-demo");
        return path
            .exists()
            .then_some(path.clone())
            .ok_or(format!("{} is not in the bundle", path.display()));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("demo"))
        .ok_or("no target directory above the test binary")?;
    path.exists().then_some(path.clone()).ok_or(format!(
        "{} not built (cargo build --features window --example demo)",
        path.display()
    ))
}

/// An RGB screenshot.
struct Shot {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

fn be32(b: &[u8], field: usize) -> anyhow::Result<u32> {
    let at = field * 4;
    let bytes = b.get(at..at + 4).context("XWD header too short")?;
    Ok(u32::from_be_bytes(bytes.try_into()?))
}

/// Decodes an XWD dump (`xwd`'s format: a big-endian header of 25 CARD32s, the window
/// name, the colour map, then a ZPixmap) of a 24/32-bit TrueColor window.
fn parse_xwd(b: &[u8]) -> anyhow::Result<Shot> {
    let header_size = be32(b, 0)? as usize;
    let (format, width, height) = (be32(b, 2)?, be32(b, 4)?, be32(b, 5)?);
    let (byte_order, bits_per_pixel, bytes_per_line) = (be32(b, 7)?, be32(b, 11)?, be32(b, 12)?);
    let masks = [be32(b, 14)?, be32(b, 15)?, be32(b, 16)?];
    let ncolors = be32(b, 19)? as usize;
    ensure!(
        format == 2,
        "XWD pixmap format {format}, expected ZPixmap (2)"
    );
    ensure!(
        bits_per_pixel == 32,
        "{bits_per_pixel} bits per pixel, expected 32"
    );
    let data = header_size + ncolors * 12;
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height as usize {
        let row = data + y * bytes_per_line as usize;
        for x in 0..width as usize {
            let px: [u8; 4] = b
                .get(row + x * 4..row + x * 4 + 4)
                .context("XWD image data too short")?
                .try_into()?;
            let v = if byte_order == 0 {
                u32::from_le_bytes(px)
            } else {
                u32::from_be_bytes(px)
            };
            for m in masks {
                rgb.push(((v & m) >> m.trailing_zeros()) as u8);
            }
        }
    }
    Ok(Shot { width, height, rgb })
}

fn screenshot(display: &str, window: &str) -> anyhow::Result<Shot> {
    let out = Command::new("xwd")
        .args(["-id", window, "-silent"])
        .env("DISPLAY", display)
        .output()
        .context("running xwd")?;
    ensure!(
        out.status.success(),
        "xwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_xwd(&out.stdout)
}

/// Pixels whose channels differ by more than [`TOLERANCE`], and the largest difference.
fn compare(shot: &Shot, rgba: &[u8]) -> (usize, u8) {
    let mut bad = 0;
    let mut worst = 0;
    for (got, want) in shot.rgb.chunks_exact(3).zip(rgba.chunks_exact(4)) {
        let d = (0..3).map(|c| got[c].abs_diff(want[c])).max().unwrap_or(0);
        worst = worst.max(d);
        bad += usize::from(d > TOLERANCE);
    }
    (bad, worst)
}

/// Lines of the demo's standard output, read on a thread so every wait is bounded.
fn lines(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("  demo: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// The value after `prefix` in the first line that starts with it.
fn field<'a>(seen: &'a [String], prefix: &str) -> anyhow::Result<&'a str> {
    seen.iter()
        .find_map(|l| l.strip_prefix(prefix))
        .with_context(|| format!("the demo printed no {prefix:?} line"))
}

fn waits_for_exit(child: &mut Child, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the demo did not exit within {within:?} of its standard input closing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the demo in `mode` (resizing mid-run when `resize`), holds, and checks the
/// screenshot against the CPU reference of the frame shown.
fn window_shows_the_frame(
    display: &str,
    bin: &Path,
    mode: &str,
    resize: bool,
) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("window-xvfb-{mode}"));
    let validation =
        Path::new("/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json").exists();
    let mut cmd = Command::new(bin);
    cmd.args(["--window", "--hold", "--frames", &FRAMES.to_string()])
        .args(["--present-mode", mode])
        .args(["--size", &format!("{}x{}", FIRST.0, FIRST.1)]);
    if resize {
        cmd.args(["--resize-at", &RESIZE_AT.to_string()])
            .arg(format!("{}x{}", RESIZED.0, RESIZED.1));
    }
    cmd.arg("--out")
        .arg(&dir)
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if validation {
        cmd.env("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation");
    }
    let mut child = cmd.spawn().context("starting the demo")?;
    let rx = lines(&mut child)?;
    // Read on a thread too, so a chatty stderr (validation messages) never blocks the demo.
    let mut stderr_pipe = child.stderr.take().context("no stderr")?;
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut text);
        text
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !seen.iter().any(|l: &String| l.starts_with("holding:")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr.join().unwrap_or_default();
                if mode != "fifo" && stderr.contains("unsupported: present mode") {
                    // The documented typed error for a mode the surface lacks.
                    println!("  the surface has no {mode} mode; the demo said so: {stderr}");
                    return Ok(());
                }
                bail!("the demo ended or stalled before holding its last frame: {seen:?}; stderr: {stderr}");
            }
        }
    }
    let window = field(&seen, "window: x11 ")?.to_owned();
    // "shown: frame K WxH; its CPU reference (render[ + tone curve]): PATH"
    let shown = field(&seen, "shown: frame ")?;
    let mut words = shown.split([' ', ';']);
    let frame: u32 = words.next().context("frame number")?.parse()?;
    let (w, h) = vkcuda_dev::parse_size(words.next().context("frame size")?)?;
    ensure!(
        frame == FRAMES - 1,
        "shown frame {frame}, expected the last, {}",
        FRAMES - 1
    );
    let size = if resize { RESIZED } else { FIRST };
    ensure!((w, h) == size, "shown at {w}x{h}, expected {size:?}");
    let created: u32 = field(&seen, "presenter: swapchain created ")?
        .split(' ')
        .next()
        .context("count")?
        .parse()?;
    ensure!(
        !resize || created >= 2,
        "the swapchain was created {created} times: never recreated"
    );
    let want = if shown.contains("tone curve") {
        vkcuda_dev::scene::processed_reference(frame, w, h)
    } else {
        vkcuda_dev::scene::reference(frame, w, h)
    };

    // The last present may reach the X server a little after the demo's queue went idle.
    let mut result = (usize::MAX, 0, None);
    for _ in 0..20 {
        let shot = screenshot(display, &window)?;
        ensure!(
            (shot.width, shot.height) == (w, h),
            "the window is {}x{}, the frame {w}x{h}",
            shot.width,
            shot.height
        );
        let (bad, worst) = compare(&shot, &want);
        result = (bad, worst, Some(shot));
        if bad == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (bad, worst, shot) = result;
    if let Some(shot) = shot {
        let rgba: Vec<u8> = shot
            .rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let path = dir.join("screenshot.png");
        vkcuda_dev::png::write(&path, shot.width, shot.height, &rgba)?;
        println!("  screenshot: {}", path.display());
    }
    println!(
        "  screenshot vs CPU reference of frame {frame} ({w}x{h}): {bad} of {} pixels differ by more than {TOLERANCE} (largest channel difference {worst}); swapchain created {created} times",
        w * h
    );
    ensure!(
        bad == 0,
        "{bad} pixels differ from the CPU reference by more than {TOLERANCE}"
    );

    drop(child.stdin.take()); // ends --hold
    let status = waits_for_exit(&mut child, Duration::from_secs(60))?;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    let stderr = stderr.join().unwrap_or_default();
    ensure!(status.success(), "the demo exited with {status}: {stderr}");
    if validation {
        let errors = field(&seen, "validation errors: ")?;
        ensure!(errors.starts_with("0 "), "validation errors: {errors}");
        println!("  validation layer: 0 errors");
    } else {
        println!("  validation layer not installed: not counted");
    }
    Ok(())
}

/// Without the surface extensions, or with a bad description, the presenter says so.
fn presenter_refuses_what_it_cannot_do(vk: &vulkan::Context) -> anyhow::Result<()> {
    let e = Presenter::headless(vk, &PresenterDesc::new(64, 64)).expect_err("no present target");
    ensure!(
        matches!(
            e,
            Error::MissingExtension {
                name: "VK_KHR_swapchain",
                ..
            }
        ),
        "{e}"
    );
    let mut desc = PresenterDesc::new(64, 64);
    desc.in_flight = 0;
    common::expect_invalid_arg(Presenter::headless(vk, &desc), "desc.in_flight")?;
    let desc = vulkan::ContextDesc {
        present: Some(vulkan::PresentTarget::Headless),
        ..Default::default()
    };
    match vulkan::Context::new(&desc) {
        // lavapipe has no VK_EXT_headless_surface: refused, naming it.
        Err(e @ Error::Unsupported { .. }) => {
            ensure!(e.to_string().contains("VK_EXT_headless_surface"), "{e}");
            println!("  headless presenting unsupported here: {e}");
        }
        Err(e) => bail!("expected Unsupported, got {e}"),
        Ok(ctx) => {
            let p = Presenter::headless(&ctx, &PresenterDesc::new(64, 48))?;
            println!("  headless presenter: {p:?}");
        }
    }
    common::assert_no_validation_errors(vk)
}

/// The trials of this file. They share the display: an Xvfb this module started stops when
/// the last of them is dropped (after the run).
pub fn trials() -> Vec<Trial> {
    let display = display().map(Arc::new);
    let bin = demo_binary();
    let vulkan = common::vulkan_probe();
    let lacks = match (&display, &bin) {
        (Err(why), _) | (_, Err(why)) => Some(why.clone()),
        _ => None,
    };
    let mut trials = vec![common::trial(
        "presenter_refuses_what_it_cannot_do",
        &vulkan,
        presenter_refuses_what_it_cannot_do,
    )];
    for (name, mode, resize) in [
        ("window_fifo_shows_the_frame_after_a_resize", "fifo", true),
        ("window_mailbox_shows_the_frame", "mailbox", false),
        ("window_immediate_shows_the_frame", "immediate", false),
    ] {
        let name = common::named(name);
        trials.push(match (&display, &bin) {
            (Ok(d), Ok(b)) => {
                let (d, b) = (d.clone(), b.clone());
                Trial::test(name, move || {
                    window_shows_the_frame(&d.name, &b, mode, resize)
                        .map_err(|e| format!("{e:#}").into())
                })
            }
            _ => {
                let why = lacks.clone().unwrap_or_default();
                eprintln!("{name}: ignored: {why}");
                Trial::test(name, move || Err(format!("no display: {why}").into()))
                    .with_ignored_flag(true)
            }
        });
    }
    common::note(&vulkan, "Vulkan device");
    trials
}
