//! README's main command, as a user follows it: `satgate demo` serving, and every `curl` line it
//! prints run with the real curl. Each must answer: the week's records as NDJSON, the activity
//! summary as JSON (with the erratic Device first), the CSV table, the bad token's 401.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::binary::free_port;

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_curl_line_the_demo_prints_works() {
    let curl = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !crate::support::tools::available(
        "demo::every_curl_line_the_demo_prints_works",
        curl,
        "SATGATE_REQUIRE_TOOLS",
        "curl is not installed (apt-get install curl)",
    ) {
        return;
    }
    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_satgate"))
            .args(["demo", "--records", "2000"])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--upstream-listen", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut curls = Vec::new();
    let mut page_file = None;
    for line in BufReader::new(demo.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("Serving until Ctrl-C") {
            break;
        }
        if let Some((_, path)) = line.split_once("file://") {
            page_file = Some(path.to_owned());
        }
        if let Some(cmd) = line.trim_start().strip_prefix("curl ") {
            curls.push(format!("curl --max-time 20 -w '\\n%{{http_code}}' {cmd}"));
        }
    }
    assert!(curls.len() >= 8, "the demo printed {} curl lines", curls.len());
    // The page's file URL, printed for a browser: the page, with the erratic Device first.
    let page = std::fs::read_to_string(page_file.expect("the demo prints the page's file URL")).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    let (mut activity, mut csv, mut html, mut records) = (0, 0, 0, 0);
    for cmd in &curls {
        let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
        assert!(out.status.success(), "{cmd}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        if cmd.contains("not-a-token") {
            assert_eq!(status, "401");
            continue;
        }
        assert_eq!(status, "200", "{cmd}: {body}");
        if cmd.contains("/sat/activity") && cmd.contains("text/csv") {
            assert!(body.starts_with("deviceId,dimension,key,srvTitle,records,score\r\n"));
            csv += 1;
        } else if cmd.contains("/sat/activity") && cmd.contains("text/html") {
            assert!(
                body.starts_with("<!DOCTYPE html>") && body.trim_end().ends_with("</html>"),
                "{cmd}"
            );
            let first = body.find("<section class=\"device\"").expect("a flagged Device");
            assert!(body[first..].contains("2026-11-28 ("), "the erratic Device's burst day");
            html += 1;
        } else if cmd.contains("/sat/activity") {
            let v: Value = serde_json::from_str(body).unwrap();
            assert!(v["records"].as_u64().unwrap() > 0);
            let first = &v["devices"][0];
            assert_eq!(
                first["unusual"]["days"][0]["day"], "2026-11-28",
                "the erratic Device ranks first"
            );
            activity += 1;
        } else if cmd.contains("/sat/records") {
            assert!(!body.is_empty() && body.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
            records += 1;
        }
    }
    assert_eq!((activity, csv, html), (1, 1, 1));
    assert!(records >= 5, "{records} records examples");
}
