//! End-to-end proxy benchmark, one run, same client and upstream for both paths:
//!
//! 1. stream N records (default 1,000,000) (a) directly from a fast local upstream and (b)
//!    through a `satgate serve` child process (release build); report the time ratio, records/s
//!    and satgate's peak RSS;
//! 2. p50/p99 latency of a 100-record page at 64 concurrent clients, direct vs through satgate.
//!
//! 3. the cost of the durable decision log: the same pages at 64 and 1 clients through a satgate
//!    writing (and `fdatasync`ing, in group commits) a start and an end record for each.
//!
//! Run: `cargo bench --bench proxy`. `SATGATE_BENCH_RECORDS` sets N.
//!
//! Old vs new record path: with `SATGATE_BENCH_OLD_BIN` set to a `satgate` binary built from an
//! earlier commit, the run starts with three rounds of N records each direct, through that
//! binary and through this build's, back to back.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{drain, get_text, latency, peak_rss_kib, percentile, HttpClient};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";

/// A `satgate serve` child in front of the upstream, started and listening.
async fn spawn_satgate(dir: &std::path::Path, up_addr: SocketAddr) -> (std::process::Child, SocketAddr) {
    spawn_satgate_bin(env!("CARGO_BIN_EXE_satgate").as_ref(), dir, up_addr, &[]).await
}

/// Like [`spawn_satgate`], running the given binary.
async fn spawn_satgate_bin(
    bin: &std::path::Path,
    dir: &std::path::Path,
    up_addr: SocketAddr,
    extra: &[&std::ffi::OsStr],
) -> (std::process::Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let sg_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = common::spawn_satgate(bin, "serve", dir, sg_addr, up_addr, extra).await;
    (child, sg_addr)
}

/// Old vs new: N records direct, through the old binary and through this build, three rounds
/// back to back (so each ratio compares runs seconds apart).
#[allow(clippy::too_many_arguments)]
async fn compare_builds(
    client: &HttpClient,
    token: &str,
    n: usize,
    direct: &str,
    via_new: &str,
    old_bin: &std::path::Path,
    dir: &std::path::Path,
    up_addr: SocketAddr,
) {
    let (mut old_child, old_addr) = spawn_satgate_bin(old_bin, dir, up_addr, &[]).await;
    let via_old = format!("http://{old_addr}");
    for base in [direct, &via_old, via_new] {
        drain(client, &format!("{base}/sat/records?n=20000"), token).await;
    }
    println!("Old vs new record path, {n} records per stream:");
    println!("| round | direct | through old | through new | old/direct | new/direct | new records/s vs old |");
    println!("|---|---|---|---|---|---|---|");
    let mut sums = [0.0f64; 3];
    for round in 1..=3 {
        let mut times = [0.0f64; 3];
        for (i, base) in [direct, &via_old, via_new].into_iter().enumerate() {
            let t = Instant::now();
            drain(client, &format!("{base}/sat/records?n={n}"), token).await;
            times[i] = t.elapsed().as_secs_f64();
            sums[i] += times[i];
        }
        println!(
            "| {round} | {:.2} s | {:.2} s ({:.0}/s) | {:.2} s ({:.0}/s) | {:.2} | {:.2} | {:.2}x |",
            times[0],
            times[1],
            n as f64 / times[1],
            times[2],
            n as f64 / times[2],
            times[1] / times[0],
            times[2] / times[0],
            times[1] / times[2]
        );
    }
    println!(
        "| all | {:.2} s | {:.2} s | {:.2} s | {:.2} | {:.2} | {:.2}x |",
        sums[0],
        sums[1],
        sums[2],
        sums[1] / sums[0],
        sums[2] / sums[0],
        sums[1] / sums[2]
    );
    println!();
    let _ = old_child.kill();
    let _ = old_child.wait();
}

