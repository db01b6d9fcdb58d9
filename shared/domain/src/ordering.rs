//! Per-channel ordering: turns messages that arrive in any order, any number of times, into
//! the in-order fold.
//!
//! A [`Timeline`] is loaded from what the store holds for a channel (its rocket and a bounded
//! [`ParkedView`] of its parked messages), receives messages, and yields one
//! [`ChannelChange`] for the store to commit atomically against the version it was loaded at.
//! It does no I/O, so every backend shares exactly this logic, and its guarantee is
//! property-tested below: any permutation with duplicates, received across any number of
//! load/commit cycles, folds to the in-order state.
//!
//! A channel may hold many parked messages (a sender that lost message 1 keeps parking the
//! rest), so a timeline never needs all of them: only the first few in order, which are the
//! ones a filled gap can apply, and those with the numbers it receives. What a commit drains
//! is bounded by that view; [`ChannelChange::drain_more`] says when another round may apply
//! more. The parked count lives in the rocket (`pendingMessages`).
//!
//! Nobody else's messages can crowd a sender out: a message parks only within the park limit
//! of the rocket's last applied number (an admission window that moves with the rocket), so a
//! flood of numbers far ahead is refused message by message and leaves the channel's own next
//! messages their room; and a parked message expires ([`Timeline::expire_parked`]), so junk
//! inside the window does not stay for ever.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::message::{Channel, Envelope, MessageNumber};
use crate::rocket::Rocket;

/// What became of one received message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Received {
    /// Applied, together with this many parked successors it unblocked.
    Applied { unparked: usize },
    /// Ahead of a gap: kept until the gap fills.
    Parked,
    /// Further ahead of the rocket's last applied message than the park limit: not kept.
    OverParkLimit,
    /// The same message was already applied or parked: nothing to do.
    Duplicate,
    /// Another message with this number, with different content, was already accepted; this
    /// one is kept out.
    Conflict,
    /// A message with this number was applied in an earlier commit. It changes nothing; whether
    /// it is a duplicate or a conflict needs that message, which the caller may look up.
    AlreadyApplied,
}

/// Everything one commit writes for a channel. Applying it must be atomic and conditional on
/// the version the timeline was loaded at.
#[derive(Clone, PartialEq, Debug)]
pub struct ChannelChange {
    /// The rocket after the change.
    pub rocket: Rocket,
    /// Messages applied, in order: they extend the channel's history.
    pub applied: Vec<Envelope>,
    /// Messages newly parked ahead of a gap.
    pub parked: Vec<Envelope>,
    /// Previously parked messages now applied, to remove from the parked set.
    pub unparked: Vec<MessageNumber>,
    /// Parked messages that waited past their retention, to delete: not counted or applied
    /// any more, and their numbers free for the messages that belong there.
    pub expired: Vec<MessageNumber>,
    /// The drain reached the end of the parked view with the next message possibly parked
    /// beyond it: once this commits, another round (with nothing received) may apply more.
    pub drain_more: bool,
}

/// The parked messages a store read for one channel.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct ParkedView {
    /// The channel's lowest-numbered parked messages, in order: all of them, or at least the
    /// number asked for.
    pub first: Vec<Envelope>,
    /// Whether `first` is every parked message of the channel.
    pub complete: bool,
    /// Parked messages beyond `first` with numbers the caller asked about.
    pub probed: Vec<Envelope>,
    /// When the messages of `first` and `probed` were parked, where the store knows.
    pub since: BTreeMap<MessageNumber, DateTime<Utc>>,
}

impl ParkedView {
    /// A channel with nothing parked.
    pub fn none() -> Self {
        Self::all(Vec::new())
    }

    /// All of a channel's parked messages, in order.
    pub fn all(parked: Vec<Envelope>) -> Self {
        ParkedView {
            first: parked,
            complete: true,
            probed: Vec::new(),
            since: BTreeMap::new(),
        }
    }

    /// The view, saying when each of its messages was parked, as `since` answers.
    pub fn parked_at(mut self, since: impl Fn(MessageNumber) -> Option<DateTime<Utc>>) -> Self {
        self.since = (self.first.iter().chain(&self.probed))
            .filter_map(|m| Some((m.number, since(m.number)?)))
            .collect();
        self
    }

