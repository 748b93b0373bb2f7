//! The relay of [`SyncMode::LowLatency`](super::SyncMode::LowLatency): a host thread that
//! sees CUDA's writes of frame values into page-locked host words and signals the slot's
//! Vulkan-only timeline with them (CUDA → host → Vulkan).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use cudarc::driver::CudaStream;

use crate::cuda::{self, memops, memops::HostWords};
use crate::error::{Error, Result};
use crate::vulkan::{self, Semaphore, SemaphoreKind};

/// The 64-bit value a 32-bit word written with the low bits of increasing values stands
/// for, given the last value seen: the word is at most 2^31 - 1 ahead (FrameSync keeps
/// writers at most N ahead), and a word that is not ahead means no progress.
fn widen(last: u64, word: u32) -> u64 {
    let delta = word.wrapping_sub(last as u32);
    if delta == 0 || delta > i32::MAX as u32 {
        return last;
    }
    last.saturating_add(u64::from(delta))
}

/// What the relay thread and the [`FrameSync`] share.
struct RelayShared {
    /// CUDA writes the frame value of slot `s` to word `s`.
    words: HostWords,
    /// Vulkan-only timelines the relay signals, one per slot.
    semaphores: Vec<Semaphore>,
    state: Mutex<RelayState>,
    wake: Condvar,
    /// Counts the host functions CUDA ran after a word's write ([`Relay::kick_after`]): a
    /// relay backing off sleeps on `wake` until this changes, instead of for a fixed time.
    kicks: AtomicU64,
}

struct RelayState {
    /// The value CUDA will write next to each slot's word (0: none yet).
    expected: Vec<u64>,
    stop: bool,
    /// A failed `vkSignalSemaphore`; the relay stops then.
    failed: Option<Error>,
}

impl RelayShared {
    fn lock(&self) -> MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The relay thread: polls the words of slots with a pending value and signals their
    /// timeline when CUDA's write arrives. Spins while there is progress (or for the spin
    /// window after it), then backs off like the fast host wait, and parks when nothing is
    /// pending.
    fn run(&self) {
        let mut relayed = vec![0u64; self.semaphores.len()];
        let mut active = Instant::now();
        let mut sleeps = 0u32;
        loop {
            let expected = {
                let mut state = self.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    let pending = state.expected.iter().zip(&relayed).any(|(e, r)| e > r);
                    if pending || active.elapsed() < Semaphore::WAIT_SPIN_WINDOW {
                        break state.expected.clone();
                    }
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    active = Instant::now();
                    sleeps = 0;
                }
            };
            let kicks = self.kicks.load(Ordering::Acquire);
            match self.relay_once(&expected, &mut relayed) {
                Ok(true) => {
                    active = Instant::now();
                    sleeps = 0;
                }
                Ok(false) => match vulkan::backoff(active.elapsed(), sleeps) {
                    None => std::hint::spin_loop(),
                    Some(pause) => {
                        // Sleeps until CUDA's host function says a write has landed (or
                        // `pause` at most, should it never run).
                        let state = self.lock();
                        drop(
                            self.wake
                                .wait_timeout_while(state, pause, |s| {
                                    !s.stop && self.kicks.load(Ordering::Acquire) == kicks
                                })
                                .unwrap_or_else(PoisonError::into_inner),
                        );
                        sleeps = sleeps.saturating_add(1);
                    }
                },
                Err(e) => {
                    self.lock().failed = Some(e);
                    return;
                }
            }
        }
    }

    /// One pass over the pending slots; says whether any progressed.
    fn relay_once(&self, expected: &[u64], relayed: &mut [u64]) -> Result<bool> {
        let mut progressed = false;
        for (slot, (&want, done)) in expected.iter().zip(relayed.iter_mut()).enumerate() {
            if want <= *done {
                continue;
            }
            let seen = widen(*done, self.words.read(slot)?);
            if seen > *done {
                self.semaphores[slot].signal(seen)?;
                *done = seen;
                progressed = true;
            }
        }
        Ok(progressed)
    }
}

