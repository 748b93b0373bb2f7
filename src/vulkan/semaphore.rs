//! Timeline and binary semaphores, exportable or local to Vulkan, and host-side timeline
//! operations (with a fast bounded host wait). Queue submissions that wait on and signal them
//! are in `submit.rs`.
//!
//! # Host waits
//! The driver's own host wait, `vkWaitSemaphores`, may sleep long after the signal (on the
//! measured NVIDIA driver, milliseconds; figures in `benches/RESULTS.md`), while a loop
//! reading `vkGetSemaphoreCounterValue` sees the signal at its next read.
//! [`Semaphore::wait`] therefore polls the counter:
//!
//! 1. for the first [`Semaphore::WAIT_SPIN_WINDOW`] (200 us) it reads the counter
//!    back to back with [`std::hint::spin_loop`] between reads: one core busy, latency one
//!    counter read;
//! 2. after that it sleeps between reads, starting at
//!    [`Semaphore::WAIT_FIRST_SLEEP`] (20 us) and doubling up to
//!    [`Semaphore::WAIT_MAX_SLEEP`] (1 ms): about 1,000 wake-ups a second, a
//!    negligible CPU cost, with a latency of at most the current sleep plus the OS wake-up
//!    delay;
//! 3. it gives up with [`Error::Timeout`] once the timeout has passed, after one last read.
//!
//! So a wait that is satisfied within 200 us costs its own length in CPU time, and a longer
//! one costs 200 us of spinning plus ~0.1% of a core. [`Semaphore::wait_blocking`]
//! is the plain `vkWaitSemaphores`, kept as the baseline the benchmarks compare against.
//! Per-frame synchronisation should not wait on the host at all: make the GPU wait
//! ([`Context::submit`] with `waits`).
//!
//! # Validation layer
//! Khronos validation layers older than 1.3.296 (Debian 12 ships 1.3.239) report
//! `VUID-VkSemaphoreSignalInfo-value-03259` for every [`Semaphore::signal`] of an
//! *exported* timeline semaphore after its counter was read (which `signal` itself does to
//! check monotonicity). It is a false positive: those layers leave an orphaned "pending
//! signal" behind each `vkGetSemaphoreCounterValue` once a semaphore is exported
//! (Vulkan-ValidationLayers issue #8212, fixed by PR #8396). Non-exported semaphores and
//! newer layers are clean.

#[cfg(unix)]
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ash::vk;

use super::capabilities::{semaphore_handle_flags, SemaphoreKind};
use super::Context;
use crate::error::{Error, Result};
use crate::external::{SemaphoreHandle, SemaphoreHandleType};
use crate::timeline::HighWater;

/// The extension semaphore fd export needs (lavapipe has none).
const SEMAPHORE_FD: &str = "VK_KHR_external_semaphore_fd";

/// What [`Semaphore::new`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemaphoreDesc {
    /// Binary or timeline.
    pub kind: SemaphoreKind,
    /// The counter's value at creation (timeline only; must be 0 for binary semaphores).
    pub initial_value: u64,
    /// How the semaphore is exported: a timeline type ([`SemaphoreHandleType::is_timeline`])
    /// for a timeline semaphore, a binary one otherwise.
    pub handle_type: SemaphoreHandleType,
}

impl SemaphoreDesc {
    /// A timeline semaphore starting at `initial_value`, exported as
    /// [`SemaphoreHandleType::TimelineFd`].
    pub fn timeline(initial_value: u64) -> Self {
        Self {
            kind: SemaphoreKind::Timeline,
            initial_value,
            handle_type: SemaphoreHandleType::TimelineFd,
        }
    }

    /// A binary semaphore, exported as [`SemaphoreHandleType::OpaqueFd`].
    pub fn binary() -> Self {
        Self {
            kind: SemaphoreKind::Binary,
            initial_value: 0,
            handle_type: SemaphoreHandleType::OpaqueFd,
        }
    }

    /// Replaces the export handle type (the Win32 types are modelled but not exportable
    /// by vkcuda: [`Semaphore::new`] returns [`Error::Unsupported`] for them).
    pub fn handle_type(mut self, handle_type: SemaphoreHandleType) -> Self {
        self.handle_type = handle_type;
        self
    }
}

