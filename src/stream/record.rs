//! One SAT record: a line of upstream NDJSON scanned into borrowed raw values.
//!
//! Nothing is copied or re-encoded: each known field keeps the exact bytes the upstream sent, so
//! what satgate writes is byte-identical to what it read. Only the fields a decision needs
//! (`userId`, `messageType`, `deviceId`) are decoded. Anything surprising makes the whole line an
//! error: invalid UTF-8, not an object, a duplicate key (also after unescaping, so
//! `"pay\u006coad"` is `payload`), a lone surrogate escape, nesting deeper than
//! [`super::scan::MAX_DEPTH`], or a known field of the wrong type.
//!
//! The hot path is the scanner in [`super::scan`] (its grammar is written there); [`reference`]
//! is the serde_json parser it replaced, kept to test the scanner against.

use std::borrow::Cow;

use crate::model::{Class, Eui64, MessageType};

/// The fields satgate may ever write, in docs/contract.md §1 order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Field {
    RecordId,
    Timestamp,
    MessageType,
    Srv,
    SrvTitle,
    AlertCode,
    ResponseCode,
    DeviceId,
    DeviceType,
    UserRole,
    UserId,
    RequestId,
    Metadata,
    Payload,
}

/// What a known field may hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    String,
    NullableString,
    NullableObject,
}

impl Field {
    pub const ALL: [Field; 14] = [
        Field::RecordId,
        Field::Timestamp,
        Field::MessageType,
        Field::Srv,
        Field::SrvTitle,
        Field::AlertCode,
        Field::ResponseCode,
        Field::DeviceId,
        Field::DeviceType,
        Field::UserRole,
        Field::UserId,
        Field::RequestId,
        Field::Metadata,
        Field::Payload,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Field::RecordId => "recordId",
            Field::Timestamp => "timestamp",
            Field::MessageType => "messageType",
            Field::Srv => "srv",
            Field::SrvTitle => "srvTitle",
            Field::AlertCode => "alertCode",
            Field::ResponseCode => "responseCode",
            Field::DeviceId => "deviceId",
            Field::DeviceType => "deviceType",
            Field::UserRole => "userRole",
            Field::UserId => "userId",
            Field::RequestId => "requestId",
            Field::Metadata => "metadata",
            Field::Payload => "payload",
        }
    }

    pub const fn class(self) -> Class {
        match self {
            Field::UserId | Field::RequestId => Class::Identity,
            Field::Metadata => Class::Metadata,
            Field::Payload => Class::Payload,
            _ => Class::Title,
        }
    }

    fn kind(self) -> Kind {
        match self {
            Field::RecordId | Field::Timestamp | Field::MessageType | Field::UserId => Kind::String,
            Field::Metadata => Kind::NullableObject,
            _ => Kind::NullableString,
        }
    }

    fn required(self) -> bool {
        self.kind() == Kind::String
    }

    pub(super) fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "recordId" => Field::RecordId,
            "timestamp" => Field::Timestamp,
            "messageType" => Field::MessageType,
            "srv" => Field::Srv,
            "srvTitle" => Field::SrvTitle,
            "alertCode" => Field::AlertCode,
            "responseCode" => Field::ResponseCode,
            "deviceId" => Field::DeviceId,
            "deviceType" => Field::DeviceType,
            "userRole" => Field::UserRole,
            "userId" => Field::UserId,
            "requestId" => Field::RequestId,
            "metadata" => Field::Metadata,
            "payload" => Field::Payload,
            _ => return None,
        })
    }
}

/// Why a line is not a usable record. Messages never quote field values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("line is not valid UTF-8")]
    NotUtf8,
    #[error("line is not a JSON object: {0}")]
    Syntax(String),
    #[error("field {0:?} appears more than once")]
    DuplicateKey(String),
    #[error("field {0} has the wrong type")]
    WrongType(&'static str),
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("field {0} is not a valid value: {1}")]
    Invalid(&'static str, String),
    /// Valid JSON, but nested past [`super::scan::MAX_DEPTH`]: a malformed record, not a sign
    /// that the stream is not NDJSON.
    #[error("nesting deeper than {} levels", super::scan::MAX_DEPTH)]
    TooDeep,
}

