//! The serde_json parser the scanner replaced: the reference the differential tests and the
//! `record_scan` fuzz target compare the scanner with, and the "old" side of the benchmarks.
//! serde_json checks the JSON and duplicate keys; surrogates and depth are checked after it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::fields::MAX_DEPTH;
use super::fields::{Field, RecordError};
use super::record::Record;

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
        check_nested_keys(text)?;
    }
    Record::check(raw.map(|v| v.map(RawValue::get)), decode)
}

/// Decodes a raw string value with serde_json (borrowed when it has no escapes).
fn decode(raw: &str) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Str<'_>>(raw).ok().map(|s| s.0)
}

/// serde_json checks duplicate keys only where it builds a map (the top level here): every
/// object inside a value is checked again, keys compared after unescaping. Runs on a line within
/// the depth limit, so the recursion is bounded.
fn check_nested_keys(text: &str) -> Result<(), RecordError> {
    fn values(raw: &str) -> Result<Vec<&RawValue>, serde_json::Error> {
        match raw.as_bytes().first() {
            Some(b'{') => {
                let map: Vec<(Cow<'_, str>, &RawValue)> = serde_json::from_str::<Members<'_>>(raw)?.0;
                let mut seen = HashSet::new();
                if map.iter().any(|(k, _)| !seen.insert(k.clone())) {
                    return Err(de::Error::custom("duplicate key inside a field"));
                }
                Ok(map.into_iter().map(|(_, v)| v).collect())
            }
            Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(raw),
            _ => Ok(Vec::new()),
        }
    }
    fn walk(raw: &str) -> Result<(), serde_json::Error> {
        values(raw)?.into_iter().try_for_each(|v| walk(v.get()))
    }
    let top = serde_json::from_str::<Members<'_>>(text).map_err(|e| RecordError::Syntax(syntax_message(&e)))?;
    for (_, v) in top.0 {
        walk(v.get()).map_err(|_| RecordError::DuplicateKey("(a key inside a field)".into()))?;
    }
    Ok(())
}

/// An object's members in order, duplicates kept (a map would drop them).
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> de::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Members<'de>, M::Error> {
                let mut members = Vec::new();
                while let Some(k) = m.next_key::<Str<'de>>()? {
                    members.push((k.0, m.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
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
/// category, so neither record data nor where in it the problem is reaches a log or an answer.
fn syntax_message(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "not an object",
        serde_json::error::Category::Eof => "unexpected end of line",
    };
    what.to_owned()
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
