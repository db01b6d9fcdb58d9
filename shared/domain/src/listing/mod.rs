//! `GET /rockets`: sort keys, parameters, and keyset pagination with an opaque cursor.
//!
//! Every order is total: rockets sort by (value of the sort key, channel), nulls first, and
//! `desc` is the exact reverse of `asc`. A page ends at a [`Position`], and the next page starts
//! strictly after it, so a walk visits each rocket once even while other rockets change.
//!
//! Text sorts by its first [`MAX_SORT_TEXT_CHARS`] characters, as long as the API accepts, so
//! a cursor stays small whatever was stored. A cursor is the position and the query it
//! continues, versioned and unsigned: it grants nothing the query parameters do not (any client
//! may list from anywhere), so it is checked instead of signed. One for another query, or whose
//! position is not one the query's sort key can take, is a `400` naming `cursor`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::message::{Channel, ValidationError};
use crate::rocket::{Rocket, Status};

/// The characters of a text value that its order considers.
pub const MAX_SORT_TEXT_CHARS: usize = crate::message::MAX_TEXT_CHARS;
/// Longer than any cursor this API issues.
const MAX_CURSOR_LEN: usize = 4096;
/// What every cursor of this layout starts with; a later layout takes the next version.
const CURSOR_VERSION: &str = "v1.";

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// A field `GET /rockets` can sort by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum SortKey {
    #[serde(rename = "channel")]
    Channel,
    #[serde(rename = "type")]
    Type,
    #[serde(rename = "mission")]
    Mission,
    #[serde(rename = "speed")]
    Speed,
    #[serde(rename = "status")]
    Status,
    #[serde(rename = "launchTime")]
    LaunchTime,
    #[serde(rename = "lastMessageTime")]
    LastMessageTime,
    #[serde(rename = "lastMessageNumber")]
    LastMessageNumber,
    #[serde(rename = "pendingMessages")]
    PendingMessages,
}

