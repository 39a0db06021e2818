//! The `satgate` binary, end to end: exit codes and `filter` against the contract oracle.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Map, Value};

use crate::support::binary::free_port;
use crate::support::oracle;

/// An import Supplier of the shipped sample, as `--sub`, `--role`, `--party`.
const SUPPLIER: [&str; 6] = ["--sub", "90-B3-D5-1F-30-01-00-00", "--role", "IS", "--party", "SUPA"];

fn satgate(args: &[&str], stdin: &[u8]) -> Output {
    let (child, feeder) = spawn(args, stdin);
    let output = child.wait_with_output().unwrap();
    let _ = feeder.join();
    output
}

/// The binary with piped standard streams, its input fed from another thread (the child's
/// stdout would fill its pipe otherwise).
fn spawn(args: &[&str], stdin: &[u8]) -> (std::process::Child, std::thread::JoinHandle<std::io::Result<()>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_satgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    (child, std::thread::spawn(move || pipe.write_all(&input)))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn validate_passes_on_the_shipped_policies() {
    let o = satgate(
        &[
            "validate",
            "--policies",
            "policies",
            "--schema",
            "schemas/sat.cedarschema",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok: 8 policies"));
}

#[test]
fn validate_reports_an_unknown_attribute_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("policies").unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "cedar") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let bad = dir.path().join("zz-bad.cedar");
    std::fs::write(
        &bad,
        "@id(\"by-colour\")\npermit (principal, action, resource)\nwhen { resource.colour == \"red\" };\n",
    )
    .unwrap();
    let o = satgate(
        &[
            "validate",
            "--policies",
            dir.path().to_str().unwrap(),
            "--schema",
            "schemas/sat.cedarschema",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("zz-bad.cedar:3:") && err.contains("colour") && err.contains("by-colour"),
        "{err}"
    );
}

#[test]
fn validate_exits_2_when_it_cannot_read() {
    let o = satgate(
        &[
            "validate",
            "--policies",
            "no/such/dir",
            "--schema",
            "schemas/sat.cedarschema",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = satgate(&["validate", "--no-such-flag"], b"");
    assert_eq!(o.status.code(), Some(2));
}

/// `satgate filter` on the shipped sample, as a User of each of the seven roles, gives exactly
/// what docs/contract.md §4 says.
#[test]
fn filter_matches_the_contract_for_every_role() {
    let sample = std::fs::read("tests/data/records.ndjson").unwrap();
    let inventory: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/inventory.json").unwrap()).unwrap();
    let users: Value = serde_json::from_str(&std::fs::read_to_string("tests/data/users.json").unwrap()).unwrap();
    let mut roles_seen = std::collections::BTreeSet::new();
    for user in users.as_array().unwrap() {
        let (sub, role, party) = (
            user["sub"].as_str().unwrap(),
            user["role"].as_str().unwrap(),
            user["party"].as_str().unwrap(),
        );
        roles_seen.insert(role.to_owned());
        let mut expected = String::new();
        let (mut own, mut titles) = (0, 0);
        for line in sample.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let rec: Map<String, Value> = serde_json::from_slice(line).unwrap();
            let raw: Vec<(String, String)> = rec.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            let allowed = oracle::visible(
                (sub, role, party),
                rec["userId"].as_str().unwrap(),
                rec["deviceId"].as_str(),
                &inventory,
            );
            own += usize::from(allowed[3]);
            titles += usize::from(allowed[0] && !allowed[3]);
            expected.push_str(&oracle::expected_line(&raw, allowed));
        }
        let o = satgate(
            &[
                "filter",
                "--inventory",
                "tests/data/inventory.json",
                "--sub",
                sub,
                "--role",
                role,
                "--party",
                party,
            ],
            &sample,
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout) == expected,
            "{role}/{party}: output differs from the contract"
        );
        // The sample is only a useful check if it exercises both rules for the owning roles.
        assert!(own > 0, "{role}/{party} has no own records in the sample");
        if !["RSA", "OU"].contains(&role) {
            assert!(
                titles > 0,
                "{role}/{party} sees no titles of others' records in the sample"
            );
        }
    }
    assert_eq!(roles_seen.len(), 7);
    assert!(Path::new("tests/data/records.ndjson").exists());
}

#[test]
fn filter_refuses_an_unusable_principal() {
    let o = satgate(
        &[
            "filter",
            "--inventory",
            "tests/data/inventory.json",
            "--sub",
            "nope",
            "--role",
            "IS",
            "--party",
            "SUPA",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("sub"), "{}", stderr(&o));
}

#[test]
fn serve_refuses_bad_configuration_and_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let secret = secret.to_str().unwrap();
    let base = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:9",
        "--inventory",
        "tests/data/inventory.json",
        "--jwt-hs256-secret-file",
        secret,
    ];
    let cases: [(&[&str], &str); 3] = [
        (&["--tls-cert-file", "tests/data/tls/a.crt"], "tls-key-file: required"),
        (&["--max-line-bytes", "10"], "max-line-bytes:"),
        // Both files exist, but the key is another certificate's: found when they are loaded.
        (
            &[
                "--tls-cert-file",
                "tests/data/tls/a.crt",
                "--tls-key-file",
                "tests/data/tls/b.key",
            ],
            "error: tls:",
        ),
    ];
    for (extra, named) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = satgate(&args, b"");
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(named), "{extra:?}: {}", stderr(&o));
    }
}

