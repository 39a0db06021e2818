//! Record-filter throughput, all approaches measured in one run on the same generated records:
//!
//! - (i)   serde_json parse to `Value` and re-serialize (the cost of touching the JSON at all);
//! - (ii)  naive: build Cedar entities and ask Cedar for every class of every record;
//! - (iii) satgate's filter (borrowed parse, decisions reused, allowlist projection);
//!
//! then (ii) and (iii) again with 200 extra never-matching policies loaded; then the record path
//! old vs new: (iv) the same filter as (iii) with the serde_json parser it had before the scanner
//! (`reference::parse_without_depth_rule`) in place of the scanner, and both parsers alone
//! (parse only, no decision or output).
//!
//! Run: `cargo bench --bench filter` (release build). `SATGATE_BENCH_RECORDS` sets the size.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use satgate::decision::{policies, DeviceFacts, Facts, PolicyEngine};
use satgate::model::Principal;
use satgate::sample::Market;
use satgate::stream::reference;
use satgate::stream::{Record, RecordFilter};
use satgate::views::{filter_bytes, Ndjson};

fn engine(extra: usize) -> Arc<PolicyEngine> {
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir("policies")
        .expect("run from the repository root")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .map(|p| (p.clone(), std::fs::read_to_string(p).expect("policy file")))
        .collect();
    let never: String = (0..extra)
        .map(|n| {
            format!(
                "@id(\"never-{n}\")\npermit (principal, action == Action::\"ViewTitle\", resource)\n\
                 when {{ principal.role == Role::\"IS\" && principal.role == Role::\"ES\" && resource has device }};\n"
            )
        })
        .collect();
    files.push(("never.cedar".into(), never));
    let schema = std::fs::read_to_string("schemas/sat.cedarschema").expect("schema");
    let loaded = policies::from_sources(&files, ("schema".as_ref(), &schema)).expect("policies load");
    Arc::new(PolicyEngine::new(loaded).expect("engine"))
}

/// The record path's parser (the scanner), as a plain function like the reference's.
fn scanner_parse(line: &[u8]) -> Result<Record<'_>, satgate::stream::RecordError> {
    Record::parse(line)
}

