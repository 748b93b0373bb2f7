//! [`HighWater`]: the highest value submitted for signalling on one timeline payload,
//! shared by its Vulkan semaphore and its CUDA imports.
//!
//! A timeline's counter only says how far the signals that already *ran* got; a signal
//! submitted to a queue or a stream but not yet run is invisible to it. Checking a new
//! signal against the counter alone lets values go backwards (a host signal of 7 while a
//! queue signal of 5 is pending: `VUID-VkSemaphoreSignalInfo-value-03259`). So each
//! payload keeps the highest value vkcuda submitted for it, and a new signal is checked
//! against it **and submitted under the same lock**, so two threads cannot both pass the
//! check and then submit in the other order.
//!
//! Queue and stream signals must be above every value submitted before them. A host signal
//! runs at once, so it must instead lie between the counter and the *lowest* pending
//! signal; the mark therefore also keeps the values submitted but not yet seen reached
//! (at most [`PENDING_KEPT`]; past that it only knows that some are pending, and refuses
//! host signals until the counter has caught up with the highest).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many pending signal values a mark keeps.
const PENDING_KEPT: usize = 64;

/// What a [`HighWater`] knows of one timeline.
#[derive(Debug, Default)]
struct Marks {
    /// The highest value signalled or submitted.
    highest: u64,
    /// Values submitted to a queue or stream and not yet seen reached, increasing.
    pending: VecDeque<u64>,
    /// Some pending values were dropped from `pending` (more than [`PENDING_KEPT`]).
    lost_low: bool,
}

use crate::error::{Error, Result};

/// The highest value submitted for signalling on one timeline (see the module docs).
/// Clones share the value.
#[derive(Debug, Clone)]
pub(crate) struct HighWater(Arc<Mutex<Marks>>);

/// The locked high-water marks of one batch of signals, in lock order; see
/// [`HighWater::lock_batch`].
pub(crate) struct Batch<'a> {
    /// (guard, value to record) per distinct timeline.
    entries: Vec<(MutexGuard<'a, Marks>, u64)>,
}

impl HighWater {
    /// A mark at `initial` (the value the timeline was created with).
    pub(crate) fn new(initial: u64) -> Self {
        Self(Arc::new(Mutex::new(Marks {
            highest: initial,
            ..Marks::default()
        })))
    }

    /// Whether `self` and `other` are the same payload's mark.
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The highest value submitted so far.
    pub(crate) fn get(&self) -> u64 {
        self.lock().highest
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    fn lock(&self) -> MutexGuard<'_, Marks> {
        // Every state of the marks is valid whatever a panicking holder did.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the marks of a batch of signals `(entry, mark, value)`, in address order (so
    /// two batches never deadlock), and checks that each value is above its mark. `arg`
    /// names the batch in errors, `entry` the signal's place in it.
    ///
    /// Lock order: these locks are taken before any queue lock and released after the
    /// submission; nothing else is locked while holding them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`arg`) when a timeline appears twice in the batch, or a
    /// value is not above the highest value already submitted for its timeline.
    pub(crate) fn lock_batch<'a>(
        arg: &'static str,
        ops: &[(usize, &'a HighWater, u64)],
    ) -> Result<Batch<'a>> {
        Self::lock_entries(arg, ops, true)
    }

    fn lock_entries<'a>(
        arg: &'static str,
        ops: &[(usize, &'a HighWater, u64)],
        numbered: bool,
    ) -> Result<Batch<'a>> {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| ops[i].1.key());
        if let Some(w) = order.windows(2).find(|w| ops[w[0]].1.same(ops[w[1]].1)) {
            let (x, y) = (ops[w[0]].0, ops[w[1]].0);
            let (a, b) = (x.min(y), x.max(y));
            return Err(Error::invalid(
                arg,
                format!("entries {a} and {b} signal the same timeline in one batch"),
                "each timeline at most once per batch (its highest value)",
            ));
        }
        let mut entries = Vec::with_capacity(ops.len());
        for i in order {
            let (entry, mark, value) = ops[i];
            let guard = mark.lock();
            check_above(arg, numbered.then_some(entry), value, guard.highest)?;
            entries.push((guard, value));
        }
        Ok(Batch { entries })
    }

    /// Locks the mark for one host signal of `value`, checked by [`HostSignal::check`].
    pub(crate) fn lock_host(&self, value: u64) -> HostSignal<'_> {
        HostSignal {
            marks: self.lock(),
            value,
        }
    }
}

impl Batch<'_> {
    /// Records the batch's values as submitted to a queue or stream (call once the driver
    /// accepted the batch), and unlocks.
    pub(crate) fn commit(mut self) {
        for (marks, value) in &mut self.entries {
            marks.highest = *value;
            marks.pending.push_back(*value);
            if marks.pending.len() > PENDING_KEPT {
                marks.pending.pop_front();
                marks.lost_low = true;
            }
        }
    }
}

/// The locked mark of one host signal ([`HighWater::lock_host`]).
pub(crate) struct HostSignal<'a> {
    marks: MutexGuard<'a, Marks>,
    value: u64,
}