/// The host function of [`Relay::kick_after`]: counts a kick and wakes the relay.
///
/// # Safety
/// `user` comes from `Arc::into_raw` of a `RelayShared`, whose count this call takes over.
unsafe extern "C" fn kick(user: *mut std::ffi::c_void) {
    // SAFETY: the caller's precondition: the count `kick_after` leaked is ours now.
    let shared = unsafe { Arc::from_raw(user as *const RelayShared) };
    shared.kicks.fetch_add(1, Ordering::Release);
    // Taking the lock orders the count with a relay between its check and its wait.
    drop(shared.lock());
    shared.wake.notify_all();
}

/// The relay of [`SyncMode::LowLatency`]: CUDA → host → Vulkan.
pub(super) struct Relay {
    shared: Arc<RelayShared>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub(super) fn new(vk: &vulkan::Context, cu: &cuda::Context, slots: usize) -> Result<Self> {
        let semaphores = (0..slots)
            .map(|_| Semaphore::local(vk, SemaphoreKind::Timeline, 0))
            .collect::<Result<Vec<_>>>()?;
        let shared = Arc::new(RelayShared {
            words: HostWords::new(cu, slots)?,
            semaphores,
            state: Mutex::new(RelayState {
                expected: vec![0; slots],
                stop: false,
                failed: None,
            }),
            wake: Condvar::new(),
            kicks: AtomicU64::new(0),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vkcuda-frame-relay".into())
            .spawn(move || worker.run())
            .map_err(|source| Error::Io {
                call: "std::thread::Builder::spawn (the FrameSync relay)",
                source,
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the relay that CUDA will write `value` to `slot`'s word.
    pub(super) fn expect(&self, slot: usize, value: u64) {
        let mut state = self.shared.lock();
        if let Some(e) = state.expected.get_mut(slot) {
            *e = value;
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Enqueues on `stream`, after the word's write, a host function that wakes the relay,
    /// so a relay backing off during long CUDA work does not oversleep the write. Without
    /// it (on an error, logged) the relay still finds the write by polling.
    pub(super) fn kick_after(&self, stream: &CudaStream) {
        let user = Arc::into_raw(self.shared.clone()) as *mut std::ffi::c_void;
        // SAFETY: `kick` only touches the `RelayShared` that `user` holds a strong count of
        // (reclaimed by `kick`, or below when it will not run), makes no CUDA call and
        // returns after a short lock.
        if let Err(e) = unsafe { memops::notify(stream, kick, user) } {
            // SAFETY: the host function will not run, so the count is still ours.
            drop(unsafe { Arc::from_raw(user as *const RelayShared) });
            log::warn!("FrameSync relay: no host-function wake-up, polling only ({e})");
        }
    }

    /// The relay's failure, once.
    pub(super) fn take_error(&self) -> Result<()> {
        self.shared.lock().failed.take().map_or(Ok(()), Err)
    }

    /// Stops and joins the thread.
    pub(super) fn stop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the FrameSync relay thread panicked");
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Relay {
    /// Where CUDA writes `slot`'s word, as a device pointer.
    pub(super) fn word(&self, slot: usize) -> Result<cudarc::driver::sys::CUdeviceptr> {
        self.shared.words.device_ptr(slot)
    }

    /// The Vulkan-only timeline the relay signals for `slot`.
    pub(super) fn semaphore(&self, slot: usize) -> &Semaphore {
        &self.shared.semaphores[slot]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_follows_the_word_across_its_wrap() {
        assert_eq!(widen(0, 0), 0);
        assert_eq!(widen(0, 1), 1);
        assert_eq!(widen(5, 9), 9);
        assert_eq!(widen(9, 9), 9, "no progress");
        assert_eq!(widen(9, 5), 9, "an older word is no progress");
        // Values around 2^32: the word wraps, the 64-bit value keeps growing.
        let near = (1u64 << 32) - 2;
        assert_eq!(widen(near, (near + 4) as u32), near + 4);
        assert_eq!(widen(near + 4, (near + 4 + 8) as u32), near + 12);
        // Up to 2^31 - 1 ahead is progress; 2^31 and more is taken as stale.
        assert_eq!(widen(10, 10 + i32::MAX as u32), 10 + i32::MAX as u64);
        assert_eq!(widen(10, 10u32.wrapping_add(1 << 31)), 10);
    }
}