/// A Vulkan semaphore, binary or timeline: created exportable ([`Semaphore::new`],
/// [`Semaphore::timeline`], [`Semaphore::binary`]: `VkExportSemaphoreCreateInfo`, for CUDA
/// or another process to import), created for use inside Vulkan only
/// ([`Semaphore::local`]: no export, no extension needed), or a caller's semaphore wrapped
/// with [`Semaphore::from_raw`]. [`Semaphore::handle_type`] says which (`None`: not
/// exportable).
///
/// Timeline semaphores can also be signalled, read and waited on from the host. Dropping
/// destroys the semaphore (when vkcuda owns it): every queue batch and CUDA stream operation
/// that waits on or signals it must have **completed** by then. CUDA's import of an
/// exported fd is a separate reference to the payload and may outlive this object.
pub struct Semaphore {
    ctx: Context,
    semaphore: vk::Semaphore,
    kind: SemaphoreKind,
    /// `None` for a wrapped semaphore that was not created exportable.
    handle_type: Option<SemaphoreHandleType>,
    /// `maxTimelineSemaphoreValueDifference`.
    max_difference: u64,
    /// The highest value signalled or submitted for signalling through vkcuda, shared with
    /// the CUDA imports made by [`crate::interop::SharedSemaphore`].
    high_water: HighWater,
    owned: bool,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("semaphore", &self.semaphore)
            .field("kind", &self.kind)
            .field("handle_type", &self.handle_type)
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: the semaphore was made from this device and is destroyed once; the
            // type's contract (documented above) is that no pending work still uses it.
            unsafe { self.ctx.device().destroy_semaphore(self.semaphore, None) };
        }
    }
}

impl Semaphore {
    /// Spin window of [`Semaphore::wait`]: the counter is read back to back for
    /// this long before the wait starts sleeping between reads.
    pub const WAIT_SPIN_WINDOW: Duration = Duration::from_micros(200);
    /// First sleep of [`Semaphore::wait`] after the spin window; each further
    /// sleep doubles, up to [`Semaphore::WAIT_MAX_SLEEP`].
    pub const WAIT_FIRST_SLEEP: Duration = Duration::from_micros(20);
    /// Longest sleep between two counter reads of [`Semaphore::wait`].
    pub const WAIT_MAX_SLEEP: Duration = Duration::from_millis(1);

