//! Records as CSV (RFC 4180), for spreadsheet users: a header row with every contract field in
//! the contract's order (docs/contract.md §1), then one row per written record with the same
//! values the NDJSON answer would carry. A field the record lacks, or the caller may not see, or
//! that is null, is an empty cell; a string is its decoded text; `metadata` is its JSON text.
//!
//! Cells that a spreadsheet would run as a formula are defused with a leading `'` (OWASP's CSV
//! injection guidance, widened): a cell starting with `=`, `+`, `-`, `@`, tab, CR or NUL (ASVS
//! 5.0); one whose first character after any leading blanks (Unicode white space of any kind,
//! including NBSP, LF, VT, FF, U+2028 and U+3000, the zero-width characters and the BOM, and NUL)
//! is one of those leads or a look-alike that spreadsheets also accept (full-width `＝＋－＠`, the
//! minus sign U+2212); and a cell that already starts with `'`, which a spreadsheet would hide.
//! [`unescape_cell`] undoes it exactly: it strips one leading `'`, and every cell starting with
//! `'` was given one.

use std::borrow::Cow;

use crate::model::Classes;
use crate::stream::scan::decode_string;
use crate::stream::{Field, Record, Sink};

/// Writes rows straight into the caller's output.
pub struct CsvWriter {
    builder: csv::WriterBuilder,
}

impl Default for CsvWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl CsvWriter {
    pub fn new() -> Self {
        let mut builder = csv::WriterBuilder::new();
        builder.terminator(csv::Terminator::CRLF).buffer_capacity(1024);
        Self { builder }
    }

    /// Appends one row; every cell is defused first.
    pub fn row<I, S>(&mut self, cells: I, out: &mut Vec<u8>)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let cells = cells.into_iter().map(|c| escape_cell(c.as_ref()).into_owned());
        let start = out.len();
        let mut w = self.builder.from_writer(&mut *out);
        let written = w.write_record(cells).is_ok() && w.flush().is_ok();
        drop(w);
        // Writing to a Vec cannot fail; if it somehow did, no half row is left behind.
        if !written {
            out.truncate(start);
        }
    }

    /// The records header: every contract field, in order.
    pub fn header(&mut self, out: &mut Vec<u8>) {
        self.row(Field::ALL.iter().map(|f| f.name()), out);
    }

    /// One record's row, with cells only for fields of `allowed` classes.
    pub fn record(&mut self, record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>) {
        let cells = Field::ALL.map(|f| match record.raw(f) {
            Some(raw) if allowed.contains(f.class()) => cell(raw),
            _ => Cow::Borrowed(""),
        });
        self.row(cells, out);
    }
}

/// The records as CSV: a header row, then a row per visible record.
impl Sink for CsvWriter {
    fn begin(&mut self, out: &mut Vec<u8>) {
        self.header(out);
    }

    fn visible(&mut self, record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>) {
        self.record(record, allowed, out);
    }
}

/// A JSON value as a cell: strings decoded, null empty, objects (metadata) as their JSON text.
pub fn cell(raw: &str) -> Cow<'_, str> {
    match raw.as_bytes().first() {
        Some(b'"') => decode_string(raw).unwrap_or_default(),
        Some(b'n') => Cow::Borrowed(""),
        _ => Cow::Borrowed(raw),
    }
}

/// Prefixes `'` to a cell a spreadsheet could read as a formula (or that starts with `'`).
pub fn escape_cell(s: &str) -> Cow<'_, str> {
    if needs_defusing(s) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn needs_defusing(s: &str) -> bool {
    match s.as_bytes().first() {
        // Nearly every cell: an id, a time, a title starting with a letter or digit.
        None => false,
        Some(b) if b.is_ascii_alphanumeric() => false,
        Some(b'\'' | b'\t' | b'\r' | 0) => true,
        _ => s.chars().find(|c| !is_blank(*c)).is_some_and(is_formula_lead),
    }
}

/// What a spreadsheet may skip before reading a formula.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\0' | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

/// What a spreadsheet may take as the start of a formula.
fn is_formula_lead(c: char) -> bool {
    matches!(
        c,
        '=' | '+' | '-' | '@' | '\u{FF1D}' | '\u{FF0B}' | '\u{FF0D}' | '\u{FF20}' | '\u{2212}'
    )
}

