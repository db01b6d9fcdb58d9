//! The listing indexes' sort values: an order-preserving string for each position, read back
//! where a page was cut.

use std::collections::HashMap;
use std::fmt::Write as _;

use rockets::listing::{ListQuery, Position, RocketPage, SortKey, SortValue};
use rockets::message::Channel;
use rockets::ports::StoreError;
use rockets::rocket::Rocket;

/// Longest encoded text kept in an index value: with the terminator, a null/value marker and a
/// channel of at most 128 bytes, the key stays well under DynamoDB's 1,024-byte cap on an
/// index sort key.
const MAX_INDEXED_TEXT: usize = 512;

/// The attribute that holds a sort key's index value.
pub fn index_attribute(key: SortKey) -> String {
    format!("by_{}", key.as_str())
}

/// The global secondary index for a sort key.
pub fn index_name(key: SortKey) -> String {
    format!("by-{}", key.as_str())
}

/// An order-preserving string for a position: `0` for null, `1` and the value otherwise,
/// then the channel. Integers are fixed-width offset hex, times fixed-width UTC, and text is
/// escaped and terminated so that no value is a prefix of another.
pub fn index_value(position: &Position) -> String {
    let mut out = String::with_capacity(64);
    match &position.value {
        SortValue::Null => out.push('0'),
        SortValue::Int(i) => {
            let offset = (*i as u128) ^ (1u128 << 127);
            let _ = write!(out, "1{offset:032x}");
        }
        SortValue::Text(t) => {
            out.push('1');
            // \u{1} escapes the two characters below \u{2}; \u{1}\u{1} ends the value and
            // sorts before anything a value can continue with. The cut is made on the encoded
            // text, which escaping can make twice as long as the value.
            let start = out.len();
            for c in t.chars() {
                let escaped = match c {
                    '\u{0}' => "\u{1}\u{2}",
                    '\u{1}' => "\u{1}\u{3}",
                    _ => "",
                };
                let len = if escaped.is_empty() { c.len_utf8() } else { 2 };
                if out.len() - start + len > MAX_INDEXED_TEXT {
                    break;
                }
                if escaped.is_empty() {
                    out.push(c);
                } else {
                    out.push_str(escaped);
                }
            }
            out.push_str("\u{1}\u{1}");
        }
        SortValue::Time(t) => {
            let _ = write!(out, "1{}", t.format("%Y%m%dT%H%M%S%.9f"));
        }
    }
    out.push_str(position.channel.as_str());
    out
}

/// A page from the index entries it was cut from and the rockets read after them.
///
/// A rocket may change between the two reads. The page shows it as read, and only if it still
/// has the status the query asked for; the next page starts after the last *entry*, where this
/// one was cut, so a walk meets every rocket once whatever changed meanwhile.
pub(super) fn page_from_entries(
    query: &ListQuery,
    entries: &[(String, String)],
    more: bool,
    mut fetched: HashMap<String, Rocket>,
) -> Result<RocketPage, StoreError> {
    let rockets = entries
        .iter()
        .filter_map(|(_, channel)| fetched.remove(channel))
        .filter(|rocket| query.status.is_none_or(|status| rocket.status == status))
        .collect();
    let next = match entries.last() {
        Some((value, channel)) if more => Some(
            entry_position(query.sort_by, value, channel).ok_or_else(|| {
                StoreError::Failed(format!("unreadable index value {value:?}").into())
            })?,
        ),
        _ => None,
    };
    Ok(RocketPage { rockets, next })
}

