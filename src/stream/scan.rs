//! The record scanner: one NDJSON line, validated in a single pass, its known top-level fields
//! located as exact byte spans.
//!
//! # Accepted grammar
//!
//! RFC 8259, restricted to one object per line and to I-JSON (RFC 7493) strings:
//!
//! ```text
//! line    = ws object ws                      ; nothing else after the object
//! object  = "{" ws [ member *( ws "," ws member ) ws ] "}"
//! member  = string ws ":" ws value
//! array   = "[" ws [ value *( ws "," ws value ) ws ] "]"
//! value   = object / array / string / number / "true" / "false" / "null"
//! number  = [ "-" ] ( "0" / %x31-39 *DIGIT ) [ "." 1*DIGIT ] [ ( "e" / "E" ) [ "+" / "-" ] 1*DIGIT ]
//! string  = %x22 *( unescaped / escape ) %x22
//! unescaped = any Unicode scalar value except %x22, %x5C and %x00-1F   ; the line is UTF-8
//! escape  = "\" ( %x22 / "\" / "/" / "b" / "f" / "n" / "r" / "t" / "u" hex4 )
//!           ; a \u escape of a surrogate must be a high one (D800-DBFF) directly followed by
//!           ; \u and a low one (DC00-DFFF): a lone surrogate makes the line malformed
//! ws      = *( %x20 / %x09 / %x0A / %x0D )
//! ```
//!
//! Beyond the grammar:
//!
//! - **Depth**: the record object is depth 1, each object or array inside it one more; nothing may
//!   be deeper than [`MAX_DEPTH`] (64), so metadata may nest 63 levels. SAT metadata uses 2-3.
//!   Passing it is [`RecordError::TooDeep`], a malformed record (left out and counted), not
//!   `Syntax` (which on a stream's first line means "not NDJSON").
//! - **Duplicate keys** make the line malformed in any object, at any depth, compared after
//!   unescaping (`"pay\u006coad"` is `payload`): strict readers refuse such a line, and two
//!   readers may take different values from it (docs/contract.md §1).
//! - Numbers are checked against the grammar only, never converted: `1e400` and 30-digit integers
//!   pass, as in serde_json's `RawValue`.
//!
//! Only escaped top-level keys and the three fields a decision reads are ever unescaped; every
//! value span is the input's own bytes, so what is written is byte-identical to what was read.
//!
//! # The reference
//!
//! [`super::reference`] parses with serde_json (a `RawValue` visitor) and then applies
//! the same surrogate and depth rules. The differential tests (`tests` below, and the
//! `record_scan` fuzz target) check that both accept exactly the same lines and extract the same
//! bytes. Intended differences, in the error only, never in what is accepted: the scanner stops at
//! the first problem in line order, so a line with both a lone surrogate (or too deep a value)
//! and a later duplicate key or syntax error is `Syntax` (or `TooDeep`) here and may be
//! `DuplicateKey` or `Syntax` there. Messages say what kind of problem, never where.

use std::borrow::Cow;
use std::collections::HashSet;

use smallvec::SmallVec;

pub use super::fields::MAX_DEPTH;
use super::fields::{Field, Raw, RecordError};