impl SortKey {
    pub const ALL: [SortKey; 9] = [
        SortKey::Channel,
        SortKey::Type,
        SortKey::Mission,
        SortKey::Speed,
        SortKey::Status,
        SortKey::LaunchTime,
        SortKey::LastMessageTime,
        SortKey::LastMessageNumber,
        SortKey::PendingMessages,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Channel => "channel",
            SortKey::Type => "type",
            SortKey::Mission => "mission",
            SortKey::Speed => "speed",
            SortKey::Status => "status",
            SortKey::LaunchTime => "launchTime",
            SortKey::LastMessageTime => "lastMessageTime",
            SortKey::LastMessageNumber => "lastMessageNumber",
            SortKey::PendingMessages => "pendingMessages",
        }
    }

    pub fn parse(raw: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// Dense index, for per-key tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether two states of one rocket stand at the same place in this key's order; cheaper
    /// than comparing positions, which copy text.
    pub fn same_value(self, a: &Rocket, b: &Rocket) -> bool {
        match self {
            SortKey::Channel => a.channel == b.channel,
            SortKey::Type => a.rocket_type == b.rocket_type,
            SortKey::Mission => a.mission == b.mission,
            SortKey::Speed => a.speed == b.speed,
            SortKey::Status => a.status == b.status,
            SortKey::LaunchTime => a.launch_time == b.launch_time,
            SortKey::LastMessageTime => a.last_message_time == b.last_message_time,
            SortKey::LastMessageNumber => a.last_message_number == b.last_message_number,
            SortKey::PendingMessages => a.pending_messages == b.pending_messages,
        }
    }

    /// Whether a rocket's value for this key can be `value`: the kind of value the key has, and
    /// within its range.
    pub fn can_hold(self, value: &SortValue) -> bool {
        let integer = |range: std::ops::RangeInclusive<i128>| match value {
            SortValue::Int(n) => range.contains(n),
            _ => false,
        };
        match self {
            SortKey::Channel => *value == SortValue::Null,
            SortKey::Type | SortKey::Mission => match value {
                SortValue::Null => true,
                SortValue::Text(text) => text.chars().nth(MAX_SORT_TEXT_CHARS).is_none(),
                _ => false,
            },
            SortKey::Speed => integer(i128::from(i64::MIN)..=i128::from(i64::MAX)),
            SortKey::Status => integer(0..=(Status::ALL.len() as i128 - 1)),
            SortKey::LastMessageNumber => integer(0..=i128::from(i64::MAX)),
            SortKey::PendingMessages => integer(0..=i128::from(u64::MAX)),
            SortKey::LaunchTime | SortKey::LastMessageTime => {
                matches!(value, SortValue::Null | SortValue::Time(_))
            }
        }
    }

    /// Where a rocket stands in this key's order.
    pub fn position(self, rocket: &Rocket) -> Position {
        let text = |v: &Option<Arc<str>>| {
            v.as_ref().map_or(SortValue::Null, |t| {
                match t.char_indices().nth(MAX_SORT_TEXT_CHARS) {
                    Some((cut, _)) => SortValue::Text(Arc::from(&t[..cut])),
                    None => SortValue::Text(t.clone()),
                }
            })
        };
        let time = |v: &Option<chrono::DateTime<chrono::FixedOffset>>| {
            v.map_or(SortValue::Null, |t| SortValue::Time(t.with_timezone(&Utc)))
        };
        let value = match self {
            // The channel is already the tie-breaker, so the value carries nothing.
            SortKey::Channel => SortValue::Null,
            SortKey::Type => text(&rocket.rocket_type),
            SortKey::Mission => text(&rocket.mission),
            SortKey::Speed => SortValue::Int(i128::from(rocket.speed)),
            SortKey::Status => SortValue::Int(rocket.status.index() as i128),
            SortKey::LaunchTime => time(&rocket.launch_time),
            SortKey::LastMessageTime => time(&rocket.last_message_time),
            SortKey::LastMessageNumber => SortValue::Int(i128::from(rocket.last_message_number)),
            SortKey::PendingMessages => SortValue::Int(i128::from(rocket.pending_messages)),
        };
        Position {
            value,
            channel: rocket.channel.clone(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

/// A sort key's value for one rocket. `Null` sorts before every value; times compare as
/// instants, whatever offset they were sent with.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum SortValue {
    Null,
    Int(i128),
    Text(Arc<str>),
    Time(DateTime<Utc>),
}

/// A rocket's place in one order: by value, then by channel.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Position {
    pub value: SortValue,
    pub channel: Channel,
}

/// A validated `GET /rockets` request.
#[derive(Clone, PartialEq, Debug)]
pub struct ListQuery {
    pub sort_by: SortKey,
    pub order: Order,
    pub status: Option<Status>,
    /// Only rockets stalled behind a gap (`pendingMessages` > 0); the order is then by
    /// `pendingMessages`, so the filter is a range of the order: see [`ListQuery::floor`].
    pub stalled: bool,
    pub limit: usize,
    /// Start strictly after this position (from the cursor).
    pub after: Option<Position>,
    /// Only rockets whose channel starts with this (`channelPrefix`); the order is then by
    /// channel, so the prefix is a range of the order.
    pub prefix: Option<Arc<str>>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            sort_by: SortKey::Channel,
            order: Order::Asc,
            status: None,
            stalled: false,
            limit: DEFAULT_LIMIT,
            after: None,
            prefix: None,
        }
    }
}

/// One page of rockets and where the next one starts, and the store's totals when it counts
/// them in the same read.
#[derive(Clone, PartialEq, Debug)]
pub struct RocketPage {
    pub rockets: Vec<Rocket>,
    pub next: Option<Position>,
    pub totals: Option<Totals>,
}

/// How many rockets the store holds, by status, and how many are stalled behind a gap.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
pub struct Totals {
    pub rockets: u64,
    pub pending: u64,
    pub launched: u64,
    pub exploded: u64,
    pub stalled: u64,
}