    /// The view of a whole parked set held in order: its first `window` messages, whether
    /// that is all of them, and those beyond with the `probe` numbers.
    pub fn cut(
        parked: &BTreeMap<MessageNumber, Envelope>,
        window: usize,
        probe: &[MessageNumber],
    ) -> Self {
        let first: Vec<Envelope> = parked.values().take(window).cloned().collect();
        let complete = first.len() == parked.len();
        let last = first.last().map(|m| m.number);
        let probed = probe
            .iter()
            .filter(|n| last.is_none_or(|last| **n > last))
            .filter_map(|n| parked.get(n).cloned())
            .collect();
        ParkedView {
            first,
            complete,
            probed,
            since: BTreeMap::new(),
        }
    }

    /// [`ParkedView::cut`], cut shorter where the parked set has a gap: a drain stops at the
    /// first number missing, so the messages beyond it can only tell where that gap ends. And
    /// when no drain can start (see [`drains`]), only the batch's own numbers (`probe`) are
    /// looked up. A store that can stop reading anywhere for free (one in memory, or on a local
    /// disk) reads no more than that.
    pub fn leading(
        parked: &BTreeMap<MessageNumber, Envelope>,
        next: u64,
        window: usize,
        probe: &[MessageNumber],
    ) -> Self {
        let next_parked = || Ok::<_, ()>(parked.keys().next().is_some_and(|n| n.get() == next));
        let window = match drains(next, probe, next_parked) {
            Ok(true) => leading_len(parked.keys().copied(), window),
            _ => 0,
        };
        Self::cut(parked, window, probe)
    }
}

/// Whether loading a channel whose next number is `next` for a batch with the `probe` numbers
/// can start a drain, and so needs the leading parked messages: when the batch brings that
/// number, in a drain round (no numbers), or when that number is parked itself (a drain that
/// stopped at the end of its view, and whose next round did not run). Otherwise the batch can
/// only park messages or repeat them, which its own numbers tell.
pub fn drains<E>(
    next: u64,
    probe: &[MessageNumber],
    next_parked: impl FnOnce() -> Result<bool, E>,
) -> Result<bool, E> {
    if probe.is_empty() || probe.iter().any(|n| n.get() == next) {
        return Ok(true);
    }
    next_parked()
}

/// How many of a channel's parked numbers, lowest first, a load needs (see [`Leading`]).
pub fn leading_len(numbers: impl IntoIterator<Item = MessageNumber>, window: usize) -> usize {
    let mut leading = Leading::new(window);
    numbers.into_iter().take_while(|n| leading.take(*n)).count()
}

/// Which of a channel's parked messages a load needs, decided number by number, lowest first:
/// the run of consecutive numbers from the first, and the first number after it, which shows
/// that the numbers between them are not parked; at most `window`.
#[derive(Clone, Copy, Debug)]
pub struct Leading {
    window: usize,
    taken: usize,
    previous: Option<u64>,
    past_gap: bool,
}

impl Leading {
    pub fn new(window: usize) -> Self {
        Leading {
            window,
            taken: 0,
            previous: None,
            past_gap: false,
        }
    }

    /// Whether the load needs `number`, the next parked number in order; once it says no, it
    /// says no to every later one.
    pub fn take(&mut self, number: MessageNumber) -> bool {
        if self.taken == self.window || self.past_gap {
            return false;
        }
        let number = number.get();
        self.past_gap = self.previous.is_some_and(|p| p + 1 != number);
        self.previous = Some(number);
        self.taken += 1;
        true
    }
}

/// One channel's rocket and the parked messages in view, open for receiving.
#[derive(Clone, Debug)]
pub struct Timeline {
    rocket: Rocket,
    parked: BTreeMap<MessageNumber, Envelope>,
    /// Numbers that were parked when the timeline was loaded, including leftovers that were
    /// applied but not yet removed; every one not parked any more is removed by the change.
    stored_parked: Vec<MessageNumber>,
    /// The highest number of the view's first messages when there may be more beyond it:
    /// a drain that passes it cannot know whether the next message is parked.
    view_end: Option<MessageNumber>,
    /// Whether the stored `pendingMessages` disagreed with a complete view.
    recount: bool,
    /// How far ahead of the last applied number a message may park.
    park_limit: u64,
    /// When the parked messages in view were parked, where the store said.
    since: BTreeMap<MessageNumber, DateTime<Utc>>,
    expired: Vec<MessageNumber>,
    applied: Vec<Envelope>,
    now: DateTime<Utc>,
}

