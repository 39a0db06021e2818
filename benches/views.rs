//! The views of the same records, measured in one run over the filter bench's generated records
//! (100,000 by default, ~1.2 KB each), as the same Supplier User:
//!
//! - the plain filter, writing NDJSON (what `/sat/records` does);
//! - the activity view, counting the same visible records and building the summary at the end;
//! - the CSV rows of the same records.
//!
//! Rounds alternate between the three, and each reports its best round, so a noisy neighbour
//! hurts all of them alike. Run: `cargo bench --bench views`; `SATGATE_BENCH_ONLY` (0, 1, 2) runs
//! one view alone, for profiling; `SATGATE_BENCH_RECORDS` sets the
//! size, `SATGATE_BENCH_ROUNDS` the rounds (5), `SATGATE_BENCH_USER` which sample User asks (0,
//! an import Supplier).

use std::sync::Arc;
use std::time::Instant;

use satgate::decision::PolicyEngine;
use satgate::model::Principal;
use satgate::ownership::Inventory;
use satgate::sample::Market;
use satgate::stream::{filter_all, FilterStats, RecordFilter, Sink};
use satgate::views::{Activity, CsvWriter, Limits, Ndjson};

/// One pass of the filter over `input` with `sink`: its counts and the bytes it wrote (for the
/// activity view, the summary's).
fn pass<S: Sink>(
    sink: S,
    engine: &Arc<PolicyEngine>,
    principal: &Principal,
    inventory: &Inventory,
    input: &[u8],
    end: fn(&S) -> usize,
) -> (FilterStats, usize) {
    let filter = RecordFilter::new(engine.for_principal(principal), sink);
    let (out, filter) = filter_all(filter, input, |id| inventory.get(id).cloned());
    (filter.stats.clone(), out.len() + end(filter.sink()))
}

fn summary(a: &Activity) -> usize {
    assert_eq!(a.overflow(), None);
    serde_json::to_vec(&a.summary()).expect("summary serializes").len()
}

fn main() {
    let n: u64 = env("SATGATE_BENCH_RECORDS", 100_000);
    let rounds = env("SATGATE_BENCH_ROUNDS", 5);
    // One view alone (0, 1, 2), for profiling it.
    let only: Option<usize> = std::env::var("SATGATE_BENCH_ONLY").ok().and_then(|v| v.parse().ok());
    let market = Market::generate(50, 42);
    let inventory = market.inventory();
    let input = market.ndjson(n, 42);
    let principal = market.users[env("SATGATE_BENCH_USER", 0)].principal.clone();
    let engine = Arc::new(
        PolicyEngine::load("policies".as_ref(), "schemas/sat.cedarschema".as_ref())
            .expect("run from the repository root"),
    );

    let input = input.as_bytes();
    let run = |i: usize| match i {
        0 => pass(Ndjson, &engine, &principal, &inventory, input, |_| 0),
        1 => pass(
            Activity::new(Limits::DEFAULT),
            &engine,
            &principal,
            &inventory,
            input,
            summary,
        ),
        _ => pass(CsvWriter::new(), &engine, &principal, &inventory, input, |_| 0),
    };
    let outputs = [
        "plain filter (NDJSON records)",
        "activity summary (JSON)",
        "CSV records",
    ];
    let (stats, _) = run(0); // warms the decision cache
    println!(
        "{} records, {:.0} bytes/record, {} Devices; principal {} ({}, {}) sees {}",
        stats.records_in,
        input.len() as f64 / stats.records_in as f64,
        inventory.len(),
        principal.user_id,
        principal.role,
        principal.party,
        stats.records_out
    );
    let mut best = [0f64; 3];
    for _ in 0..rounds {
        for (i, rate) in best.iter_mut().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let start = Instant::now();
            std::hint::black_box(run(i));
            *rate = rate.max(stats.records_in as f64 / start.elapsed().as_secs_f64());
        }
    }
    println!();
    println!("| view | records/s | input GB/s | of the plain filter's rate |");
    println!("|---|---|---|---|");
    let bytes_per_record = input.len() as f64 / stats.records_in as f64;
    for (i, name) in outputs.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0}% |",
            best[i],
            best[i] * bytes_per_record / 1e9,
            100.0 * best[i] / best[0]
        );
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
