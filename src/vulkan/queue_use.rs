//! Which queue last used a tracked resource ([`QueueUse`]), and the check that a new use on
//! another queue runs after it ([`Tracked::check_order`]).
//!
//! Barriers of tracked images and buffers are planned against the state their last
//! submission leaves them in. On the same queue, submission order is execution order, so
//! that state is reached first. On another queue nothing orders the two batches unless the
//! new one waits for the old one, so a plan made in submission order could run against a
//! state the other queue has not reached (a GPU race on the layout and the contents). A use
//! on another queue is therefore accepted only when vkcuda can see that it runs after the
//! last one:
//! * its submission waits for a timeline value the last use's submission signals (an
//!   explicit wait of [`crate::util::Commands::submit`], or a hand-off that
//!   [`crate::interop::FrameSync`] knows of);
//! * or one of those values is already reached (the host waited for it), or the host has
//!   seen the last use's fence ([`crate::util::Commands::wait`], every one-shot).
//!
//! Otherwise it is refused with [`Error::InvalidArgument`] saying how to order it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ash::vk;

use super::Semaphore;
use crate::error::{Error, Result};

/// The queue index of submissions on a queue the context does not own (wgpu's, feature
/// `wgpu`): ordered only with itself, like any other queue.
pub(crate) const FOREIGN_QUEUE: usize = usize::MAX;

/// How errors name queue `queue`.
fn queue_name(queue: usize) -> String {
    if queue == FOREIGN_QUEUE {
        "the foreign (wgpu) queue".into()
    } else {
        format!("queue {queue}")
    }
}

/// Gives each submission that uses tracked resources its own id.
static NEXT_USE: AtomicU64 = AtomicU64::new(1);

/// One submission's use of tracked resources: its queue and the timeline values it signals
/// (kept alive here, so their counters can still be read).
#[derive(Debug, Clone)]
pub(crate) struct QueueUse {
    id: u64,
    queue: usize,
    signals: Vec<(Arc<Semaphore>, u64)>,
}

impl QueueUse {
    /// A new use on queue `queue` by a submission that signals `signals` (timelines).
    pub(crate) fn new(queue: usize, signals: Vec<(Arc<Semaphore>, u64)>) -> Self {
        Self {
            id: NEXT_USE.fetch_add(1, Ordering::Relaxed),
            queue,
            signals,
        }
    }

    /// Its id, for [`Tracked::complete`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

/// A submission about to use tracked resources: its queue, and the timeline values it is
/// known to run after (its own waits, and hand-offs the library made).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Submission<'a> {
    pub(crate) queue: usize,
    pub(crate) after: &'a [(vk::Semaphore, u64)],
}

/// A tracked state (an image's owner and layout, a buffer's owner) with the last queue use
/// not yet seen complete.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    /// The state once every submission so far has executed.
    pub(crate) now: S,
    last: Option<QueueUse>,
}

impl<S> Tracked<S> {
    /// `now`, with no use pending.
    pub(crate) fn new(now: S) -> Self {
        Self { now, last: None }
    }

    /// Checks that `sub` runs after the last use of the resource named `arg` (see the
    /// module docs).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`arg`) when it may not.
    pub(crate) fn check_order(&self, arg: &'static str, sub: &Submission<'_>) -> Result<()> {
        let Some(last) = &self.last else {
            return Ok(());
        };
        let signals: Vec<_> = last.signals.iter().map(|(s, v)| (s.raw(), *v)).collect();
        // A value read back at or above a signal says that submission has completed.
        let reached = || {
            last.signals
                .iter()
                .any(|(s, v)| s.value().is_ok_and(|now| now >= *v))
        };
        if ordered(last.queue, &signals, sub) || reached() {
            return Ok(());
        }
        Err(Error::invalid(
            arg,
            format!(
                "was last used on {} by a submission that this one, on {}, is not ordered \
                 after (the barriers would be planned against a state that queue may not \
                 have reached)",
                queue_name(last.queue),
                queue_name(sub.queue)
            ),
            format!(
                "a submission on {}, or one that waits for a timeline value that \
                 submission signals, or a wait on the host for it first (Commands::wait, \
                 FrameSync::wait_frame/wait_idle, or a semaphore wait)",
                queue_name(last.queue)
            ),
        ))
    }

    /// Records `u` as the last use (after its submission went through).
    pub(crate) fn used(&mut self, u: QueueUse) {
        self.last = Some(u);
    }

    /// Forgets the use `id` if it is still the last one: the host has seen it complete.
    pub(crate) fn complete(&mut self, id: u64) {
        if self.last.as_ref().is_some_and(|l| l.id == id) {
            self.last = None;
        }
    }
}

/// Whether a submission `sub` runs after a use on `queue` whose submission signals
/// `signals`: on the same queue, or waiting for one of those values (or a later one).
fn ordered(queue: usize, signals: &[(vk::Semaphore, u64)], sub: &Submission<'_>) -> bool {
    queue == sub.queue
        || signals
            .iter()
            .any(|&(s, v)| sub.after.iter().any(|&(w, at)| w == s && at >= v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ash::vk::Handle;

    fn sem(n: u64) -> vk::Semaphore {
        vk::Semaphore::from_raw(n)
    }

    #[test]
    fn same_queue_is_ordered() {
        let sub = Submission {
            queue: 1,
            after: &[],
        };
        assert!(ordered(1, &[], &sub));
        assert!(!ordered(0, &[], &sub));
    }

    #[test]
    fn a_wait_for_a_signal_of_the_last_use_orders_it() {
        let signals = [(sem(7), 5), (sem(8), 2)];
        let at =
            |after: &[(vk::Semaphore, u64)]| ordered(0, &signals, &Submission { queue: 1, after });
        assert!(at(&[(sem(7), 5)]));
        assert!(
            at(&[(sem(9), 1), (sem(8), 3)]),
            "a later value of the timeline"
        );
        assert!(!at(&[(sem(7), 4)]), "an earlier value");
        assert!(!at(&[(sem(9), 5)]), "another semaphore");
        assert!(!at(&[]));
    }

    #[test]
    fn the_check_names_both_queues_and_what_to_do() {
        let mut t = Tracked::new(());
        t.used(QueueUse::new(1, Vec::new()));
        let sub = Submission {
            queue: 0,
            after: &[],
        };
        let e = t.check_order("image", &sub).unwrap_err().to_string();
        assert!(e.contains("queue 1") && e.contains("queue 0"), "{e}");
        assert!(e.contains("Commands::wait"), "{e}");
        t.check_order(
            "image",
            &Submission {
                queue: 1,
                after: &[],
            },
        )
        .unwrap();
    }

    #[test]
    fn only_the_last_use_completes() {
        let mut t = Tracked::new(());
        let first = QueueUse::new(1, Vec::new());
        let id = first.id();
        t.used(first);
        let second = QueueUse::new(1, Vec::new());
        let later = second.id();
        t.used(second);
        let sub = Submission {
            queue: 0,
            after: &[],
        };
        t.complete(id);
        assert!(
            t.check_order("buffer", &sub).is_err(),
            "a later use is pending"
        );
        t.complete(later);
        t.check_order("buffer", &sub).unwrap();
    }
}