/// Validates `line` and returns its known fields' exact values, and whether the line is all
/// ASCII (then no value can hold a Unicode line break, see `Record::check`).
pub(crate) fn scan(line: &[u8]) -> Result<(Raw<'_>, bool), RecordError> {
    let text = simdutf8::basic::from_utf8(line).map_err(|_| RecordError::NotUtf8)?;
    // A control byte is only ever valid as whitespace between tokens (tab, CR, LF), so a line
    // without any lets strings be searched for '"' and '\\' alone (memchr2); the minimum (and
    // the maximum, for ASCII) is computed sixteen bytes at a time, in one pass.
    let (low, high) = line.iter().fold((u8::MAX, 0), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    let controls = low < 0x20;
    let mut s = Scanner {
        b: line,
        text,
        i: 0,
        controls,
        nested: NestedKeys::default(),
    };
    let mut raw: Raw<'_> = [None; 14];
    // Unknown keys are only remembered to catch duplicates; created on the first one. A hashed
    // set, randomly seeded: a line of 100k distinct unknown keys must cost linear time, and its
    // keys are chosen by whoever wrote the line.
    let mut unknown: Option<HashSet<Cow<'_, str>>> = None;
    // Upstreams write the fields in contract order: the key after `Field::ALL[next - 1]` is
    // first compared with `Field::ALL[next]`, which spares scanning and looking it up.
    let mut next = 0;
    s.ws();
    s.expect(b'{', "not an object")?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.expect(b'"', "expected a string key")?;
            let field = match s.plain_key(Field::ALL.get(next)) {
                Some(f) => Some(f),
                None => {
                    let start = s.i;
                    let escaped = s.string()?;
                    let key = &text[start..s.i - 1];
                    let key = if escaped {
                        unescape(key).ok_or_else(|| s.err("invalid escape"))?
                    } else {
                        Cow::Borrowed(key)
                    };
                    let field = Field::from_name(&key);
                    if field.is_none() && !unknown.get_or_insert_with(HashSet::new).insert(key) {
                        // Unknown names come from input; they are never echoed back.
                        return Err(RecordError::DuplicateKey("(unknown field)".into()));
                    }
                    field
                }
            };
            if let Some(f) = field.filter(|f| raw[*f as usize].is_some()) {
                return Err(RecordError::DuplicateKey(f.name().into()));
            }
            s.ws();
            s.expect(b':', "expected ':'")?;
            s.ws();
            let start = s.i;
            s.value()?;
            if let Some(f) = field {
                raw[f as usize] = Some(&text[start..s.i]);
                next = f as usize + 1;
            }
            s.ws();
            match s.peek() {
                Some(b',') => {
                    s.i += 1;
                    s.ws();
                }
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                _ => return Err(s.err("expected ',' or '}'")),
            }
        }
    }
    s.ws();
    if s.i != line.len() {
        return Err(s.err("text after the object"));
    }
    Ok((raw, high < 0x80))
}

/// A raw JSON value's string, decoded; `None` for `null` (or anything not a string). Borrowed
/// when it has no escapes, which is nearly always. The value is one the scanner validated.
pub fn decode_string(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    unescape(inner)
}

/// The text of a validated JSON string's contents (without quotes), escapes decoded; borrowed
/// when there are none. `None` only if `s` was not validated (an invalid escape).
pub fn unescape(s: &str) -> Option<Cow<'_, str>> {
    if memchr::memchr(b'\\', s.as_bytes()).is_none() {
        return Some(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let esc = *rest.as_bytes().get(at + 1).filter(|c| c.is_ascii())?;
        rest = &rest[at + 2..];
        out.push(match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(rest.as_bytes(), 0)?;
                rest = &rest[4..];
                let c = if (0xD800..0xDC00).contains(&hi) {
                    let lo = rest.strip_prefix("\\u").and_then(|r| hex4(r.as_bytes(), 0))?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    rest = &rest[6..];
                    0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
                } else {
                    u32::from(hi)
                };
                char::from_u32(c)?
            }
            _ => return None,
        });
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// Four hex digits at `at`, as a UTF-16 code unit.
fn hex4(b: &[u8], at: usize) -> Option<u16> {
    let digits = b.get(at..at + 4)?;
    digits.iter().try_fold(0u16, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u16::from(v))
    })
}

struct Scanner<'a> {
    b: &'a [u8],
    /// The same bytes, checked to be UTF-8.
    text: &'a str,
    i: usize,
    /// Whether the line has any byte below 0x20.
    controls: bool,
    /// The keys of the nested objects open now.
    nested: NestedKeys<'a>,
}

/// The keys seen so far in each nested object that is open, to refuse a duplicate at any depth
/// (strict readers refuse such a line, and two readers may take different values from it).
/// Keys are compared after unescaping. Held as byte spans of the line, inline for the first
/// [`NestedKeys::INLINE`] (a SAT metadata object holds a handful), so a record costs no
/// allocation and no drop. An object's keys are compared one by one while it has few and through
/// a hashed, randomly seeded set past [`NestedKeys::LINEAR`], so a line of 100k keys in one
/// object costs linear time.
#[derive(Default)]
struct NestedKeys<'a> {
    /// Keys of the open objects, innermost last: the span inside the quotes, and whether it
    /// holds an escape.
    keys: SmallVec<[Key; NestedKeys::INLINE]>,
    /// Per open object: where its keys start in `keys`, and its set once it has many.
    open: SmallVec<[(usize, Option<Box<KeySet<'a>>>); 8]>,
}

/// The keys of one object with many, decoded.
type KeySet<'a> = HashSet<Cow<'a, str>>;

#[derive(Clone, Copy)]
struct Key {
    start: usize,
    end: usize,
    escaped: bool,
}

impl Key {
    /// Its text, unescaped. The scanner validated it, so this cannot fail on its keys.
    fn text<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let raw = line.get(self.start..self.end).unwrap_or_default();
        if self.escaped {
            unescape(raw).unwrap_or(Cow::Borrowed(raw))
        } else {
            Cow::Borrowed(raw)
        }
    }
}

