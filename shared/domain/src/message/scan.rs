//! The usual shape of a message body, read in one pass by hand: an object whose `metadata` and
//! `message` objects hold only the contract's fields, each a string without escapes, a number,
//! `true`, `false` or `null`. It gives the [`WireRoot`] serde_json would give, or `None` for
//! anything else (an escape, an unknown or repeated key, an array, malformed JSON), which
//! serde_json then reads and, when it is wrong, explains. Every new message is read here, and
//! serde_json's general reader cost more than the rest of its validation together.

use super::wire::{Nested, Raw, WireBody, WireMetadata, WireRoot};

const METADATA: [&str; 4] = ["channel", "messageNumber", "messageTime", "messageType"];
const BODY: [&str; 6] = [
    "type",
    "launchSpeed",
    "mission",
    "by",
    "newMission",
    "reason",
];

/// The body's fields, when the body has the usual shape.
pub(super) fn fields(body: &str) -> Option<WireRoot<'_>> {
    let mut scanner = Scanner { text: body, at: 0 };
    let (mut metadata, mut message) = (None, None);
    scanner.object(|scanner, key| {
        let first = match key {
            "metadata" => metadata.replace(scanner.nested(&METADATA)?).is_none(),
            "message" => message.replace(scanner.nested(&BODY)?).is_none(),
            _ => false,
        };
        first.then_some(())
    })?;
    scanner.whitespace();
    if scanner.at != body.len() {
        return None;
    }
    Some(WireRoot {
        metadata: metadata
            .unwrap_or_default()
            .map(|[channel, number, time, kind]| WireMetadata {
                channel,
                message_number: number,
                message_time: time,
                message_type: kind,
            }),
        message: message
            .unwrap_or_default()
            .map(|[kind, speed, mission, by, new, reason]| WireBody {
                rocket_type: kind,
                launch_speed: speed,
                mission,
                by,
                new_mission: new,
                reason,
            }),
    })
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    /// JSON's whitespace, which is all serde_json skips.
    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// An object, handing each member's key to `member`, which reads the value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.whitespace();
        if !self.eat(b'{') {
            return None;
        }
        self.whitespace();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.whitespace();
            if !self.eat(b':') {
                return None;
            }
            self.whitespace();
            member(self, key)?;
            self.whitespace();
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
            self.whitespace();
        }
    }

    /// A value that should be an object of the named fields: each field's raw value in the
    /// order of `names`.
    fn nested<const N: usize>(&mut self, names: &[&str; N]) -> Option<Nested<[Raw<'a>; N]>> {
        match self.peek()? {
            b'{' => {
                let mut values: [Option<Raw<'a>>; N] = [None; N];
                self.object(|scanner, key| {
                    let slot = names.iter().position(|name| *name == key)?;
                    let value = scanner.value()?;
                    values[slot].replace(value).is_none().then_some(())
                })?;
                Some(Nested::Object(values.map(Option::flatten)))
            }
            // A number here is left to serde_json, which reads it as a float and refuses one
            // out of range.
            b'-' | b'0'..=b'9' => None,
            _ => Some(match self.value()? {
                None => Nested::Absent,
                Some(_) => Nested::NotAnObject,
            }),
        }
    }

    /// A string, a number, `true`, `false` or `null` (`None`), as its raw JSON text.
    fn value(&mut self) -> Option<Raw<'a>> {
        let start = self.at;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'-' | b'0'..=b'9' => self.number()?,
            b't' => self.word("true")?,
            b'f' => self.word("false")?,
            b'n' => {
                self.word("null")?;
                return Some(None);
            }
            _ => return None,
        }
        Some(Some(&self.text[start..self.at]))
    }

    /// A string without escapes or control characters: its content.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let rest = &self.text.as_bytes()[start..];
        let length = plain_run(rest);
        if rest.get(length) != Some(&b'"') {
            return None;
        }
        self.at = start + length + 1;
        Some(&self.text[start..start + length])
    }

    /// A number in JSON's grammar: `-`, an integer part without leading zeros, a fraction, an
    /// exponent.
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    fn word(&mut self, word: &str) -> Option<()> {
        let found = self.text[self.at..].starts_with(word);
        found.then(|| self.at += word.len())
    }
}