impl HostSignal<'_> {
    /// Checks the host signal against the counter's `current` value (read under the lock):
    /// `value` must be above `current` and below every pending signal (arg `value`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`value`) when it is not.
    pub(crate) fn check(&mut self, current: u64) -> Result<()> {
        let (m, value) = (&mut *self.marks, self.value);
        while m.pending.front().is_some_and(|&v| v <= current) {
            m.pending.pop_front();
        }
        if m.highest <= current {
            m.pending.clear();
            m.lost_low = false;
        }
        let lowest = m.pending.front().copied();
        let refused = match lowest {
            _ if value <= current => None,
            Some(_) if m.lost_low => Some(format!(
                "more than {PENDING_KEPT} signals up to {} are pending (the counter is at \
                 {current}), so vkcuda cannot tell whether {value} is below all of them",
                m.highest
            )),
            Some(low) if value >= low => Some(format!(
                "a signal of {low} is still pending (the counter is at {current}); it would \
                 later set the counter below {value}"
            )),
            _ => return Ok(()),
        };
        Err(match refused {
            Some(problem) => Error::invalid(
                "value",
                format!("host signal of {value}: {problem}"),
                format!(
                    "a value above {current} and below {}, or wait for the pending signals",
                    lowest.unwrap_or(m.highest)
                ),
            ),
            None => Error::invalid(
                "value",
                format!("signal value {value} is not above the current value {current}"),
                format!("a value above {current} (timeline values only grow)"),
            ),
        })
    }

    /// Records the host signal as done (call once the driver accepted it), and unlocks.
    pub(crate) fn commit(mut self) {
        let m = &mut *self.marks;
        m.highest = m.highest.max(self.value);
    }
}

/// `value` must be above `highest`.
fn check_above(arg: &'static str, entry: Option<usize>, value: u64, highest: u64) -> Result<()> {
    if value > highest {
        return Ok(());
    }
    let at = entry.map_or(String::new(), |i| format!("entry {i}: "));
    Err(Error::invalid(
        arg,
        format!(
            "{at}signal value {value} is not above {highest}, the highest value already \
             signalled or submitted for this timeline"
        ),
        format!("a value above {highest} (timeline values never go backwards)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(mark: &HighWater, value: u64) -> Result<()> {
        HighWater::lock_batch("signals", &[(0, mark, value)]).map(Batch::commit)
    }

    fn host(mark: &HighWater, value: u64, current: u64) -> Result<()> {
        let mut h = mark.lock_host(value);
        h.check(current)?;
        h.commit();
        Ok(())
    }

    #[test]
    fn queue_values_only_grow_and_failed_batches_record_nothing() {
        let a = HighWater::new(2);
        assert!(submit(&a, 2).is_err());
        submit(&a, 5).unwrap();
        let e = submit(&a, 4).unwrap_err();
        assert!(e.to_string().contains("not above 5"), "{e}");
        // Checked but not committed (the driver refused): nothing recorded.
        drop(HighWater::lock_batch("signals", &[(0, &a, 9)]).unwrap());
        submit(&a, 6).unwrap();
    }

    #[test]
    fn host_signals_lie_between_the_counter_and_the_lowest_pending_signal() {
        let a = HighWater::new(0);
        submit(&a, 5).unwrap();
        submit(&a, 8).unwrap();
        // Counter at 0: 1..=4 are fine, 5 and above would be overtaken by the pending 5.
        let e = host(&a, 5, 0).unwrap_err();
        assert!(
            e.to_string().contains("signal of 5 is still pending"),
            "{e}"
        );
        assert!(host(&a, 9, 0).is_err());
        host(&a, 3, 0).unwrap();
        assert!(host(&a, 3, 3).is_err(), "not above the counter");
        // The counter reached 5: now 6 and 7 are below the pending 8.
        host(&a, 7, 5).unwrap();
        assert!(host(&a, 8, 7).is_err());
        // Everything reached: any value above the counter.
        host(&a, 9, 8).unwrap();
        assert!(submit(&a, 9).is_err(), "queue signals stay above host ones");
        submit(&a, 10).unwrap();
    }

    #[test]
    fn too_many_pending_signals_refuse_host_signals_until_they_are_reached() {
        let a = HighWater::new(0);
        for v in 1..=(PENDING_KEPT as u64 + 10) {
            submit(&a, v * 10).unwrap();
        }
        let e = host(&a, 5, 0).unwrap_err();
        assert!(e.to_string().contains("cannot tell"), "{e}");
        let all = (PENDING_KEPT as u64 + 10) * 10;
        host(&a, all + 1, all).unwrap();
    }

    #[test]
    fn a_batch_checks_every_entry_and_refuses_duplicates() {
        let (a, b) = (HighWater::new(0), HighWater::new(10));
        let e = HighWater::lock_batch("signals", &[(0, &a, 1), (1, &b, 3)])
            .err()
            .unwrap();
        assert!(e.to_string().contains("entry 1"), "{e}");
        let e = HighWater::lock_batch("signals", &[(0, &a, 1), (1, &b, 11), (2, &a.clone(), 2)])
            .err()
            .unwrap();
        assert!(e.to_string().contains("entries 0 and 2"), "{e}");
        HighWater::lock_batch("signals", &[(0, &b, 11), (1, &a, 1)])
            .unwrap()
            .commit();
        assert!(submit(&a, 1).is_err() && submit(&b, 11).is_err());
    }

    #[test]
    fn two_threads_never_submit_out_of_order() {
        // Each thread checks, "submits" (appends) and commits under the lock: the submitted
        // sequence stays increasing whatever the interleaving.
        let mark = HighWater::new(0);
        let log = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (mark, log) = (mark.clone(), log.clone());
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        let value = i * 2 + t;
                        let locked = HighWater::lock_batch("signals", &[(0, &mark, value)]);
                        if let Ok(batch) = locked {
                            log.lock().unwrap().push(value);
                            batch.commit();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let log = log.lock().unwrap();
        assert!(log.windows(2).all(|w| w[0] < w[1]), "values went backwards");
    }
}
