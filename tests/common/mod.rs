//! Test harness shared by the integration tests (libtest-mimic, `harness = false`).
//!
//! Each test file probes once for what it needs (a Vulkan device with external memory, or
//! that plus a CUDA device with the same UUID). When the probe fails its trials are
//! reported as **ignored** with the reason printed, never as passed; with
//! `VKCUDA_REQUIRE_GPU=1` (set by `.gpu/run`) a failed probe fails every trial instead, so a
//! broken loader on the GPU host cannot hide behind "ignored".
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Failed, Trial};
use vkcuda::{cuda, vulkan};

/// A named test over a probed environment.
pub type Test<T> = (&'static str, fn(&T) -> anyhow::Result<()>);

/// A probed environment, shared by every trial of one test binary.
pub type Probe<T> = Arc<Result<T, String>>;

/// Vulkan context for tests; validation is on when `VK_INSTANCE_LAYERS` asks for it.
pub fn vulkan_probe() -> Probe<vulkan::Context> {
    Arc::new(vulkan::Context::new(&vulkan::ContextDesc::default()).map_err(|e| e.to_string()))
}

/// Vulkan + the CUDA context on the same GPU.
pub fn gpu_probe() -> Probe<(vulkan::Context, cuda::Context)> {
    Arc::new(
        vulkan::Context::new(&vulkan::ContextDesc::default())
            .and_then(|vk| {
                let cu = cuda::Context::matching(vk.identity())?;
                Ok((vk, cu))
            })
            .map_err(|e| e.to_string()),
    )
}

fn require_gpu() -> bool {
    static REQUIRE: OnceLock<bool> = OnceLock::new();
    *REQUIRE.get_or_init(|| std::env::var("VKCUDA_REQUIRE_GPU").is_ok_and(|v| v == "1"))
}

/// A trial that runs `f` on the probed environment, or is ignored when the probe failed
/// (failed under `VKCUDA_REQUIRE_GPU=1`).
pub fn trial<T: Send + Sync + 'static>(
    name: &str,
    probe: &Probe<T>,
    f: impl FnOnce(&T) -> anyhow::Result<()> + Send + 'static,
) -> Trial {
    let p = probe.clone();
    let ignored = p.is_err() && !require_gpu();
    Trial::test(name, move || match p.as_ref() {
        Ok(env) => f(env).map_err(|e| Failed::from(format!("{e:#}"))),
        Err(why) => Err(Failed::from(format!("probe failed: {why}"))),
    })
    .with_ignored_flag(ignored)
}

/// Runs the trials one at a time (leak checks count process-wide fds and device memory)
/// and exits with libtest's status. Prints why trials were ignored.
pub fn run<T>(probe: &Probe<T>, what: &str, trials: Vec<Trial>) -> ! {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    if let Err(why) = probe.as_ref() {
        if require_gpu() {
            eprintln!("VKCUDA_REQUIRE_GPU=1 and no {what}: {why}");
        } else {
            eprintln!("no {what}, trials ignored: {why}");
            // An ignored trial only runs with --include-ignored, where it fails with `why`.
        }
    }
    libtest_mimic::run(&args, trials).exit()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The byte pattern tests write and check: a hash of the index and a seed.
pub fn pattern(i: u64, seed: u32) -> u8 {
    ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as u8
}

/// `len` bytes of [`pattern`].
pub fn pattern_bytes(len: u64, seed: u32) -> Vec<u8> {
    (0..len).map(|i| pattern(i, seed)).collect()
}

/// Fails with the first differing index when `got` is not `want`.
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        got.len() == want.len(),
        "{what}: {} bytes, expected {}",
        got.len(),
        want.len()
    );
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        anyhow::bail!(
            "{what}: byte {i} is {:#04x}, expected {:#04x}",
            got[i],
            want[i]
        );
    }
    Ok(())
}

/// Fails unless the validation layer (when active) reported no error.
pub fn assert_no_validation_errors(vk: &vulkan::Context) -> anyhow::Result<()> {
    match vk.validation_errors() {
        Some(0) | None => Ok(()),
        Some(n) => anyhow::bail!("validation layer reported {n} errors (printed above)"),
    }
}

/// Like [`trial`], for a trial that also needs something the probed device may lack:
/// `lacks` says why it cannot run (`None`: it can). Such a trial is reported as ignored,
/// shown as `[skipped] name`, with the reason printed; under `VKCUDA_REQUIRE_GPU=1` (the
/// GPU host, which must have it) it fails with the reason instead.
pub fn trial_if<T: Send + Sync + 'static>(
    name: &str,
    probe: &Probe<T>,
    lacks: impl FnOnce(&T) -> Option<String>,
    f: impl FnOnce(&T) -> anyhow::Result<()> + Send + 'static,
) -> Trial {
    let Some(why) = probe.as_ref().as_ref().ok().and_then(lacks) else {
        return trial(name, probe, f);
    };
    let fail = require_gpu();
    if !fail {
        eprintln!("{name}: skipped: {why}");
    }
    let trial = Trial::test(name, move || Err(Failed::from(format!("skipped: {why}"))));
    if fail {
        trial
    } else {
        trial.with_ignored_flag(true).with_kind("skipped")
    }
}

/// Fails unless `r` is [`vkcuda::Error::InvalidArgument`] naming `arg`; returns the error
/// so the caller can check its message.
pub fn expect_invalid_arg<T>(r: vkcuda::Result<T>, arg: &str) -> anyhow::Result<vkcuda::Error> {
    match r {
        Err(e @ vkcuda::Error::InvalidArgument { arg: a, .. }) if a == arg => Ok(e),
        Err(e) => anyhow::bail!("expected InvalidArgument({arg}), got {e}"),
        Ok(_) => anyhow::bail!("expected InvalidArgument({arg}), got Ok"),
    }
}

/// Fails unless `r` is [`vkcuda::Error::Unsupported`] whose message contains every one of
/// `words`.
pub fn expect_unsupported<T>(r: vkcuda::Result<T>, words: &[&str]) -> anyhow::Result<()> {
    match r {
        Err(e @ vkcuda::Error::Unsupported { .. }) => {
            let text = e.to_string();
            for w in words {
                anyhow::ensure!(text.contains(w), "{text:?} does not mention {w:?}");
            }
            Ok(())
        }
        Err(e) => anyhow::bail!("expected Unsupported, got {e}"),
        Ok(_) => anyhow::bail!("expected Unsupported, got Ok"),
    }
}
