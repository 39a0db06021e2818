//! The decision log as an auditor relies on it: no disclosure without a start record, no whole
//! answer without an end record, even when satgate is killed mid-load or its disk is full; and
//! `satgate audit` answering from a real log.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::support::binary::{self, free_port, Satgate};
use crate::support::sidecar::read;
use crate::support::upstream::start_upstream;
use crate::support::{token, users};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Every line of the log, parsed; the test fails on a line that is not one whole JSON object.
fn log_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "the log ends inside a line");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .inspect(|v| assert!(v.is_object()))
        .collect()
}

/// The request ids with a start record, and those with an end record.
fn starts_and_ends(lines: &[Value]) -> (HashSet<String>, HashSet<String>) {
    let (mut starts, mut ends) = (HashSet::new(), HashSet::new());
    for v in lines {
        assert_eq!(v["schema"], "satgate.decision/2", "{v}");
        let id = v["requestId"].as_str().unwrap().to_owned();
        match v["event"].as_str() {
            Some("start") => starts.insert(id),
            Some("end") => ends.insert(id),
            _ => panic!("{v}"),
        };
    }
    (starts, ends)
}

/// One request's fate as its client saw it.
struct Seen {
    status: u16,
    id: Option<String>,
    complete: bool,
}

async fn ask(client: &HttpClient, url: &str, token: &str) -> Option<Seen> {
    let req = hyper::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.ok()?;
    let id = resp
        .headers()
        .get("satgate-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, _, complete) = read(resp).await;
    Some(Seen { status, id, complete })
}

/// SIGKILL during a load of concurrent streams, some fast, some trickling: every answer a client
/// got in full has its end record, every answer that sent a byte its start record, and every
/// line of the log parses.
#[tokio::test]
async fn a_sigkill_mid_load_leaves_a_start_for_every_answer_begun_and_an_end_for_every_whole_one() {
    let _alone = crate::support::measuring_alone().await;
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let mut satgate = binary::spawn(&[
        "--upstream",
        &format!("http://{}", up.addr),
        "--inventory",
        "tests/data/inventory.json",
        "--decision-log",
        log.to_str().unwrap(),
        "--max-streams",
        "64",
        "--max-streams-per-user",
        "64",
    ])
    .await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let tokens: Arc<Vec<String>> = Arc::new(users().iter().map(|(s, r, p)| token(s, r, p, 300)).collect());
    let base = format!("http://{}", satgate.listen);
    let until = Instant::now() + Duration::from_millis(2500);
    let mut tasks = Vec::new();
    for c in 0..32usize {
        let (client, base, tokens) = (client.clone(), base.clone(), Arc::clone(&tokens));
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0.. {
                let url = if (c + i) % 3 == 0 {
                    format!("{base}/sat/records?mode=slow&n=15")
                } else {
                    format!("{base}/sat/records?n=300")
                };
                match ask(&client, &url, &tokens[(c + i) % tokens.len()]).await {
                    Some(s) => seen.push(s),
                    None => break, // satgate is gone
                }
                if Instant::now() > until + Duration::from_secs(5) {
                    break;
                }
            }
            seen
        }));
    }
    tokio::time::sleep_until(until.into()).await;
    satgate.kill();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let (starts, ends) = starts_and_ends(&log_lines(&log));
    let served: Vec<&Seen> = seen.iter().filter(|s| s.status == 200).collect();
    let whole = served.iter().filter(|s| s.complete).count();
    let cut = served.len() - whole;
    eprintln!(
        "{whole} whole answers, {cut} cut short; {} start and {} end records",
        starts.len(),
        ends.len()
    );
    assert!(
        whole >= 20 && cut >= 5,
        "{whole} whole answers, {cut} cut short: not the load meant"
    );
    for s in served {
        let id = s.id.as_deref().expect("every answer names satgate's request id");
        assert!(starts.contains(id), "an answer began without its start record: {id}");
        if s.complete {
            assert!(ends.contains(id), "a whole answer without its end record: {id}");
        }
    }
    assert!(
        starts.len() > ends.len(),
        "the streams cut short have a start and no end"
    );
}

/// Reads `/metrics` and `/readyz` from the operations listener.
async fn ops(s: &Satgate) -> (String, u16, Value) {
    let metrics = crate::support::sidecar::get(s.ops, "/metrics", None).await;
    let ready = crate::support::sidecar::get(s.ops, "/readyz", None).await;
    (
        String::from_utf8(metrics.1).unwrap(),
        ready.0,
        serde_json::from_slice(&ready.1).unwrap(),
    )
}

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{metrics}"))
}