/// A parsed record. Raw values borrow from the line.
#[derive(Debug)]
pub struct Record<'a> {
    raw: [Option<&'a str>; 14],
    pub user_id: Eui64,
    pub message_type: MessageType,
    /// `None` for a null or absent `deviceId` (non-device requests).
    pub device_id: Option<Eui64>,
}

impl<'a> Record<'a> {
    /// Parses one line (without its `\n`).
    pub fn parse(line: &'a [u8]) -> Result<Self, RecordError> {
        let raw = super::scan::scan(line)?;
        // The scanner validated every string, so decoding cannot fail here.
        Self::check(raw, |v| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .and_then(super::scan::unescape)
        })
    }

    /// The rules on known fields, shared by the scanner and the reference: required fields,
    /// kinds, no raw CR in metadata, and the decoded decision fields. `decode` decodes a raw string
    /// value, quotes included (`None`: not a valid string).
    fn check(raw: [Option<&'a str>; 14], decode: fn(&'a str) -> Option<Cow<'a, str>>) -> Result<Self, RecordError> {
        for f in Field::ALL {
            let Some(v) = raw[f as usize] else {
                if f.required() {
                    return Err(RecordError::Missing(f.name()));
                }
                continue;
            };
            // A raw value is a complete JSON value, so its first byte tells its type.
            let ok = match (f.kind(), v.as_bytes().first()) {
                (_, Some(b'"')) => f.kind() != Kind::NullableObject,
                (Kind::NullableObject, Some(b'{')) => true,
                (Kind::NullableString | Kind::NullableObject, Some(b'n')) => true,
                _ => false,
            };
            if !ok {
                return Err(RecordError::WrongType(f.name()));
            }
        }
        // JSON allows a raw CR as whitespace between tokens, and metadata is copied byte for byte:
        // readers that split lines on any newline would break the output there. Refused, not
        // rewritten, so what is written stays byte-identical to what was read.
        if raw[Field::Metadata as usize].is_some_and(|v| v.as_bytes().contains(&b'\r')) {
            return Err(RecordError::Invalid(
                "metadata",
                "contains a raw carriage return".into(),
            ));
        }
        let string = |f: Field| -> Result<Option<Cow<'a, str>>, RecordError> {
            match raw[f as usize] {
                None | Some("null") => Ok(None),
                Some(v) => decode(v).map(Some).ok_or(RecordError::WrongType(f.name())),
            }
        };
        let user_id = string(Field::UserId)?
            .and_then(|s| Eui64::parse(&s).ok())
            .ok_or(RecordError::Invalid("userId", "not an EUI-64".into()))?;
        let message_type = string(Field::MessageType)?
            .ok_or(RecordError::Missing("messageType"))?
            .parse()
            .map_err(|_| RecordError::Invalid("messageType", "not a SAT message type".into()))?;
        let device_id = match string(Field::DeviceId)? {
            None => None,
            Some(s) => Some(Eui64::parse(&s).map_err(|_| RecordError::Invalid("deviceId", "not an EUI-64".into()))?),
        };
        Ok(Self {
            raw,
            user_id,
            message_type,
            device_id,
        })
    }

    /// The exact bytes of a field's value, if the record has it.
    pub fn raw(&self, f: Field) -> Option<&'a str> {
        self.raw[f as usize]
    }

    /// Which classes have at least one field present in this record.
    pub fn present_classes(&self) -> impl Iterator<Item = Class> + '_ {
        Class::ALL.into_iter().filter(|c| {
            Field::ALL
                .iter()
                .any(|f| f.class() == *c && self.raw[*f as usize].is_some())
        })
    }
}

/// The serde_json parser the scanner replaced: the reference the differential tests and the
/// `record_scan` fuzz target compare the scanner with, and the "old" side of the benchmarks.
/// serde_json checks the JSON and duplicate keys; surrogates and depth are checked after it.
#[doc(hidden)]
pub mod reference {
    use std::borrow::Cow;
    use std::collections::HashSet;
    use std::fmt;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::value::RawValue;

    use super::{Field, Record, RecordError};
    use crate::stream::scan::MAX_DEPTH;

