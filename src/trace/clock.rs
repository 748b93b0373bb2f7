//! The host clock every trace time is on, and how a device's clock is mapped onto it.
//!
//! A device timestamp becomes a host time through an anchor: one device reading paired with
//! the host time it was taken at ([`ClockPair`]). Where the driver calibrates the two clocks
//! itself (Vulkan's calibrated timestamps) the pair is exact within the driver's stated
//! deviation; elsewhere it is bracketed: host time read before the device writes its
//! timestamp and after the host sees it ([`Bracketed`]), the tightest of a few tries kept
//! ([`tightest`]).

use std::time::Duration;

use crate::error::{Error, Result};

/// Nanoseconds of the host's monotonic clock: `CLOCK_MONOTONIC` on Unix, the clock Vulkan's
/// `VK_TIME_DOMAIN_CLOCK_MONOTONIC` domain reads, so calibrated GPU timestamps land on the
/// same axis as host spans. Elsewhere, time since the first call in this process.
pub fn now_ns() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Unix
        // (POSIX), so the call cannot fail with EINVAL.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
        let secs = u64::try_from(ts.tv_sec).unwrap_or_default();
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or_default();
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    }
    #[cfg(not(unix))]
    {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let elapsed = EPOCH.get_or_init(std::time::Instant::now).elapsed();
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Whether [`now_ns`] reads `CLOCK_MONOTONIC` (so Vulkan's `CLOCK_MONOTONIC` time domain can
/// be calibrated against it directly).
pub(crate) const HOST_IS_CLOCK_MONOTONIC: bool = cfg!(unix);

/// A device clock reading and the host time ([`now_ns`]) it corresponds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPair {
    /// The device's reading, in its own units (Vulkan timestamp ticks).
    pub device: u64,
    /// The host time of that reading, in nanoseconds.
    pub host_ns: u64,
    /// How far off `host_ns` may be, in nanoseconds.
    pub uncertainty_ns: u64,
}

/// One correlation try: host time before the device was asked for a timestamp, the
/// timestamp, and host time once the host saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bracketed {
    /// [`now_ns`] just before the timestamp was requested.
    pub before_ns: u64,
    /// The device's reading.
    pub device: u64,
    /// [`now_ns`] just after the host saw the reading.
    pub after_ns: u64,
}

/// The tightest try (smallest `after - before`), as a pair at the middle of its bracket
/// with half its width as uncertainty. `None` when `samples` holds no well-ordered try.
pub fn tightest(samples: &[Bracketed]) -> Option<ClockPair> {
    samples
        .iter()
        .filter(|s| s.after_ns >= s.before_ns)
        .min_by_key(|s| s.after_ns - s.before_ns)
        .map(|s| {
            let half = (s.after_ns - s.before_ns) / 2;
            ClockPair {
                device: s.device,
                host_ns: s.before_ns + half,
                uncertainty_ns: half,
            }
        })
}

/// A device tick counter mapped onto the host clock through an anchor [`ClockPair`].
///
/// Ticks are counted modulo `2^valid_bits` (Vulkan's `timestampValidBits`), so a reading
/// taken after the counter wrapped still maps forward: the distance from the anchor is taken
/// as the signed difference modulo `2^valid_bits` (readings less than half a wrap from the
/// anchor map correctly, whichever side they are on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceClock {
    anchor: ClockPair,
    period_ns: f64,
    valid_bits: u32,
}

impl DeviceClock {
    /// A clock ticking every `period_ns` nanoseconds (Vulkan's `timestampPeriod`), with
    /// `valid_bits` significant bits, anchored at `anchor`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `period_ns` is not finite and positive, or
    /// `valid_bits` is not in `1..=64`.
    pub fn new(anchor: ClockPair, period_ns: f64, valid_bits: u32) -> Result<Self> {
        if !(period_ns.is_finite() && period_ns > 0.0) {
            return Err(Error::invalid(
                "period_ns",
                format!("{period_ns}"),
                "a finite number of nanoseconds above 0 (timestampPeriod)",
            ));
        }
        if !(1..=64).contains(&valid_bits) {
            return Err(Error::invalid(
                "valid_bits",
                format!("{valid_bits}"),
                "1 to 64 (timestampValidBits)",
            ));
        }
        Ok(Self {
            anchor,
            period_ns,
            valid_bits,
        })
    }

    /// The anchor pair.
    pub fn anchor(&self) -> ClockPair {
        self.anchor
    }

    /// Nanoseconds per tick.
    pub fn period_ns(&self) -> f64 {
        self.period_ns
    }

    /// Significant bits of a reading.
    pub fn valid_bits(&self) -> u32 {
        self.valid_bits
    }

    /// `ticks` with the bits beyond `valid_bits` cleared.
    pub fn mask(&self, ticks: u64) -> u64 {
        match self.valid_bits {
            64 => ticks,
            bits => ticks & ((1u64 << bits) - 1),
        }
    }