/// The log's file system fills up (here: a file size limit on the process, which works
/// unprivileged): new requests get a 503 with nothing disclosed, metrics and /readyz say why,
/// and once there is room again the service recovers by itself.
#[tokio::test]
async fn a_full_disk_refuses_new_requests_until_there_is_room_again() {
    use std::os::unix::process::CommandExt;
    const LIMIT: u64 = 8 * 1024;
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let satgate = binary::spawn_with(
        &[
            "--upstream",
            &format!("http://{}", up.addr),
            "--inventory",
            "tests/data/inventory.json",
            "--decision-log",
            log.to_str().unwrap(),
        ],
        |cmd| {
            // Nothing else of the process may meet the limit.
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            // SAFETY: only async-signal-safe calls between fork and exec. Ignoring SIGXFSZ makes
            // a write past the limit fail with EFBIG, as a full disk fails with ENOSPC.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let limit = libc::rlimit {
                        rlim_cur: LIMIT,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    )
    .await;
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS").unwrap();
    let t = token(&sub, &role, &party, 300);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{}/sat/records?n=50", satgate.listen);

    let (metrics, ready, _) = ops(&satgate).await;
    assert_eq!(ready, 200);
    assert_eq!(sample(&metrics, "satgate_decision_log_writable"), 1.0);
    // Fill the file: each request adds about 2 KB (its start and end records).
    let mut refused = None;
    for _ in 0..40 {
        let s = ask(&client, &url, &t).await.unwrap();
        if s.status == 503 {
            refused = Some(s);
            break;
        }
        assert_eq!(s.status, 200);
    }
    let refused = refused.expect("a request was refused once the log was full");
    assert!(refused.complete);
    let (status, body, _) = crate::support::sidecar::get(satgate.listen, "/sat/records?n=50", Some(&t)).await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "decision_log_unavailable", "{body}");
    assert!(body.get("recordId").is_none() && !body.to_string().contains("recordId"));
    let before = up.sent_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let _ = crate::support::sidecar::get(satgate.listen, "/sat/records?n=50", Some(&t)).await;
    assert_eq!(
        up.sent_bytes.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "a refused request never reaches the upstream"
    );

    let (metrics, ready, body) = ops(&satgate).await;
    assert_eq!(ready, 503, "{body}");
    assert_eq!(body["decisionLog"]["writable"], false, "{body}");
    assert!(
        body["decisionLog"]["lastWriteError"]
            .as_str()
            .is_some_and(|e| e.contains("too large")),
        "{body}"
    );
    assert_eq!(sample(&metrics, "satgate_decision_log_writable"), 0.0);
    assert!(sample(&metrics, "satgate_decision_log_entries_failed_total") >= 3.0);
    assert!(sample(&metrics, "satgate_decision_log_entries_written_total") >= 2.0);
    assert!(sample(&metrics, "satgate_streams_refused_total{reason=\"decision_log\"}") >= 3.0);
    assert!(std::fs::metadata(&log).unwrap().len() <= LIMIT);
    // What did get written is whole lines, and a start for every end.
    let (starts, ends) = starts_and_ends(&log_lines(&log));
    assert!(ends.is_subset(&starts));

    // Room again: the next request is served and recorded, and the service is ready.
    let raised = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain system call on a child of this process, with valid pointers.
    let rc = unsafe {
        libc::prlimit(
            satgate.pid() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &raised,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let s = ask(&client, &url, &t).await.unwrap();
    assert_eq!((s.status, s.complete), (200, true));
    let (metrics, ready, body) = ops(&satgate).await;
    assert_eq!(ready, 200, "{body}");
    assert_eq!(body["decisionLog"]["writable"], true);
    assert_eq!(sample(&metrics, "satgate_decision_log_writable"), 1.0);
    let (starts, ends) = starts_and_ends(&log_lines(&log));
    let id = s.id.unwrap();
    assert!(starts.contains(&id) && ends.contains(&id));
}

/// `satgate audit` on the log of a real demo run: who was shown titles about a Device (and
/// under which policies), and what a User was shown, checked against the raw records; the
/// same answers once the log is rotated and cut mid-line.
#[test]
fn audit_answers_both_questions_on_a_log_from_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let status = Command::new(env!("CARGO_BIN_EXE_satgate"))
        .args(["demo", "--records", "2000", "--exit-after-examples"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--upstream-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--decision-log")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let lines = log_lines(&log);
    let (starts, ends) = starts_and_ends(&lines);
    assert_eq!(starts, ends, "every demo request finished");
    let end_records: Vec<&Value> = lines.iter().filter(|v| v["event"] == "end").collect();

    // The expected answer for the busiest Device, straight from the records.
    let mut by_device: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for e in &end_records {
        for (device, n) in e["ownerView"]["devices"].as_object().unwrap() {
            *by_device
                .entry(device.clone())
                .or_default()
                .entry(e["principal"]["sub"].as_str().unwrap().to_owned())
                .or_default() += n.as_u64().unwrap();
        }
    }
    let (device, expected) = by_device
        .iter()
        .max_by_key(|(_, subs)| subs.values().sum::<u64>())
        .expect("the demo shows some owner view");
    let audit = |args: &[&str], logs: &[&Path]| -> Value {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_satgate"));
        cmd.arg("audit");
        for l in logs {
            cmd.arg("--log").arg(l);
        }
        let out = cmd.args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let check_device = |answer: &Value| {
        let shown = answer["shown"].as_array().unwrap();
        let got: HashMap<String, u64> = shown
            .iter()
            .map(|s| {
                (
                    s["principal"]["sub"].as_str().unwrap().to_owned(),
                    s["records"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(&got, expected, "{answer}");
        let sha = end_records[0]["policy"]["sha256"].clone();
        assert!(shown.iter().all(|s| s["policies"][0]["sha256"] == sha), "{answer}");
        assert!(answer["unfinished"].as_array().unwrap().is_empty());
    };
    check_device(&audit(&["--device", device.as_str()], &[&log]));
    // None of it before the demo ran.
    let before = audit(&["--device", device.as_str(), "--to", "2020-01-01T00:00:00Z"], &[&log]);
    assert!(before["shown"].as_array().unwrap().is_empty(), "{before}");

    // What one of those Users was shown: every one of its requests, with its owner view.
    let sub = expected.keys().next().unwrap();
    let answer = audit(&["--sub", sub.as_str()], &[&log]);
    let requests = answer["requests"].as_array().unwrap();
    let theirs: Vec<&&Value> = end_records.iter().filter(|e| e["principal"]["sub"] == **sub).collect();
    assert_eq!(requests.len(), theirs.len(), "{answer}");
    let shown: u64 = requests
        .iter()
        .filter_map(|r| r["ownerView"]["devices"][device.as_str()].as_u64())
        .sum();
    assert_eq!(shown, expected[sub]);
    assert!(requests
        .iter()
        .all(|r| r["status"] == 200 || r["status"] == 422 || r["status"] == 401));

    // Rotated, and the newest file cut mid-line by a crash: the same answers, and the cut counted.
    let text = std::fs::read_to_string(&log).unwrap();
    let half = text[..text.len() / 2].rfind('\n').unwrap() + 1;
    std::fs::write(dir.path().join("decisions.log.1"), &text[..half]).unwrap();
    std::fs::write(&log, format!("{}{{\"schema\":\"satgate.deci", &text[half..])).unwrap();
    let answer = audit(&["--device", device.as_str()], &[&log]);
    check_device(&answer);
    assert_eq!(answer["logs"]["files"].as_array().unwrap().len(), 2);
    assert_eq!(answer["logs"]["partialLastLines"], 1);
    assert_eq!(answer["logs"]["unreadable"], 0);
}

/// Built-in rotation keeps the newest files, all private; SIGUSR1 makes satgate reopen the file an
/// external rotator moved away, and no record is lost or split on the way.
#[tokio::test]
async fn rotation_and_a_reopen_on_sigusr1_keep_every_record_whole() {
    use std::os::unix::fs::PermissionsExt;
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let satgate = binary::spawn(&[
        "--upstream",
        &format!("http://{}", up.addr),
        "--inventory",
        "tests/data/inventory.json",
        "--decision-log",
        log.to_str().unwrap(),
        "--decision-log-max-bytes",
        "3000",
        "--decision-log-max-files",
        "2",
    ])
    .await;
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS").unwrap();
    let t = token(&sub, &role, &party, 300);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{}/sat/records?n=50", satgate.listen);
    let mut ids = Vec::new();
    for _ in 0..8 {
        let s = ask(&client, &url, &t).await.unwrap();
        assert_eq!((s.status, s.complete), (200, true));
        ids.push(s.id.unwrap());
    }
    let rotated = |n: usize| dir.path().join(format!("decisions.log.{n}"));
    assert!(rotated(1).exists() && rotated(2).exists() && !rotated(3).exists());
    let mut ends = HashSet::new();
    for p in [rotated(2), rotated(1), log.clone()] {
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::fs::metadata(&p).unwrap().len() <= 3000);
        ends.extend(starts_and_ends(&log_lines(&p)).1);
    }
    assert!(
        ends.contains(ids.last().unwrap()),
        "the newest request is in the kept files"
    );

    // An external rotator moves the file away and signals.
    let moved = dir.path().join("moved.log");
    std::fs::rename(&log, &moved).unwrap();
    // SAFETY: a plain system call signalling a child of this process.
    assert_eq!(unsafe { libc::kill(satgate.pid() as libc::pid_t, libc::SIGUSR1) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "the log was not reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = ask(&client, &url, &t).await.unwrap();
    let id = s.id.unwrap();
    let (starts, ends) = starts_and_ends(&log_lines(&log));
    assert!(starts.contains(&id) && ends.contains(&id));
    let (old_starts, _) = starts_and_ends(&log_lines(&moved));
    assert!(!old_starts.contains(&id));
}