/// Sizing: a fresh satgate per client count, each client streaming its share of `total`
/// records. Upstream records/s through satgate and satgate's peak RSS.
async fn sizing(dir: &std::path::Path, up_addr: SocketAddr, token: &str, total: usize) -> Vec<(usize, f64, u64)> {
    let mut rows = Vec::new();
    for clients in [1, 16, 64] {
        let (mut child, addr) = spawn_satgate(dir, up_addr).await;
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(128)
            .build_http();
        let base = format!("http://{addr}");
        drain(&client, &format!("{base}/sat/records?n=20000"), token).await;
        let per = total / clients;
        let t = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (client, url, token) = (client.clone(), format!("{base}/sat/records?n={per}"), token.to_owned());
                tokio::spawn(async move { drain(&client, &url, &token).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("client task");
        }
        let rate = (per * clients) as f64 / t.elapsed().as_secs_f64();
        rows.push((clients, rate, peak_rss_kib(child.id())));
        let _ = child.kill();
        let _ = child.wait();
    }
    rows
}

#[tokio::main]
async fn main() {
    let common::Setup {
        n,
        market,
        upstream: up_addr,
        dir,
        token,
    } = common::setup("satgate-bench", SECRET);
    let (mut child, sg_addr) = spawn_satgate(&dir, up_addr).await;
    let user = &market.users[0].principal;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(128)
        .build_http();
    let direct = format!("http://{up_addr}");
    let via = format!("http://{sg_addr}");

    if let Some(old_bin) = std::env::var_os("SATGATE_BENCH_OLD_BIN") {
        compare_builds(&client, &token, n, &direct, &via, old_bin.as_ref(), &dir, up_addr).await;
    }

    // Warm both paths (connections, decision cache).
    drain(&client, &format!("{direct}/sat/records?n=20000"), &token).await;
    drain(&client, &format!("{via}/sat/records?n=20000"), &token).await;

    let t = Instant::now();
    let direct_bytes = drain(&client, &format!("{direct}/sat/records?n={n}"), &token).await;
    let direct_time = t.elapsed();
    let t = Instant::now();
    let via_bytes = drain(&client, &format!("{via}/sat/records?n={n}"), &token).await;
    let via_time = t.elapsed();
    let rss_stream = peak_rss_kib(child.id());

    let per_client = 30;
    let t = Instant::now();
    let direct_lat = latency(&client, &direct, &token, 64, per_client).await;
    let direct_rps = direct_lat.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let via_lat = latency(&client, &via, &token, 64, per_client).await;
    let via_rps = via_lat.len() as f64 / t.elapsed().as_secs_f64();
    let direct_one = latency(&client, &direct, &token, 1, 300).await;
    let via_one = latency(&client, &via, &token, 1, 300).await;
    let rss_all = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();

    // The same pages through two fresh satgates side by side, one writing (and fdatasyncing) a
    // start and an end record for every request (--decision-log on the same disk as the rest of
    // the run), one without; the runs alternate, so both see the same machine.
    let log = dir.join("decisions.log");
    let bin: &std::path::Path = env!("CARGO_BIN_EXE_satgate").as_ref();
    let (mut plain, plain_addr) = spawn_satgate_bin(bin, &dir, up_addr, &[]).await;
    let (mut logged, logged_addr) =
        spawn_satgate_bin(bin, &dir, up_addr, &["--decision-log".as_ref(), log.as_os_str()]).await;
    let bases = [format!("http://{plain_addr}"), format!("http://{logged_addr}")];
    for base in &bases {
        drain(&client, &format!("{base}/sat/records?n=20000"), &token).await;
    }
    let (mut many, mut many_secs, mut one) = ([vec![], vec![]], [0.0f64; 2], [vec![], vec![]]);
    for _round in 0..2 {
        for (i, base) in bases.iter().enumerate() {
            let t = Instant::now();
            many[i].extend(latency(&client, base, &token, 64, per_client).await);
            many_secs[i] += t.elapsed().as_secs_f64();
        }
        for (i, base) in bases.iter().enumerate() {
            one[i].extend(latency(&client, base, &token, 1, 150).await);
        }
    }
    for v in many.iter_mut().chain(one.iter_mut()) {
        v.sort();
    }
    let commits = get_text(&client, &format!("{}/metrics", bases[1])).await;
    for child in [&mut plain, &mut logged] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let sized = sizing(&dir, up_addr, &token, n / 2).await;
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "{n} records streamed; principal {} ({}, {})",
        user.user_id, user.role, user.party
    );
    println!();
    println!("| path | time | upstream records/s | bytes to client |");
    println!("|---|---|---|---|");
    println!(
        "| (a) direct | {:.2} s | {:.0} | {direct_bytes} |",
        direct_time.as_secs_f64(),
        n as f64 / direct_time.as_secs_f64()
    );
    println!(
        "| (b) through satgate | {:.2} s | {:.0} | {via_bytes} |",
        via_time.as_secs_f64(),
        n as f64 / via_time.as_secs_f64()
    );
    println!();
    println!(
        "(b)/(a) time ratio: {:.2}",
        via_time.as_secs_f64() / direct_time.as_secs_f64()
    );
    println!(
        "satgate peak RSS: {:.1} MiB after the stream, {:.1} MiB after the latency run",
        rss_stream as f64 / 1024.0,
        rss_all as f64 / 1024.0
    );
    println!();
    println!("100-record pages, {per_client} requests per client:");
    println!("| path | clients | p50 | p99 | pages/s |");
    println!("|---|---|---|---|---|");
    let row = |path: &str, clients: usize, lat: &[Duration], rps: Option<f64>| {
        let rps = rps.map_or(String::new(), |r| format!("{r:.0}"));
        let (p50, p99) = (percentile(lat, 0.5), percentile(lat, 0.99));
        println!("| {path} | {clients} | {p50:.2} ms | {p99:.2} ms | {rps} |");
    };
    row("direct", 64, &direct_lat, Some(direct_rps));
    row("through satgate", 64, &via_lat, Some(via_rps));
    row("direct", 1, &direct_one, None);
    row("through satgate", 1, &via_one, None);
    println!(
        "added at 64 clients: p50 {:.2} ms, p99 {:.2} ms; at 1 client: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&via_lat, 0.5) - percentile(&direct_lat, 0.5),
        percentile(&via_lat, 0.99) - percentile(&direct_lat, 0.99),
        percentile(&via_one, 0.5) - percentile(&direct_one, 0.5),
        percentile(&via_one, 0.99) - percentile(&direct_one, 0.99),
    );
    println!();
    println!("The durable decision log: the same pages through two fresh satgates, without and with --decision-log, runs alternating:");
    println!("| decision log | clients | p50 | p99 | pages/s |");
    println!("|---|---|---|---|---|");
    for (i, name) in ["none", "durable"].into_iter().enumerate() {
        row(name, 64, &many[i], Some(many[i].len() as f64 / many_secs[i]));
    }
    for (i, name) in ["none", "durable"].into_iter().enumerate() {
        row(name, 1, &one[i], None);
    }
    let metric = |name: &str| {
        commits
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (count, sum) = (
        metric("satgate_decision_log_commit_seconds_count"),
        metric("satgate_decision_log_commit_seconds_sum"),
    );
    let entries = metric("satgate_decision_log_entries_written_total");
    println!(
        "{entries:.0} records in {count:.0} group commits ({:.1} records per commit), a commit (write + fdatasync) {:.2} ms on average",
        entries / count,
        sum / count * 1e3
    );
    println!();
    println!(
        "Sizing: {} upstream records in all, split over the clients, a fresh satgate each:",
        n / 2
    );
    println!("| concurrent clients | upstream records/s through satgate | satgate peak RSS |");
    println!("|---|---|---|");
    for (clients, rate, rss) in sized {
        println!("| {clients} | {rate:.0} | {:.1} MiB |", rss as f64 / 1024.0);
    }
}