    /// Creates an exportable semaphore, after checking that this device can export its
    /// handle type for its kind (`vkGetPhysicalDeviceExternalSemaphoreProperties`).
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `desc.handle_type` is a timeline type for a binary
    ///   semaphore or the reverse (`desc.handle_type`), or a binary semaphore has a non-zero
    ///   `desc.initial_value`.
    /// * [`Error::Unsupported`]: Vulkan has no such handle type (NvSciSync, keyed mutexes);
    ///   it is not a POSIX fd type (vkcuda's Vulkan side exports fds only, so Win32 types
    ///   are refused); or the driver reports the type as not exportable for this kind.
    /// * [`Error::MissingExtension`] (`VK_KHR_external_semaphore_fd`): the device cannot
    ///   export semaphore fds (lavapipe).
    /// * [`Error::OutOfMemory`].
    pub fn new(ctx: &Context, desc: &SemaphoreDesc) -> Result<Self> {
        check_kind(
            "desc.handle_type",
            desc.kind,
            desc.handle_type,
            desc.initial_value,
        )?;
        let t = desc.handle_type;
        let flags = semaphore_handle_flags(t).ok_or_else(|| no_vulkan_type(t))?;
        if !t.is_fd() || !cfg!(unix) {
            return Err(Error::Unsupported {
                what: format!("export of a {t} semaphore"),
                reason: "vkcuda's Vulkan side exports POSIX fds only (TimelineFd, OpaqueFd); \
                         Win32 export is not implemented"
                    .into(),
            });
        }
        if !ctx.can_export_semaphore_fds() {
            return Err(Error::missing_extension(
                SEMAPHORE_FD,
                format!("export of a {} semaphore as {t}", kind_name(desc.kind)),
            ));
        }
        ctx.semaphore_support(desc.kind, t)?
            .require_export(|| format!("export of a {} semaphore as {t}", kind_name(desc.kind)))?;
        let mut export = vk::ExportSemaphoreCreateInfo::default().handle_types(flags);
        let mut type_info = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk_type(desc.kind))
            .initial_value(desc.initial_value);
        let info = vk::SemaphoreCreateInfo::default()
            .push_next(&mut export)
            .push_next(&mut type_info);
        // SAFETY: `info`'s chain points at live structs; the handle type was checked to be
        // exportable for this kind and its extension is enabled.
        let semaphore = unsafe { ctx.device().create_semaphore(&info, None) }
            .map_err(|r| Error::vk("vkCreateSemaphore", r))?;
        Ok(Self {
            ctx: ctx.clone(),
            semaphore,
            kind: desc.kind,
            handle_type: Some(t),
            max_difference: max_value_difference(ctx),
            high_water: HighWater::new(desc.initial_value),
            owned: true,
        })
    }

    /// Shorthand for [`Semaphore::new`] with [`SemaphoreDesc::timeline`].
    ///
    /// # Errors
    /// As [`Semaphore::new`].
    pub fn timeline(ctx: &Context, initial_value: u64) -> Result<Self> {
        Self::new(ctx, &SemaphoreDesc::timeline(initial_value))
    }

    /// Shorthand for [`Semaphore::new`] with [`SemaphoreDesc::binary`].
    ///
    /// # Errors
    /// As [`Semaphore::new`].
    pub fn binary(ctx: &Context) -> Result<Self> {
        Self::new(ctx, &SemaphoreDesc::binary())
    }

    /// Creates a semaphore that is **not** exportable, for synchronisation that stays inside
    /// Vulkan (e.g. [`crate::interop::FrameSync`]'s completion timelines). It needs no
    /// external-semaphore extension, so it works on every device (lavapipe included);
    /// [`Semaphore::export`] refuses it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`initial_value`) for a binary semaphore with a non-zero
    /// initial value; [`Error::OutOfMemory`].
    pub fn local(ctx: &Context, kind: SemaphoreKind, initial_value: u64) -> Result<Self> {
        if kind == SemaphoreKind::Binary && initial_value != 0 {
            return Err(Error::invalid(
                "initial_value",
                format!("{initial_value} for a binary semaphore"),
                "0 (binary semaphores have no counter)",
            ));
        }
        let mut type_info = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk_type(kind))
            .initial_value(initial_value);
        let info = vk::SemaphoreCreateInfo::default().push_next(&mut type_info);
        // SAFETY: `info`'s chain points at a live struct; timeline semaphores are enabled on
        // every context (vkcuda requires the feature).
        let semaphore = unsafe { ctx.device().create_semaphore(&info, None) }
            .map_err(|r| Error::vk("vkCreateSemaphore", r))?;
        Ok(Self {
            ctx: ctx.clone(),
            semaphore,
            kind,
            handle_type: None,
            max_difference: max_value_difference(ctx),
            high_water: HighWater::new(initial_value),
            owned: true,
        })
    }

    /// Wraps a semaphore the caller created, so the host operations and [`Context::submit`]
    /// work on it. `exported_as` is the handle type it was created exportable with
    /// (`None`: not exportable, and [`Semaphore::export`] refuses).
    ///
    /// # Safety
    /// 1. `semaphore` was created from `ctx.device()` and is of type `kind`.
    /// 2. When `exported_as` is `Some(t)`, it was created with `VkExportSemaphoreCreateInfo`
    ///    including `t`'s Vulkan flag ([`crate::vulkan::semaphore_handle_flags`]).
    /// 3. When `owned` is true, vkcuda destroys it on drop and nobody else may; when false,
    ///    the caller destroys it, after the returned value is dropped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `exported_as` does not fit `kind` (a timeline type
    /// for a binary semaphore or the reverse). The semaphore is not destroyed then, even
    /// when `owned` is true.
    pub unsafe fn from_raw(
        ctx: &Context,
        semaphore: vk::Semaphore,
        kind: SemaphoreKind,
        exported_as: Option<SemaphoreHandleType>,
        owned: bool,
    ) -> Result<Self> {
        if let Some(t) = exported_as {
            check_kind("exported_as", kind, t, 0)?;
        }
        Ok(Self {
            ctx: ctx.clone(),
            semaphore,
            kind,
            handle_type: exported_as,
            max_difference: max_value_difference(ctx),
            high_water: HighWater::new(0),
            owned,
        })
    }

    /// Exports the semaphore as a new handle (each call makes a new fd, owned by the
    /// returned value): [`SemaphoreHandle::TimelineFd`] for a timeline semaphore,
    /// [`SemaphoreHandle::OpaqueFd`] for a binary one.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a wrapped semaphore that was not created exportable;
    /// [`Error::MissingExtension`] without `VK_KHR_external_semaphore_fd`;
    /// [`Error::Vulkan`] when `vkGetSemaphoreFdKHR` fails.
    pub fn export(&self) -> Result<SemaphoreHandle> {
        let Some(t) = self.handle_type else {
            return Err(Error::Unsupported {
                what: "export of a semaphore".into(),
                reason: "it was wrapped with exported_as = None (not created exportable)".into(),
            });
        };
        self.export_fd(t)
    }

    #[cfg(unix)]
    fn export_fd(&self, t: SemaphoreHandleType) -> Result<SemaphoreHandle> {
        let loader = self.ctx.semaphore_fd().ok_or_else(|| {
            Error::missing_extension(SEMAPHORE_FD, format!("export of a {t} semaphore"))
        })?;
        let flags = semaphore_handle_flags(t).ok_or_else(|| no_vulkan_type(t))?;
        let info = vk::SemaphoreGetFdInfoKHR::default()
            .semaphore(self.semaphore)
            .handle_type(flags);
        // SAFETY: the semaphore is alive and was created exportable with this handle type
        // (checked by `new`, or promised to `from_raw`); OPAQUE_FD export has no state
        // requirements.
        let raw = unsafe { loader.get_semaphore_fd(&info) }
            .map_err(|r| Error::vk("vkGetSemaphoreFdKHR", r))?;
        // SAFETY: vkGetSemaphoreFdKHR returns a new fd that the caller owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(match t {
            SemaphoreHandleType::TimelineFd => SemaphoreHandle::TimelineFd(fd),
            _ => SemaphoreHandle::OpaqueFd(fd),
        })
    }

    #[cfg(not(unix))]
    fn export_fd(&self, t: SemaphoreHandleType) -> Result<SemaphoreHandle> {
        Err(Error::Unsupported {
            what: format!("export of a {t} semaphore"),
            reason: "vkcuda's Vulkan side exports POSIX fds only".into(),
        })
    }

    /// The raw semaphore, for the caller's own submissions. Valid while `self` lives.
    pub fn raw(&self) -> vk::Semaphore {
        self.semaphore
    }

    /// Binary or timeline.
    pub fn kind(&self) -> SemaphoreKind {
        self.kind
    }

    /// The handle type [`Semaphore::export`] produces (`None`: not exportable).
    pub fn handle_type(&self) -> Option<SemaphoreHandleType> {
        self.handle_type
    }

    /// The context it was made on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The timeline's current value (`vkGetSemaphoreCounterValue`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a binary semaphore; [`Error::Vulkan`] (e.g. device
    /// lost) from the driver.
    pub fn value(&self) -> Result<u64> {
        self.require_timeline("value")?;
        self.counter()
    }

    /// Sets the timeline to `value` from the host (`vkSignalSemaphore`).
    ///
    /// `value` must be above the current value and within
    /// `maxTimelineSemaphoreValueDifference` of it, and below every signal submitted
    /// through vkcuda ([`Context::submit_to`], the CUDA side of a
    /// [`crate::interop::SharedSemaphore`]) that is still pending: such a signal would
    /// later set the counter *below* `value` (`VUID-VkSemaphoreSignalInfo-value-03259`). The check and the signal happen under
    /// the timeline's lock, so concurrent signals from other threads cannot interleave.
    /// Signals vkcuda does not see (the caller's own submissions with [`Semaphore::raw`],
    /// another process) remain the caller's to order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`value`) naming the current and requested values when
    /// `value` is not above the current value, too far above it, or not below a pending
    /// submitted signal; or for a binary semaphore. [`Error::Vulkan`] from the driver.
    pub fn signal(&self, value: u64) -> Result<()> {
        self.require_timeline("signal")?;
        let mut host = self.high_water.lock_host(value);
        let current = self.check_signal_value("value", None, value)?;
        host.check(current)?;
        let info = vk::SemaphoreSignalInfo::default()
            .semaphore(self.semaphore)
            .value(value);
        // SAFETY: a live timeline semaphore of this device; the value is above the current
        // one and below every signal submitted through vkcuda that is still pending
        // (checked under the lock).
        unsafe { self.ctx.device().signal_semaphore(&info) }
            .map_err(|r| Error::vk("vkSignalSemaphore", r))?;
        host.commit();
        Ok(())
    }

    /// The mark of the highest value submitted for signalling (shared with CUDA imports).
    pub(crate) fn high_water(&self) -> &HighWater {
        &self.high_water
    }

    /// Waits on the host until the timeline reaches `value`, spinning then sleeping (see
    /// the module docs: latency one counter read for the first 200 us, then at most
    /// ~1 ms; CPU cost at most 200 us of spinning plus ~1,000 wake-ups a second).
    ///
    /// # Errors
    /// [`Error::Timeout`] (`"timeline value V (current C)"`) when `value` was not reached
    /// within `timeout`; [`Error::InvalidArgument`] for a binary semaphore;
    /// [`Error::Vulkan`] from the driver.
    pub fn wait(&self, value: u64, timeout: Duration) -> Result<()> {
        self.require_timeline("wait")?;
        let mut clock = SystemClock(Instant::now());
        wait_for_counter(value, timeout, || self.counter(), &mut clock)
    }

    /// Waits on the host with plain `vkWaitSemaphores`. **Slow** where the driver sleeps in
    /// it (milliseconds after a CUDA signal on the measured NVIDIA driver, against one
    /// counter read for [`Semaphore::wait`]; figures in `benches/RESULTS.md`). Kept as the
    /// naive baseline for benchmarks.
    ///
    /// # Errors
    /// As [`Semaphore::wait`].
    pub fn wait_blocking(&self, value: u64, timeout: Duration) -> Result<()> {
        self.require_timeline("wait_blocking")?;
        let semaphores = [self.semaphore];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default()
            .semaphores(&semaphores)
            .values(&values);
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let start = Instant::now();
        // SAFETY: a live timeline semaphore of this device; `info` points at live arrays.
        match unsafe { self.ctx.device().wait_semaphores(&info, nanos) } {
            Ok(()) => Ok(()),
            Err(vk::Result::TIMEOUT) => {
                Err(timeout_error(value, self.counter().ok(), start.elapsed()))
            }
            Err(r) => Err(Error::vk("vkWaitSemaphores", r)),
        }
    }

    fn require_timeline(&self, op: &str) -> Result<()> {
        match self.kind {
            SemaphoreKind::Timeline => Ok(()),
            SemaphoreKind::Binary => Err(Error::invalid(
                "semaphore",
                format!("{op} on a binary semaphore, which has no counter"),
                "a timeline semaphore (SemaphoreDesc::timeline)",
            )),
        }
    }

    /// `vkGetSemaphoreCounterValue`; only called on timeline semaphores.
    fn counter(&self) -> Result<u64> {
        // SAFETY: a live timeline semaphore of this device (callers check the kind).
        unsafe {
            self.ctx
                .device()
                .get_semaphore_counter_value(self.semaphore)
        }
        .map_err(|r| Error::vk("vkGetSemaphoreCounterValue", r))
    }

    /// Checks a timeline signal value against the current value and the device's
    /// `maxTimelineSemaphoreValueDifference`, and returns the current value. `entry`
    /// numbers it within a submission.
    pub(super) fn check_signal_value(
        &self,
        arg: &'static str,
        entry: Option<usize>,
        value: u64,
    ) -> Result<u64> {
        let current = self.counter()?;
        let at = entry.map_or(String::new(), |i| format!("entry {i}: "));
        if value <= current {
            return Err(Error::invalid(
                arg,
                format!("{at}signal value {value} is not above the current value {current}"),
                format!("a value above {current} (timeline values only grow)"),
            ));
        }
        let max = self.max_difference;
        if value - current > max {
            return Err(Error::invalid(
                arg,
                format!(
                    "{at}signal value {value} is more than \
                     maxTimelineSemaphoreValueDifference ({max}) above the current value {current}"
                ),
                format!("at most {}", current.saturating_add(max)),
            ));
        }
        Ok(current)
    }
}