    /// Parses one line the old way, with the scanner's depth rule added.
    pub fn parse(line: &[u8]) -> Result<Record<'_>, RecordError> {
        parse_with(line, true)
    }

    /// The record path exactly as it was before the scanner (no depth rule): the benchmarks'
    /// "old" side.
    pub fn parse_without_depth_rule(line: &[u8]) -> Result<Record<'_>, RecordError> {
        parse_with(line, false)
    }

    fn parse_with(line: &[u8], depth_rule: bool) -> Result<Record<'_>, RecordError> {
        let text = std::str::from_utf8(line).map_err(|_| RecordError::NotUtf8)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let raw = de.deserialize_map(FieldsVisitor).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => classify_data_error(&e),
            _ => RecordError::Syntax(syntax_message(&e)),
        })?;
        de.end().map_err(|e| RecordError::Syntax(syntax_message(&e)))?;
        check_surrogates(line)?;
        if depth_rule {
            // Before the rules on fields, where the scanner finds it.
            check_depth(line)?;
        }
        Record::check(raw.map(|v| v.map(RawValue::get)), decode)
    }

    /// Decodes a raw string value with serde_json (borrowed when it has no escapes).
    fn decode(raw: &str) -> Option<Cow<'_, str>> {
        serde_json::from_str::<Str<'_>>(raw).ok().map(|s| s.0)
    }

    /// Nesting depth of a line serde_json accepted (so brackets inside strings are the only
    /// ones to skip): the record object is depth 1.
    fn check_depth(line: &[u8]) -> Result<(), RecordError> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &c in line {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(RecordError::TooDeep);
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }

    /// serde_json accepts a lone surrogate escape (`"\ud800"`), which is not Unicode and which strict
    /// readers refuse; satgate's output must stay I-JSON (RFC 7493), so such a record is malformed.
    /// Runs on a line serde_json already accepted: there a backslash only ever starts an escape
    /// inside a string, so escapes are found without tracking strings.
    fn check_surrogates(line: &[u8]) -> Result<(), RecordError> {
        let bad = || RecordError::Syntax("lone surrogate escape in a string".into());
        let unit = |at: usize| -> Option<u16> {
            let hex = line.get(at..at + 4)?;
            u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        };
        let mut i = 0;
        while let Some(found) = memchr::memchr(b'\\', &line[i..]) {
            let at = i + found;
            if line.get(at + 1) != Some(&b'u') {
                i = at + 2; // a two-character escape, `\\` included
                continue;
            }
            let high = unit(at + 2).ok_or_else(bad)?;
            i = at + 6;
            match high {
                0xDC00..=0xDFFF => return Err(bad()),
                0xD800..=0xDBFF => {
                    let low = (line.get(i..i + 2) == Some(b"\\u")).then(|| unit(i + 2)).flatten();
                    if !low.is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) {
                        return Err(bad());
                    }
                    i += 6;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn classify_data_error(e: &serde_json::Error) -> RecordError {
        let msg = e.to_string();
        match msg.strip_prefix(DUPLICATE_PREFIX) {
            Some(rest) => RecordError::DuplicateKey(rest.split(" at line").next().unwrap_or(rest).to_owned()),
            None => RecordError::Syntax(syntax_message(e)),
        }
    }

    /// serde_json's messages can quote input (e.g. "invalid type: string \"...\""); keep only the
    /// category and position so record data never reaches a log.
    fn syntax_message(e: &serde_json::Error) -> String {
        let what = match e.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "not an object",
            serde_json::error::Category::Eof => "unexpected end of line",
        };
        format!("{what} at column {}", e.column())
    }

    const DUPLICATE_PREFIX: &str = "duplicate key ";

    /// A JSON string borrowed from the input when it has no escapes, owned only when it has.
    /// (serde's own `Cow<str>` always allocates.)
    struct Str<'de>(Cow<'de, str>);

    impl<'de> serde::Deserialize<'de> for Str<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Str<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }

    struct FieldsVisitor;

    impl<'de> Visitor<'de> for FieldsVisitor {
        type Value = [Option<&'de RawValue>; 14];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a SAT record object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut raw: [Option<&'de RawValue>; 14] = [None; 14];
            // Unknown keys are only remembered to catch duplicates; most records have none (an empty
            // set does not allocate). A hashed set, randomly seeded: a line of 100k distinct unknown
            // keys must cost linear time, and its keys are chosen by whoever wrote the line.
            let mut unknown: HashSet<Cow<'de, str>> = HashSet::new();
            while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
                match Field::from_name(&key) {
                    Some(f) => {
                        if raw[f as usize].is_some() {
                            return Err(de::Error::custom(format_args!("{DUPLICATE_PREFIX}{}", f.name())));
                        }
                        raw[f as usize] = Some(map.next_value::<&'de RawValue>()?);
                    }
                    None => {
                        if !unknown.insert(key) {
                            // Unknown names come from input; they are never echoed back.
                            return Err(de::Error::custom(format_args!("{DUPLICATE_PREFIX}(unknown field)")));
                        }
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"{"recordId":"r-000001","timestamp":"2026-11-01T09:30:00Z","messageType":"ServiceRequest","srv":"4.1.1","srvTitle":"Read Instantaneous Import Registers","alertCode":null,"responseCode":null,"deviceId":"00-DB-12-34-56-78-90-A0","deviceType":"ESME","userId":"90-B3-D5-1F-30-01-00-00","userRole":"IS","requestId":"90-B3-D5-1F-30-01-00-00:00-DB-12-34-56-78-90-A0:1000","metadata":{"commandVariant":1,"transport":"WAN"},"payload":"PHNyOlJlcXVlc3Q+"}"#;

    fn with(field: &str, value: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        let mut m = v.as_object().unwrap().clone();
        m.insert(field.into(), serde_json::from_str(value).unwrap());
        serde_json::to_string(&m).unwrap()
    }

    #[test]
    fn contract_sample_parses_with_exact_raw_values() {
        let r = Record::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(r.user_id.to_string(), "90-B3-D5-1F-30-01-00-00");
        assert_eq!(r.message_type, MessageType::ServiceRequest);
        assert_eq!(r.device_id.unwrap().to_string(), "00-DB-12-34-56-78-90-A0");
        assert_eq!(
            r.raw(Field::Metadata),
            Some(r#"{"commandVariant":1,"transport":"WAN"}"#)
        );
        assert_eq!(r.raw(Field::AlertCode), Some("null"));
        assert_eq!(r.raw(Field::Payload), Some(r#""PHNyOlJlcXVlc3Q+""#));
    }

    #[test]
    fn duplicate_keys_are_errors_even_when_escaped() {
        let dup = SAMPLE.replacen('{', r#"{"payload":"x","#, 1);
        assert_eq!(
            Record::parse(dup.as_bytes()).unwrap_err(),
            RecordError::DuplicateKey("payload".into())
        );
        let escaped = SAMPLE.replacen('{', r#"{"pay\u006coad":"x","#, 1);
        assert!(matches!(
            Record::parse(escaped.as_bytes()),
            Err(RecordError::DuplicateKey(_))
        ));
        let unknown = SAMPLE.replacen('{', r#"{"x":1,"\u0078":2,"#, 1);
        assert!(matches!(
            Record::parse(unknown.as_bytes()),
            Err(RecordError::DuplicateKey(_))
        ));
    }

    #[test]
    fn many_unknown_keys_parse_and_a_repeat_among_them_is_caught() {
        // 100k distinct unknown keys (~1.2 MB): fine, and quick, since the duplicate check is
        // hashed (a linear scan made this quadratic: seconds per line).
        let keys: String = (0..100_000).map(|i| format!(r#""k{i}":0,"#)).collect();
        let many = SAMPLE.replacen('{', &format!("{{{keys}"), 1);
        assert!(Record::parse(many.as_bytes()).is_ok());
        let repeated = SAMPLE.replacen('{', &format!(r#"{{{keys}"k0":1,"#), 1);
        assert!(matches!(
            Record::parse(repeated.as_bytes()),
            Err(RecordError::DuplicateKey(_))
        ));
    }

    #[test]
    fn wrong_types_and_values_are_errors() {
        for (field, value) in [
            ("recordId", "1"),
            ("recordId", "null"),
            ("payload", "{}"),
            ("payload", "[\"a\"]"),
            ("metadata", "\"str\""),
            ("metadata", "[]"),
            ("srv", "4.1"),
            ("userId", "\"nobody\""),
            ("userId", "null"),
            ("deviceId", "\"00-DB\""),
            ("deviceId", "7"),
            ("messageType", "\"Gossip\""),
        ] {
            let line = with(field, value);
            assert!(Record::parse(line.as_bytes()).is_err(), "{field}={value} accepted");
        }
    }

    #[test]
    fn nullable_fields_accept_null() {
        for field in ["deviceId", "deviceType", "srv", "requestId", "metadata", "payload"] {
            let line = with(field, "null");
            let r = Record::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert_eq!(r.raw(Field::from_name(field).unwrap()), Some("null"));
        }
        assert_eq!(
            Record::parse(with("deviceId", "null").as_bytes()).unwrap().device_id,
            None
        );
    }

    #[test]
    fn not_objects_and_bad_bytes_are_errors() {
        for line in [
            &b"[]"[..],
            b"\"x\"",
            b"",
            b"{",
            b"{}x",
            b"{} {}",
            b"null",
            &[0xff, b'{', b'}'],
        ] {
            assert!(
                Record::parse(line).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(Record::parse(&[b'{', 0xc3]).unwrap_err(), RecordError::NotUtf8);
    }

    #[test]
    fn missing_required_fields_are_errors() {
        for field in ["recordId", "timestamp", "messageType", "userId"] {
            let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(SAMPLE).unwrap();
            v.remove(field);
            let line = serde_json::to_string(&v).unwrap();
            assert_eq!(
                Record::parse(line.as_bytes()).unwrap_err(),
                RecordError::Missing(Field::from_name(field).unwrap().name())
            );
        }
    }

    #[test]
    fn escaped_identifiers_decode() {
        let line = with("userId", r#""90-B3-D5-1F-30-01-00-0\u0030""#);
        let r = Record::parse(line.as_bytes()).unwrap();
        assert_eq!(r.user_id.to_string(), "90-B3-D5-1F-30-01-00-00");
    }

    /// Before: serde_json let these through and satgate wrote lines strict readers reject.
    #[test]
    fn lone_surrogate_escapes_make_the_record_malformed() {
        let title = r#""Read Instantaneous Import Registers""#;
        let payload = r#""PHNyOlJlcXVlc3Q+""#;
        for (was, bad) in [
            (title, r#""Read \ud800 Registers""#),
            (title, r#""\udc00""#),
            (payload, r#""abc\ud800""#),
            (payload, r#""\ud800\u0041""#),
            (payload, r#""\ud800\n""#),
            (r#"{"commandVariant":1,"transport":"WAN"}"#, r#"{"k":"\udbff"}"#),
        ] {
            let line = SAMPLE.replace(was, bad);
            assert!(
                matches!(Record::parse(line.as_bytes()), Err(RecordError::Syntax(_))),
                "{bad} accepted"
            );
        }
        // Pairs, escaped backslashes and other escapes are fine, and copied as they were.
        for ok in [
            r#""\ud83d\ude00""#,
            r#""\\ud800""#,
            r#""\u00e9\t\"""#,
            r#""\\\ud83d\ude00""#,
        ] {
            let line = SAMPLE.replace(payload, ok);
            let r = Record::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(r.raw(Field::Payload), Some(ok));
        }
    }

    /// A raw CR is JSON whitespace, but copied into the output it breaks readers that split on
    /// any newline: a record whose metadata holds one is malformed. Elsewhere it is never copied.
    #[test]
    fn a_raw_carriage_return_in_metadata_makes_the_record_malformed() {
        let meta = SAMPLE.replace(r#"{"commandVariant":1,"#, "{\"commandVariant\":1,\r");
        assert_eq!(
            Record::parse(meta.as_bytes()).unwrap_err(),
            RecordError::Invalid("metadata", "contains a raw carriage return".into())
        );
        // A CRLF line ending, or a CR between top-level fields: nothing of it is written.
        assert!(Record::parse(format!("{SAMPLE}\r").as_bytes()).is_ok());
        let between = SAMPLE.replacen(',', ",\r", 1);
        assert!(Record::parse(between.as_bytes()).is_ok());
    }

    #[test]
    fn errors_do_not_quote_values() {
        let line = with("payload", r#"{"secret":"TOPSECRET"}"#);
        let e = Record::parse(line.as_bytes()).unwrap_err().to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
        let e = Record::parse(br#"{"a":"TOPSECRET" "b"}"#).unwrap_err().to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
    }
}
