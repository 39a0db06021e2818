//! The no-leak check behind the fuzz target (`fuzz/fuzz_targets/record_filter.rs`), kept beside
//! the views it exercises so the target stays a few lines, and run by the tests on mutated
//! sample records.
//!
//! For arbitrary input bytes, filtered as one of a few principals against the real policies and
//! the shipped sample inventory: nothing panics, every written line is a JSON object with only
//! contract fields, each at most once, and a written record carries identity, metadata or
//! payload only when its `userId` is the principal's.

use std::sync::{Arc, OnceLock};

use crate::decision::PolicyEngine;
use crate::model::{Eui64, Principal, Role};
use crate::ownership::Inventory;
use crate::stream::{filter_all, Field, FilterStats, RecordFilter, Sink};

use super::{filter_bytes, Activity, CsvWriter, Format, Ndjson};

struct Fixture {
    engine: Arc<PolicyEngine>,
    inventory: Inventory,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let engine = PolicyEngine::load(&root.join("policies"), &root.join("schemas/sat.cedarschema"))
            .expect("shipped policies load");
        let (inventory, _) =
            Inventory::parse(include_str!("../../tests/data/inventory.json")).expect("sample inventory parses");
        Fixture {
            engine: Arc::new(engine),
            inventory,
        }
    })
}

/// Filters `data` (its first byte picks the principal) and panics on any violation.
pub fn check_filter(data: &[u8]) {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    // Sample Users (tests/data/users.json): 90-B3-D5-1F-30-01-00-0X.
    let principal = Principal {
        user_id: Eui64::from_u64(0x90B3_D51F_3001_0000 + u64::from(pick % 11)),
        role: Role::ALL[usize::from(pick / 11) % Role::ALL.len()],
        party: ["SUPA", "SUPB", "SUPC", "DNO1", "DNO2", "GT1"][usize::from(pick) % 6].to_owned(),
    };
    let f = fixture();
    let (out, stats) = filter_bytes(f.engine.for_principal(&principal), input, |id| {
        f.inventory.get(id).cloned()
    });
    assert!(stats.records_out <= stats.records_in);
    let written = out.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let mut count = 0;
    for line in written {
        count += 1;
        let fields = parse_pairs(line);
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(Field::ALL.iter().any(|f| f.name() == *n), "unknown field {n:?} written");
            assert!(!names[..i].contains(n), "field {n:?} written twice");
        }
        assert!(names.contains(&"recordId"), "a record without its title");
        let private = ["userId", "requestId", "metadata", "payload"];
        if names.iter().any(|n| private.contains(n)) {
            let user = fields
                .iter()
                .find(|(k, _)| k == "userId")
                .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok());
            let own = user.and_then(|u| Eui64::parse(&u).ok()) == Some(principal.user_id);
            assert!(own, "identity, metadata or payload of another User's record written");
        }
    }
    assert_eq!(count as u64, stats.records_out);

    // The other views of the same input see exactly the records the NDJSON answer holds.
    fn run<S: Sink>(sink: S, principal: &Principal, input: &[u8], stats: &FilterStats) -> (S, Vec<u8>) {
        let f = fixture();
        let filter = RecordFilter::new(f.engine.for_principal(principal), sink);
        let (out, filter) = filter_all(filter, input, |id| f.inventory.get(id).cloned());
        assert_eq!(&filter.stats, stats, "another view decided differently");
        (filter.into_sink(), out)
    }
    let view = |sink| run(sink, &principal, input, &stats);
    let (_, ndjson) = run(Ndjson, &principal, input, &stats);
    assert_eq!(ndjson, out, "the NDJSON sink writes what filter_bytes writes");
    let (_, csv) = run(CsvWriter::new(), &principal, input, &stats);
    let rows = ::csv::ReaderBuilder::new()
        .from_reader(&csv[..])
        .records()
        .map(|r| r.map(|r| r.len()))
        .collect::<Result<Vec<_>, _>>()
        .expect("the CSV parses");
    assert!(rows.iter().all(|&n| n == Field::ALL.len()));
    assert_eq!(rows.len() as u64, stats.records_out, "a CSV row per written record");
    let (activity, written) = view(Activity::default());
    assert!(written.is_empty());
    if activity.overflow().is_none() {
        assert_eq!(activity.records(), stats.records_out);
        let json: Vec<u8> = activity.render(Format::Json).flatten().collect();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&json).is_ok(),
            "the summary is JSON"
        );
    }
}