/// A handle type fits a kind when both are timeline or both binary; binary semaphores
/// start at 0.
fn check_kind(
    arg: &'static str,
    kind: SemaphoreKind,
    t: SemaphoreHandleType,
    initial_value: u64,
) -> Result<()> {
    let timeline = kind == SemaphoreKind::Timeline;
    if t.is_timeline() != timeline {
        let expected = if timeline {
            "a timeline handle type (TimelineFd, TimelineWin32, D3D12Fence, D3D11Fence, NvSciSync)"
        } else {
            "a binary handle type (OpaqueFd, OpaqueWin32, OpaqueWin32Kmt, D3D11KeyedMutex[Kmt])"
        };
        return Err(Error::invalid(
            arg,
            format!("{t} for a {} semaphore", kind_name(kind)),
            expected,
        ));
    }
    if !timeline && initial_value != 0 {
        return Err(Error::invalid(
            "desc.initial_value",
            format!("{initial_value} for a binary semaphore"),
            "0 (binary semaphores have no counter)",
        ));
    }
    Ok(())
}

fn kind_name(kind: SemaphoreKind) -> &'static str {
    match kind {
        SemaphoreKind::Binary => "binary",
        SemaphoreKind::Timeline => "timeline",
    }
}

fn vk_type(kind: SemaphoreKind) -> vk::SemaphoreType {
    match kind {
        SemaphoreKind::Binary => vk::SemaphoreType::BINARY,
        SemaphoreKind::Timeline => vk::SemaphoreType::TIMELINE,
    }
}

