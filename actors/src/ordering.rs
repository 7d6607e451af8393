//! The push order of one conversation, as a pure state machine.
//!
//! A Conversation actor hears of committed messages from its own group commits and
//! from other nodes through the bus, and the two can overtake each other. Sessions must
//! see a conversation's messages in seq order, so [`PushOrder`] holds a message that
//! arrives ahead of the next seq to push. When the gap does not close by itself within
//! the actor's wait, the actor reads the missing messages from Postgres; what is still
//! missing after that read (expired, or the read failed) is skipped, and clients find
//! it by the seq gap and `sync`.
//!
//! The machine takes three events (a message arrived, the gap timer fired, a gap read
//! returned) and answers each with a [`Step`]: what to push now, in order, what to do
//! with the gap timer, and which read to start. It does no I/O and keeps no clock, so
//! every interleaving can be tested directly.

use std::collections::BTreeMap;

/// Most messages read to fill one gap; from a wider gap only the newest are read and
/// the rest are skipped (clients sync).
pub const MAX_GAP_FILL: i64 = 200;

/// How often a gap is read before it is skipped when its reads fail (a pool that is
/// saturated for a moment must not turn into skipped pushes).
pub const GAP_READ_ATTEMPTS: u32 = 3;

/// What to do with the gap timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Leave it as it is (armed or not).
    Keep,
    /// Start it: a gap is open and nothing is waiting for it yet.
    Arm,
    /// Cancel it: nothing is held any more.
    Cancel,
}

/// A read of the messages with `from <= seq < upto`, of which at most `want` (the
/// newest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapRead {
    pub from: i64,
    pub upto: i64,
    pub want: i64,
}

/// What the actor does after one event.
#[derive(Debug, PartialEq)]
pub struct Step<T> {
    /// Push these now, in this order (ascending seq).
    pub push: Vec<T>,
    pub timer: Timer,
    /// Start this read, and hand its outcome to [`PushOrder::filled`].
    pub read: Option<GapRead>,
}

impl<T> Step<T> {
    fn nothing() -> Self {
        Step {
            push: Vec::new(),
            timer: Timer::Keep,
            read: None,
        }
    }
}

/// The push order of one conversation. See the module documentation.
#[derive(Debug)]
pub struct PushOrder<T> {
    /// The next seq to push; set by the first message seen.
    next: Option<i64>,
    /// Messages waiting for an earlier seq.
    held: BTreeMap<i64, T>,
    timer_armed: bool,
    reading: bool,
    /// Failed reads of the current gap in a row.
    failed_reads: u32,
}

impl<T> Default for PushOrder<T> {
    fn default() -> Self {
        PushOrder {
            next: None,
            held: BTreeMap::new(),
            timer_armed: false,
            reading: false,
            failed_reads: 0,
        }
    }
}