impl Timeline {
    /// A channel the store has never seen.
    pub fn empty(channel: Channel, now: DateTime<Utc>) -> Self {
        Self::load(Rocket::new(channel, now), ParkedView::none(), now)
    }

    /// A channel as the store holds it.
    ///
    /// A store that cannot write everything atomically may hold parked messages that were
    /// already applied (their removal was interrupted) or parked messages its rocket does not
    /// count yet (the commit that counted them lost a race). Loading repairs both as far as it
    /// sees: leftovers are dropped, and a complete view sets the count to what is parked.
    pub fn load(mut rocket: Rocket, view: ParkedView, now: DateTime<Utc>) -> Self {
        let view_end = match (view.complete, view.first.last()) {
            (true, _) => None,
            (false, Some(last)) => Some(last.number),
            // Parked messages exist, none was read: nothing beyond the next number is known.
            (false, None) => {
                Some(MessageNumber::new(rocket.last_message_number.max(1)).expect("at least 1"))
            }
        };
        let mut stored_parked: Vec<MessageNumber> = view
            .first
            .iter()
            .chain(&view.probed)
            .map(|m| m.number)
            .collect();
        stored_parked.sort_unstable();
        stored_parked.dedup();
        let parked: BTreeMap<_, _> = view
            .first
            .into_iter()
            .chain(view.probed)
            .filter(|m| !rocket.has_applied(m.number))
            .map(|m| (m.number, m))
            .collect();
        let in_view = parked.len() as u64;
        let since = view.since;
        let recount = view.complete && rocket.pending_messages != in_view;
        if view.complete {
            rocket.pending_messages = in_view;
        } else {
            rocket.pending_messages = rocket.pending_messages.max(in_view);
        }
        let mut timeline = Timeline {
            stored_parked,
            view_end,
            recount,
            park_limit: u64::MAX,
            since,
            expired: Vec::new(),
            rocket,
            parked,
            applied: Vec::new(),
            now,
        };
        // A parked message may already be next in line, if the commit that applied its
        // predecessor raced with the one that parked it.
        timeline.drain();
        timeline
    }

    /// Messages park only up to `limit` numbers past the last applied one: one further ahead
    /// is received as [`Received::OverParkLimit`], so the channel never parks `limit` or more.
    pub fn with_park_limit(mut self, limit: u64) -> Self {
        self.park_limit = limit;
        self
    }

    /// Expires the parked messages in view that were parked before `before`: they stop
    /// counting, are never applied, and the change deletes them. Returns how many.
    pub fn expire_parked(&mut self, before: DateTime<Utc>) -> usize {
        let old: Vec<MessageNumber> = (self.since.iter())
            .filter(|(number, since)| **since < before && self.parked.contains_key(number))
            .map(|(number, _)| *number)
            .collect();
        for number in &old {
            self.parked.remove(number);
            self.stored_parked.retain(|n| n != number);
            self.rocket.pending_messages = self.rocket.pending_messages.saturating_sub(1);
        }
        self.expired.extend(&old);
        old.len()
    }

    pub fn rocket(&self) -> &Rocket {
        &self.rocket
    }

    /// Takes one message of this timeline's channel.
    pub fn receive(&mut self, message: Envelope) -> Received {
        debug_assert_eq!(message.channel, self.rocket.channel);
        let number = message.number.get();
        let next = self.rocket.next_number();
        if number < next {
            let applied_before = self.rocket.last_message_number - self.applied.len() as u64;
            if number <= applied_before {
                return Received::AlreadyApplied;
            }
            let twin = &self.applied[(number - applied_before - 1) as usize];
            return same_or_conflict(twin, &message);
        }
        if number > next {
            if let Some(twin) = self.parked.get(&message.number) {
                return same_or_conflict(twin, &message);
            }
            if number - self.rocket.last_message_number > self.park_limit {
                return Received::OverParkLimit;
            }
            self.parked.insert(message.number, message);
            self.rocket.pending_messages += 1;
            return Received::Parked;
        }
        self.apply(message);
        Received::Applied {
            unparked: self.drain(),
        }
    }

    /// Applies parked messages for as long as the next one is parked; returns how many.
    fn drain(&mut self) -> usize {
        let mut unparked = 0;
        while let Some(successor) = self.parked.first_entry() {
            if successor.key().get() != self.rocket.next_number() {
                break;
            }
            let successor = successor.remove();
            self.apply(successor);
            self.rocket.pending_messages = self.rocket.pending_messages.saturating_sub(1);
            unparked += 1;
        }
        unparked
    }

