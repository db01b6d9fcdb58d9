//! One contract for every backend, so the embedded ones and the AWS ones cannot drift.

use std::time::Duration;

use chrono::Utc;

use crate::{Rng, channel, flight, unique_name};
use rockets::listing::{ListQuery, Order, SortKey};
use rockets::message::{Envelope, Event, MessageNumber};
use rockets::ordering::{ChannelChange, ParkedView, Timeline};
use rockets::ports::{
    ChannelStore, CommitOutcome, Delivery, MessageQueue, QueueConsumer, QueueRecord, QueuedMessage,
    RocketReader,
};
use rockets::rocket::Status;

async fn open<S: ChannelStore>(store: &S, channel: &rockets::message::Channel) -> (Timeline, u64) {
    match store.load(channel, usize::MAX, &[]).await.unwrap() {
        Some(s) => (Timeline::load(s.rocket, s.parked, Utc::now()), s.version),
        None => (Timeline::empty(channel.clone(), Utc::now()), 0),
    }
}

/// What the store lists as parked ahead of the channel's rocket, as an operator reads it.
async fn parked<S: ChannelStore>(store: &S, channel: &rockets::message::Channel) -> ParkedView {
    let snapshot = store.load(channel, 0, &[]).await.unwrap().unwrap();
    store.parked(&snapshot.rocket).await.unwrap()
}

/// A view as far as the messages go, without when they parked.
fn without_times(view: ParkedView) -> ParkedView {
    ParkedView {
        since: Default::default(),
        ..view
    }
}

fn change(mut timeline: Timeline, messages: &[&Envelope]) -> ChannelChange {
    for m in messages {
        timeline.receive((*m).clone());
    }
    timeline.into_change().expect("something changed")
}

