//! Model test of the order a member answers a data connection in (`answer_order`): random
//! messages (WRITE, FLUSH, PING) arrive at random times and the device completes the records in
//! flight in a random order, while a member driven by `step`, `answer_before` and `Taken` serves
//! the connection as `rust/peer/listener.rs` does. Every answer must go out in the order of the
//! messages, a FLUSH or PING only after every WRITE before it is on the device, never more than
//! `N` records in flight, and every message must be answered in the end.

use peerflash_core::answer_order::{answer_before, step, Step, Taken, Write};
use proptest::prelude::*;

const N: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Write,
    /// A WRITE the checkpoint covers: answered without a record.
    Covered,
    Flush,
    Ping,
}

fn kinds() -> impl Strategy<Value = Vec<Kind>> {
    prop::collection::vec(
        prop_oneof![6 => Just(Kind::Write), 1 => Just(Kind::Covered), 1 => Just(Kind::Flush), 1 => Just(Kind::Ping)],
        1..60,
    )
}

/// The simulated world: messages sent but not received, records in flight on the device.
struct World {
    msgs: Vec<Kind>,
    /// Messages the primary sent so far (the member received a prefix of them).
    sent: usize,
    received: usize,
    /// Per message: its record is on the device (WRITE only).
    on_device: Vec<bool>,
    /// Per slot: the message whose record is being written from it.
    slot_of: [Option<usize>; N],
}

impl World {
    fn readable(&self) -> bool {
        self.received < self.sent
    }

    /// One event the member does not control: a message arrives, or a record in flight lands.
    fn event(&mut self, choice: u8) {
        let flying: Vec<usize> = (0..N).filter(|&s| self.slot_of[s].is_some_and(|m| !self.on_device[m])).collect();
        let can_send = self.sent < self.msgs.len();
        if can_send && (flying.is_empty() || choice % 2 == 0) {
            self.sent += 1;
        } else if !flying.is_empty() {
            let s = flying[usize::from(choice / 2) % flying.len()];
            if let Some(m) = self.slot_of[s] {
                self.on_device[m] = true;
            }
        }
    }

    fn oldest_done(&self, t: &Taken<N>) -> bool {
        match t.oldest() {
            Some((_, w)) if w.early.is_some() => true,
            Some((slot, _)) => self.slot_of[slot].is_some_and(|m| self.on_device[m]),
            None => false,
        }
    }
}

/// The member: answers the oldest (waiting for events until its record lands), returning the
/// message index it answers; checks on the way.
fn answer_oldest(world: &mut World, t: &mut Taken<N>, choices: &mut impl Iterator<Item = u8>) -> Result<usize, TestCaseError> {
    let mut spins = 0;
    while !world.oldest_done(t) {
        world.event(choices.next().unwrap_or(1));
        spins += 1;
        prop_assert!(spins < 10_000, "the oldest record never lands");
    }
    let (slot, w) = t.pop().ok_or_else(|| TestCaseError::fail("answered with nothing taken"))?;
    let m = w.serial as usize;
    if w.early.is_none() {
        prop_assert_eq!(world.slot_of[slot], Some(m), "the slot holds another message's record");
        world.slot_of[slot] = None;
    }
    Ok(m)
}

fn serve(msgs: Vec<Kind>, choices: Vec<u8>) -> Result<Vec<usize>, TestCaseError> {
    let mut world = World { on_device: vec![false; msgs.len()], msgs, sent: 0, received: 0, slot_of: [None; N] };
    let mut t = Taken::<N>::new();
    let mut choices = choices.into_iter().cycle();
    let mut answers = Vec::new();
    let mut idle = 0;
    while answers.len() < world.msgs.len() {
        idle += 1;
        prop_assert!(idle < 100_000, "no progress");
        let oldest_done = world.oldest_done(&t);
        match step(t.len(), oldest_done, world.readable()) {
            Step::AnswerOldest => answers.push(answer_oldest(&mut world, &mut t, &mut choices)?),
            Step::Receive if !world.readable() => world.event(choices.next().unwrap_or(0)),
            Step::Receive => {
                let m = world.received;
                world.received += 1;
                let kind = world.msgs[m];
                let is_write = matches!(kind, Kind::Write | Kind::Covered);
                while answer_before(t.len(), t.is_full(), is_write) {
                    answers.push(answer_oldest(&mut world, &mut t, &mut choices)?);
                }
                match kind {
                    Kind::Write | Kind::Covered => {
                        let early = if kind == Kind::Covered { Some(0) } else { None };
                        let slot = t.push(Write { serial: m as u64, bytes: 4096, early });
                        let slot = slot.ok_or_else(|| TestCaseError::fail("a WRITE taken while full"))?;
                        if early.is_none() {
                            prop_assert!(world.slot_of[slot].is_none(), "a slot reused while its record flies");
                            world.slot_of[slot] = Some(m);
                        }
                    }
                    Kind::Flush | Kind::Ping => {
                        // Answered now: every WRITE before it must be on the device.
                        for (i, k) in world.msgs[..m].iter().enumerate() {
                            if *k == Kind::Write {
                                prop_assert!(world.on_device[i], "{:?} {} answered before WRITE {} landed", kind, m, i);
                            }
                        }
                        answers.push(m);
                    }
                }
            }
        }
        let flying = world.slot_of.iter().filter(|s| s.is_some()).count();
        prop_assert!(flying <= N);
    }
    Ok(answers)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn answers_in_order_and_flushes_after_their_writes(msgs in kinds(), choices in prop::collection::vec(any::<u8>(), 1..64)) {
        let n = msgs.len();
        let answers = serve(msgs, choices)?;
        prop_assert_eq!(answers, (0..n).collect::<Vec<_>>());
    }
}

/// The pipelining is real: with nothing landing, a member takes `N` WRITEs before it waits.
#[test]
fn takes_n_writes_before_waiting() {
    let mut t = Taken::<N>::new();
    let mut taken = 0;
    for m in 0..10u64 {
        if answer_before(t.len(), t.is_full(), true) {
            break;
        }
        // Frames keep arriving: the member receives rather than waits.
        assert_eq!(step(t.len(), false, true), Step::Receive);
        t.push(Write { serial: m, bytes: 4096, early: None });
        taken += 1;
    }
    assert_eq!(taken, N);
}
