//! A bounded abuse run against the real binary with its default limits, all on loopback, ending
//! by itself: 200 authenticated clients open streams of their own large records and never read
//! them, then 1,030 sockets each send one byte to the callers' port. The process must stay well
//! inside its memory budget, refuse what is over its limits with a clear status, and keep
//! answering health checks on the operations port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::token;
use crate::support::upstream::start_upstream;

/// Time for one `GET /healthz` on a fresh connection, and its status.
async fn health(ops: SocketAddr) -> (Duration, u16) {
    let started = Instant::now();
    let status = async {
        let mut s = tokio::net::TcpStream::connect(ops).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        text.get(9..12)?.parse().ok()
    };
    let status = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    (started.elapsed(), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_and_a_connection_flood_with_default_limits() {
    let up = start_upstream().await;
    let satgate = crate::support::binary::spawn(&[
        "--upstream",
        &format!("http://{}", up.addr),
        "--inventory",
        "tests/data/inventory.json",
    ])
    .await;
    let (listen, ops) = (satgate.listen, satgate.ops);
    let idle_kib = satgate.peak_rss_kib();

    // 200 stalled readers: 50 Users with 4 streams each (the per-User default), 100 records of
    // 256 KiB of their own payload per stream. Each reads the status line, then nothing.
    let mut held = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..200u64 {
        let sub = satgate::model::Eui64::from_u64(0x90B3_D51F_3000_0000 + i / 4).to_string();
        let t = token(&sub, "OU", "OTHER", 300);
        let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
        let req = format!(
            "GET /sat/records?mode=big&n=100&kb=256&user={sub} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
            .await
            .expect("a status line in time")
            .unwrap();
        let status: u16 = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
        *statuses.entry(status).or_default() += 1;
        held.push(s);
    }
    // Let every accepted stream fill what it can hold.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled_kib = satgate.peak_rss_kib();

    // 1,030 sockets, one byte each, on the callers' port.
    let mut flood = Vec::new();
    for _ in 0..1030 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(listen).await {
            let _ = s.write_all(b"G").await;
            flood.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst_health = Duration::ZERO;
    for _ in 0..5 {
        let (took, status) = health(ops).await;
        assert_eq!(status, 200, "healthz under flood");
        worst_health = worst_health.max(took);
    }
    let final_kib = satgate.peak_rss_kib();
    drop(flood);
    drop(held);

    let budget = satgate::server::limits::worst_case_bytes(
        &satgate::server::StreamLimits::DEFAULT,
        satgate::stream::DEFAULT_MAX_LINE_BYTES,
        100_000,
    ) as u64
        / 1024;
    eprintln!(
        "abuse: statuses {statuses:?}; peak RSS idle {idle_kib} KiB, 200 stalled readers {stalled_kib} KiB, \
         with 1,030-socket flood {final_kib} KiB (formula {budget} KiB); slowest /healthz under flood {worst_health:?}"
    );
    assert_eq!(
        statuses.get(&200),
        Some(&32),
        "exactly --max-streams streams served: {statuses:?}"
    );
    assert_eq!(statuses.get(&503), Some(&168), "the rest refused as busy: {statuses:?}");
    assert!(final_kib < 128 * 1024, "peak RSS {final_kib} KiB");
    assert!(
        final_kib < budget,
        "peak RSS {final_kib} KiB over the formula's {budget} KiB"
    );
    assert!(
        worst_health < Duration::from_secs(1),
        "/healthz took {worst_health:?} under flood"
    );
}