/// How many bytes come before the first quote, backslash or control character (all of them
/// when there is none), eight at a time: a string's bytes are most of a body's.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = ONES * 0x80;
    // A byte of `word - ONES * n` with its high bit set where `word`'s is clear is a byte below
    // `n`; the lowest such byte is always a true one, since a borrow only runs upwards.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let found = (below(word, 0x20)
            | below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1))
            & HIGH_BITS;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let stop = |b: &u8| *b == b'"' || *b == b'\\' || *b < 0x20;
    at + bytes[at..]
        .iter()
        .position(stop)
        .unwrap_or(bytes.len() - at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_serde(body: &str) -> Option<WireRoot<'_>> {
        serde_json::from_str(body).ok()
    }

    #[test]
    fn the_usual_bodies_are_read_here_as_serde_json_reads_them() {
        for body in [
            r#"{"metadata":{"channel":"a","messageNumber":1,"messageTime":"2022-02-02T19:39:05+01:00","messageType":"RocketLaunched"},"message":{"type":"Falcon-9","launchSpeed":500,"mission":"ARTEMIS"}}"#,
            "{\n  \"message\" : { \"by\" : -3.5e+2 } ,\n  \"metadata\" : { \"messageNumber\" : 0 }\n}\n",
            r#"{"metadata":null,"message":"x"}"#,
            r#"{"metadata":{"channel":null,"messageType":true,"messageTime":false}}"#,
            r#"{"metadata":{},"message":{}}"#,
            "{}",
            r#"{"metadata":{"channel":"é😀 "}}"#,
        ] {
            let scanned = fields(body);
            assert!(scanned.is_some(), "{body}");
            assert_eq!(scanned, by_serde(body), "{body}");
        }
    }

    #[test]
    fn anything_else_is_left_to_serde_json() {
        for body in [
            r#"{"metadata":{"channel":"a\"b"}}"#,
            r#"{"metadata":{"channel":"a"},"other":1}"#,
            r#"{"metadata":{"channel":"a","channel":"b"}}"#,
            r#"{"metadata":{"channel":null,"channel":"b"}}"#,
            r#"{"metadata":{},"metadata":{}}"#,
            r#"{"metadata":{"colour":"red"}}"#,
            r#"{"metadata":{"channel":["a"]}}"#,
            r#"{"metadata":[]}"#,
            r#"{"metadata":1e999}"#,
            r#"{"metadata":{"messageNumber":01}}"#,
            r#"{"metadata":{"messageNumber":1.}}"#,
            r#"{"metadata":{"messageNumber":-}}"#,
            r#"{"metadata":{"messageNumber":1e}}"#,
            r#"{"metadata":{"channel":"a"}} x"#,
            r#"{"metadata":{"channel":"a"},}"#,
            r#"{"metadata":{"channel":"a"}"#,
            "{\"metadata\":{\"channel\":\"a\tb\"}}",
            "\u{c}{}",
            r#"{"metadata":{"channel":tru}}"#,
            r#"{"metadata":{"channel":nulll}}"#,
        ] {
            assert_eq!(fields(body), None, "{body}");
        }
    }

    /// A body built from pieces the scanner takes and pieces it leaves to serde_json.
    fn body() -> impl Strategy<Value = String> {
        let space = prop::sample::select(vec!["", " ", "\n", "\t", "\r\n  ", "\u{c}"]);
        let keys = METADATA.iter().chain(&BODY).copied();
        let key = prop::sample::select(keys.chain(["other", "chan\\u006eel"]).collect::<Vec<_>>());
        let value = prop_oneof![
            "\"[ -~é\u{1F680}\t\\\\]{0,6}\"",
            "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,4})?",
            "[-+.0-9eE]{1,5}",
            prop::sample::select(vec![
                "true",
                "false",
                "null",
                "nul",
                "[]",
                "{}",
                "[1,\"a\"]",
                "1e999",
            ])
            .prop_map(String::from),
        ];
        let member = (space.clone(), key, space.clone(), value)
            .prop_map(|(s, k, t, v)| format!("{s}\"{k}\"{t}:{s}{v}{t}"));
        let object =
            prop::collection::vec(member, 0..5).prop_map(|m| format!("{{{}}}", m.join(",")));
        let nested = prop_oneof![
            object,
            prop::sample::select(vec!["null", "\"x\"", "7", "[]", "true"]).prop_map(String::from),
        ];
        let root_key = prop::sample::select(vec!["metadata", "message", "other"]);
        let root_member = (space.clone(), root_key, space.clone(), nested)
            .prop_map(|(s, k, t, v)| format!("{s}\"{k}\"{t}:{t}{v}{s}"));
        (
            prop::collection::vec(root_member, 0..4),
            space,
            prop::sample::select(vec!["", "", "", ",", "}", "x"]),
        )
            .prop_map(|(members, space, tail)| {
                format!("{space}{{{}}}{space}{tail}", members.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn a_plain_run_ends_at_the_first_quote_backslash_or_control_character(
            bytes in prop::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, 0x20u8..=0xff],
                0..40,
            ),
        ) {
            let naive = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len());
            prop_assert_eq!(plain_run(&bytes), naive);
        }

        /// Whatever the scanner reads, serde_json reads the same way.
        #[test]
        fn the_scanner_agrees_with_serde_json(body in body()) {
            let scanned = fields(&body);
            if scanned.is_some() {
                prop_assert_eq!(&scanned, &by_serde(&body));
            }
        }

        /// Cutting or changing one byte of a body never makes the two disagree.
        #[test]
        fn a_damaged_body_is_read_alike_or_left_to_serde_json(
            body in body(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]:,\" \\-0e.an".to_vec()),
            cut in any::<bool>(),
        ) {
            let mut bytes = body.into_bytes();
            let at = at.index(bytes.len() + 1);
            if cut && at < bytes.len() {
                bytes.remove(at);
            } else {
                bytes.insert(at, byte);
            }
            if let Ok(body) = std::str::from_utf8(&bytes) {
                let scanned = fields(body);
                if scanned.is_some() {
                    prop_assert_eq!(&scanned, &by_serde(body));
                }
            }
        }
    }
}