fn no_vulkan_type(t: SemaphoreHandleType) -> Error {
    Error::Unsupported {
        what: format!("a {t} semaphore from Vulkan"),
        reason: "Vulkan has no such external semaphore handle type".into(),
    }
}

/// `VkPhysicalDeviceTimelineSemaphoreProperties::maxTimelineSemaphoreValueDifference`.
fn max_value_difference(ctx: &Context) -> u64 {
    let mut timeline = vk::PhysicalDeviceTimelineSemaphoreProperties::default();
    {
        let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut timeline);
        // SAFETY: valid physical device of this instance; the chain points at a live struct.
        unsafe {
            ctx.instance()
                .get_physical_device_properties2(ctx.physical_device(), &mut props)
        };
    }
    timeline.max_timeline_semaphore_value_difference
}

fn timeout_error(target: u64, current: Option<u64>, waited: Duration) -> Error {
    let current = current.map_or("unknown".to_owned(), |c| c.to_string());
    Error::Timeout {
        what: format!("timeline value {target} (current {current})"),
        waited,
    }
}

/// How [`wait_for_counter`] passes time: [`SystemClock`] for real waits, a fake clock in
/// the unit tests.
trait WaitClock {
    /// Time since the wait began.
    fn elapsed(&mut self) -> Duration;
    /// Called between two reads inside the spin window.
    fn relax(&mut self);
    /// Sleeps about `d` between two reads after the spin window.
    fn sleep(&mut self, d: Duration);
}