    fn apply(&mut self, message: Envelope) {
        self.rocket.apply(&message);
        self.applied.push(message);
    }

    /// The change to commit, or `None` when there is nothing to write.
    pub fn into_change(self) -> Option<ChannelChange> {
        let unparked = self
            .stored_parked
            .iter()
            .filter(|n| !self.parked.contains_key(n))
            .copied()
            .collect::<Vec<_>>();
        let stored_parked = self.stored_parked;
        let newly_parked = self
            .parked
            .into_values()
            .filter(|m| stored_parked.binary_search(&m.number).is_err())
            .collect::<Vec<_>>();
        // Only a drain that applied something can have stopped at the view's end: without one,
        // another round would read the same view and apply nothing either.
        let drain_more = !self.applied.is_empty()
            && self
                .view_end
                .is_some_and(|end| self.rocket.next_number() > end.get());
        if self.applied.is_empty()
            && newly_parked.is_empty()
            && unparked.is_empty()
            && self.expired.is_empty()
            && !self.recount
        {
            return None;
        }
        let mut rocket = self.rocket;
        rocket.updated_at = self.now;
        rocket.note_stall(self.now);
        Some(ChannelChange {
            rocket,
            applied: self.applied,
            parked: newly_parked,
            unparked,
            expired: self.expired,
            drain_more,
        })
    }
}