/// The (key, raw value) pairs of one JSON object, in order, keeping duplicates. Raw values, not
/// `serde_json::Value`: that reads an object whose first key is serde_json's private RawValue
/// marker as the JSON text of its value, so valid metadata could look invalid here.
fn parse_pairs(line: &[u8]) -> Vec<(String, Box<serde_json::value::RawValue>)> {
    struct Pairs(Vec<(String, Box<serde_json::value::RawValue>)>);
    impl<'de> serde::Deserialize<'de> for Pairs {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Pairs;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                    let mut v = Vec::new();
                    while let Some(kv) = m.next_entry()? {
                        v.push(kv);
                    }
                    Ok(Pairs(v))
                }
            }
            d.deserialize_map(V)
        }
    }
    match serde_json::from_slice::<Pairs>(line) {
        Ok(p) => p.0,
        Err(e) => panic!("written line is not a JSON object: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Rng;

    /// The fuzz check over the sample records, mutated: byte flips, cut lines, spliced lines.
    #[test]
    fn mutated_sample_records_never_leak() {
        let sample = include_bytes!("../../tests/data/records.ndjson");
        let lines: Vec<&[u8]> = sample.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        let cases: u64 = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let mut rng = Rng::new(99);
        for _ in 0..cases {
            let mut input = vec![rng.next_u64() as u8];
            for _ in 0..1 + rng.below(4) {
                let mut line = rng.pick(&lines).to_vec();
                match rng.below(5) {
                    0 => {
                        let i = rng.below(line.len());
                        line[i] = rng.next_u64() as u8;
                    }
                    1 => line.truncate(rng.below(line.len())),
                    2 => {
                        let other = rng.pick(&lines);
                        let at = rng.below(line.len());
                        line.splice(at..at, other[..rng.below(other.len())].iter().copied());
                    }
                    3 => {
                        let at = rng.below(line.len());
                        line.splice(at..at, br#""payload":"X","#.iter().copied());
                    }
                    _ => {}
                }
                input.extend_from_slice(&line);
                input.push(b'\n');
            }
            check_filter(&input);
        }
    }

    /// The caller's own record with a lone surrogate, or with metadata nested past the limit, is
    /// left out and counted as malformed; its neighbours pass.
    #[test]
    fn lone_surrogates_and_deep_nesting_are_left_out_and_counted() {
        // In contract order, so the caller's own record is written back unchanged.
        let good = r#"{"recordId":"r-1","timestamp":"t","messageType":"ServiceRequest","userRole":"IS","userId":"90-B3-D5-1F-30-01-00-00","metadata":{"a":1},"payload":"p"}"#;
        let lone = good.replace(r#""payload":"p""#, r#""payload":"\ud800""#);
        let title = good.replace(r#""recordId":"r-1""#, r#""recordId":"r-\udfff""#);
        let deep = good.replace(
            r#"{"a":1}"#,
            &format!("{}1{}", r#"{"a":"#.repeat(1000), "}".repeat(1000)),
        );
        let input = format!("{deep}\n{good}\n{lone}\n{title}\n{good}\n");
        let f = fixture();
        let principal = Principal::from_claims("90-B3-D5-1F-30-01-00-00", "IS", "SUPA").unwrap();
        let (out, stats) = filter_bytes(f.engine.for_principal(&principal), input.as_bytes(), |_| None);
        assert_eq!((stats.records_in, stats.records_out, stats.malformed), (5, 2, 3));
        assert_eq!(String::from_utf8(out).unwrap(), format!("{good}\n{good}\n"));
    }

    /// Found by the fuzzer: the User's own record, whose metadata object starts with
    /// serde_json's private RawValue marker key, is written unchanged (and the check reads it).
    #[test]
    fn metadata_with_serde_json_marker_key_passes_through_unchanged() {
        let line = br#"{"recordId":"r-1","timestamp":"t","messageType":"ServiceRequest","userId":"90-B3-D5-1F-30-01-00-00","userRole":"IS","metadata":{"$serde_json::private::RawValue":"not json"},"payload":"p"}"#;
        let mut input = vec![0u8];
        input.extend_from_slice(line);
        input.push(b'\n');
        check_filter(&input);
        let f = fixture();
        let principal = Principal::from_claims("90-B3-D5-1F-30-01-00-00", "IS", "SUPA").unwrap();
        let (out, _) = filter_bytes(f.engine.for_principal(&principal), &input[1..], |_| None);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(r#""metadata":{"$serde_json::private::RawValue":"not json"}"#),
            "{out}"
        );
    }
}