struct SystemClock(Instant);

impl WaitClock for SystemClock {
    fn elapsed(&mut self) -> Duration {
        self.0.elapsed()
    }

    fn relax(&mut self) {
        std::hint::spin_loop();
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// The pause before the next read, `elapsed` into a wait that has slept `sleeps` times:
/// `None` (spin) inside the spin window, then sleeps doubling from
/// [`Semaphore::WAIT_FIRST_SLEEP`] to [`Semaphore::WAIT_MAX_SLEEP`].
pub(crate) fn backoff(elapsed: Duration, sleeps: u32) -> Option<Duration> {
    if elapsed < Semaphore::WAIT_SPIN_WINDOW {
        return None;
    }
    let grown = Semaphore::WAIT_FIRST_SLEEP.saturating_mul(1 << sleeps.min(16));
    Some(grown.min(Semaphore::WAIT_MAX_SLEEP))
}

/// Reads the counter until it reaches `target` or `timeout` passes (see the module docs
/// for the strategy). Always reads at least once, and once more after the last sleep, so
/// a zero timeout is a single poll and a value reached by the deadline is not missed.
fn wait_for_counter(
    target: u64,
    timeout: Duration,
    mut read: impl FnMut() -> Result<u64>,
    clock: &mut impl WaitClock,
) -> Result<()> {
    let mut sleeps = 0u32;
    loop {
        let current = read()?;
        if current >= target {
            return Ok(());
        }
        let elapsed = clock.elapsed();
        if elapsed >= timeout {
            return Err(timeout_error(target, Some(current), elapsed));
        }
        match backoff(elapsed, sleeps) {
            None => clock.relax(),
            Some(pause) => {
                clock.sleep(pause.min(timeout - elapsed));
                sleeps = sleeps.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Virtual time: each counter read costs `per_read`, sleeps advance by what they ask,
    /// spins by `per_spin`. Records every sleep.
    struct FakeClock {
        now: Rc<Cell<Duration>>,
        per_spin: Duration,
        spins: u64,
        sleeps: Rc<RefCell<Vec<Duration>>>,
    }

    impl WaitClock for FakeClock {
        fn elapsed(&mut self) -> Duration {
            self.now.get()
        }

        fn relax(&mut self) {
            self.spins += 1;
            self.now.set(self.now.get() + self.per_spin);
        }

        fn sleep(&mut self, d: Duration) {
            self.sleeps.borrow_mut().push(d);
            self.now.set(self.now.get() + d);
        }
    }

    fn clock() -> FakeClock {
        FakeClock {
            now: Rc::new(Cell::new(Duration::ZERO)),
            per_spin: US / 10,
            spins: 0,
            sleeps: Rc::default(),
        }
    }

    /// A counter that reads `before` until virtual time `at`, then `after`; costs 1 us a read.
    fn counter(
        now: &Rc<Cell<Duration>>,
        reads: &Rc<Cell<u64>>,
        at: Duration,
        before: u64,
        after: u64,
    ) -> impl FnMut() -> Result<u64> {
        let (now, reads) = (now.clone(), reads.clone());
        move || {
            reads.set(reads.get() + 1);
            let t = now.get();
            now.set(t + US);
            Ok(if t >= at { after } else { before })
        }
    }

    #[test]
    fn a_reached_value_costs_one_read() {
        let mut c = clock();
        let reads = Rc::new(Cell::new(0));
        let read = counter(&c.now, &reads, Duration::ZERO, 9, 9);
        wait_for_counter(9, Duration::from_secs(1), read, &mut c).unwrap();
        assert_eq!((reads.get(), c.spins), (1, 0));
        assert!(c.sleeps.borrow().is_empty());
    }

    #[test]
    fn a_value_reached_inside_the_spin_window_is_seen_at_the_next_read() {
        let mut c = clock();
        let reads = Rc::new(Cell::new(0));
        let at = 150 * US;
        let read = counter(&c.now, &reads, at, 3, 4);
        wait_for_counter(4, Duration::from_secs(1), read, &mut c).unwrap();
        assert!(c.sleeps.borrow().is_empty(), "slept inside the spin window");
        let seen = c.now.get();
        assert!(seen >= at && seen <= at + 3 * US, "seen at {seen:?}");
    }

    #[test]
    fn sleeps_start_after_the_spin_window_and_double_up_to_the_cap() {
        let mut c = clock();
        let reads = Rc::new(Cell::new(0));
        let read = counter(&c.now, &reads, Duration::MAX, 3, 3);
        let timeout = Duration::from_millis(10);
        let e = wait_for_counter(7, timeout, read, &mut c).unwrap_err();
        let sleeps = c.sleeps.borrow();
        let expect_us = [20, 40, 80, 160, 320, 640, 1000, 1000];
        let got_us: Vec<u128> = sleeps.iter().take(8).map(|d| d.as_micros()).collect();
        assert_eq!(got_us, expect_us);
        assert!(sleeps.iter().all(|&d| d <= Semaphore::WAIT_MAX_SLEEP));
        // Spin reads only fill the first 200 us; afterwards one read per sleep.
        let spin_reads = reads.get() - sleeps.len() as u64;
        assert!(spin_reads <= 200, "{spin_reads} reads in the spin window");
        assert!(sleeps.len() < 20, "{} sleeps in 10 ms", sleeps.len());
        match e {
            Error::Timeout { what, waited } => {
                assert_eq!(what, "timeline value 7 (current 3)");
                assert!(
                    waited >= timeout && waited <= timeout + 2 * US,
                    "{waited:?}"
                );
            }
            other => panic!("expected a timeout, got {other}"),
        }
    }

    #[test]
    fn the_last_sleep_is_clamped_to_the_deadline_and_followed_by_a_read() {
        let mut c = clock();
        let reads = Rc::new(Cell::new(0));
        let timeout = Duration::from_micros(2500);
        // Reached exactly at the deadline: the read after the clamped sleep sees it.
        let read = counter(&c.now, &reads, timeout, 0, 1);
        wait_for_counter(1, timeout, read, &mut c).unwrap();
        let last = *c.sleeps.borrow().last().unwrap();
        assert!(last < Semaphore::WAIT_MAX_SLEEP, "{last:?}");
        assert!(c.now.get() >= timeout);
    }

    #[test]
    fn a_value_reached_while_sleeping_is_seen_within_one_sleep() {
        let mut c = clock();
        let reads = Rc::new(Cell::new(0));
        let at = Duration::from_millis(5);
        let read = counter(&c.now, &reads, at, 0, 8);
        wait_for_counter(8, Duration::from_secs(1), read, &mut c).unwrap();
        let late = c.now.get() - at;
        assert!(late <= Semaphore::WAIT_MAX_SLEEP + 2 * US, "{late:?}");
    }

    #[test]
    fn zero_timeout_polls_once() {
        let mut c = clock();
        let reads = Rc::new(Cell::new(0));
        let read = counter(&c.now, &reads, Duration::MAX, 1, 1);
        let e = wait_for_counter(2, Duration::ZERO, read, &mut c).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_eq!((reads.get(), c.spins), (1, 0));
    }

    #[test]
    fn a_read_error_ends_the_wait() {
        let mut c = clock();
        let read = || {
            Err(Error::vk(
                "vkGetSemaphoreCounterValue",
                vk::Result::ERROR_DEVICE_LOST,
            ))
        };
        let e = wait_for_counter(1, Duration::from_secs(1), read, &mut c).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DeviceLost {
                    call: "vkGetSemaphoreCounterValue",
                    cuda: None
                }
            ),
            "{e}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn real_clock_times_out_on_time_without_burning_the_timeout() {
        let timeout = Duration::from_millis(30);
        let cpu_before = thread_cpu_time();
        let start = Instant::now();
        let e = wait_for_counter(1, timeout, || Ok(0), &mut SystemClock(start)).unwrap_err();
        let took = start.elapsed();
        let cpu = thread_cpu_time() - cpu_before;
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(took >= timeout, "returned early: {took:?}");
        // Wall time is only bounded loosely (a loaded machine wakes sleepers late; the
        // fake-clock tests above pin the schedule); the CPU time shows it slept rather
        // than spun: 200 us of spinning and ~30 short wake-ups, far below the timeout.
        assert!(
            took < timeout + Duration::from_millis(500),
            "returned late: {took:?}"
        );
        assert!(
            cpu < timeout / 3,
            "burned {cpu:?} of CPU in a {took:?} wait"
        );
    }

    /// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
    #[cfg(unix)]
    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a writable timespec; the clock id is a constant.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(r, 0, "clock_gettime: {}", std::io::Error::last_os_error());
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn descriptions_pair_kinds_with_handle_types() {
        let t = SemaphoreDesc::timeline(5);
        assert_eq!(t.handle_type, SemaphoreHandleType::TimelineFd);
        assert!(check_kind("desc.handle_type", t.kind, t.handle_type, 5).is_ok());
        let wrong = t.handle_type(SemaphoreHandleType::OpaqueFd);
        let e = check_kind("desc.handle_type", wrong.kind, wrong.handle_type, 5).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument {
                    arg: "desc.handle_type",
                    ..
                }
            ),
            "{e}"
        );
        let b = SemaphoreDesc::binary();
        assert!(check_kind("desc.handle_type", b.kind, b.handle_type, 0).is_ok());
        let e = check_kind("desc.handle_type", b.kind, b.handle_type, 1).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument {
                    arg: "desc.initial_value",
                    ..
                }
            ),
            "{e}"
        );
    }
}