/// Runs `f` over the input until at least `min` has passed; returns records per second.
fn rate(records: usize, min: Duration, mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut done = 0usize;
    let mut check = 0usize;
    while start.elapsed() < min || done == 0 {
        check = check.wrapping_add(f());
        done += records;
    }
    std::hint::black_box(check);
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("SATGATE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let market = Market::generate(50, 42);
    let inventory = market.inventory();
    let input = market.ndjson(n as u64, 42);
    let principal: Principal = market.users[0].principal.clone();
    let lines: Vec<&[u8]> = input
        .as_bytes()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    println!(
        "{} records, {:.0} bytes/record, {} Devices, principal {} ({}, {})",
        lines.len(),
        input.len() as f64 / lines.len() as f64,
        inventory.len(),
        principal.user_id,
        principal.role,
        principal.party
    );
    let min = Duration::from_secs(3);

    let json_roundtrip = rate(lines.len(), min, || {
        let mut out = Vec::with_capacity(input.len());
        for l in &lines {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(l).expect("sample parses");
            serde_json::to_writer(&mut out, &v).expect("serialize");
            out.push(b'\n');
        }
        out.len()
    });

    let naive = |engine: &Arc<PolicyEngine>, count: usize| {
        let lines = &lines[..count.min(lines.len())];
        rate(lines.len(), min, || {
            let mut out = Vec::new();
            let mut kept = 0;
            for l in lines {
                let r = Record::parse(l).expect("sample parses");
                let device = r
                    .device_id
                    .and_then(|id| inventory.get(id))
                    .map(|entry| DeviceFacts::of(&principal, entry));
                let facts = Facts::new(&principal, r.user_id, r.message_type, device);
                let allowed = engine.evaluate(principal.role, &facts).allowed();
                kept += usize::from(satgate::views::ndjson::write(&r, allowed, &mut out));
            }
            kept
        })
    };
    let pass = |engine: &Arc<PolicyEngine>| {
        let (out, stats) = filter_bytes(engine.for_principal(&principal), input.as_bytes(), |id| {
            inventory.get(id).cloned()
        });
        assert_eq!(stats.malformed, 0);
        out.len()
    };
    // Cold: the first pass over a fresh policy set pays for every distinct decision.
    let cold = |engine: &Arc<PolicyEngine>| {
        let start = Instant::now();
        std::hint::black_box(pass(engine));
        lines.len() as f64 / start.elapsed().as_secs_f64()
    };
    // Warm: the steady state, every decision already cached.
    let warm = |engine: &Arc<PolicyEngine>| rate(lines.len(), min, || pass(engine));

    if let Some(passes) = std::env::var("SATGATE_BENCH_PROFILE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        // A fixed amount of work for a profiler or instruction counter: one warm-up pass, then
        // `passes` more.
        let e = engine(0);
        pass(&e);
        for _ in 0..passes {
            std::hint::black_box(pass(&e));
        }
        return;
    }

    // (iv): the filter's steps for one line (the blank-line test, parse, Device, decide, project),
    // with the record parser passed in.
    let filter_with = |engine: &Arc<PolicyEngine>,
                       parse: fn(&[u8]) -> Result<Record<'_>, satgate::stream::RecordError>| {
        let mut filter = RecordFilter::new(engine.for_principal(&principal), Ndjson);
        let mut out = Vec::with_capacity(input.len());
        for l in &lines {
            if l.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let r = parse(l).expect("sample parses");
            if let Some(id) = filter.needs_device(&r) {
                filter.learn_device(id, inventory.get(id).map(|e| &**e));
            }
            filter.emit(&r, &mut out);
        }
        out.len()
    };
    let parse_only = |parse: fn(&[u8]) -> Result<Record<'_>, satgate::stream::RecordError>| {
        rate(lines.len(), min, || {
            lines
                .iter()
                .map(|l| parse(l).map_or(0, |r| r.raw(satgate::stream::Field::Payload).map_or(0, str::len)))
                .sum()
        })
    };

    let small = engine(0);
    let large = engine(200);
    let naive_small = naive(&small, 20_000);
    let naive_large = naive(&large, 2_000);
    let (small, large) = (engine(0), engine(200)); // fresh caches for the cold passes
    let cold_small = cold(&small);
    let warm_small = warm(&small);
    let cold_large = cold(&large);
    let warm_large = warm(&large);

    // Old and new record paths back to back, twice, on the warm 8-policy engine.
    let mut old_new = Vec::new();
    for _ in 0..2 {
        let old = rate(lines.len(), min, || {
            filter_with(&small, reference::parse_without_depth_rule)
        });
        let new = rate(lines.len(), min, || filter_with(&small, scanner_parse));
        let new_filter = warm(&small);
        old_new.push((old, new, new_filter));
    }
    let parse_old = parse_only(reference::parse_without_depth_rule);
    let parse_new = parse_only(scanner_parse);

    let distinct = small.stats.misses.get();
    let (_, stats) = filter_bytes(small.for_principal(&principal), input.as_bytes(), |id| {
        inventory.get(id).cloned()
    });
    println!(
        "principal sees {} of {} records; {distinct} distinct (principal, facts) decisions",
        stats.records_out, stats.records_in
    );
    println!();
    let bytes_per_record = input.len() as f64 / lines.len() as f64;
    let gbs = |rate: f64| rate * bytes_per_record / 1e9;
    println!("| approach | policies | records/s | GB/s | (iii) warm is |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, policies: &str, rate: f64, vs: Option<f64>| {
        let ratio = vs.map_or(String::new(), |v| format!("{:.1}x faster", v / rate));
        println!("| {name} | {policies} | {rate:.0} | {:.2} | {ratio} |", gbs(rate));
    };
    row(
        "(i) serde_json parse to Value + re-serialize",
        "-",
        json_roundtrip,
        Some(warm_small),
    );
    row(
        "(ii) naive: entities + Cedar per record and class",
        "8",
        naive_small,
        Some(warm_small),
    );
    row(
        "(iii) satgate filter, first pass (cold decisions)",
        "8",
        cold_small,
        None,
    );
    row("(iii) satgate filter, warm", "8", warm_small, None);
    row(
        "(ii) naive: entities + Cedar per record and class",
        "208",
        naive_large,
        Some(warm_large),
    );
    row(
        "(iii) satgate filter, first pass (cold decisions)",
        "208",
        cold_large,
        None,
    );
    row("(iii) satgate filter, warm", "208", warm_large, None);
    println!();
    println!(
        "(iii) with 208 policies: warm {:.2}x, cold {:.2}x its speed with 8.",
        warm_large / warm_small,
        cold_large / cold_small
    );
    println!();
    println!("Record path, old (serde_json reference) vs new (scanner), 8 policies, warm, back to back:");
    println!("| run | (iv) old path records/s (GB/s) | (iv) new path records/s (GB/s) | (iii) filter records/s (GB/s) | new/old |");
    println!("|---|---|---|---|---|");
    for (i, (old, new, filter)) in old_new.iter().enumerate() {
        println!(
            "| {} | {old:.0} ({:.2}) | {new:.0} ({:.2}) | {filter:.0} ({:.2}) | {:.2}x |",
            i + 1,
            gbs(*old),
            gbs(*new),
            gbs(*filter),
            new / old
        );
    }
    println!(
        "| parse only | {parse_old:.0} ({:.2}) | {parse_new:.0} ({:.2}) | | {:.2}x |",
        gbs(parse_old),
        gbs(parse_new),
        parse_new / parse_old
    );
    let (old, new, _) = old_new[old_new.len() - 1];
    println!(
        "vs (i) serde_json Value round trip: old {:.1}x, new {:.1}x; vs (ii) naive Cedar (8 policies): old {:.0}x, new {:.0}x",
        old / json_roundtrip,
        new / json_roundtrip,
        old / naive_small,
        new / naive_small
    );
}