/// The position an index value encodes, read back as [`index_value`] wrote it.
fn entry_position(key: SortKey, value: &str, channel: &str) -> Option<Position> {
    let channel = Channel::parse(channel).ok()?;
    let encoded = value.strip_suffix(channel.as_str())?;
    let value = match (key, encoded) {
        (_, "0") => SortValue::Null,
        (SortKey::Channel, _) => return None,
        (
            SortKey::Speed
            | SortKey::Status
            | SortKey::LastMessageNumber
            | SortKey::PendingMessages,
            encoded,
        ) => {
            let offset = u128::from_str_radix(encoded.strip_prefix('1')?, 16).ok()?;
            SortValue::Int((offset ^ (1u128 << 127)) as i128)
        }
        (SortKey::LaunchTime | SortKey::LastMessageTime, encoded) => {
            let time = chrono::NaiveDateTime::parse_from_str(
                encoded.strip_prefix('1')?,
                "%Y%m%dT%H%M%S%.9f",
            )
            .ok()?;
            SortValue::Time(time.and_utc())
        }
        (SortKey::Type | SortKey::Mission, encoded) => {
            let escaped = encoded.strip_prefix('1')?.strip_suffix("\u{1}\u{1}")?;
            let mut text = String::with_capacity(escaped.len());
            let mut chars = escaped.chars();
            while let Some(c) = chars.next() {
                text.push(match (c, c == '\u{1}') {
                    (_, true) => match chars.next()? {
                        '\u{2}' => '\u{0}',
                        '\u{3}' => '\u{1}',
                        _ => return None,
                    },
                    (c, false) => c,
                });
            }
            SortValue::Text(text.into())
        }
    };
    Some(Position { value, channel })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use rockets::rocket::Status;

    fn position(value: SortValue, channel: &str) -> Position {
        Position {
            value,
            channel: Channel::parse(channel).unwrap(),
        }
    }
    fn assert_encoding_preserves_order(values: Vec<SortValue>) {
        let mut positions: Vec<Position> = ["a", "b", "zz"]
            .into_iter()
            .flat_map(|c| values.iter().map(move |v| position(v.clone(), c)))
            .chain(["a", "z"].map(|c| position(SortValue::Null, c)))
            .collect();
        positions.sort();
        let encoded: Vec<String> = positions.iter().map(index_value).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
    }
    #[test]
    fn index_values_sort_like_positions() {
        assert_encoding_preserves_order(
            [i128::from(i64::MIN), -5, 0, 3, i128::from(u64::MAX)]
                .map(SortValue::Int)
                .to_vec(),
        );
        assert_encoding_preserves_order(
            [
                "Apollo",
                "Apol",
                "Apol\u{1}x",
                "Apol\u{0}",
                "\u{0}",
                "Ärtemis",
                "apollo",
            ]
            .map(|t| SortValue::Text(t.into()))
            .to_vec(),
        );
        assert_encoding_preserves_order(
            [-86_400, 0, 1, 1_700_000_000]
                .map(|secs| SortValue::Time(Utc.timestamp_opt(secs, 0).unwrap()))
                .to_vec(),
        );
    }
    #[test]
    fn long_text_is_cut_to_fit_an_index_key_after_escaping() {
        for text in [
            "é".repeat(2_000),
            "\u{0}".repeat(2_000),
            "\u{1}a".repeat(1_000),
            "😀".repeat(600),
        ] {
            let long = position(SortValue::Text(text.into()), &"c".repeat(128));
            assert!(index_value(&long).len() <= 1 + MAX_INDEXED_TEXT + 2 + 128);
        }
    }
    #[test]
    fn an_index_value_reads_back_as_its_position() {
        let channel = "c-1:x";
        let positions = [
            (SortKey::Channel, SortValue::Null),
            (SortKey::Speed, SortValue::Int(-42)),
            (SortKey::Speed, SortValue::Int(i128::from(i64::MAX))),
            (SortKey::Status, SortValue::Int(2)),
            (SortKey::LastMessageNumber, SortValue::Int(7)),
            (SortKey::Mission, SortValue::Null),
            (SortKey::Mission, SortValue::Text("a\u{0}b\u{1}c é".into())),
            (SortKey::Type, SortValue::Text("Falcon-9".into())),
            (
                SortKey::LaunchTime,
                SortValue::Time("2022-02-02T19:39:05.863370+01:00".parse().unwrap()),
            ),
        ];
        for (key, value) in positions {
            let position = position(value, channel);
            let encoded = index_value(&position);
            assert_eq!(
                entry_position(key, &encoded, channel),
                Some(position),
                "{key:?}"
            );
        }
        assert_eq!(entry_position(SortKey::Speed, "1zz", "c"), None);
    }
    #[test]
    fn the_next_page_starts_where_the_index_was_cut_whatever_changed_since() {
        let launched = |name: &str, speed: i64| Rocket {
            speed,
            status: Status::Launched,
            ..Rocket::new(Channel::parse(name).unwrap(), chrono::Utc::now())
        };
        let query = ListQuery {
            sort_by: SortKey::Speed,
            status: Some(Status::Launched),
            limit: 2,
            ..ListQuery::default()
        };
        let (a, b) = (launched("a", 10), launched("b", 20));
        let entries: Vec<(String, String)> = [&a, &b]
            .iter()
            .map(|r| {
                (
                    index_value(&SortKey::Speed.position(r)),
                    r.channel.to_string(),
                )
            })
            .collect();
        // Between the index read and the re-read, b sped up and a exploded.
        let mut faster = b.clone();
        faster.speed = 1_000;
        let mut exploded = a.clone();
        exploded.status = Status::Exploded;
        let fetched = HashMap::from([
            ("a".to_string(), exploded),
            ("b".to_string(), faster.clone()),
        ]);
        let page = page_from_entries(&query, &entries, true, fetched).unwrap();
        assert_eq!(
            page.rockets,
            [faster],
            "a no longer has the status asked for"
        );
        assert_eq!(
            page.next,
            Some(SortKey::Speed.position(&b)),
            "after the entry, not the re-read rocket"
        );
    }
}