impl Totals {
    /// Counts one more rocket.
    pub fn count(&mut self, rocket: &Rocket) {
        self.rockets += 1;
        *match rocket.status {
            Status::Pending => &mut self.pending,
            Status::Launched => &mut self.launched,
            Status::Exploded => &mut self.exploded,
        } += 1;
        self.stalled += u64::from(rocket.pending_messages > 0);
    }
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, other: Totals) {
        self.rockets += other.rockets;
        self.pending += other.pending;
        self.launched += other.launched;
        self.exploded += other.exploded;
        self.stalled += other.stalled;
    }
}

/// What the cursor carries: the position, and the query it belongs to.
#[derive(Serialize, Deserialize)]
struct CursorBody {
    #[serde(rename = "s")]
    sort_by: SortKey,
    #[serde(rename = "o")]
    order: Order,
    #[serde(rename = "f")]
    status: Option<Status>,
    #[serde(rename = "w", default, skip_serializing_if = "std::ops::Not::not")]
    stalled: bool,
    #[serde(rename = "p")]
    after: Position,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    prefix: Option<Arc<str>>,
}

impl ListQuery {
    /// Reads the query string parameters; unknown parameters are ignored.
    pub fn from_params<'a>(
        param: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<ListQuery, ValidationError> {
        let mut query = ListQuery::default();
        if let Some(raw) = param("sortBy") {
            query.sort_by = SortKey::parse(raw).ok_or_else(|| {
                let keys: Vec<_> = SortKey::ALL.iter().map(|k| k.as_str()).collect();
                ValidationError::invalid("sortBy", format!("must be one of {}", keys.join(", ")))
            })?;
        }
        if let Some(raw) = param("order") {
            query.order = match raw {
                "asc" => Order::Asc,
                "desc" => Order::Desc,
                _ => return Err(ValidationError::invalid("order", "must be asc or desc")),
            };
        }
        if let Some(raw) = param("status") {
            query.status = Some(Status::parse(raw).ok_or_else(|| {
                ValidationError::invalid("status", "must be one of pending, launched, exploded")
            })?);
        }
        if let Some(raw) = param("stalled") {
            query.stalled = match raw {
                "true" => true,
                "false" => false,
                _ => return Err(ValidationError::invalid("stalled", "must be true or false")),
            };
        }
        if query.stalled {
            match param("sortBy") {
                None => query.sort_by = SortKey::PendingMessages,
                Some(_) if query.sort_by == SortKey::PendingMessages => {}
                Some(_) => {
                    return Err(ValidationError::invalid(
                        "stalled",
                        "lists rockets by pendingMessages: use it without sortBy, or with \
                         sortBy=pendingMessages",
                    ));
                }
            }
        }
        if let Some(raw) = param("channelPrefix") {
            let invalid = |reason: &str| ValidationError::invalid("channelPrefix", reason);
            Channel::parse(raw).map_err(|reason| invalid(&reason))?;
            if query.stalled || param("sortBy").is_some_and(|_| query.sort_by != SortKey::Channel) {
                return Err(invalid(
                    "lists rockets by channel: use it without sortBy and stalled, or with \
                     sortBy=channel",
                ));
            }
            query.sort_by = SortKey::Channel;
            query.prefix = Some(raw.into());
        }
        if let Some(raw) = param("limit") {
            query.limit = parse_limit(raw, "limit", MAX_LIMIT)?;
        }
        if let Some(raw) = param("cursor") {
            query.after = Some(query.decode_cursor(raw)?);
        }
        Ok(query)
    }

    /// The opaque token that continues this query after `position`.
    pub fn cursor(&self, position: &Position) -> String {
        let body = CursorBody {
            sort_by: self.sort_by,
            order: self.order,
            status: self.status,
            stalled: self.stalled,
            after: position.clone(),
            prefix: self.prefix.clone(),
        };
        let body = serde_json::to_vec(&body).expect("cursor serialises");
        format!("{CURSOR_VERSION}{}", URL_SAFE_NO_PAD.encode(&body))
    }