    /// Signed ticks from `from` to `to`, modulo `2^valid_bits`.
    pub fn ticks_between(&self, from: u64, to: u64) -> i128 {
        let delta = self.mask(self.mask(to).wrapping_sub(self.mask(from)));
        let wrap = 1i128 << self.valid_bits;
        let delta = i128::from(delta);
        if delta >= wrap / 2 {
            delta - wrap
        } else {
            delta
        }
    }

    /// The duration of `ticks` ticks.
    pub fn ticks_to_duration(&self, ticks: u64) -> Duration {
        Duration::from_secs_f64(ticks as f64 * self.period_ns / 1e9)
    }

    /// The host time ([`now_ns`] axis) of the device reading `ticks`; 0 for a reading that
    /// would fall before the host clock's origin.
    pub fn host_ns(&self, ticks: u64) -> u64 {
        let offset = self.ticks_between(self.anchor.device, ticks) as f64 * self.period_ns;
        let host = self.anchor.host_ns as f64 + offset.round();
        if host <= 0.0 {
            0
        } else if host >= u64::MAX as f64 {
            u64::MAX
        } else {
            host as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::invalid_arg;

    fn pair(device: u64, host_ns: u64) -> ClockPair {
        ClockPair {
            device,
            host_ns,
            uncertainty_ns: 0,
        }
    }

    #[test]
    fn host_clock_moves_forward() {
        let a = now_ns();
        std::thread::sleep(Duration::from_millis(2));
        let b = now_ns();
        assert!(b >= a + 1_000_000, "{a} -> {b}");
    }

    #[test]
    fn ticks_map_through_the_period() {
        // 1 GHz-ish: timestampPeriod 1.0; lavapipe reports 1.0, NVIDIA 1.0, some AMD 10.0 or 40.0.
        let c = DeviceClock::new(pair(1_000, 5_000_000), 1.0, 64).unwrap();
        assert_eq!(c.host_ns(1_000), 5_000_000);
        assert_eq!(c.host_ns(1_500), 5_000_500);
        assert_eq!(c.host_ns(500), 4_999_500);
        let c = DeviceClock::new(pair(100, 1_000_000), 40.0, 64).unwrap();
        assert_eq!(c.host_ns(110), 1_000_400);
        assert_eq!(c.ticks_to_duration(25), Duration::from_nanos(1_000));
        let c = DeviceClock::new(pair(0, 0), 0.5, 64).unwrap();
        assert_eq!(c.host_ns(3), 2, "rounded to the nearest ns");
    }

    #[test]
    fn readings_past_a_wrap_map_forward() {
        // 36 valid bits (Intel and some AMD parts): the counter wraps at 2^36.
        let wrap = 1u64 << 36;
        let c = DeviceClock::new(pair(wrap - 10, 1_000_000), 1.0, 36).unwrap();
        assert_eq!(c.host_ns(5), 1_000_015, "5 ticks after the wrap");
        assert_eq!(c.host_ns(wrap - 20), 999_990, "before the anchor");
        // Bits beyond the valid ones are ignored.
        assert_eq!(c.host_ns((7 << 36) | 5), 1_000_015);
        assert_eq!(c.ticks_between(wrap - 1, 0), 1);
        assert_eq!(c.ticks_between(0, wrap - 1), -1);
        let full = DeviceClock::new(pair(u64::MAX, 100), 1.0, 64).unwrap();
        assert_eq!(full.host_ns(1), 102);
    }

    #[test]
    fn host_times_saturate_instead_of_wrapping() {
        let c = DeviceClock::new(pair(1_000, 10), 1.0, 64).unwrap();
        assert_eq!(c.host_ns(0), 0);
    }

    #[test]
    fn bad_clock_parameters_are_typed_errors() {
        for period in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let (arg, ..) = invalid_arg(DeviceClock::new(pair(0, 0), period, 64));
            assert_eq!(arg, "period_ns");
        }
        for bits in [0, 65] {
            let (arg, ..) = invalid_arg(DeviceClock::new(pair(0, 0), 1.0, bits));
            assert_eq!(arg, "valid_bits");
        }
    }

    #[test]
    fn the_tightest_bracket_wins() {
        let samples = [
            Bracketed {
                before_ns: 100,
                device: 7,
                after_ns: 180,
            },
            Bracketed {
                before_ns: 1_000,
                device: 9,
                after_ns: 1_010,
            },
            // Clock went backwards: ignored.
            Bracketed {
                before_ns: 50,
                device: 1,
                after_ns: 40,
            },
        ];
        assert_eq!(
            tightest(&samples),
            Some(ClockPair {
                device: 9,
                host_ns: 1_005,
                uncertainty_ns: 5
            })
        );
        assert_eq!(tightest(&[]), None);
        assert_eq!(tightest(&samples[2..]), None);
    }
}