/// What `ext-proc` refuses that `serve` takes, and the one setting only `ext-proc` takes: a gRPC
/// listener off the loopback, callers' TLS, and `--jwt-from-envoy` on `serve` (whose callers
/// reach it with nothing in front to verify their tokens).
#[test]
fn ext_proc_and_jwt_from_envoy_refuse_what_would_open_them() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let secret = secret.to_str().unwrap();
    let common = [
        "--upstream",
        "http://127.0.0.1:9",
        "--inventory",
        "tests/data/inventory.json",
    ];
    let cases: [(&[&str], &str); 5] = [
        (
            &["ext-proc", "--listen", "0.0.0.0:0", "--jwt-hs256-secret-file", secret],
            "not a loopback address",
        ),
        (
            &[
                "ext-proc",
                "--listen",
                "127.0.0.1:0",
                "--jwt-hs256-secret-file",
                secret,
                "--tls-cert-file",
                "tests/data/tls/a.crt",
                "--tls-key-file",
                "tests/data/tls/a.key",
            ],
            "Envoy terminates callers' TLS",
        ),
        (
            &["serve", "--listen", "127.0.0.1:0", "--jwt-from-envoy"],
            "jwt-from-envoy: only for ext-proc",
        ),
        (
            &[
                "ext-proc",
                "--listen",
                "127.0.0.1:0",
                "--jwt-from-envoy",
                "--jwt-hs256-secret-file",
                secret,
            ],
            "give only one of",
        ),
        (&["ext-proc", "--listen", "127.0.0.1:0"], "jwt: one of"),
    ];
    for (args, named) in cases {
        let args: Vec<&str> = args.iter().chain(&common).copied().collect();
        let o = satgate(&args, b"");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(named), "{args:?}: {}", stderr(&o));
    }
}