impl<'a> NestedKeys<'a> {
    const INLINE: usize = 32;
    const LINEAR: usize = 16;

    fn enter(&mut self) {
        self.open.push((self.keys.len(), None));
    }

    fn leave(&mut self) {
        if let Some((start, _)) = self.open.pop() {
            self.keys.truncate(start);
        }
    }

    /// Adds a key of `line` to the innermost open object; `false` if it already has it.
    fn insert(&mut self, key: Key, line: &'a str) -> bool {
        let Some((start, set)) = self.open.last_mut() else {
            return true;
        };
        if let Some(set) = set {
            return set.insert(key.text(line));
        }
        let mine = &self.keys[*start..];
        let raw = |k: &Key| line.as_bytes().get(k.start..k.end);
        let seen = if key.escaped || mine.iter().any(|k| k.escaped) {
            let text = key.text(line);
            mine.iter().any(|k| k.text(line) == text)
        } else {
            mine.iter().any(|k| raw(k) == raw(&key))
        };
        if seen {
            return false;
        }
        if mine.len() < Self::LINEAR {
            self.keys.push(key);
        } else {
            let mut all: HashSet<Cow<'a, str>> = self.keys.drain(*start..).map(|k| k.text(line)).collect();
            all.insert(key.text(line));
            *set = Some(Box::new(all));
        }
        true
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// A syntax error. The message is one of the fixed texts above: record bytes are never
    /// quoted, and neither is where in the line it is (an offset inside a record the caller may
    /// not see would give away the length of a hidden value).
    #[cold]
    fn err(&self, what: &str) -> RecordError {
        RecordError::Syntax(what.to_owned())
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), RecordError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Skips a string's contents after its opening quote, up to and including the closing one.
    /// Says whether it held an escape.
    fn string(&mut self) -> Result<bool, RecordError> {
        let mut escaped = false;
        loop {
            self.i = self.string_end(self.i);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => return Err(self.err("control character in a string")),
                None => return Err(self.err("unexpected end of line in a string")),
            }
        }
    }

    /// If the key starting here (after its quote) is exactly `expected`'s name, unescaped, skips
    /// it and its closing quote.
    fn plain_key(&mut self, expected: Option<&Field>) -> Option<Field> {
        let f = *expected?;
        let name = f.name().as_bytes();
        let rest = self.b.get(self.i..self.i + name.len() + 1)?;
        // A byte loop: names are short, and a call to memcmp cost more than the comparison.
        if rest.iter().zip(name).all(|(a, b)| a == b) && rest[name.len()] == b'"' {
            self.i += name.len() + 1;
            Some(f)
        } else {
            None
        }
    }

    /// The index of the first byte at or after `i` that ends a run of plain string bytes: `"`,
    /// `\` or a control byte (or the length). Most strings (keys, ids, times) end within a few
    /// words, where [`special`] is quickest; longer ones (payloads) are searched with memchr2
    /// when the line holds no control byte at all.
    fn string_end(&self, i: usize) -> usize {
        const SHORT: usize = 32;
        let window = (i + SHORT).min(self.b.len());
        let end = special(&self.b[..window], i);
        if end < window || window == self.b.len() {
            end
        } else if self.controls {
            special(self.b, window)
        } else {
            memchr::memchr2(b'"', b'\\', &self.b[window..]).map_or(self.b.len(), |k| window + k)
        }
    }