    fn decode_cursor(&self, raw: &str) -> Result<Position, ValidationError> {
        let not_ours = || ValidationError::invalid("cursor", "is not a cursor this API issued");
        if raw.len() > MAX_CURSOR_LEN {
            return Err(not_ours());
        }
        let body = raw.strip_prefix(CURSOR_VERSION).ok_or_else(not_ours)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| not_ours())?;
        let body: CursorBody = serde_json::from_slice(&body).map_err(|_| not_ours())?;
        if (
            body.sort_by,
            body.order,
            body.status,
            body.stalled,
            &body.prefix,
        ) != (
            self.sort_by,
            self.order,
            self.status,
            self.stalled,
            &self.prefix,
        ) {
            return Err(ValidationError::invalid(
                "cursor",
                "belongs to a different sortBy, order, status, stalled or channelPrefix",
            ));
        }
        if !self.sort_by.can_hold(&body.after.value) {
            return Err(not_ours());
        }
        Ok(body.after)
    }

    /// Whether a rocket at `position` in this query's order is listed after its cursor.
    fn lists(&self, rocket: &Rocket, position: &Position) -> bool {
        self.status.is_none_or(|status| rocket.status == status)
            && (self.prefix.as_deref()).is_none_or(|p| rocket.channel.as_str().starts_with(p))
            && self.floor().is_none_or(|floor| *position >= floor)
            && self.after.as_ref().is_none_or(|after| match self.order {
                Order::Asc => position > after,
                Order::Desc => position < after,
            })
    }

    /// The first `limit + 1` of `rockets` this query lists, in its order: what a page is cut
    /// from. `rockets` may come in any order and in parts: the best of the parts' bests are the
    /// best of the whole.
    pub fn best(&self, rockets: impl IntoIterator<Item = Rocket>) -> Vec<Rocket> {
        let mut listed: Vec<(Position, Rocket)> = rockets
            .into_iter()
            .map(|rocket| (self.sort_by.position(&rocket), rocket))
            .filter(|(position, rocket)| self.lists(rocket, position))
            .collect();
        let in_order = |a: &(Position, Rocket), b: &(Position, Rocket)| match self.order {
            Order::Asc => a.0.cmp(&b.0),
            Order::Desc => b.0.cmp(&a.0),
        };
        let want = self.limit + 1;
        if listed.len() > want {
            listed.select_nth_unstable_by(want - 1, in_order);
            listed.truncate(want);
        }
        listed.sort_unstable_by(in_order);
        listed.into_iter().map(|(_, rocket)| rocket).collect()
    }

    /// The page this query asks for, from every rocket that may be listed, in any order.
    pub fn page_of(&self, rockets: impl IntoIterator<Item = Rocket>) -> RocketPage {
        let mut rockets = self.best(rockets);
        let next = (rockets.len() > self.limit).then(|| {
            rockets.truncate(self.limit);
            self.sort_by
                .position(rockets.last().expect("limit is at least 1"))
        });
        RocketPage {
            rockets,
            next,
            totals: None,
        }
    }

    /// The lowest position this query lists, when it lists only part of its order: for
    /// `stalled`, the first rocket with one pending message (`-` is the smallest channel).
    pub fn floor(&self) -> Option<Position> {
        self.stalled.then(|| Position {
            value: SortValue::Int(1),
            channel: Channel::parse("-").expect("a valid channel"),
        })
    }
}