/// Classifies a message against the one already accepted under the same number.
pub fn same_or_conflict(accepted: &Envelope, received: &Envelope) -> Received {
    if accepted == received {
        Received::Duplicate
    } else {
        Received::Conflict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Event;
    use proptest::prelude::*;

    fn channel() -> Channel {
        Channel::parse("c").unwrap()
    }

    fn message(n: u64, by: i64) -> Envelope {
        let event = if n == 1 {
            Event::Launched {
                rocket_type: "Falcon-9".into(),
                launch_speed: 100,
                mission: "ARTEMIS".into(),
            }
        } else {
            Event::SpeedIncreased { by }
        };
        Envelope {
            channel: channel(),
            number: MessageNumber::new(n).unwrap(),
            time: DateTime::parse_from_rfc3339("2022-02-02T19:39:05+01:00").unwrap(),
            event,
        }
    }

    fn numbers(list: &[u64]) -> Vec<MessageNumber> {
        list.iter()
            .map(|n| MessageNumber::new(*n).unwrap())
            .collect()
    }

    /// A store that commits changes the way every real backend must.
    #[derive(Default)]
    struct Stored {
        rocket: Option<Rocket>,
        parked: BTreeMap<MessageNumber, Envelope>,
        history: Vec<Envelope>,
    }

    impl Stored {
        fn open(&self) -> Timeline {
            self.open_bounded(usize::MAX, &[])
        }

        /// The channel as a store reads it: the first `window` parked messages, and those
        /// with the `probe` numbers.
        fn open_bounded(&self, window: usize, probe: &[MessageNumber]) -> Timeline {
            self.open_view(ParkedView::cut(&self.parked, window, probe))
        }

        /// The channel loaded with `view`; every parked message in it says it was parked at
        /// the epoch, unless the view says otherwise.
        fn open_view(&self, mut view: ParkedView) -> Timeline {
            let rocket = self
                .rocket
                .clone()
                .unwrap_or_else(|| Rocket::new(channel(), Utc::now()));
            if view.since.is_empty() {
                view = view.parked_at(|_| Some(DateTime::UNIX_EPOCH));
            }
            Timeline::load(rocket, view, Utc::now())
        }

        /// [`Stored::open_bounded`], or the view cut at the parked set's first gap as the
        /// embedded stores read it.
        fn open_as(&self, leading: bool, window: usize, probe: &[MessageNumber]) -> Timeline {
            if leading {
                let next = self.rocket.as_ref().map_or(1, Rocket::next_number);
                self.open_view(ParkedView::leading(&self.parked, next, window, probe))
            } else {
                self.open_bounded(window, probe)
            }
        }

        /// Parked messages written ahead of a state write that never happened.
        fn park_late(&mut self, parked: impl IntoIterator<Item = Envelope>) {
            for m in parked {
                self.parked.entry(m.number).or_insert(m);
            }
        }

        fn commit(&mut self, change: ChannelChange) {
            for n in &change.expired {
                assert!(
                    self.parked.remove(n).is_some(),
                    "expired {n} was not parked"
                );
            }
            for n in &change.unparked {
                assert!(
                    self.parked.remove(n).is_some(),
                    "unparked {n} was not parked"
                );
            }
            for m in change.parked {
                self.parked.entry(m.number).or_insert(m);
            }
            self.history.extend(change.applied);
            self.rocket = Some(change.rocket);
        }
    }

    #[test]
    fn in_order_messages_apply_immediately() {
        let mut t = Timeline::empty(channel(), Utc::now());
        assert_eq!(t.receive(message(1, 0)), Received::Applied { unparked: 0 });
        assert_eq!(t.receive(message(2, 5)), Received::Applied { unparked: 0 });
        assert_eq!(t.rocket().speed, 105);
        let change = t.into_change().unwrap();
        assert_eq!(change.applied.len(), 2);
        assert!(change.parked.is_empty() && change.unparked.is_empty());
    }

    #[test]
    fn a_message_ahead_of_a_gap_is_parked_until_the_gap_fills() {
        let mut store = Stored::default();
        let mut t = store.open();
        assert_eq!(t.receive(message(3, 30)), Received::Parked);
        assert_eq!(t.receive(message(2, 20)), Received::Parked);
        assert_eq!(t.rocket().pending_messages, 2);
        assert_eq!(t.rocket().last_message_number, 0);
        store.commit(t.into_change().unwrap());

        let mut t = store.open();
        assert_eq!(t.receive(message(1, 0)), Received::Applied { unparked: 2 });
        let change = t.into_change().unwrap();
        assert_eq!(change.unparked.len(), 2);
        assert!(change.parked.is_empty());
        store.commit(change);
        let rocket = store.rocket.unwrap();
        assert_eq!(
            (
                rocket.speed,
                rocket.last_message_number,
                rocket.pending_messages
            ),
            (150, 3, 0)
        );
    }

    #[test]
    fn parked_then_applied_in_one_session_is_never_stored_as_parked() {
        let mut t = Timeline::empty(channel(), Utc::now());
        t.receive(message(2, 1));
        t.receive(message(1, 0));
        let change = t.into_change().unwrap();
        assert!(change.parked.is_empty() && change.unparked.is_empty());
        assert_eq!(change.applied.len(), 2);
    }

    #[test]
    fn duplicates_and_conflicts() {
        let mut store = Stored::default();
        let mut t = store.open();
        t.receive(message(1, 0));
        t.receive(message(3, 3));
        assert_eq!(t.receive(message(1, 0)), Received::Duplicate);
        assert_eq!(t.receive(message(3, 3)), Received::Duplicate);
        assert_eq!(t.receive(message(3, 4)), Received::Conflict);
        store.commit(t.into_change().unwrap());

        let mut t = store.open();
        assert_eq!(t.receive(message(1, 0)), Received::AlreadyApplied);
        assert_eq!(t.receive(message(3, 99)), Received::Conflict);
        assert_eq!(t.receive(message(3, 3)), Received::Duplicate);
        assert!(t.into_change().is_none(), "duplicates change nothing");
        assert_eq!(
            same_or_conflict(&message(1, 0), &message(1, 0)),
            Received::Duplicate
        );
    }

    #[test]
    fn conflict_keeps_the_first_content() {
        let mut t = Timeline::empty(channel(), Utc::now());
        t.receive(message(1, 0));
        t.receive(message(2, 10));
        assert_eq!(t.receive(message(2, 99)), Received::Conflict);
        assert_eq!(t.rocket().speed, 110);
    }

    #[test]
    fn a_drain_stops_at_the_end_of_the_view_and_asks_for_another_round() {
        let mut store = Stored::default();
        let mut t = store.open();
        for n in 2..=6 {
            assert_eq!(t.receive(message(n, 1)), Received::Parked);
        }
        store.commit(t.into_change().unwrap());

        let mut t = store.open_bounded(2, &[]);
        assert_eq!(t.receive(message(1, 0)), Received::Applied { unparked: 2 });
        let change = t.into_change().unwrap();
        assert!(change.drain_more);
        assert_eq!(change.rocket.pending_messages, 3);
        store.commit(change);

        let change = store.open_bounded(2, &[]).into_change().unwrap();
        assert_eq!(change.applied.len(), 2);
        assert!(change.drain_more);
        store.commit(change);
        let change = store.open_bounded(2, &[]).into_change().unwrap();
        assert_eq!((change.applied.len(), change.drain_more), (1, false));
        assert_eq!(change.rocket.pending_messages, 0);
    }

    #[test]
    fn a_leading_view_reads_through_the_first_gap_and_no_further() {
        assert_eq!(leading_len(numbers(&[5, 6, 9, 10]), 100), 3);
        assert_eq!(leading_len(numbers(&[5, 6, 7]), 100), 3);
        assert_eq!(leading_len(numbers(&[5, 6, 7]), 2), 2);
        assert_eq!(leading_len(numbers(&[9]), 100), 1);
        assert_eq!(leading_len(numbers(&[]), 100), 0);

        let mut store = Stored::default();
        let mut t = store.open();
        for n in [2, 3, 7, 8, 9] {
            assert_eq!(t.receive(message(n, 1)), Received::Parked);
        }
        store.commit(t.into_change().unwrap());
        let next = store.rocket.as_ref().unwrap().next_number();
        assert_eq!(
            ParkedView::leading(&store.parked, next, 100, &numbers(&[9, 4])),
            ParkedView::cut(&store.parked, 0, &numbers(&[9, 4])),
            "without message 1, the batch can only park or repeat: its numbers are enough"
        );
        let view = ParkedView::leading(&store.parked, next, 100, &numbers(&[9, 1]));
        let read: Vec<u64> = view.first.iter().map(|m| m.number.get()).collect();
        assert_eq!((read, view.complete), (vec![2, 3, 7], false));
        assert_eq!(
            view.probed,
            [message(9, 1)],
            "a probe past the view still finds 9"
        );
        // The view shows that 4 to 6 are not parked: filling the gap drains 2 and 3, and the
        // change knows that nothing more can follow without another round.
        let mut t = store.open_view(view);
        assert_eq!(t.receive(message(1, 0)), Received::Applied { unparked: 2 });
        let change = t.into_change().unwrap();
        assert!(!change.drain_more);
        assert_eq!(change.rocket.pending_messages, 3);

        // A drain cut short at the end of its view leaves the next number parked: a batch of
        // resends must still read it, or nothing would ever drain it.
        let mut store = Stored::default();
        let mut t = store.open();
        for n in [2, 3] {
            t.receive(message(n, 1));
        }
        store.commit(t.into_change().unwrap());
        let mut t = store.open_bounded(1, &[]);
        t.receive(message(1, 0));
        let change = t.into_change().unwrap();
        assert!(change.drain_more);
        store.commit(change);
        let view = ParkedView::leading(&store.parked, 3, 100, &numbers(&[1]));
        assert_eq!(view, ParkedView::all(vec![message(3, 1)]));
    }

    #[test]
    fn a_message_past_the_park_limit_is_refused_and_the_window_moves_with_the_rocket() {
        let mut store = Stored::default();
        let mut t = store.open().with_park_limit(3);
        assert_eq!(t.receive(message(3, 1)), Received::Parked);
        assert_eq!(t.receive(message(1_000_000, 1)), Received::OverParkLimit);
        assert_eq!(t.receive(message(4, 1)), Received::OverParkLimit);
        store.commit(t.into_change().unwrap());

        let mut t = store.open_bounded(1, &numbers(&[3, 4])).with_park_limit(3);
        assert_eq!(t.receive(message(3, 1)), Received::Duplicate);
        assert_eq!(t.receive(message(3, 2)), Received::Conflict);
        // Applying moves the window: 1 applies, and 4 then parks.
        assert_eq!(t.receive(message(1, 0)), Received::Applied { unparked: 0 });
        assert_eq!(t.receive(message(4, 1)), Received::Parked);
        assert_eq!(t.rocket().pending_messages, 2);
    }

    #[test]
    fn a_parked_message_expires_and_frees_its_number() {
        let mut store = Stored::default();
        let mut t = store.open();
        t.receive(message(3, 1));
        t.receive(message(5, 1));
        store.commit(t.into_change().unwrap());
        let now = Utc::now();
        let old = now - chrono::Duration::days(20);
        let view = ParkedView::cut(&store.parked, usize::MAX, &[])
            .parked_at(|n| Some(if n.get() == 3 { old } else { now }));
        let mut t = store.open_view(view.clone());
        assert_eq!(t.expire_parked(now - chrono::Duration::days(14)), 1);
        assert_eq!(t.rocket().pending_messages, 1);
        // Its number is free for the message that belongs there.
        assert_eq!(t.receive(message(3, 7)), Received::Parked);
        let change = t.into_change().unwrap();
        assert_eq!(change.expired, numbers(&[3]));
        assert_eq!(change.parked, [message(3, 7)]);
        store.commit(change);
        assert_eq!(store.parked[&MessageNumber::new(3).unwrap()], message(3, 7));
        assert_eq!(store.rocket.as_ref().unwrap().pending_messages, 2);
        // Expiring alone is a change; nothing old, none.
        let mut t = store.open_view(view.clone());
        t.expire_parked(now - chrono::Duration::days(14));
        assert_eq!(t.into_change().unwrap().expired, numbers(&[3]));
        let mut t = store.open_view(view);
        assert_eq!(t.expire_parked(old), 0);
        assert!(t.into_change().is_none());
    }

    #[test]
    fn an_incomplete_view_keeps_the_stored_count() {
        let mut rocket = Rocket::new(channel(), Utc::now());
        rocket.pending_messages = 40;
        let view = ParkedView {
            complete: false,
            ..ParkedView::all(vec![message(3, 1), message(4, 1)])
        };
        let t = Timeline::load(rocket, view, Utc::now());
        assert_eq!(t.rocket().pending_messages, 40);
        assert!(
            t.into_change().is_none(),
            "nothing to repair without the whole set"
        );
    }

    #[test]
    fn loading_drops_applied_leftovers_and_recounts_what_is_parked() {
        let mut rocket = Rocket::new(channel(), Utc::now());
        rocket.apply(&message(1, 0));
        rocket.apply(&message(2, 5));
        rocket.pending_messages = 0;
        let leftover = message(2, 5);
        let uncounted = message(4, 1);
        let mut t = Timeline::load(
            rocket,
            ParkedView::all(vec![leftover, uncounted]),
            Utc::now(),
        );
        assert_eq!(t.rocket().pending_messages, 1);
        assert_eq!(t.receive(message(2, 5)), Received::AlreadyApplied);
        let change = t.into_change().expect("the count changed");
        assert_eq!(change.unparked, [MessageNumber::new(2).unwrap()]);
        assert!(change.applied.is_empty() && change.parked.is_empty());
        assert_eq!(change.rocket.pending_messages, 1);
    }

    fn stream(len: u64, seed: &[i64]) -> Vec<Envelope> {
        (1..=len)
            .map(|n| message(n, seed[(n as usize) % seed.len()]))
            .collect()
    }

    proptest! {
        /// Any permutation of a channel's messages, with duplicates, received over any
        /// sequence of load/commit cycles, some cut short the way a store without
        /// transactions can be, folds to the in-order state with nothing parked.
        #[test]
        fn any_order_with_duplicates_folds_to_the_in_order_state(
            len in 1u64..40,
            seed in prop::collection::vec(0i64..1000, 1..8),
            extra in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
            order in any::<u64>(),
            cuts in prop::collection::vec(0u8..4, 80),
        ) {
            let messages = stream(len, &seed);
            let expected = Rocket::fold(channel(), &messages, Utc::now());

            let mut arrivals = messages.clone();
            arrivals.extend(extra.iter().map(|i| i.get(&messages).clone()));
            shuffle(&mut arrivals, order);

            let mut store = Stored::default();
            let mut t = store.open();
            // Messages received since the last full commit: a commit cut short fails, and
            // they are delivered again, as the queue would. What it parked ahead of its state
            // write lands late, after the next commit, as when it lost a race.
            let mut session = Vec::new();
            let mut late = Vec::new();
            let mut arrivals: std::collections::VecDeque<Envelope> = arrivals.into();
            let mut i = 0;
            while let Some(m) = arrivals.pop_front() {
                i += 1;
                prop_assert!(i < 10_000, "no progress");
                session.push(m.clone());
                let outcome = t.receive(m);
                prop_assert_ne!(outcome, Received::Conflict);
                let cut = cuts[i % cuts.len()];
                if cut > 0 {
                    if let Some(change) = t.into_change() {
                        if cut == 1 {
                            late.extend(change.parked);
                            arrivals.extend(session.drain(..));
                        } else {
                            store.commit(change);
                            store.park_late(late.drain(..));
                        }
                    }
                    session.clear();
                    t = store.open();
                }
            }
            // The next batch of the channel, with nothing new, repairs what landed late.
            for _ in 0..2 {
                if let Some(change) = t.into_change() {
                    store.commit(change);
                }
                store.park_late(late.drain(..));
                t = store.open();
            }
            let rocket = store.rocket.unwrap();
            prop_assert!(rocket.same_state(&expected), "{rocket:?} != {expected:?}");
            prop_assert_eq!(rocket.pending_messages, 0);
            prop_assert!(store.parked.is_empty());
            prop_assert_eq!(store.history, messages);
        }

        /// The same with a store that reads only a few parked messages at a time (the first
        /// `window`, or fewer where the parked set has a gap) and a limit on how many a channel
        /// may park: batches load a bounded view probed for their numbers, drains run as many
        /// rounds as they need, messages over the limit are set aside and sent again later (a
        /// redrive), and so are parked messages that expire; the count never passes the limit.
        #[test]
        fn bounded_views_and_a_park_limit_fold_to_the_in_order_state(
            len in 1u64..60,
            seed in prop::collection::vec(0i64..1000, 1..8),
            extra in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
            order in any::<u64>(),
            window in 1usize..6,
            leading in any::<bool>(),
            limit in 1u64..12,
            batch in 1usize..10,
            cut_short in prop::collection::vec(any::<bool>(), 1..8),
            expire_every in 0usize..4,
        ) {
            let messages = stream(len, &seed);
            let expected = Rocket::fold(channel(), &messages, Utc::now());
            let mut arrivals = messages.clone();
            arrivals.extend(extra.iter().map(|i| i.get(&messages).clone()));
            shuffle(&mut arrivals, order);

            let mut store = Stored::default();
            let mut refused = Vec::new();
            let (mut rounds, mut batches) = (0, 0);
            let mut pending: std::collections::VecDeque<Envelope> = arrivals.into();
            while !pending.is_empty() {
                batches += 1;
                prop_assert!(batches < 10_000, "what is parked is never drained");
                let session: Vec<Envelope> = pending.drain(..batch.min(pending.len())).collect();
                let numbers: Vec<MessageNumber> = session.iter().map(|m| m.number).collect();
                let mut t = store.open_as(leading, window, &numbers).with_park_limit(limit);
                // Now and then, what is parked in view expires; its sender sends it again.
                if expire_every > 0 && batches % expire_every == 0 {
                    t.expire_parked(DateTime::UNIX_EPOCH + chrono::Duration::seconds(1));
                }
                for m in session {
                    match t.receive(m.clone()) {
                        Received::OverParkLimit => refused.push(m),
                        outcome => prop_assert_ne!(outcome, Received::Conflict),
                    }
                }
                let mut change = t.into_change();
                if let Some(change) = &change {
                    refused.extend(change.expired.iter().map(|n| store.parked[n].clone()));
                }
                while let Some(committed) = change {
                    rounds += 1;
                    prop_assert!(rounds < 10_000, "no progress");
                    let more = committed.drain_more;
                    store.commit(committed);
                    let rocket = store.rocket.as_ref().unwrap();
                    prop_assert!(rocket.pending_messages <= limit);
                    prop_assert_eq!(rocket.pending_messages, store.parked.len() as u64);
                    // A drain round may never run (its invocation ended): the channel's next
                    // batch, resends included, must still find what it left parked.
                    let skipped = cut_short[rounds % cut_short.len()];
                    change = if more && !skipped {
                        store.open_as(leading, window, &[]).with_park_limit(limit).into_change()
                    } else {
                        None
                    };
                }
                if pending.is_empty() {
                    pending.extend(refused.drain(..));
                }
                if pending.is_empty() && !store.parked.is_empty() {
                    pending.push_back(messages[0].clone());
                }
            }
            let rocket = store.rocket.unwrap();
            prop_assert!(rocket.same_state(&expected), "{rocket:?} != {expected:?}");
            prop_assert_eq!(rocket.pending_messages, 0);
            prop_assert!(store.parked.is_empty());
            prop_assert_eq!(store.history, messages);
        }
    }

    /// A seeded shuffle, so proptest can shrink the order.
    fn shuffle<T>(items: &mut [T], seed: u64) {
        fastrand::Rng::with_seed(seed).shuffle(items);
    }
}