impl<T> PushOrder<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// An order that pushes from `next` on, when it is known (where an earlier actor
    /// of the conversation stopped, or what a member's client had when it connected);
    /// otherwise the first message seen sets it.
    pub fn starting_at(next: Option<i64>) -> Self {
        PushOrder {
            next,
            ..Self::default()
        }
    }

    /// The next seq to push, once a first message has been seen.
    pub fn next(&self) -> Option<i64> {
        self.next
    }

    /// Whether a message of this seq would still be pushed (it is not behind the order).
    pub fn is_ahead(&self, seq: i64) -> bool {
        self.next.is_some_and(|n| seq >= n)
    }

    /// Whether messages are held for an earlier seq.
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// A committed message arrived. The first message seen sets the order: nothing
    /// before it is pushed. A seq already pushed or skipped is dropped; a seq already
    /// held keeps its first copy.
    pub fn arrived(&mut self, seq: i64, item: T) -> Step<T> {
        let next = *self.next.get_or_insert(seq);
        if seq < next {
            return Step::nothing();
        }
        self.held.entry(seq).or_insert(item);
        self.release()
    }

    /// Pushes nothing below `next` (where a predecessor's pushes ended).
    pub fn advance_to(&mut self, next: i64) {
        if self.next.is_none_or(|n| n < next) {
            self.next = Some(next);
            self.held = self.held.split_off(&next);
        }
    }

    /// Forgets where pushing stands, after the node's sessions were told to `resync`
    /// (the bus was down: what they missed, they sync). The first held message, or
    /// else the next to arrive, sets the order again, so no gap from before is read.
    pub fn rebase(&mut self) -> Step<T> {
        self.next = self.held.keys().next().copied();
        self.failed_reads = 0;
        self.release()
    }

    /// The gap timer fired: read what is missing before the first held message, unless
    /// a read is in flight already.
    pub fn timer_fired(&mut self) -> Step<T> {
        self.timer_armed = false;
        if self.reading {
            return Step::nothing();
        }
        let (Some(from), Some(&upto)) = (self.next, self.held.keys().next()) else {
            return Step::nothing();
        };
        self.reading = true;
        Step {
            push: Vec::new(),
            timer: Timer::Keep,
            read: Some(GapRead {
                from,
                upto,
                want: (upto - from).clamp(1, MAX_GAP_FILL),
            }),
        }
    }

    /// The gap read returned: `Some` with what it found, `None` when it failed. What
    /// is still missing before the first held message is skipped once the gap has
    /// been read; a failed read is tried again (after the gap wait) up to
    /// [`GAP_READ_ATTEMPTS`] times before the gap is skipped.
    pub fn filled(&mut self, found: Option<Vec<(i64, T)>>) -> Step<T> {
        self.reading = false;
        let Some(found) = found else {
            self.failed_reads += 1;
            if self.failed_reads < GAP_READ_ATTEMPTS {
                return self.release();
            }
            self.failed_reads = 0;
            return self.skip_to_held();
        };
        self.failed_reads = 0;
        for (seq, item) in found {
            if self.is_ahead(seq) {
                self.held.entry(seq).or_insert(item);
            }
        }
        self.skip_to_held()
    }

    /// Moves the order past what is missing before the first held message, and pushes.
    fn skip_to_held(&mut self) -> Step<T> {
        if let (Some(next), Some(&first)) = (self.next, self.held.keys().next()) {
            if first > next {
                self.next = Some(first);
            }
        }
        self.release()
    }

    /// Pushes every held message that is next in line; asks for the timer while a gap
    /// stays open.
    fn release(&mut self) -> Step<T> {
        let mut push = Vec::new();
        while let Some(next) = self.next {
            let Some(item) = self.held.remove(&next) else {
                break;
            };
            push.push(item);
            self.next = Some(next + 1);
        }
        let timer = if self.held.is_empty() {
            if std::mem::take(&mut self.timer_armed) {
                Timer::Cancel
            } else {
                Timer::Keep
            }
        } else if !self.timer_armed && !self.reading {
            self.timer_armed = true;
            Timer::Arm
        } else {
            Timer::Keep
        };
        Step {
            push,
            timer,
            read: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(step: &Step<&'static str>) -> Vec<&'static str> {
        step.push.clone()
    }

    #[test]
    fn in_order_arrivals_are_pushed_at_once() {
        let mut o = PushOrder::new();
        for (seq, m) in [(1, "a"), (2, "b"), (3, "c")] {
            let s = o.arrived(seq, m);
            assert_eq!(pushed(&s), vec![m]);
            assert_eq!((s.timer, s.read), (Timer::Keep, None));
        }
        assert_eq!(o.next(), Some(4));
        assert!(!o.is_holding());
    }

    #[test]
    fn out_of_order_arrival_is_held_until_the_gap_closes() {
        let mut o = PushOrder::new();
        assert_eq!(pushed(&o.arrived(1, "a")), vec!["a"]);
        let s = o.arrived(3, "c");
        assert!(s.push.is_empty());
        assert_eq!(s.timer, Timer::Arm);
        let s = o.arrived(4, "d");
        assert!(s.push.is_empty());
        assert_eq!(s.timer, Timer::Keep, "armed once");
        let s = o.arrived(2, "b");
        assert_eq!(pushed(&s), vec!["b", "c", "d"]);
        assert_eq!(s.timer, Timer::Cancel);
        assert_eq!(o.next(), Some(5));
    }

    #[test]
    fn a_gap_is_filled_by_a_read() {
        let mut o = PushOrder::new();
        o.arrived(1, "a");
        assert_eq!(o.arrived(4, "d").timer, Timer::Arm);
        let s = o.timer_fired();
        assert_eq!(
            s.read,
            Some(GapRead {
                from: 2,
                upto: 4,
                want: 2
            })
        );
        let s = o.filled(Some(vec![(2, "b"), (3, "c")]));
        assert_eq!(pushed(&s), vec!["b", "c", "d"]);
        assert_eq!(s.timer, Timer::Keep, "the timer already fired");
        assert!(!o.is_holding());
    }

    #[test]
    fn a_gap_whose_read_fails_is_read_again_then_skipped() {
        let mut o = PushOrder::new();
        o.arrived(1, "a");
        o.arrived(4, "d");
        o.arrived(5, "e");
        for attempt in 1..GAP_READ_ATTEMPTS {
            assert!(o.timer_fired().read.is_some(), "read {attempt}");
            let s = o.filled(None);
            assert!(
                s.push.is_empty(),
                "nothing skipped after failed read {attempt}"
            );
            assert_eq!(s.timer, Timer::Arm, "the gap is waited for again");
        }
        assert!(o.timer_fired().read.is_some());
        let s = o.filled(None);
        assert_eq!(pushed(&s), vec!["d", "e"]);
        assert_eq!(o.next(), Some(6));
        // A late copy of a skipped seq is not pushed out of order.
        assert!(o.arrived(2, "b").push.is_empty());
    }

    #[test]
    fn a_failed_read_followed_by_a_good_one_pushes_everything() {
        let mut o = PushOrder::new();
        o.arrived(1, "a");
        o.arrived(3, "c");
        o.timer_fired();
        assert!(o.filled(None).push.is_empty());
        o.timer_fired();
        let s = o.filled(Some(vec![(2, "b")]));
        assert_eq!(pushed(&s), vec!["b", "c"]);
        // The count of failures starts again for the next gap.
        o.arrived(5, "e");
        o.timer_fired();
        assert!(o.filled(None).push.is_empty());
    }

    #[test]
    fn a_read_that_finds_part_of_the_gap_skips_only_the_rest() {
        let mut o = PushOrder::new();
        o.arrived(1, "a");
        o.arrived(5, "e");
        o.timer_fired();
        // 2 expired meanwhile; 3 and 4 are still there.
        let s = o.filled(Some(vec![(3, "c"), (4, "d")]));
        assert_eq!(pushed(&s), vec!["c", "d", "e"]);
    }

    #[test]
    fn a_gap_that_opens_while_a_read_is_in_flight_waits_its_turn() {
        let mut o = PushOrder::new();
        o.arrived(1, "a");
        o.arrived(3, "c");
        let read = o.timer_fired().read;
        assert_eq!(read.map(|r| (r.from, r.upto)), Some((2, 3)));
        // Meanwhile 6 arrives: a second gap (4, 5) opens. No second read and no timer
        // while the first read is in flight.
        let s = o.arrived(6, "f");
        assert!(s.push.is_empty());
        assert_eq!((s.timer, s.read), (Timer::Keep, None));
        assert_eq!(o.timer_fired().read, None, "one read at a time");
        // The read returns: 2 and 3 go out, and the new gap is waited for, not skipped.
        let s = o.filled(Some(vec![(2, "b")]));
        assert_eq!(pushed(&s), vec!["b", "c"]);
        assert_eq!(s.timer, Timer::Arm);
        assert_eq!(o.next(), Some(4));
        // It closes by itself before the timer fires.
        assert!(o.arrived(4, "d").push == vec!["d"]);
        let s = o.arrived(5, "e");
        assert_eq!(pushed(&s), vec!["e", "f"]);
        assert_eq!(s.timer, Timer::Cancel);
    }

    #[test]
    fn duplicate_arrivals_are_pushed_once() {
        let mut o = PushOrder::new();
        o.arrived(1, "a");
        assert!(o.arrived(1, "a again").push.is_empty(), "already pushed");
        o.arrived(3, "c");
        assert!(o.arrived(3, "c again").push.is_empty(), "already held");
        let s = o.arrived(2, "b");
        assert_eq!(pushed(&s), vec!["b", "c"], "the first copy is kept");
        // A read returning what was pushed meanwhile pushes nothing twice.
        o.arrived(5, "e");
        o.timer_fired();
        let s = o.filled(Some(vec![(3, "c"), (4, "d")]));
        assert_eq!(pushed(&s), vec!["d", "e"]);
    }

    #[test]
    fn the_first_message_seen_sets_the_order_however_far_ahead() {
        // A fresh actor hears seq 1000 first (it knows nothing of 1..999): it pushes
        // it at once instead of holding it for messages its members already have.
        let mut o = PushOrder::new();
        let s = o.arrived(1000, "x");
        assert_eq!(pushed(&s), vec!["x"]);
        assert_eq!(s.timer, Timer::Keep);
        assert_eq!(o.next(), Some(1001));
        assert!(!o.is_ahead(999));
        assert!(o.arrived(999, "late").push.is_empty());
        // A wide gap after it is read only for its newest MAX_GAP_FILL messages.
        o.arrived(2000, "y");
        let read = o.timer_fired().read;
        assert_eq!(
            read,
            Some(GapRead {
                from: 1001,
                upto: 2000,
                want: MAX_GAP_FILL
            })
        );
        let s = o.filled(Some(vec![(1999, "w")]));
        assert_eq!(pushed(&s), vec!["w", "y"]);
    }

    #[test]
    fn a_known_start_holds_a_first_message_that_overtook_earlier_ones() {
        // The actor starts because of seq 7, but its members' clients had 4: 5 and 6
        // are read from Postgres instead of being skipped.
        let mut o = PushOrder::starting_at(Some(5));
        let s = o.arrived(7, "g");
        assert!(s.push.is_empty());
        assert_eq!(s.timer, Timer::Arm);
        let read = o.timer_fired().read;
        assert_eq!(read.map(|r| (r.from, r.upto)), Some((5, 7)));
        let s = o.filled(Some(vec![(5, "e"), (6, "f")]));
        assert_eq!(pushed(&s), vec!["e", "f", "g"]);
        // And what came before the start is not pushed again.
        assert!(o.arrived(4, "d").push.is_empty());
    }

    #[test]
    fn a_known_start_pushes_in_order_arrivals_at_once() {
        let mut o = PushOrder::starting_at(Some(3));
        assert_eq!(pushed(&o.arrived(3, "c")), vec!["c"]);
        assert_eq!(o.next(), Some(4));
    }

    #[test]
    fn a_rebase_forgets_the_gap_instead_of_reading_it() {
        let mut o = PushOrder::new();
        o.arrived(1, "a");
        // The bus was down while 2..=150 were committed elsewhere; sessions resync.
        let s = o.rebase();
        assert!(s.push.is_empty());
        assert_eq!(o.next(), None);
        let s = o.arrived(151, "new");
        assert_eq!(pushed(&s), vec!["new"], "pushed at once, no gap read");
        assert_eq!((s.timer, s.read), (Timer::Keep, None));
        // Held messages go out from the first one held; a gap inside them still waits.
        o.arrived(153, "c");
        o.arrived(155, "e");
        let s = o.rebase();
        assert_eq!(pushed(&s), vec!["c"]);
        assert_eq!(o.next(), Some(154));
        assert!(o.is_holding());
    }

    #[test]
    fn a_timer_with_nothing_held_does_nothing() {
        let mut o: PushOrder<&str> = PushOrder::new();
        assert_eq!(o.timer_fired(), Step::nothing());
        o.arrived(1, "a");
        assert_eq!(o.timer_fired(), Step::nothing());
    }
}