/// Loading, conditional commits, parking and draining, history, and listing.
pub async fn store<S: ChannelStore + RocketReader>(store: &S) {
    let c = channel(&unique_name("contract"));
    let m = flight(&c, 5, &mut Rng::new(7));
    assert!(store.load(&c, usize::MAX, &[]).await.unwrap().is_none());
    assert!(store.rocket(&c).await.unwrap().is_none());
    assert!(store.history(&c, 0, 10).await.unwrap().is_none());

    // Messages ahead of a gap are parked, and the rocket exists, pending.
    let (t, version) = open(store, &c).await;
    let parked = change(t, &[&m[2], &m[1]]);
    assert_eq!(
        store.commit(version, &parked).await.unwrap(),
        CommitOutcome::Committed
    );
    let snapshot = store
        .load(&c, usize::MAX, &[])
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(snapshot.version, 1);
    let numbers: Vec<u64> = snapshot
        .parked
        .first
        .iter()
        .map(|p| p.number.get())
        .collect();
    assert_eq!(numbers, [2, 3]);
    assert!(snapshot.parked.complete);
    assert_eq!(snapshot.rocket.pending_messages, 2);
    assert_eq!(
        store.rocket(&c).await.unwrap().unwrap().status,
        Status::Pending
    );

    // A commit from a stale version changes nothing.
    let stale = change(Timeline::empty(c.clone(), Utc::now()), &[&m[0]]);
    assert_eq!(
        store.commit(0, &stale).await.unwrap(),
        CommitOutcome::VersionMismatch
    );
    assert_eq!(
        store
            .load(&c, usize::MAX, &[])
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert_eq!(store.history(&c, 0, 10).await.unwrap().unwrap(), []);

    // Filling the gap applies the parked messages. (A store that writes messages ahead of its
    // state holds the stale commit's message 1 as accepted too, and drains it with them.)
    let (t, version) = open(store, &c).await;
    let filled = change(t, &[&m[0]]);
    assert!((2..=3).contains(&filled.unparked.len()));
    assert_eq!(filled.applied, m[..3]);
    assert_eq!(
        store.commit(version, &filled).await.unwrap(),
        CommitOutcome::Committed
    );
    let snapshot = store.load(&c, usize::MAX, &[]).await.unwrap().unwrap();
    assert_eq!(snapshot.parked, ParkedView::none());
    assert_eq!(
        (snapshot.rocket.last_message_number, snapshot.version),
        (3, 2)
    );
    assert!(
        store
            .rocket(&c)
            .await
            .unwrap()
            .unwrap()
            .same_state(&snapshot.rocket)
    );

    // The state as of each message, folded from the history.
    for n in 1..=3 {
        let then = rockets::story::state_as_of(store, &c, n).await.unwrap();
        let rockets::story::AsOf::State(then) = then else {
            panic!("as of {n}: {then:?}");
        };
        let folded = rockets::rocket::Rocket::fold(c.clone(), &m[..n as usize], Utc::now());
        assert!(then.same_state(&folded), "as of {n}: {then:?}");
        assert_eq!(then.updated_at, m[n as usize - 1].time.to_utc());
    }
    for past in [0, 4] {
        assert_eq!(
            rockets::story::state_as_of(store, &c, past).await.unwrap(),
            rockets::story::AsOf::NotApplied
        );
    }
    let unknown = channel(&unique_name("never"));
    assert_eq!(
        rockets::story::state_as_of(store, &unknown, 1)
            .await
            .unwrap(),
        rockets::story::AsOf::NotApplied
    );

    // History, in pages, and lookups by number.
    assert_eq!(store.history(&c, 0, 2).await.unwrap().unwrap(), m[..2]);
    assert_eq!(store.history(&c, 2, 10).await.unwrap().unwrap(), m[2..3]);
    assert_eq!(store.history(&c, 3, 10).await.unwrap().unwrap(), []);
    let numbers = [1, 3].map(|n| MessageNumber::new(n).unwrap());
    let mut looked_up = store.applied(&c, &numbers).await.unwrap();
    looked_up.sort_by_key(|m| m.number);
    assert_eq!(looked_up, [m[0].clone(), m[2].clone()]);

    // Two appliers park different messages under one number: the first commit wins.
    let (first, version) = open(store, &c).await;
    let (second, _) = open(store, &c).await;
    let mut other = m[4].clone();
    other.event = Event::Exploded {
        reason: "a different message".into(),
    };
    let winner = change(first, &[&m[4]]);
    let loser = change(second, &[&other]);
    assert_eq!(
        store.commit(version, &winner).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_ne!(
        store.commit(version, &loser).await.unwrap(),
        CommitOutcome::Committed
    );
    let snapshot = store.load(&c, usize::MAX, &[]).await.unwrap().unwrap();
    assert_eq!(
        without_times(snapshot.parked),
        ParkedView::all(vec![m[4].clone()])
    );
    assert_eq!(snapshot.rocket.pending_messages, 1);

    parked_view(store).await;
    parked_expiry(store).await;
    prefixed_listing(store).await;
    long_escaped_text(store).await;
    listing(store).await;
}

/// Loading reads a bounded view of a channel's parked messages: the first few in order, and
/// those beyond them with the numbers asked about. A batch without the channel's next
/// number cannot start a drain, so for it a store may read only the numbers asked about.
async fn parked_view<S: ChannelStore>(store: &S) {
    let c = channel(&unique_name("view"));
    let m = flight(&c, 12, &mut Rng::new(11));
    let (t, version) = open(store, &c).await;
    let parked: Vec<&Envelope> = m[2..].iter().collect();
    store.commit(version, &change(t, &parked)).await.unwrap();
    let n = |n: u64| MessageNumber::new(n).unwrap();
    let snapshot = store
        .load(&c, 3, &[n(1), n(2), n(4), n(9), n(12), n(40)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.rocket.pending_messages, 10);
    assert_eq!(snapshot.parked.first, m[2..5]);
    assert!(!snapshot.parked.complete);
    let mut probed = snapshot.parked.probed;
    probed.sort_by_key(|m| m.number);
    assert_eq!(probed, [m[8].clone(), m[11].clone()]);
    let asked = store.load(&c, 3, &[n(4), n(9)]).await.unwrap().unwrap();
    assert!(m[2..5].starts_with(&asked.parked.first));
    assert!(!asked.parked.complete);
    for wanted in [&m[3], &m[8]] {
        let found = asked.parked.first.iter().chain(&asked.parked.probed);
        assert_eq!(found.filter(|p| *p == wanted).count(), 1, "{wanted:?}");
    }
    let whole = store.load(&c, 10, &[n(1), n(12)]).await.unwrap().unwrap();
    assert_eq!(
        without_times(whole.parked),
        ParkedView::all(m[2..].to_vec())
    );
}

/// Channels found by their beginning, a page at a time, both ways; and the store's totals,
/// which add up.
async fn prefixed_listing<S: ChannelStore + RocketReader>(store: &S) {
    let stem = unique_name("prefix");
    let names = [format!("{stem}a"), format!("{stem}ab"), format!("{stem}b")];
    for name in &names {
        let c = channel(name);
        let (t, version) = open(store, &c).await;
        let first = flight(&c, 1, &mut Rng::new(3));
        store
            .commit(version, &change(t, &[&first[0]]))
            .await
            .unwrap();
    }
    for (order, wanted) in [
        (Order::Asc, [&names[0], &names[1]]),
        (Order::Desc, [&names[1], &names[0]]),
    ] {
        let mut query = ListQuery {
            order,
            limit: 1,
            prefix: Some(format!("{stem}a").into()),
            ..ListQuery::default()
        };
        let mut walked = Vec::new();
        loop {
            let page = store.rockets(&query).await.unwrap();
            if let Some(totals) = page.totals {
                assert_eq!(
                    totals.rockets,
                    totals.pending + totals.launched + totals.exploded
                );
                assert!(
                    totals.rockets >= 3 && totals.stalled <= totals.rockets,
                    "{totals:?}"
                );
            }
            walked.extend(page.rockets.into_iter().map(|r| r.channel.to_string()));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        assert_eq!(walked, wanted.map(String::clone), "{order:?}");
    }
}

/// A store says when each parked message parked and lists them all; expired ones stop counting,
/// are deleted, and free their numbers for the messages that belong there.
async fn parked_expiry<S: ChannelStore>(store: &S) {
    let c = channel(&unique_name("expiry"));
    let m = flight(&c, 6, &mut Rng::new(13));
    let before = Utc::now() - chrono::Duration::seconds(2);
    let (t, version) = open(store, &c).await;
    store
        .commit(version, &change(t, &[&m[2], &m[4]]))
        .await
        .unwrap();
    let listed = parked(store, &c).await;
    assert_eq!(listed.first, [m[2].clone(), m[4].clone()]);
    assert!(listed.complete);
    let after = Utc::now() + chrono::Duration::seconds(2);
    for message in [&m[2], &m[4]] {
        let at = listed.since.get(&message.number).copied();
        assert!(at.is_some_and(|at| before < at && at < after), "{at:?}");
    }
    // Both expire (they parked together), and the first number takes another message.
    let (mut t, version) = open(store, &c).await;
    let three = m[2].number;
    let view_since = listed.since[&three];
    let mut other = m[2].clone();
    other.event = Event::Exploded {
        reason: "the message that belongs there".into(),
    };
    assert_eq!(
        t.expire_parked(view_since + chrono::Duration::milliseconds(1)),
        2
    );
    assert_eq!(t.rocket().pending_messages, 0);
    assert_eq!(
        t.receive(other.clone()),
        rockets::ordering::Received::Parked
    );
    let expired = t.into_change().unwrap();
    assert_eq!(expired.expired.len(), 2);
    assert_eq!(
        store.commit(version, &expired).await.unwrap(),
        CommitOutcome::Committed
    );
    let listed = parked(store, &c).await;
    assert_eq!(listed.first, [other]);
    let snapshot = store.load(&c, usize::MAX, &[]).await.unwrap().unwrap();
    assert_eq!(snapshot.rocket.pending_messages, 1);
    assert_eq!(snapshot.parked.first.len(), 1);
}

/// Text stored before any length limit, and text that escaping doubles in an index key,
/// still commits and lists: a state write that cannot succeed would block its channel.
async fn long_escaped_text<S: ChannelStore + RocketReader>(store: &S) {
    let c = channel(&unique_name(&"t".repeat(80)));
    let launched = super::message(
        &c,
        1,
        Event::Launched {
            rocket_type: "\u{0}".repeat(600).into(),
            launch_speed: 1,
            mission: "\u{1}".repeat(1_000).into(),
        },
    );
    let (t, version) = open(store, &c).await;
    assert_eq!(
        store
            .commit(version, &change(t, &[&launched]))
            .await
            .unwrap(),
        CommitOutcome::Committed
    );
    let stored = store.rocket(&c).await.unwrap().expect("stored");
    assert_eq!(stored.mission.as_deref().map(str::len), Some(1_000));
    let other = channel(&unique_name("plain"));
    let (t, version) = open(store, &other).await;
    let plain = super::message(
        &other,
        1,
        Event::Launched {
            rocket_type: "Saturn-V".into(),
            launch_speed: 1,
            mission: "APOLLO".into(),
        },
    );
    store.commit(version, &change(t, &[&plain])).await.unwrap();
    for sort_by in [SortKey::Type, SortKey::Mission] {
        let query = ListQuery {
            sort_by,
            order: Order::Asc,
            status: Some(Status::Launched),
            stalled: false,
            limit: 1000,
            after: None,
            prefix: None,
        };
        let page = store.rockets(&query).await.unwrap();
        assert!(page.rockets.iter().any(|r| r.channel == c), "{sort_by:?}");
        // Text of NULs sorts first; a page may end, and the next start, right there.
        let first = store
            .rockets(&ListQuery {
                limit: 1,
                ..query.clone()
            })
            .await
            .unwrap();
        assert_eq!(first.rockets[0].channel, c, "{sort_by:?}");
        let next = ListQuery {
            limit: 1000,
            after: first.next,
            ..query
        };
        let rest = store.rockets(&next).await.unwrap();
        assert!(rest.rockets.iter().all(|r| r.channel != c), "{sort_by:?}");
        assert!(
            rest.rockets.iter().any(|r| r.channel == other),
            "{sort_by:?}"
        );
    }
}

/// Sorted, filtered, paginated listing over rockets in every status.
async fn listing<S: ChannelStore + RocketReader>(store: &S) {
    let mut expected = Vec::new();
    for (i, speed) in [500, -20, 500, 7, 1_000, 0].into_iter().enumerate() {
        let c = channel(&unique_name(&format!("list{i}")));
        let mut messages = vec![super::message(
            &c,
            1,
            Event::Launched {
                rocket_type: "Falcon-9".into(),
                launch_speed: speed,
                mission: "ARTEMIS".into(),
            },
        )];
        if i % 3 == 1 {
            messages.push(super::message(
                &c,
                2,
                Event::Exploded {
                    reason: "boom".into(),
                },
            ));
        } else {
            // Stalled behind message 2, with 0, 1 or 2 messages waiting.
            for number in 3..3 + i as u64 / 2 {
                messages.push(super::message(&c, number, Event::SpeedIncreased { by: 1 }));
            }
        }
        let refs: Vec<&Envelope> = messages.iter().collect();
        let (t, version) = open(store, &c).await;
        store.commit(version, &change(t, &refs)).await.unwrap();
        expected.push(store.rocket(&c).await.unwrap().unwrap());
    }
    // Everything else in the store is from the checks above; list only these.
    let ours = |rockets: Vec<rockets::rocket::Rocket>| {
        rockets
            .into_iter()
            .filter(|r| expected.iter().any(|e| e.channel == r.channel))
            .map(|r| r.channel)
            .collect::<Vec<_>>()
    };
    assert!(expected.iter().filter(|r| r.pending_messages > 0).count() >= 2);
    for (sort_by, order, status, stalled) in [
        (SortKey::Speed, Order::Desc, None, false),
        (SortKey::Speed, Order::Asc, Some(Status::Launched), false),
        (SortKey::Channel, Order::Asc, None, false),
        (SortKey::Status, Order::Desc, None, false),
        (SortKey::PendingMessages, Order::Desc, None, false),
        (SortKey::PendingMessages, Order::Asc, None, true),
        (SortKey::PendingMessages, Order::Desc, None, true),
        (
            SortKey::PendingMessages,
            Order::Asc,
            Some(Status::Launched),
            true,
        ),
    ] {
        let mut query = ListQuery {
            sort_by,
            order,
            status,
            stalled,
            limit: 2,
            after: None,
            prefix: None,
        };
        let mut walked = Vec::new();
        for _ in 0..20 {
            let page = store.rockets(&query).await.unwrap();
            assert!(page.rockets.len() <= 2);
            walked.extend(page.rockets);
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        let mut wanted: Vec<_> = expected
            .iter()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .filter(|r| !stalled || r.pending_messages > 0)
            .cloned()
            .collect();
        wanted.sort_by_key(|r| sort_by.position(r));
        if order == Order::Desc {
            wanted.reverse();
        }
        assert_eq!(
            ours(walked),
            ours(wanted),
            "{sort_by:?} {order:?} {status:?} stalled {stalled}"
        );
    }
}

/// FIFO order per group, deduplication, and deletion.
pub async fn queue<Q: MessageQueue + QueueConsumer>(queue: &Q) {
    let (a, b) = (channel(&unique_name("qa")), channel(&unique_name("qb")));
    let ma = flight(&a, 3, &mut Rng::new(1));
    let mb = flight(&b, 1, &mut Rng::new(2));
    for m in [&ma[0], &ma[1], &mb[0], &ma[1], &ma[2]] {
        queue.send(m).await.unwrap();
    }
    let mut received: Vec<Envelope> = Vec::new();
    for _ in 0..20 {
        let batch = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        for record in &batch {
            let group = record.group_id().expect("group attribute");
            let message = Envelope::parse(record.body().unwrap().as_bytes()).unwrap();
            assert_eq!(
                record.delivery().unwrap(),
                Delivery::Message(message.clone())
            );
            assert_eq!(group, message.channel.as_str());
            assert_eq!(
                record.deduplication_id(),
                Some(QueuedMessage::of(&message).deduplication_id.as_str())
            );
            received.push(message);
        }
        let handles: Vec<&str> = batch.iter().filter_map(|r| r.receipt_handle()).collect();
        queue.delete(&handles).await.unwrap();
        if received.len() >= 4 {
            break;
        }
    }
    let of = |c: &rockets::message::Channel| {
        received
            .iter()
            .filter(|m| m.channel == *c)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&a), ma, "in order, and the resend dropped");
    assert_eq!(of(&b), mb);
    assert!(
        queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
}
