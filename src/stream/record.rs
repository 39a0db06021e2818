//! One SAT record: a line of upstream NDJSON scanned into borrowed raw values.
//!
//! Nothing is copied or re-encoded: each known field keeps the exact bytes the upstream sent, so
//! what satgate writes is byte-identical to what it read. Only the fields a decision needs
//! (`userId`, `messageType`, `deviceId`) are decoded. Anything surprising makes the whole line an
//! error: invalid UTF-8, not an object, a duplicate key (also after unescaping, so
//! `"pay\u006coad"` is `payload`), a lone surrogate escape, nesting deeper than
//! [`super::fields::MAX_DEPTH`], or a known field of the wrong type.
//!
//! The hot path is the scanner in [`super::scan`] (its grammar is written there); [`super::reference`]
//! is the serde_json parser it replaced, kept to test the scanner against.

use std::borrow::Cow;

pub use super::fields::{Field, RecordError};
use super::fields::{Kind, Raw};
use crate::model::{Class, Eui64, MessageType};
/// A parsed record. Raw values borrow from the line.
#[derive(Debug)]
pub struct Record<'a> {
    raw: Raw<'a>,
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
    pub(super) fn check(raw: Raw<'a>, decode: fn(&'a str) -> Option<Cow<'a, str>>) -> Result<Self, RecordError> {
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
        // The same for the Unicode line breaks JSON allows raw inside strings (JavaScript before
        // ES2019, and readers splitting on Unicode newlines, break a line there): refused in any
        // field that can be written; escaped (`\u2028`) they are only text and pass.
        for f in Field::ALL {
            if raw[f as usize].is_some_and(holds_unicode_line_break) {
                return Err(RecordError::Invalid(
                    f.name(),
                    "contains a raw U+2028, U+2029 or U+0085".into(),
                ));
            }
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

/// Whether `v` holds a raw U+2028 (E2 80 A8), U+2029 (E2 80 A9) or U+0085 (C2 85). One pass
/// for their two lead bytes, which ASCII text (nearly every record) never holds.
fn holds_unicode_line_break(v: &str) -> bool {
    let b = v.as_bytes();
    memchr::memchr2_iter(0xE2, 0xC2, b).any(|i| matches!(&b[i..], [0xE2, 0x80, 0xA8 | 0xA9, ..] | [0xC2, 0x85, ..]))
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