/// `satgate activity` and `satgate filter --format csv` on the shipped sample: the same pipeline
/// as the sidecar's views, offline; a cap is an error (2) naming it, with nothing on stdout.
#[test]
fn activity_and_csv_offline() {
    let sample = std::fs::read("tests/data/records.ndjson").unwrap();
    let who = [
        "--inventory",
        "tests/data/inventory.json",
        "--sub",
        "90-B3-D5-1F-30-01-00-00",
        "--role",
        "IS",
        "--party",
        "SUPA",
    ];
    let run = |extra: &[&str]| satgate(&[extra, &who[..]].concat(), &sample);

    let ndjson = run(&["filter"]);
    let lines: Vec<&[u8]> = ndjson.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let o = run(&["activity"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["records"].as_u64(), Some(lines.len() as u64));
    let per_device: u64 = summary["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["records"].as_u64().unwrap())
        .sum();
    assert_eq!(
        per_device + summary["withoutDevice"]["records"].as_u64().unwrap(),
        lines.len() as u64
    );
    assert!(
        stderr(&o).contains(&format!("{} summarised", lines.len())),
        "{}",
        stderr(&o)
    );

    let o = run(&["filter", "--format", "csv"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut reader = csv::Reader::from_reader(&o.stdout[..]);
    assert_eq!(reader.headers().unwrap().len(), 14);
    assert_eq!(reader.records().count(), lines.len());

    let o = run(&["activity", "--format", "csv"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o
        .stdout
        .starts_with(b"deviceId,dimension,key,srvTitle,records,score\r\n"));

    // The page, as a file to open: whole, and as inert as the served one (its CSP in a meta).
    let o = run(&["activity", "--format", "html"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
    assert!(page.contains("http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'"));
    assert!(page.contains(&format!("<p id=\"overview\">{} records;", lines.len())));

    let o = run(&["activity", "--max-devices", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("more than 2 Devices"), "{}", stderr(&o));
}

/// Every command ends quietly when its reader goes away (`satgate filter ... | head`): no panic, no
/// error text, and either success or the default SIGPIPE ending (what a shell shows as 141). The
/// demo, which keeps SIGPIPE ignored for its sockets, exits 0.
#[test]
fn a_closed_output_pipe_ends_every_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;

    let records = std::fs::read("tests/data/records.ndjson").unwrap().repeat(20);
    let (listen, upstream) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let filter = [&["filter", "--inventory", "tests/data/inventory.json"][..], &SUPPLIER].concat();
    // Outputs well past a pipe's buffer (64 KiB), so the writes after the reader left fail.
    let cases: [(&[&str], &[u8]); 2] = [
        (&filter, &records),
        (
            &[
                "demo",
                "--exit-after-examples",
                "--records",
                "300",
                "--listen",
                &listen,
                "--upstream-listen",
                &upstream,
            ],
            b"",
        ),
    ];
    for (args, input) in cases {
        let (mut child, feeder) = spawn(args, input);
        // Read one line, then go away like `head -1`.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let _ = feeder.join();
        let err = stderr(&o);
        assert!(!first.is_empty(), "{args:?} wrote nothing: {err}");
        assert!(
            o.status.success() || o.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}\n{err}",
            o.status
        );
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

/// `satgate filter --format html --device-id` gives the Device's timeline page offline, as a
/// browser gets it from `/sat/records?deviceId=...`: one whole page with a row for each record
/// about that Device that the NDJSON answer shows, and nothing else; without the Device it is a
/// usage error.
#[test]
fn filter_writes_a_devices_timeline_page_offline() {
    let records = std::fs::read("tests/data/records.ndjson").unwrap();
    let device = "00-DB-00-00-00-00-04-02";
    let base = [&["filter", "--inventory", "tests/data/inventory.json"][..], &SUPPLIER].concat();
    let json = satgate(&base, &records);
    let about = format!("\"deviceId\":\"{device}\"");
    let expected = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&about))
        .count();
    assert!(expected > 0, "the sample shows the Supplier records about {device}");
    let html = satgate(
        &[&base[..], &["--format", "html", "--device-id", device]].concat(),
        &records,
    );
    assert!(html.status.success(), "{}", stderr(&html));
    let page = String::from_utf8(html.stdout).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    assert!(page.contains(&format!("Timeline of Device {device}")));
    let rows = page
        .lines()
        .filter(|l| l.starts_with("<tr><td>") || l.starts_with("<tr class=\"alert\"><td>"))
        .count();
    assert_eq!(rows, expected);
    let usage = satgate(&[&base[..], &["--format", "html"]].concat(), &records);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
}
