//! The order in which a member answers the messages of a data connection
//! (Documentation/wire-protocol.md, "Replication"): it writes up to `N` WRITEs' records at once
//! and answers them oldest first; it answers any other message (FLUSH, CHECKPOINT, ATTACH, PING)
//! only after every WRITE received before it. The primary matches each answer to the oldest
//! message it has not had an answer to, and a FLUSH_ACK then covers every WRITE before the FLUSH.
//!
//! [`Taken`] holds the WRITEs not yet answered, each at the index of the write slot its record
//! is written from; [`step`] and [`answer_before`] say when the serving thread
//! (`rust/peer/listener.rs`) answers the oldest rather than receiving. The model test
//! (`tests/answer_order.rs`) runs them against random arrivals and completions.

/// A WRITE taken and not yet answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub serial: u64,
    /// Bytes of its data.
    pub bytes: u64,
    /// `None`: its record is being written from its slot. `Some(errno)`: answered without a
    /// write (0: the checkpoint already covers it; otherwise the negative errno of its refusal).
    pub early: Option<i32>,
}

const NONE: Write = Write { serial: 0, bytes: 0, early: Some(0) };

/// The WRITEs taken and not yet answered, oldest first, at most `N`; the one at ring index `i`
/// is written from slot `i`.
#[derive(Clone, Debug)]
pub struct Taken<const N: usize> {
    ring: [Write; N],
    head: usize,
    count: usize,
}

impl<const N: usize> Default for Taken<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Taken<N> {
    pub const fn new() -> Self {
        Self { ring: [NONE; N], head: 0, count: 0 }
    }

    /// How many wait for their answers.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the next WRITE must wait for the oldest's answer.
    pub fn is_full(&self) -> bool {
        self.count >= N
    }

    /// The slot the next WRITE takes (`None` when full).
    pub fn next_slot(&self) -> Option<usize> {
        if self.is_full() || N == 0 {
            return None;
        }
        Some((self.head + self.count) % N)
    }

    /// Takes a WRITE at [`Taken::next_slot`]; its slot, or `None` (nothing taken) when full.
    pub fn push(&mut self, w: Write) -> Option<usize> {
        let at = self.next_slot()?;
        *self.ring.get_mut(at)? = w;
        self.count += 1;
        Some(at)
    }

    /// The oldest WRITE and its slot.
    pub fn oldest(&self) -> Option<(usize, Write)> {
        if self.count == 0 {
            return None;
        }
        self.ring.get(self.head).map(|w| (self.head, *w))
    }

    /// Removes the oldest WRITE (its answer goes out now) and returns it with its slot.
    pub fn pop(&mut self) -> Option<(usize, Write)> {
        let o = self.oldest()?;
        self.head = (self.head + 1) % N;
        self.count -= 1;
        Some(o)
    }
}

/// What the serving thread does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer the oldest WRITE, waiting for its record when it is not yet written.
    AnswerOldest,
    /// Receive the next message.
    Receive,
}

/// The next step with `pending` WRITEs unanswered: the oldest is answered as soon as it can be
/// (`oldest_done`: answered without a write, or its record is on the device), and waited for
/// when nothing is arriving (`readable`: a frame has begun); otherwise the next message is
/// received. With nothing pending, only receiving is left.
pub fn step(pending: usize, oldest_done: bool, readable: bool) -> Step {
    if pending > 0 && (oldest_done || !readable) {
        Step::AnswerOldest
    } else {
        Step::Receive
    }
}

/// Whether the oldest WRITE must be answered before a message just received is handled: any
/// message but a WRITE waits for every WRITE before it; a WRITE waits only for a free slot.
pub fn answer_before(pending: usize, full: bool, is_write: bool) -> bool {
    pending > 0 && (!is_write || full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(serial: u64) -> Write {
        Write { serial, bytes: 4096, early: None }
    }

    #[test]
    fn ring_keeps_the_order_and_the_slots() {
        let mut t = Taken::<3>::new();
        assert_eq!(t.push(w(1)), Some(0));
        assert_eq!(t.push(w(2)), Some(1));
        assert_eq!(t.pop().map(|(i, x)| (i, x.serial)), Some((0, 1)));
        assert_eq!(t.push(w(3)), Some(2));
        assert_eq!(t.push(w(4)), Some(0));
        assert!(t.is_full());
        assert_eq!(t.push(w(5)), None);
        let order: Vec<_> = core::iter::from_fn(|| t.pop().map(|(i, x)| (i, x.serial))).collect();
        assert_eq!(order, [(1, 2), (2, 3), (0, 4)]);
        assert!(t.is_empty());
        assert_eq!(t.pop(), None);
    }

    #[test]
    fn zero_slots_take_nothing() {
        let mut t = Taken::<0>::new();
        assert_eq!(t.push(w(1)), None);
        assert_eq!(t.pop(), None);
    }

    #[test]
    fn steps() {
        assert_eq!(step(0, false, false), Step::Receive);
        assert_eq!(step(2, true, true), Step::AnswerOldest);
        assert_eq!(step(2, false, false), Step::AnswerOldest);
        assert_eq!(step(2, false, true), Step::Receive);
        assert!(!answer_before(0, false, false));
        assert!(answer_before(1, false, false));
        assert!(!answer_before(1, false, true));
        assert!(answer_before(16, true, true));
    }
}
