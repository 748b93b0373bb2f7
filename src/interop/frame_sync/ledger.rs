//! The value bookkeeping of a [`FrameSync`](super::FrameSync): which frame comes next, in
//! which slot, after which earlier frame. Pure: tested without a device.

use crate::error::{Error, Result};

/// One frame's place in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket {
    /// Frame number, from 0.
    pub(super) index: u64,
    /// Its value on the slot's semaphores: `index + 1`.
    pub(super) value: u64,
    /// `index % N`.
    pub(super) slot: usize,
    /// Value of the frame that used the slot before (`value - N`), if any: it must have
    /// finished before this frame starts.
    pub(super) reuses: Option<u64>,
}

/// The value bookkeeping: which frame comes next, in which slot, after which earlier frame.
#[derive(Debug)]
pub(super) struct Ledger {
    pub(super) frames_in_flight: usize,
    /// Frames begun so far (= the index of the next frame = the value of the last one).
    pub(super) begun: u64,
}

impl Ledger {
    pub(super) fn new(frames_in_flight: usize) -> Self {
        Self {
            frames_in_flight,
            begun: 0,
        }
    }

    pub(super) fn n(&self) -> u64 {
        self.frames_in_flight as u64
    }

    /// The next frame's ticket, without taking it.
    pub(super) fn peek(&self) -> Result<Ticket> {
        let index = self.begun;
        let value = index.checked_add(1).ok_or_else(|| {
            Error::invalid(
                "frame",
                format!("frame {index} would need value 2^64"),
                "fewer than 2^64 - 1 frames per FrameSync (values never wrap)",
            )
        })?;
        Ok(Ticket {
            index,
            value,
            slot: (index % self.n()) as usize,
            reuses: value.checked_sub(self.n()).filter(|&v| v > 0),
        })
    }

    /// Takes the ticket [`Ledger::peek`] returned.
    pub(super) fn commit(&mut self, ticket: &Ticket) {
        self.begun = ticket.index + 1;
    }

    /// The slot of the frame with `value`.
    pub(super) fn slot_of(&self, value: u64) -> usize {
        ((value - 1) % self.n()) as usize
    }

    /// Value of the last frame begun in `slot`, if any.
    pub(super) fn last_in_slot(&self, slot: usize) -> Option<u64> {
        let s = slot as u64;
        if s >= self.begun {
            return None;
        }
        Some(s + self.n() * ((self.begun - 1 - s) / self.n()) + 1)
    }

    /// Checks that `value` names a frame begun so far.
    pub(super) fn check_value(&self, value: u64) -> Result<()> {
        if value >= 1 && value <= self.begun {
            return Ok(());
        }
        Err(Error::invalid(
            "value",
            format!("frame value {value}, which no frame has (yet): nobody would signal it"),
            format!("1..={} (the frames begun so far)", self.begun),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tickets(n: usize, count: usize) -> Vec<Ticket> {
        let mut ledger = Ledger::new(n);
        (0..count)
            .map(|_| {
                let t = ledger.peek().unwrap();
                assert_eq!(ledger.peek().unwrap(), t, "peek takes nothing");
                ledger.commit(&t);
                t
            })
            .collect()
    }

    #[test]
    fn values_are_index_plus_one_and_slots_rotate() {
        for n in 1..=8 {
            for (i, t) in tickets(n, 50).iter().enumerate() {
                assert_eq!(t.index, i as u64);
                assert_eq!(t.value, i as u64 + 1);
                assert_eq!(t.slot, i % n);
            }
        }
    }

    #[test]
    fn a_slot_is_reused_only_after_the_frame_n_earlier() {
        for n in 1..=4 {
            let all = tickets(n, 40);
            for t in &all {
                match t.reuses {
                    None => assert!(t.index < n as u64, "frame {} waits for nothing", t.index),
                    Some(prev) => {
                        assert_eq!(prev, t.value - n as u64);
                        // The frame waited for used the same slot, and no frame in between did.
                        let p = &all[(prev - 1) as usize];
                        assert_eq!(p.slot, t.slot);
                        assert!(all[p.index as usize + 1..t.index as usize]
                            .iter()
                            .all(|m| m.slot != t.slot));
                    }
                }
            }
        }
    }

    #[test]
    fn values_per_slot_strictly_increase() {
        let all = tickets(3, 30);
        for slot in 0..3 {
            let v: Vec<u64> = all
                .iter()
                .filter(|t| t.slot == slot)
                .map(|t| t.value)
                .collect();
            assert!(v.windows(2).all(|w| w[1] == w[0] + 3), "{v:?}");
        }
    }

    #[test]
    fn the_last_value_never_wraps() {
        let mut ledger = Ledger {
            frames_in_flight: 2,
            begun: u64::MAX - 2,
        };
        let t = ledger.peek().unwrap();
        assert_eq!(t.value, u64::MAX - 1);
        ledger.commit(&t);
        let t = ledger.peek().unwrap();
        assert_eq!(t.value, u64::MAX);
        ledger.commit(&t);
        let e = ledger.peek().unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { arg: "frame", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("never wrap"), "{e}");
    }

    #[test]
    fn last_value_in_each_slot() {
        let mut ledger = Ledger::new(3);
        assert_eq!(ledger.last_in_slot(0), None);
        for t in tickets(3, 7) {
            ledger.commit(&t);
        }
        // Frames 0..=6 (values 1..=7): slot 0 had 1, 4, 7; slot 1 had 2, 5; slot 2 had 3, 6.
        assert_eq!(ledger.last_in_slot(0), Some(7));
        assert_eq!(ledger.last_in_slot(1), Some(5));
        assert_eq!(ledger.last_in_slot(2), Some(6));
        let mut young = Ledger::new(4);
        young.commit(&young.peek().unwrap());
        assert_eq!(young.last_in_slot(0), Some(1));
        assert_eq!(young.last_in_slot(1), None);
        for v in 1..=7 {
            assert_eq!(ledger.slot_of(v), (v as usize - 1) % 3);
        }
    }

    #[test]
    fn waits_on_values_nobody_will_signal_are_refused() {
        let mut ledger = Ledger::new(2);
        for t in tickets(2, 5) {
            ledger.commit(&t);
        }
        for v in 1..=5 {
            assert!(ledger.check_value(v).is_ok());
        }
        for v in [0, 6, u64::MAX] {
            let e = ledger.check_value(v).unwrap_err();
            assert!(
                matches!(e, Error::InvalidArgument { arg: "value", .. }),
                "{e}"
            );
            assert!(e.to_string().contains("1..=5"), "{e}");
        }
    }
}
