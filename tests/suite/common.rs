//! What every subject module of the suite shares (libtest-mimic, `harness = false`).
//!
//! Each subject module probes once for what it needs (a Vulkan device with external memory,
//! or that plus a CUDA device with the same UUID). When the probe fails its trials are
//! reported as **ignored** with the reason printed, never as passed; with
//! `VKCUDA_REQUIRE_GPU=1` (set by `.gpu/run`) a failed probe fails every trial instead, so a
//! broken loader on the GPU host cannot hide behind "ignored".

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use ash::vk;
use libtest_mimic::{Failed, Trial};
use vkcuda::{cuda, vulkan};

/// A named test over a probed environment.
pub type Test<T> = (&'static str, fn(&T) -> anyhow::Result<()>);

/// A probed environment, shared by every trial of one subject module.
pub type Probe<T> = Arc<Result<T, String>>;

/// Prints what the library logs (validation messages, leaks in `Drop`) on stderr, where
/// libtest shows it with the trial that caused it; with the `wgpu` feature it also counts
/// wgpu's errors (`wgpu::common::errors`).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        #[cfg(feature = "wgpu")]
        crate::wgpu::common::count(record);
        if self.enabled(record.metadata()) {
            eprintln!("[{} {}] {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs [`StderrLog`] once (later calls do nothing).
pub fn log_to_stderr() {
    static LOGGER: StderrLog = StderrLog;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// Vulkan context for tests; validation is on when `VK_INSTANCE_LAYERS` asks for it.
pub fn vulkan_probe() -> Probe<vulkan::Context> {
    log_to_stderr();
    Arc::new(vulkan::Context::new(&vulkan::ContextDesc::default()).map_err(|e| e.to_string()))
}

/// Vulkan + the CUDA context on the same GPU.
pub fn gpu_probe() -> Probe<(vulkan::Context, cuda::Context)> {
    log_to_stderr();
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

thread_local! {
    /// The subject whose trials are being listed (see [`subject`]).
    static SUBJECT: Cell<&'static str> = const { Cell::new("") };
}

/// Lists the trials of subject `name`: every trial made meanwhile (by [`trial`],
/// [`trial_if`] or with a [`named`] name) is called `name::TRIAL`, so `name::` filters them.
pub fn subject(name: &'static str, trials: fn() -> Vec<Trial>) -> Vec<Trial> {
    SUBJECT.set(name);
    let listed = trials();
    SUBJECT.set("");
    listed
}

/// `name` within the subject being listed: `SUBJECT::name`.
pub fn named(name: &str) -> String {
    format!("{}::{name}", SUBJECT.get())
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
    Trial::test(named(name), move || match p.as_ref() {
        Ok(env) => f(env).map_err(|e| Failed::from(format!("{e:#}"))),
        Err(why) => Err(Failed::from(format!("probe failed: {why}"))),
    })
    .with_ignored_flag(ignored)
}

/// One trial per test over `probe`, and the [`note`] of what `probe` needs when it is
/// missing.
pub fn trials_of<T: Send + Sync + 'static>(
    probe: &Probe<T>,
    tests: impl IntoIterator<Item = Test<T>>,
    needs: &str,
) -> Vec<Trial> {
    let trials = tests
        .into_iter()
        .map(|(name, f)| trial(name, probe, f))
        .collect();
    note(probe, needs);
    trials
}

/// Prints why the subject's trials over `probe` are ignored (or, under
/// `VKCUDA_REQUIRE_GPU=1`, fail) when it failed.
pub fn note<T>(probe: &Probe<T>, what: &str) {
    if let Err(why) = probe.as_ref() {
        let subject = SUBJECT.get();
        if require_gpu() {
            eprintln!("{subject}: VKCUDA_REQUIRE_GPU=1 and no {what}: {why}");
        } else {
            eprintln!("{subject}: no {what}, trials ignored: {why}");
            // An ignored trial only runs with --include-ignored, where it fails with `why`.
        }
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Runs `cycle` once to warm caches, then `cycles` more times, and fails unless open fds
/// are unchanged and free device memory fell by less than 16 MiB (driver bookkeeping; every
/// caller's leak would be hundreds of MiB). Prints the counts.
pub fn assert_cycles_leak_free(
    cu: &cuda::Context,
    cycles: u32,
    mut cycle: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    cycle()?;
    let fds = open_fds();
    let (free_before, _) = cu.cuda().mem_get_info()?;
    let start = std::time::Instant::now();
    run_cycles(cycles, cycle)?;
    let took = start.elapsed();
    let (free_after, _) = cu.cuda().mem_get_info()?;
    anyhow::ensure!(open_fds() == fds, "fds grew from {fds} to {}", open_fds());
    let lost = free_before.saturating_sub(free_after);
    anyhow::ensure!(lost < 16 << 20, "free device memory fell by {lost} bytes");
    println!(
        "  {cycles} cycles in {took:.2?} ({:.0} us each): fds {fds} -> {}, free device memory change {lost} bytes",
        took.as_secs_f64() * 1e6 / f64::from(cycles),
        open_fds()
    );
    Ok(())
}

/// Runs `cycle` once to warm caches, then `cycles` more times, and fails unless open fds
/// are unchanged (the Vulkan-only twin of [`assert_cycles_leak_free`]).
pub fn assert_cycles_keep_fds(
    cycles: u32,
    mut cycle: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    cycle()?;
    let fds = open_fds();
    run_cycles(cycles, cycle)?;
    anyhow::ensure!(open_fds() == fds, "fds grew from {fds} to {}", open_fds());
    Ok(())
}

/// `cycles` runs of `cycle`, the failing one named.
fn run_cycles(cycles: u32, mut cycle: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    for i in 0..cycles {
        cycle().with_context(|| format!("cycle {i}"))?;
    }
    Ok(())
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

/// When `.gpu/run --validate` (or `VK_INSTANCE_LAYERS`) asks for validation, the layer's
/// messages are really being counted, so the "no validation errors" checks mean something.
pub fn validation_is_counted_when_requested(vk: &vulkan::Context) -> anyhow::Result<()> {
    let requested = std::env::var("VK_INSTANCE_LAYERS")
        .is_ok_and(|v| v.contains("VK_LAYER_KHRONOS_validation"));
    anyhow::ensure!(
        vk.validation_errors().is_some() == requested,
        "validation requested: {requested}, counted: {:?}",
        vk.validation_errors()
    );
    Ok(())
}

/// Fails unless the validation layer (when active) reported no error.
pub fn assert_no_validation_errors(vk: &vulkan::Context) -> anyhow::Result<()> {
    match vk.validation_errors() {
        Some(0) | None => Ok(()),
        Some(n) => anyhow::bail!("validation layer reported {n} errors (printed above)"),
    }
}

/// A validation error a trial expects because it is a false positive of the layer.
#[derive(Debug, Clone, Copy)]
pub struct KnownFalsePositive {
    /// Its message id.
    pub vuid: &'static str,
    /// How many times it is reported.
    pub count: u64,
    /// Why it is false.
    pub why: &'static str,
}

/// The VUID of the old layers' false positive [`layer_orphans_counter_reads`] describes.
pub const ORPHANED_COUNTER_READ: &str = "VUID-VkSemaphoreSignalInfo-value-03259";

/// Whether the active validation layer predates Vulkan-ValidationLayers PR #8396 (in SDK
/// 1.3.296; issue #8212): there, every `vkGetSemaphoreCounterValue` on an **exported**
/// timeline semaphore leaves an orphaned "pending signal" at the value read, so each later
/// `vkSignalSemaphore` (always above that value) is reported as [`ORPHANED_COUNTER_READ`].
/// A false positive: a host signal is never pending, and the spec only forbids signalling
/// past a *pending* signal. Debian 12's layer is 1.3.239.
pub fn layer_orphans_counter_reads(vk: &vulkan::Context) -> bool {
    if vk.validation_errors().is_none() {
        return false;
    }
    // SAFETY: loading the system Vulkan loader; ash checks the library it opens.
    let Ok(entry) = (unsafe { ash::Entry::load() }) else {
        return false;
    };
    // SAFETY: a plain query through a loaded entry.
    let layers = unsafe { entry.enumerate_instance_layer_properties() }.unwrap_or_default();
    layers.iter().any(|l| {
        l.layer_name_as_c_str() == Ok(c"VK_LAYER_KHRONOS_validation")
            && l.spec_version < vk::make_api_version(0, 1, 3, 296)
    })
}

/// The false positives `exported_host_signals` host signals of exported timeline semaphores
/// (after counter reads) cause under an old layer ([`layer_orphans_counter_reads`]): none
/// under a fixed one.
pub fn orphaned_counter_reads(
    vk: &vulkan::Context,
    exported_host_signals: u64,
) -> Option<KnownFalsePositive> {
    (exported_host_signals > 0 && layer_orphans_counter_reads(vk)).then_some(KnownFalsePositive {
        vuid: ORPHANED_COUNTER_READ,
        count: exported_host_signals,
        why: "this old layer orphans a pending signal at each counter read of an exported \
              timeline (Vulkan-ValidationLayers#8212, fixed in 1.3.296)",
    })
}

/// Validation errors reported so far, by VUID (empty without a validation layer).
pub fn validation_snapshot(vk: &vulkan::Context) -> BTreeMap<String, u64> {
    vk.validation_errors_by_id().unwrap_or_default()
}

/// Fails unless the validation errors reported since `before` (a [`validation_snapshot`])
/// are exactly `known`: each VUID as many times as it says, nothing else. Prints the
/// known ones with why they are false.
pub fn validation_since(
    vk: &vulkan::Context,
    before: &BTreeMap<String, u64>,
    known: &[KnownFalsePositive],
) -> anyhow::Result<()> {
    let mut new = validation_snapshot(vk);
    for (id, n) in before {
        if let Some(now) = new.get_mut(id) {
            *now -= n;
        }
    }
    new.retain(|_, n| *n > 0);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for k in known.iter().filter(|k| k.count > 0) {
        *expected.entry(k.vuid.to_owned()).or_default() += k.count;
    }
    anyhow::ensure!(
        new == expected,
        "validation errors (printed above) by VUID: {new:?}, expected only known false \
         positives {expected:?}"
    );
    for k in known.iter().filter(|k| k.count > 0) {
        eprintln!(
            "  {} validation error(s) {} above are known false positives: {}",
            k.count, k.vuid, k.why
        );
    }
    Ok(())
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
    let name = named(name);
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

/// Whether vkcuda refuses LINEAR images on imported memory on `vk`'s driver (NVIDIA's
/// proprietary one, see `ExternalImage::import_linear`).
pub fn linear_imports_refused(vk: &vulkan::Context) -> bool {
    vk.driver_id() == ash::vk::DriverId::NVIDIA_PROPRIETARY
}

/// Where [`linear_imports_refused`], checks that `attempt` is that typed refusal, prints it
/// and gives `None`; elsewhere gives what `attempt` made.
pub fn linear_import<T>(
    vk: &vulkan::Context,
    attempt: vkcuda::Result<T>,
) -> anyhow::Result<Option<T>> {
    if !linear_imports_refused(vk) {
        return Ok(Some(attempt?));
    }
    match attempt {
        Err(e @ vkcuda::Error::Unsupported { .. }) if e.to_string().contains("NVIDIA") => {
            println!("  refused on NVIDIA's driver, as documented: {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
        Ok(_) => anyhow::bail!("a LINEAR image on imported memory was not refused on NVIDIA"),
    }
}