/// An integer page size between 1 and `max`.
pub fn parse_limit(raw: &str, field: &'static str, max: usize) -> Result<usize, ValidationError> {
    match raw.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ValidationError::invalid(
            field,
            format!("must be an integer from 1 to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn query(pairs: &[(&str, &str)]) -> Result<ListQuery, ValidationError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ListQuery::from_params(|k| map.get(k).map(String::as_str))
    }

    #[test]
    fn defaults() {
        assert_eq!(query(&[]).unwrap(), ListQuery::default());
        assert_eq!(query(&[("unknown", "x")]).unwrap(), ListQuery::default());
    }

    #[test]
    fn every_parameter_is_checked_and_named() {
        for (name, bad) in [
            ("sortBy", "velocity"),
            ("order", "up"),
            ("status", "landed"),
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "ten"),
            ("cursor", "!!!"),
            ("cursor", "e30"),
        ] {
            let err = query(&[(name, bad)]).unwrap_err();
            assert_eq!(err.field(), name, "{name}={bad}");
            assert_eq!(err.code(), "invalid_value");
        }
        assert_eq!(query(&[("limit", "1000")]).unwrap().limit, 1000);
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_its_query() {
        let q = query(&[
            ("sortBy", "speed"),
            ("order", "desc"),
            ("status", "launched"),
        ])
        .unwrap();
        let position = Position {
            value: SortValue::Int(-5),
            channel: Channel::parse("abc").unwrap(),
        };
        let token = q.cursor(&position);
        let again = query(&[
            ("sortBy", "speed"),
            ("order", "desc"),
            ("status", "launched"),
            ("cursor", &token),
        ])
        .unwrap();
        assert_eq!(again.after, Some(position));
        let err = query(&[("sortBy", "speed"), ("cursor", &token)]).unwrap_err();
        assert_eq!(err.field(), "cursor");
    }

    #[test]
    fn stalled_lists_by_pending_messages_from_one_up() {
        let q = query(&[("stalled", "true")]).unwrap();
        assert!(q.stalled);
        assert_eq!(q.sort_by, SortKey::PendingMessages);
        let floor = q.floor().unwrap();
        let mut rocket = Rocket::new(Channel::parse("-").unwrap(), Utc::now());
        assert!(SortKey::PendingMessages.position(&rocket) < floor);
        rocket.pending_messages = 1;
        assert_eq!(SortKey::PendingMessages.position(&rocket), floor);
        let with_sort = query(&[("stalled", "true"), ("sortBy", "pendingMessages")]).unwrap();
        assert_eq!(with_sort, q);
        assert_eq!(query(&[("stalled", "false")]).unwrap().floor(), None);
        for bad in [
            &[("stalled", "yes")][..],
            &[("stalled", "true"), ("sortBy", "speed")],
        ] {
            assert_eq!(query(bad).unwrap_err().field(), "stalled", "{bad:?}");
        }
        // A cursor of the stalled listing continues only it.
        let position = SortKey::PendingMessages.position(&rocket);
        let token = q.cursor(&position);
        let unfiltered = query(&[("sortBy", "pendingMessages"), ("cursor", &token)]);
        assert_eq!(unfiltered.unwrap_err().field(), "cursor");
        let again = query(&[("stalled", "true"), ("cursor", &token)]).unwrap();
        assert_eq!(again.after, Some(position));
    }

    #[test]
    fn nulls_sort_first_and_channel_breaks_ties() {
        let a = Position {
            value: SortValue::Null,
            channel: Channel::parse("z").unwrap(),
        };
        let b = Position {
            value: SortValue::Text("A".into()),
            channel: Channel::parse("a").unwrap(),
        };
        let c = Position {
            value: SortValue::Text("A".into()),
            channel: Channel::parse("b").unwrap(),
        };
        assert!(a < b && b < c);
    }

    #[test]
    fn cursors_stay_small_and_a_forged_one_is_refused() {
        let mut rocket = Rocket::new(Channel::parse(&"c".repeat(128)).unwrap(), Utc::now());
        rocket.mission = Some("\u{0}".repeat(60_000).into());
        let q = query(&[("sortBy", "mission")]).unwrap();
        let cursor = q.cursor(&SortKey::Mission.position(&rocket));
        assert!(cursor.len() < 2_500, "{} characters", cursor.len());
        let back = query(&[("sortBy", "mission"), ("cursor", &cursor)]).unwrap();
        assert_eq!(back.after, Some(SortKey::Mission.position(&rocket)));

        let body = cursor.strip_prefix("v1.").unwrap();
        // A cursor written by hand: the query's sort key, and a position's value and channel.
        let forged = |sort_by: &str, value: &str, channel: &str| {
            let body = format!(
                r#"{{"s":"{sort_by}","o":"asc","f":null,"p":{{"value":{value},"channel":"{channel}"}}}}"#
            );
            format!("v1.{}", URL_SAFE_NO_PAD.encode(body))
        };
        let long = "x".repeat(MAX_SORT_TEXT_CHARS + 1);
        for (sort_by, bad) in [
            ("mission", format!("v2.{body}")),
            ("mission", body.to_string()),
            ("mission", format!("v1.{}", &body[..body.len() / 2])),
            ("mission", format!("v1.{body}!")),
            ("mission", "A".repeat(5_000)),
            ("speed", forged("speed", r#"{"Text": "x"}"#, "a")),
            (
                "speed",
                forged("speed", &format!(r#"{{"Int":{}}}"#, i128::MAX), "a"),
            ),
            ("status", forged("status", r#"{"Int": 3}"#, "a")),
            (
                "lastMessageNumber",
                forged("lastMessageNumber", r#"{"Int": -1}"#, "a"),
            ),
            (
                "pendingMessages",
                forged("pendingMessages", r#"{"Int": -1}"#, "a"),
            ),
            (
                "mission",
                forged("mission", &format!(r#"{{"Text":"{long}"}}"#), "a"),
            ),
            ("channel", forged("channel", r#"{"Int": 1}"#, "a")),
            ("launchTime", forged("launchTime", r#"{"Int": 1}"#, "a")),
            ("speed", forged("speed", r#"{"Int": 1}"#, "not a channel")),
        ] {
            let err = query(&[("sortBy", sort_by), ("cursor", &bad)]).unwrap_err();
            assert_eq!(err.field(), "cursor", "{sort_by} {bad}");
        }
        // A cursor written by hand for a place the order can hold is as good as one issued.
        let made = forged("speed", r#"{"Int": -7}"#, "a");
        let continued = query(&[("sortBy", "speed"), ("cursor", &made)]).unwrap();
        assert_eq!(continued.after.unwrap().value, SortValue::Int(-7));
    }

    proptest::proptest! {
        /// Pages chosen from the rockets in any order, and from any split of them into parts,
        /// walk every listed rocket once, in the query's order.
        #[test]
        fn pages_from_any_order_and_any_parts_walk_the_sorted_whole(
            rockets in proptest::collection::vec((0i64..4, 0usize..3, 0u64..3, proptest::option::of(0u8..3)), 0..40),
            sort_by in 0usize..SortKey::ALL.len(),
            desc: bool,
            status in proptest::option::of(0usize..3),
            stalled: bool,
            limit in 1usize..6,
            parts in 1usize..4,
            seed: u64,
        ) {
            let rockets: Vec<Rocket> = rockets
                .into_iter()
                .enumerate()
                .map(|(i, (speed, status, pending, mission))| {
                    let mut rocket = Rocket::new(Channel::parse(&format!("r{i}")).unwrap(), Utc::now());
                    rocket.speed = speed;
                    rocket.status = Status::ALL[status];
                    rocket.pending_messages = pending;
                    rocket.mission = mission.map(|m| format!("m{m}").into());
                    rocket
                })
                .collect();
            let mut query = ListQuery {
                sort_by: if stalled { SortKey::PendingMessages } else { SortKey::ALL[sort_by] },
                order: if desc { Order::Desc } else { Order::Asc },
                status: status.map(|s| Status::ALL[s]),
                stalled,
                limit,
                after: None,
                prefix: None,
            };
            let mut wanted: Vec<&Rocket> = rockets
                .iter()
                .filter(|r| query.status.is_none_or(|s| r.status == s))
                .filter(|r| !stalled || r.pending_messages > 0)
                .collect();
            wanted.sort_by_key(|r| query.sort_by.position(r));
            if desc {
                wanted.reverse();
            }
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut walked = Vec::new();
            for _ in 0..=rockets.len() {
                let mut shuffled = rockets.clone();
                rng.shuffle(&mut shuffled);
                let chunk = shuffled.len().div_ceil(parts).max(1);
                let bests = shuffled.chunks(chunk).flat_map(|part| query.best(part.to_vec()));
                let page = query.page_of(bests.collect::<Vec<_>>());
                proptest::prop_assert!(page.rockets.len() <= limit);
                walked.extend(page.rockets.into_iter().map(|r| r.channel));
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
            let wanted: Vec<Channel> = wanted.into_iter().map(|r| r.channel.clone()).collect();
            proptest::prop_assert_eq!(walked, wanted);
        }
    }
}