/// The inverse of [`escape_cell`], for readers that want the values back.
pub fn unescape_cell(s: &str) -> &str {
    s.strip_prefix('\'').unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Class;

    const LINE: &str = r#"{"recordId":"r-1","timestamp":"2026-11-01T09:30:00Z","messageType":"ServiceResponse","srv":"4.1.1","srvTitle":"=HYPERLINK(\"x\"), \"quoted\"\nand new line","alertCode":null,"responseCode":"-1","deviceId":null,"userId":"90-B3-D5-1F-30-01-00-00","userRole":"IS","metadata":{"a":[1,"b,c"]},"payload":"@UEFZ"}"#;

    fn rows(allowed: Classes) -> Vec<Vec<String>> {
        let r = Record::parse(LINE.as_bytes()).unwrap();
        let mut w = CsvWriter::new();
        let mut out = Vec::new();
        w.header(&mut out);
        w.record(&r, allowed, &mut out);
        assert!(out.ends_with(b"\r\n"), "RFC 4180 line ends");
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&out[..])
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn a_header_and_one_row_with_decoded_defused_values() {
        let rows = rows(Classes::ALL);
        assert_eq!(rows[0], Field::ALL.map(|f| f.name().to_owned()));
        let row = &rows[1];
        assert_eq!(row[0], "r-1");
        assert_eq!(row[4], "'=HYPERLINK(\"x\"), \"quoted\"\nand new line");
        assert_eq!(unescape_cell(&row[4]), "=HYPERLINK(\"x\"), \"quoted\"\nand new line");
        assert_eq!(row[5], "", "null is empty");
        assert_eq!(row[6], "'-1");
        assert_eq!(row[7], "");
        assert_eq!(row[8], "", "absent is empty");
        assert_eq!(row[12], r#"{"a":[1,"b,c"]}"#);
        assert_eq!(row[13], "'@UEFZ");
    }

    #[test]
    fn fields_the_caller_may_not_see_are_empty_cells() {
        let rows = rows([Class::Title].into_iter().collect());
        let row = &rows[1];
        assert_eq!(row.len(), 14);
        assert_eq!(&row[10..], ["", "", "", ""]);
        assert_eq!(row[9], "IS");
    }

    #[test]
    fn every_formula_lead_is_defused_and_reversible() {
        for s in ["=1", "+1", "-1", "@a", "\tx", "\rx", "'x", "''"] {
            let e = escape_cell(s);
            assert!(e.starts_with('\''), "{s:?}");
            assert_eq!(unescape_cell(&e), s);
        }
        for s in ["", "a=1", "1-2", "a =1", "x\u{FF1D}1", " a", "\u{3000}b-1"] {
            assert_eq!(escape_cell(s), s);
            assert_eq!(unescape_cell(&escape_cell(s)), s);
        }
    }

    /// A formula lead behind leading blanks of any Unicode kind, a leading NUL, and the
    /// full-width and minus-sign look-alikes are all defused, and the escape stays reversible.
    #[test]
    fn formula_leads_behind_unicode_blanks_and_look_alikes_are_defused() {
        let blanks = [
            " ",
            "\u{A0}",
            "\u{200B}",
            "\u{FEFF}",
            "\n",
            "\u{B}",
            "\u{C}",
            "\u{2028}",
            "\u{3000}",
            "\0",
            "\u{2060}",
            " \u{A0}\u{200B}\n",
        ];
        let leads = [
            "=", "+", "-", "@", "\u{FF1D}", "\u{FF0B}", "\u{FF0D}", "\u{FF20}", "\u{2212}",
        ];
        for lead in leads {
            for cell in std::iter::once(format!("{lead}1+1")).chain(blanks.iter().map(|b| format!("{b}{lead}1+1"))) {
                let e = escape_cell(&cell);
                assert!(e.starts_with('\''), "{cell:?} not defused");
                assert_eq!(unescape_cell(&e), cell);
            }
        }
        assert!(escape_cell("\0").starts_with('\''), "a leading NUL");
        assert!(escape_cell("\0abc").starts_with('\''), "a leading NUL");
    }

    proptest::proptest! {
        /// For any text: the escape is undone exactly, and what is written either starts with `'`
        /// or has no formula lead after its leading blanks.
        #[test]
        fn escaping_is_reversible_and_leaves_no_formula_lead(s in "\\PC*|[ \t\r\n\u{A0}\u{200B}\u{FEFF}\u{3000}=+@'\u{FF1D}\u{2212}-]{0,4}\\PC{0,4}") {
            let e = escape_cell(&s);
            proptest::prop_assert_eq!(unescape_cell(&e), s.as_str());
            let first = e.chars().find(|c| !is_blank(*c));
            proptest::prop_assert!(e.starts_with('\'') || !first.is_some_and(is_formula_lead), "{:?}", e);
        }
    }
}