    /// Checks one escape (at its backslash), including that surrogates come in pairs.
    fn escape(&mut self) -> Result<(), RecordError> {
        match self.b.get(self.i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 2;
                Ok(())
            }
            Some(b'u') => {
                let unit = hex4(self.b, self.i + 2).ok_or_else(|| self.err("invalid \\u escape"))?;
                self.i += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        let low = (self.b.get(self.i..self.i + 2) == Some(b"\\u"))
                            .then(|| hex4(self.b, self.i + 2))
                            .flatten();
                        if !low.is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) {
                            return Err(self.err("lone surrogate escape in a string"));
                        }
                        self.i += 6;
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(self.err("lone surrogate escape in a string")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.err("invalid escape")),
        }
    }

    fn number(&mut self) -> Result<(), RecordError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// A string, number or literal.
    fn scalar(&mut self) -> Result<(), RecordError> {
        let literal = |s: &mut Self, word: &[u8]| {
            if s.b[s.i..].starts_with(word) {
                s.i += word.len();
                Ok(())
            } else {
                Err(s.err("invalid literal"))
            }
        };
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string().map(drop)
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => literal(self, b"true"),
            Some(b'f') => literal(self, b"false"),
            Some(b'n') => literal(self, b"null"),
            _ => Err(self.err("expected a value")),
        }
    }

    /// A key inside a nested object (one not seen in it before): a string, then ':'.
    fn member_key(&mut self) -> Result<(), RecordError> {
        self.expect(b'"', "expected a string key")?;
        let start = self.i;
        let escaped = self.string()?;
        let key = Key {
            start,
            end: self.i - 1,
            escaped,
        };
        if !self.nested.insert(key, self.text) {
            // Keys come from input; they are never echoed back.
            return Err(RecordError::DuplicateKey("(a key inside a field)".into()));
        }
        self.ws();
        self.expect(b':', "expected ':'")?;
        self.ws();
        Ok(())
    }

    /// One value of a top-level member (at its first byte). Nested containers are walked without
    /// recursion: a bit per open container (1: object) says which bracket closes it.
    fn value(&mut self) -> Result<(), RecordError> {
        const _: () = assert!(MAX_DEPTH - 1 <= u64::BITS as usize);
        let mut open: u64 = 0;
        let mut depth = 1; // the record object
        loop {
            // At the start of a value.
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(RecordError::TooDeep);
                    }
                    let is_object = c == b'{';
                    open = open << 1 | u64::from(is_object);
                    self.i += 1;
                    self.ws();
                    let close = if is_object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        open >>= 1;
                        depth -= 1;
                    } else {
                        if is_object {
                            self.nested.enter();
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            // After a value: a comma or the closing bracket, perhaps closing several levels.
            loop {
                if depth == 1 {
                    return Ok(());
                }
                self.ws();
                let in_object = open & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                        if in_object {
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => self.nested.leave(),
                    Some(b']') if !in_object => {}
                    _ => return Err(self.err("expected ',' or a closing bracket")),
                }
                self.i += 1;
                open >>= 1;
                depth -= 1;
            }
        }
    }
}

