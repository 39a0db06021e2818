//! The other views of the same records, over the no-leak test's random principals, inventories
//! and record streams, through the real policies:
//!
//! (a) for every principal, inventory and stream, the activity summary equals the summary of the
//!     records `/sat/records` writes for that principal (so nothing the caller cannot see is ever
//!     counted, and everything it can see is);
//! (b) the CSV answer, parsed back, equals the NDJSON answer field for field: the same records
//!     in the same order, each cell the field's value (decoded string, JSON text of metadata,
//!     empty for absent or null), formula-leading cells defused and nothing else changed.
//!
//! Cases: 2,000 by default (CI); set PROPTEST_CASES for more.

use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;
use satgate::model::{Eui64, Principal};
use satgate::ownership::Inventory;
use satgate::stream::{filter_all, Field, RecordFilter, Sink};
use satgate::views::activity::{Activity, Limits, Titles};
use satgate::views::csv::unescape_cell;
use satgate::views::{CsvWriter, Ndjson};
use serde_json::value::RawValue;

use crate::no_leak::{case, eui, inventory, render, Case, PARTIES, ROLES};
use crate::support::{cases, engine};

/// The case's principal, inventory and input stream.
fn setup(case: &Case) -> (Principal, Inventory, Vec<u8>) {
    let (pu, pr, pp) = case.principal;
    let principal = Principal::from_claims(&eui(0xA0, pu, false), ROLES[pr], PARTIES[pp]).unwrap();
    let (inventory, _) = Inventory::parse(&inventory(case).to_string()).unwrap();
    let mut input = Vec::new();
    for (i, r) in case.records.iter().enumerate() {
        input.extend_from_slice(&render(i, r).0);
        input.push(b'\n');
    }
    (principal, inventory, input)
}

fn run<S: Sink>(principal: &Principal, inventory: &Inventory, input: &[u8], sink: S) -> (RecordFilter<S>, Vec<u8>) {
    let filter = RecordFilter::new(engine().for_principal(principal), sink);
    let (out, filter) = filter_all(filter, input, |id| inventory.get(id).cloned());
    (filter, out)
}

/// One written NDJSON line's fields, as raw JSON text.
pub(crate) fn fields(line: &str) -> BTreeMap<String, &RawValue> {
    serde_json::from_str(line).expect("written lines are JSON objects")
}

/// The title fields of a written line, read as any client would; `caller`: the User reading
/// them, whose own records show their `userId` (every other record is another User's).
pub(crate) fn titles_of<'a>(f: &'a BTreeMap<String, &'a RawValue>, caller: Eui64) -> Titles<'a> {
    let text = |name: &str| -> Option<Cow<'a, str>> {
        serde_json::from_str::<Option<String>>(f.get(name)?.get())
            .unwrap()
            .map(Cow::Owned)
    };
    Titles {
        timestamp: text("timestamp"),
        message_type: text("messageType").map(|m| m.parse().unwrap()),
        srv: text("srv"),
        srv_title: text("srvTitle"),
        alert_code: text("alertCode"),
        response_code: text("responseCode"),
        device_id: text("deviceId").map(|d| Eui64::parse(&d).unwrap()),
        user_role: text("userRole"),
        other_user: text("userId").and_then(|u| Eui64::parse(&u).ok()) != Some(caller),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_activity_summary_is_the_summary_of_the_visible_records(case in case()) {
        let (principal, inventory, input) = setup(&case);
        let (records, ndjson) = run(&principal, &inventory, &input, Ndjson);
        let (viewed, written) = run(
            &principal, &inventory, &input, Activity::new(Limits::DEFAULT).for_caller(principal.user_id));
        prop_assert!(written.is_empty(), "the activity output writes nothing while it counts");
        prop_assert_eq!(&viewed.stats, &records.stats);

        // Summarise what /sat/records wrote, as a client holding only that output could.
        let mut expected = Activity::new(Limits::DEFAULT);
        let text = String::from_utf8(ndjson).unwrap();
        for line in text.lines() {
            expected.add(&titles_of(&fields(line), principal.user_id));
        }
        let got = viewed.sink();
        prop_assert_eq!(got.records(), records.stats.records_out);
        prop_assert_eq!(got.summary(), expected.summary());
    }

    #[test]
    fn csv_parsed_back_equals_the_ndjson_answer(case in case()) {
        let (principal, inventory, input) = setup(&case);
        let (_, ndjson) = run(&principal, &inventory, &input, Ndjson);
        let (_, csv) = run(&principal, &inventory, &input, CsvWriter::new());

        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&csv[..]);
        let mut rows = reader.records().map(|r| r.expect("the CSV parses"));
        let header = rows.next().expect("a header row, even with no records");
        prop_assert_eq!(header.iter().collect::<Vec<_>>(), Field::ALL.map(|f| f.name()).to_vec());
        prop_assert!(csv.ends_with(b"\r\n"), "RFC 4180 rows end with CRLF");

        let text = String::from_utf8(ndjson).unwrap();
        let mut lines = text.lines();
        for row in rows.by_ref() {
            let Some(line) = lines.next() else {
                prop_assert!(false, "a CSV row without an NDJSON record");
                unreachable!();
            };
            let f = fields(line);
            prop_assert_eq!(row.len(), Field::ALL.len());
            for (cell, field) in row.iter().zip(Field::ALL) {
                let want = match f.get(field.name()).map(|v| v.get()) {
                    None | Some("null") => String::new(),
                    Some(raw) if raw.starts_with('"') => serde_json::from_str::<String>(raw).unwrap(),
                    Some(raw) => raw.to_owned(),
                };
                prop_assert_eq!(unescape_cell(cell), want.as_str(), "field {}", field.name());
                if matches!(want.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')) {
                    prop_assert!(cell.starts_with('\''), "{} not defused", field.name());
                }
            }
        }
        prop_assert_eq!(lines.next(), None, "an NDJSON record without a CSV row");
    }
}