/// The index of the first `"`, `\` or control byte (< 0x20) at or after `i`, or the length.
///
/// Eight bytes at a time: for each byte class, the classic "has a zero byte" bit trick sets the
/// high bit of a lane that matches; false positives only occur in lanes above a real match, so
/// the lowest set bit is exact.
fn special(b: &[u8], mut i: usize) -> usize {
    while let Some(word) = b.get(i..i + 8) {
        let mut lanes = [0u8; 8];
        lanes.copy_from_slice(word);
        let x = u64::from_le_bytes(lanes);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let hits = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let hits = hits & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stream::fuzz::check_scan;
    use crate::stream::record::Record;
    use crate::stream::reference;

    const HEAD: &str =
        r#"{"recordId":"r-1","timestamp":"t","messageType":"DCCAlert","userId":"90-B3-D5-1F-30-01-00-00""#;

    fn record(rest: &str) -> String {
        format!("{HEAD}{rest}}}")
    }

    /// Both parsers, which must agree; the scanner's answer.
    fn both(line: &str) -> Result<Record<'_>, RecordError> {
        check_scan(line.as_bytes());
        Record::parse(line.as_bytes())
    }

    /// Metadata nested `depth` levels below the record (the record itself being depth 1).
    fn nested(depth: usize) -> String {
        let mut v = String::from("1");
        for level in 1..depth {
            v = if level % 2 == 0 {
                format!("[{v}]")
            } else {
                format!(r#"{{"k":{v}}}"#)
            };
        }
        format!(r#"{{"k":{v}}}"#)
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_deeper_is_malformed() {
        // metadata at depth 2, so `MAX_DEPTH - 1` levels of it reach the limit exactly.
        let ok = record(&format!(r#","metadata":{}"#, nested(MAX_DEPTH - 1)));
        assert_eq!(
            both(&ok).unwrap().raw(Field::Metadata).map(str::len),
            Some(ok.len() - HEAD.len() - 13)
        );
        for depth in [MAX_DEPTH, MAX_DEPTH + 1, 1000, 100_000] {
            let deep = record(&format!(r#","metadata":{}"#, nested(depth)));
            assert_eq!(both(&deep).unwrap_err(), RecordError::TooDeep, "depth {depth}");
            assert_eq!(reference::parse(deep.as_bytes()).unwrap_err(), RecordError::TooDeep);
        }
        // Anywhere, not only in metadata: an unknown field's value, an array.
        let deep_array = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(
            both(&record(&format!(r#","x":{deep_array}"#))).unwrap_err(),
            RecordError::TooDeep
        );
        let at_limit = "[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(both(&record(&format!(r#","x":{at_limit}"#))).is_ok());
    }

    #[test]
    fn lone_surrogates_anywhere_are_malformed_and_pairs_pass_byte_identical() {
        for bad in [
            r#","srvTitle":"\ud800""#,
            r#","srvTitle":"\uDFFF x""#,
            r#","payload":"\ud83d\ud83d""#,
            r#","payload":"\ud83d\\ude00""#,
            r#","metadata":{"a":["\udc00"]}"#,
            r#","metadata":{"\ud800":1}"#,
            r#","\ud800":1"#,
            r#","x":"\ud800""#,
        ] {
            assert!(
                matches!(both(&record(bad)), Err(RecordError::Syntax(_))),
                "{bad} accepted"
            );
        }
        let pairs =
            r#","srvTitle":"\ud83d\ude00\uD83D\uDE00","metadata":{"\ud83d\ude00":"\u00e9\/"},"p\u0061yload":"\"""#;
        let line = record(pairs);
        let r = both(&line).unwrap();
        assert_eq!(r.raw(Field::SrvTitle), Some(r#""\ud83d\ude00\uD83D\uDE00""#));
        assert_eq!(r.raw(Field::Metadata), Some(r#"{"\ud83d\ude00":"\u00e9\/"}"#));
        assert_eq!(r.raw(Field::Payload), Some(r#""\"""#));
        // An escaped key is still a duplicate of its plain spelling.
        assert_eq!(
            both(&record(r#","payload":"a","p\u0061yload":"b""#)).unwrap_err(),
            RecordError::DuplicateKey("payload".into())
        );
    }

    /// Keys in contract order take the short path; repeats, prefixes and escapes still count.
    #[test]
    fn keys_in_and_out_of_contract_order() {
        let ordered = record(r#","srv":"4.1.1","srvTitle":"T","deviceId":null,"payload":"p""#);
        assert_eq!(both(&ordered).unwrap().raw(Field::SrvTitle), Some("\"T\""));
        // Expecting `srv`: `srvX` is an unknown key, not `srv` followed by garbage.
        let prefix = record(r#","srvX":1,"srv":"4.1.1","srvTitle":"T""#);
        assert_eq!(both(&prefix).unwrap().raw(Field::Srv), Some("\"4.1.1\""));
        for dup in [
            r#","srv":"a","srv":"b""#,
            r#","srv":"a","srvTitle":"T","srv":"b""#,
            r#","payload":"p","recordId":"again""#,
            r#","srv":"a","sr\u0076":"b""#,
        ] {
            assert!(matches!(both(&record(dup)), Err(RecordError::DuplicateKey(_))), "{dup}");
        }
    }

    /// A key twice in one object is malformed at any depth (docs/contract.md §1), spelled plainly
    /// or escaped, however many keys the object has; the same key in two objects is not.
    #[test]
    fn a_duplicate_key_at_any_depth_is_malformed() {
        let many = |dup: &str| {
            let keys: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
            format!(r#","metadata":{{{},{dup}}}"#, keys.join(","))
        };
        for dup in [
            r#","metadata":{"a":1,"a":2}"#.to_owned(),
            r#","metadata":{"a":1,"\u0061":2}"#.to_owned(),
            r#","metadata":{"x":{"y":[{"a":1,"b":{},"a":2}]}}"#.to_owned(),
            r#","metadata":{"a":{"b":1},"c":[1,{"d":1,"d":1}]}"#.to_owned(),
            r#","payload":"p","other":{"a":1,"a":1}"#.to_owned(),
            many(r#""k3":0"#),
            many(r#""k39":0"#),
            many(r#""k\u0031":0"#),
        ] {
            assert_eq!(
                both(&record(&dup)).map(drop),
                Err(RecordError::DuplicateKey("(a key inside a field)".into())),
                "{dup}"
            );
        }
        for ok in [
            r#","metadata":{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#.to_owned(),
            r#","metadata":{"a":1,"A":2,"a ":3}"#.to_owned(),
            many(r#""k40":0"#),
        ] {
            assert!(both(&record(&ok)).is_ok(), "{ok}");
        }
    }

    /// Raw U+2028, U+2029 and U+0085 in a field that can be written make the record malformed
    /// (readers that split on Unicode line breaks would cut it in two); escaped, they pass, and in
    /// a field never written they do not matter.
    #[test]
    fn raw_unicode_line_breaks_in_written_fields_are_malformed() {
        for brk in ["\u{2028}", "\u{2029}", "\u{85}"] {
            for (field, rest) in [
                ("srvTitle", format!(r#","srvTitle":"a{brk}b""#)),
                ("metadata", format!(r#","metadata":{{"k":"{brk}"}}"#)),
                ("metadata", format!(r#","metadata":{{"{brk}":1}}"#)),
                ("payload", format!(r#","payload":"{brk}""#)),
            ] {
                assert_eq!(
                    both(&record(&rest)).map(drop),
                    Err(RecordError::Invalid(
                        field,
                        "contains a raw U+2028, U+2029 or U+0085".into()
                    )),
                    "{rest:?}"
                );
            }
            assert!(both(&record(&format!(r#","unknownField":"{brk}""#))).is_ok());
        }
        for ok in [
            r#","srvTitle":"a\u2028b\u2029c\u0085""#,
            r#","srvTitle":"\u00e2\u0080\u00a8 é ‡ …""#,
        ] {
            assert!(both(&record(ok)).is_ok(), "{ok}");
        }
    }

    /// An error says what kind of problem a line has, never where: an offset inside a record the
    /// caller may not see would give away the length of a hidden value.
    #[test]
    fn errors_never_say_where_in_the_line() {
        let hidden = "x".repeat(123);
        for bad in [
            format!(r#"{{"payload":"{hidden}" "#),
            format!(r#"{{"payload":"{hidden}",}}"#),
            format!(r#"{{"payload":"{hidden}","a":tru}}"#),
            format!(r#"{{"payload":"{hidden}","a":01}}"#),
            format!(r#"{{"payload":"{hidden}","a":"\ud800"}}"#),
            format!(r#"{{"payload":"{hidden}"}} x"#),
            format!("{{\"payload\":\"{hidden}\u{1}\"}}"),
        ] {
            let scanned = Record::parse(bad.as_bytes()).map(drop).unwrap_err().to_string();
            let reference = reference::parse(bad.as_bytes()).map(drop).unwrap_err().to_string();
            for msg in [&scanned, &reference] {
                assert!(!msg.bytes().any(|c| c.is_ascii_digit()), "{msg:?} for {bad:?}");
            }
        }
    }

    #[test]
    fn numbers_and_literals_follow_rfc_8259() {
        for ok in [
            "0",
            "-0",
            "1",
            "-12",
            "0.5",
            "1e5",
            "1E+5",
            "1e-05",
            "-0.0e0",
            "1e400",
            "123456789012345678901234567890",
            "true",
            "false",
            "null",
        ] {
            let line = record(&format!(r#","x":{ok},"metadata":{{"n":[{ok}]}}"#));
            assert!(both(&line).is_ok(), "{ok} refused");
        }
        for bad in [
            "01", "-", "+1", "1.", ".5", "1e", "1e+", "0x1", "1.5.", "NaN", "Infinity", "tru", "nul", "True", "-01",
            "1_0",
        ] {
            let line = record(&format!(r#","x":{bad}"#));
            assert!(matches!(both(&line), Err(RecordError::Syntax(_))), "{bad} accepted");
        }
    }

    #[test]
    fn strings_refuse_control_bytes_and_bad_escapes_but_allow_the_rest() {
        for bad in [
            "\u{1}", "\t", "\u{1f}", "\\x", "\\u12", "\\u12G4", "\\U0041", "\\'", "\\",
        ] {
            let line = record(&format!(r#","payload":"{bad}""#));
            assert!(matches!(both(&line), Err(RecordError::Syntax(_))), "{bad:?} accepted");
        }
        for ok in ["\u{7f}", "é😀", "\\b\\f\\n\\r\\t\\/\\\\", "\\u0000", "\\uFFFF"] {
            let line = record(&format!(r#","payload":"{ok}""#));
            assert_eq!(both(&line).unwrap().raw(Field::Payload), Some(&*format!("\"{ok}\"")));
        }
        // A control byte past the first eight bytes of a long string, at every offset.
        for at in 0..40 {
            let mut s = "A".repeat(40);
            s.replace_range(at..at + 1, "\u{2}");
            assert!(both(&record(&format!(r#","payload":"{s}""#))).is_err(), "at {at}");
        }
    }

    #[test]
    fn whitespace_between_tokens_and_after_the_object() {
        let line = " \t{ \"recordId\" :\"r\" ,\"timestamp\"\r:\"t\",\n\"messageType\":\"DCCAlert\",\"userId\":\"90-B3-D5-1F-30-01-00-00\",\"x\" : [ 1 , { } , [ ] ] } \r\n";
        let r = both(line).unwrap();
        assert_eq!(r.raw(Field::RecordId), Some("\"r\""));
        for bad in [
            "{} x",
            "{},",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{,}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":[1,]}",
            "{\"a\":{\"b\"}}",
            "{1:2}",
            "\u{feff}{}",
        ] {
            assert!(matches!(both(bad), Err(RecordError::Syntax(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn syntax_errors_do_not_quote_the_line() {
        for line in [
            record(r#","payload":"TOPSECRET\ud800""#),
            record(r#","payload":TOPSECRET"#),
            record(&format!(r#","metadata":{}"#, nested(200)).replace("\"k\"", "\"TOPSECRET\"")),
        ] {
            let e = Record::parse(line.as_bytes()).unwrap_err().to_string();
            assert!(!e.contains("TOPSECRET"), "{e}");
        }
    }

    /// The SWAR search against the obvious loop, at every alignment.
    #[test]
    fn special_finds_the_first_quote_backslash_or_control_byte() {
        let mut rng = crate::sample::Rng::new(7);
        for _ in 0..20_000 {
            let len = rng.below(40);
            let b: Vec<u8> = (0..len)
                .map(|_| match rng.below(8) {
                    0 => *rng.pick(&[b'"', b'\\', 0, 0x1f, 0x20, 0x7f, 0x80, 0xa0, 0xff, b'!', b']']),
                    _ => b'a' + rng.below(26) as u8,
                })
                .collect();
            let from = rng.below(len + 1);
            let want = (from..len)
                .find(|&i| b[i] == b'"' || b[i] == b'\\' || b[i] < 0x20)
                .unwrap_or(len);
            assert_eq!(special(&b, from), want, "{b:?} from {from}");
        }
    }

    #[test]
    fn unescape_decodes_what_the_scanner_accepts() {
        assert_eq!(unescape("plain").unwrap(), "plain");
        assert!(matches!(unescape("plain"), Some(Cow::Borrowed(_))));
        assert_eq!(
            unescape(r#"a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00z"#).unwrap(),
            "a\"\\/\u{8}\u{c}\n\r\té😀z"
        );
        for bad in [r"\ud800", r"\udc00", r"\ud800\u0041", r"\x", "\\", r"\u12", "\\é"] {
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }

    /// Differential cases: by default 4,000 per strategy (three strategies); PROPTEST_CASES sets it.
    fn config() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4000);
        ProptestConfig::with_cases(cases)
    }

    /// Pieces that make JSON, nearly-JSON and the scanner's edge cases likely.
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        " ",
        "\t",
        "\r",
        "\n",
        "\\",
        "\\u",
        "d800",
        "DBFF",
        "dc00",
        "DE00",
        "00e9",
        "0041",
        "\\\"",
        "\\n",
        "\\/",
        "0",
        "1",
        "9",
        "-",
        ".",
        "e",
        "E",
        "+",
        "true",
        "false",
        "null",
        "nul",
        "\"userId\"",
        "\"payload\"",
        "\"pay\\u006coad\"",
        "\"metadata\"",
        "\"x\"",
        "\"deviceId\"",
        "\"00-DB-00-00-00-00-01-03\"",
        "\"90-B3-D5-1F-30-01-00-00\"",
        "é",
        "😀",
        "\u{1}",
        "\u{7f}",
        "\0",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "abcdefghij",
    ];

    fn soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            8 => proptest::sample::select(PIECES).prop_map(|p| p.as_bytes().to_vec()),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ];
        (any::<bool>(), proptest::collection::vec(piece, 0..40), any::<bool>()).prop_map(|(head, pieces, close)| {
            let mut line = if head {
                format!("{HEAD},").into_bytes()
            } else {
                Vec::new()
            };
            pieces.iter().for_each(|p| line.extend_from_slice(p));
            if close {
                line.push(b'}');
            }
            line
        })
    }

    fn sample_lines() -> Vec<&'static [u8]> {
        let sample: &'static [u8] = include_bytes!("../../tests/data/records.ndjson");
        sample.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect()
    }

    /// A real record with a few edits: a byte replaced, a piece inserted, a range cut or repeated.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let edit = (
            0usize..4,
            any::<usize>(),
            any::<usize>(),
            proptest::sample::select(PIECES),
            any::<u8>(),
        );
        (any::<usize>(), proptest::collection::vec(edit, 1..5)).prop_map(|(pick, edits)| {
            let lines = sample_lines();
            let mut line = lines[pick % lines.len()].to_vec();
            for (op, at, len, piece, byte) in edits {
                let at = at % (line.len() + 1);
                let end = (at + len % 16).min(line.len());
                match op {
                    0 if at < line.len() => line[at] = byte,
                    1 => {
                        line.splice(at..at, piece.bytes());
                    }
                    2 => {
                        line.drain(at..end);
                    }
                    _ => {
                        let copy = line[at..end].to_vec();
                        line.splice(at..at, copy);
                    }
                }
            }
            line
        })
    }

    /// A JSON string's contents: plain text and escapes, valid or not.
    fn contents() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            6 => "[a-zA-Z0-9 +/=é😀-]{0,12}",
            1 => proptest::sample::select(&[r"\n", r"\\", r#"\""#, r"\/", r"\u00e9", r"\ud83d\ude00", r"\uDBFF\uDFFF", r"\u0000"][..]).prop_map(str::to_owned),
            1 => proptest::sample::select(&[r"\ud800", r"\udc00", r"\ud800\u0041", r"\q", "\u{1}", "\t"][..]).prop_map(str::to_owned),
        ];
        proptest::collection::vec(part, 0..4).prop_map(|p| p.concat())
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            contents().prop_map(|s| format!("\"{s}\"")),
            proptest::sample::select(&["0", "-1.5e3", "1e400", "true", "false", "null", "01", "1."][..])
                .prop_map(str::to_owned),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((contents(), inner), 0..4).prop_map(|v| {
                    let members: Vec<String> = v.into_iter().map(|(k, v)| format!("\"{k}\" : {v}")).collect();
                    format!("{{{}}}", members.join(" ,"))
                }),
            ]
        })
    }

    /// Records built from parts: mostly valid, with escapes, odd values, deep metadata, repeated
    /// and escaped keys.
    fn built() -> impl Strategy<Value = Vec<u8>> {
        let key = prop_oneof![
            proptest::sample::select(Field::ALL.map(Field::name).to_vec()).prop_map(str::to_owned),
            Just(r"pay\u006coad".to_owned()),
            Just(r"\u0078".to_owned()),
            contents(),
        ];
        let member = (key, json_value(), 0usize..(MAX_DEPTH + 3), any::<bool>());
        (proptest::collection::vec(member, 0..5), contents()).prop_map(|(members, title)| {
            let mut line = format!(r#"{HEAD} , "srvTitle":"{title}""#);
            for (key, value, depth, deepen) in members {
                let value = if deepen {
                    format!("{}{value}{}", "[".repeat(depth), "]".repeat(depth))
                } else {
                    value
                };
                line.push_str(&format!(",\"{key}\":{value}"));
            }
            line.push('}');
            line.into_bytes()
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn scanner_agrees_with_serde_json_on_piece_soup(line in soup()) {
            check_scan(&line);
        }

        #[test]
        fn scanner_agrees_with_serde_json_on_mutated_records(line in mutated()) {
            check_scan(&line);
        }

        #[test]
        fn scanner_agrees_with_serde_json_on_built_records(line in built()) {
            check_scan(&line);
        }
    }

    /// Every sample record is accepted by both, with the same bytes.
    #[test]
    fn sample_records_agree() {
        for line in sample_lines() {
            check_scan(line);
            assert!(reference::parse(line).is_ok());
        }
    }
}
