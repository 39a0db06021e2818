//! The review commands end to end: `test`, `matrix`, `diff`, `verify`, `explain`, including a
//! deliberately widened policy set that each of them must catch.
//!
//! `verify` needs cvc5; without it those tests say SKIPPED on the terminal, and fail when
//! `SATGATE_REQUIRE_SOLVER` is set (CI).

use std::process::{Command, Output};

use satgate::review::junit;

/// Some of these commands are CPU-heavy (a matrix is ~28k Cedar requests): running them one at a
/// time keeps them from starving the timing-sensitive server tests in the same test binary.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn satgate(args: &[&str]) -> Output {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // At the lowest CPU priority, for the same reason.
    Command::new("nice")
        .args(["-n", "19", env!("CARGO_BIN_EXE_satgate")])
        .args(args)
        .output()
        .expect("the satgate binary runs")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn show(o: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), out(o), err(o))
}

/// A copy of the shipped `policies/*.cedar` (not the subdirectories), minus `skip`, plus `extra`.
fn policy_dir(skip: &[&str], extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("policies").unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if p.extension().is_some_and(|e| e == "cedar") && !skip.contains(&name.as_str()) {
            std::fs::copy(&p, dir.path().join(&name)).unwrap();
        }
    }
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// Payload for everyone: drops the titles-only forbid and permits ViewPayload outright.
fn widened() -> tempfile::TempDir {
    let scope = std::fs::read_to_string("policies/scope.cedar").unwrap();
    let han_only = scope
        .split("// SEC H8.16 modification, titles only")
        .next()
        .unwrap()
        .to_owned();
    policy_dir(
        &["scope.cedar"],
        &[
            ("scope.cedar", &han_only),
            (
                "zz-widen.cedar",
                "@id(\"payload-for-all\")\npermit (principal, action == Action::\"ViewPayload\", resource);\n",
            ),
        ],
    )
}

/// Titles of HAN Device records for RSA: wider, and outside §4 (the built-in invariant).
fn rsa_titles() -> tempfile::TempDir {
    policy_dir(
        &[],
        &[(
            "zz-rsa.cedar",
            "@id(\"rsa-titles\")\npermit (principal, action == Action::\"ViewTitle\", resource)\nwhen { principal.role == Role::\"RSA\" };\n",
        )],
    )
}

/// Export Suppliers see titles where their Party is the import supplier: a registration, but not
/// in the principal's role, so outside §4 (the invariant the old, weaker ones let through).
fn export_titles_on_import() -> tempfile::TempDir {
    policy_dir(
        &[],
        &[(
            "zz-es.cedar",
            "@id(\"es-on-import\")\npermit (principal, action == Action::\"ViewTitle\", resource)\nwhen { principal.role == Role::\"ES\" && resource has device && resource.device.principalParty.importSupplier };\n",
        )],
    )
}

fn path(d: &tempfile::TempDir) -> &str {
    d.path().to_str().unwrap()
}

// ---- test

#[test]
fn shipped_policy_tests_pass() {
    let o = satgate(&["test"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = out(&o);
    assert!(text.contains(" 0 failed"), "{text}");
    assert!(text.contains("PASS policies/tests/cedar/requests.json"), "{text}");
    assert!(text.contains("PASS policies/tests/change-of-supplier.json"), "{text}");
}

#[test]
fn shipped_policy_tests_run_against_another_policy_dir_by_default() {
    let copy = policy_dir(&[], &[]);
    let o = satgate(&["test", "--policies", path(&copy)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

#[test]
fn policy_tests_fail_without_the_own_records_policy() {
    let broken = policy_dir(&["own-records.cedar"], &[]);
    let o = satgate(&["test", "--policies", path(&broken)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = out(&o);
    assert!(text.contains("FAIL policies/tests/own-records.json"), "{text}");
    assert!(
        text.contains("FAIL policies/tests/cedar/requests.json: own record: payload allowed"),
        "{text}"
    );
}

#[test]
fn junit_output_is_well_formed_and_counts_failures() {
    let o = satgate(&["test", "--format", "junit"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    junit::well_formed(&out(&o)).unwrap();
    assert!(out(&o).contains("failures=\"0\""));

    let broken = policy_dir(&["own-records.cedar"], &[]);
    let o = satgate(&["test", "--format", "junit", "--policies", path(&broken)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    junit::well_formed(&out(&o)).unwrap();
    assert!(out(&o).contains("<failure message="));
}

#[test]
fn unreadable_or_unparseable_test_files_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let o = satgate(&["test", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = satgate(&["test", dir.path().join("missing.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn a_wrong_cedar_expectation_fails_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.json");
    let cases = std::fs::read_to_string("policies/tests/cedar/requests.json").unwrap();
    // Turn every expected decision round: each case must now fail.
    let flipped = cases
        .replace("\"allow\"", "\"tmp\"")
        .replace("\"deny\"", "\"allow\"")
        .replace("\"tmp\"", "\"deny\"");
    std::fs::write(&file, flipped).unwrap();
    let o = satgate(&["test", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    // The guard still passes (the policies are fine); no case of the flipped file does.
    let passed_cases = format!("PASS {}", file.display());
    assert!(!out(&o).contains(&passed_cases), "{}", out(&o));
    assert!(out(&o).contains("expected deny, got allow"), "{}", out(&o));
}

// ---- matrix

#[test]
fn committed_access_matrix_is_up_to_date() {
    // Regenerated by the binary (exit 1 on any incompleteness finding or difference).
    let o = satgate(&["matrix", "--check", "policies/ACCESS-MATRIX.md"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "policies/ACCESS-MATRIX.md is stale: regenerate with `cargo run -- matrix > policies/ACCESS-MATRIX.md`\n{}",
        show(&o)
    );
}

#[test]
fn matrix_check_catches_a_widened_policy() {
    for dir in [widened(), rsa_titles(), export_titles_on_import()] {
        let o = satgate(&[
            "matrix",
            "--policies",
            path(&dir),
            "--check",
            "policies/ACCESS-MATRIX.md",
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert!(err(&o).contains("out of date"), "{}", show(&o));
    }
}

#[test]
fn matrix_and_diff_report_what_the_guard_refuses() {
    for (policy, what) in [
        (
            "permit (principal == User::\"90-B3-D5-1F-30-01-00-00\", action, resource);",
            "names a User entity",
        ),
        (
            "forbid (principal, action, resource) when { principal.role == Role::\"RSA\" && 9223372036854775807 + 1 > 0 };",
            "error",
        ),
    ] {
        let dir = policy_dir(&[], &[("zz.cedar", &format!("@id(\"special\")\n{policy}\n"))]);
        let o = satgate(&["matrix", "--policies", path(&dir)]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert!(err(&o).contains("REFUSED AT LOAD: ") && err(&o).contains(what), "{}", show(&o));
        assert!(out(&o).contains("WARNING: these policies are refused at load time"), "{}", out(&o));
        let o = satgate(&["diff", "policies", path(&dir)]);
        assert!(show(&o).contains(what), "{}", show(&o));
        // `validate` and `test` refuse exactly what `serve` would.
        let o = satgate(&["validate", "--policies", path(&dir)]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        let o = satgate(&["test", "--policies", path(&dir)]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        assert!(out(&o).contains("FAIL ") && out(&o).contains("load-time guard"), "{}", show(&o));
    }
    // A read of the principal's Party cannot be written at all, however it is spelt.
    for read in ["principal.party == \"SUPA\"", "{p: principal}.p.party == \"SUPA\""] {
        let policy = format!("@id(\"party\")\npermit (principal, action, resource) when {{ {read} }};\n");
        let dir = policy_dir(&[], &[("zz.cedar", &policy)]);
        for cmd in ["validate", "matrix", "test"] {
            let o = satgate(&[cmd, "--policies", path(&dir)]);
            assert_ne!(o.status.code(), Some(0), "{cmd} {read}: {}", show(&o));
            assert!(err(&o).contains("party"), "{cmd} {read}: {}", show(&o));
        }
    }
}

#[test]
fn matrix_covers_the_whole_space() {
    let o = satgate(&["matrix", "--format", "csv"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(out(&o).contains("IS,other,OTHER,importSupplier,ServiceRequest,false,false,false,false"));
    assert!(out(&o).contains("IS,other,ESME,importSupplier,ServiceRequest,true,false,false,false"));
    let o = satgate(&["matrix", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cells"].as_array().unwrap().len(), 7 * 2 * (9 * 32 + 1) * 7);
}

// ---- diff

#[test]
fn diff_of_identical_policies_is_empty() {
    let copy = policy_dir(&[], &[]);
    let o = satgate(&["diff", "policies", path(&copy)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(out(&o).contains("0 of its cells change"), "{}", out(&o));
}

#[test]
fn diff_catches_a_widened_policy() {
    let wide = widened();
    let o = satgate(&["diff", "policies", path(&wide)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = out(&o);
    assert!(
        text.contains(
            "+ IS, another User's record, Device ESME, GSME, CHF, GPF, PPMID, HCALCS, IHD, CAD, \
             party registered as importSupplier (with any others), any message type: title -> title, payload"
        ),
        "{text}"
    );
    let o = satgate(&["diff", "policies", path(&wide), "--fail-on", "payload"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = satgate(&["diff", "policies", path(&wide), "--fail-on", "none"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    // Titles for RSA widen, but give nobody identity, metadata or payload.
    let rsa = rsa_titles();
    let o = satgate(&["diff", "policies", path(&rsa)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = satgate(&["diff", "policies", path(&rsa), "--fail-on", "payload"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

#[test]
fn diff_reports_narrowing_without_failing() {
    let narrow = policy_dir(&["device-owners.cedar"], &[]);
    let o = satgate(&["diff", "policies", path(&narrow)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(out(&o).contains("newly allowed (0 cells"), "{}", out(&o));
    assert!(
        out(&o).contains("- GT, another User's record, Device ESME, GSME"),
        "{}",
        out(&o)
    );
}

#[test]
fn diff_over_a_corpus_counts_records_and_never_prints_values() {
    let wide = widened();
    // The first 100 records of the shipped sample keep this test quick.
    let corpus: String = std::fs::read_to_string("tests/data/records.ndjson")
        .unwrap()
        .lines()
        .take(100)
        .map(|l| format!("{l}\n"))
        .collect();
    let file = wide.path().join("corpus.ndjson");
    std::fs::write(&file, &corpus).unwrap();
    let o = satgate(&[
        "diff",
        "policies",
        path(&wide),
        "--corpus",
        file.to_str().unwrap(),
        "--inventory",
        "tests/data/inventory.json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = out(&o);
    assert!(text.contains("corpus.ndjson (each (userId, userRole)"), "{text}");
    assert!(text.contains("e.g. newly visible: "), "{text}");
    for line in corpus.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(p) = v["payload"].as_str() {
            assert!(!text.contains(p), "payload printed");
        }
        if !v["metadata"].is_null() {
            assert!(!text.contains(&v["metadata"].to_string()), "metadata printed");
        }
    }
}

// ---- verify (needs cvc5)

/// Whether the cvc5 solver runs here (`CVC5`, else `cvc5` on the PATH). Without it the proofs
/// are skipped with a line on the terminal naming the binary and how to install it, so README's
/// test command passes on a machine with only Rust; with `SATGATE_REQUIRE_SOLVER` set (`.ci/run`
/// sets it) a missing solver fails the test instead, so CI never passes without the proofs.
fn solver(test: &str) -> bool {
    let bin = std::env::var("CVC5").unwrap_or_else(|_| "cvc5".into());
    let runs = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let why = format!(
        "the cvc5 solver ({bin}) is not installed; `apt-get install -y cvc5` (or set CVC5 to its path) to run the symbolic proofs"
    );
    crate::support::tools::available(test, runs, "SATGATE_REQUIRE_SOLVER", &why)
}

#[test]
fn shipped_policies_verify() {
    if !solver("tooling::shipped_policies_verify") {
        return;
    }
    let o = satgate(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = out(&o);
    assert!(text.contains("PROVED  invariant sec-rule [ViewPayload]"), "{text}");
    assert!(text.contains("PROVED  invariant sec-rule [ViewTitle]"), "{text}");
    assert!(text.contains("PROVED  policy own-records never errors"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
}

#[test]
fn verify_refutes_a_widened_policy_with_a_counterexample() {
    if !solver("tooling::verify_refutes_a_widened_policy_with_a_counterexample") {
        return;
    }
    let wide = widened();
    let o = satgate(&["verify", "--policies", path(&wide)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = out(&o);
    assert!(text.contains("FAILED  invariant sec-rule [ViewPayload]"), "{text}");
    assert!(
        text.contains("counterexample: a User in role") && text.contains("asking ViewPayload of another User's record"),
        "{text}"
    );

    let o = satgate(&["verify", "--policies", path(&wide), "--against", "policies"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(out(&o).contains("COMPARE [ViewPayload] WIDER"), "{}", out(&o));
}

#[test]
fn verify_against_reports_equivalence_narrowing_and_widening() {
    if !solver("tooling::verify_against_reports_equivalence_narrowing_and_widening") {
        return;
    }
    let copy = policy_dir(&[], &[]);
    let o = satgate(&["verify", "--against", path(&copy)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(out(&o).contains("COMPARE [ViewTitle] equivalent"), "{}", out(&o));

    let narrow = policy_dir(&["device-owners.cedar"], &[]);
    let o = satgate(&["verify", "--policies", path(&narrow), "--against", "policies"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(out(&o).contains("COMPARE [ViewTitle] narrower"), "{}", out(&o));

    let rsa = rsa_titles();
    let o = satgate(&["verify", "--policies", path(&rsa)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        out(&o).contains("FAILED  invariant sec-rule [ViewTitle]"),
        "{}",
        out(&o)
    );

    // A registration, but not in the principal's role: outside §4, and wider than before.
    let es = export_titles_on_import();
    let o = satgate(&["verify", "--policies", path(&es)]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        out(&o).contains("FAILED  invariant sec-rule [ViewTitle]"),
        "{}",
        out(&o)
    );
    let o = satgate(&["verify", "--policies", path(&es), "--against", "policies"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(out(&o).contains("COMPARE [ViewTitle] WIDER"), "{}", out(&o));
}

// ---- explain

#[test]
fn explain_names_the_deciding_policies_and_the_facts() {
    let record = r#"{"recordId":"r-9","timestamp":"2026-11-01T09:30:00Z","messageType":"ServiceRequest","srv":"4.1.1","srvTitle":"Read","alertCode":null,"responseCode":null,"deviceId":"00-DB-12-34-56-78-90-A0","deviceType":"ESME","userId":"BB-00-00-00-00-00-00-09","userRole":"OU","requestId":"BB-00-00-00-00-00-00-09:00-DB-12-34-56-78-90-A0:1","metadata":{"secret":"META-SECRET"},"payload":"UEFZTE9BRC1TRUNSRVQ="}"#;
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.json");
    std::fs::write(
        &inv,
        r#"{"meterPoints":[{"mpxn":"1012345678901","fuel":"electricity","importSupplier":"SUPA","exportSupplier":null,"networkOperator":"DNO1"}],
            "devices":[{"deviceId":"00-DB-12-34-56-78-90-A0","deviceType":"ESME","mpxns":["1012345678901"]}]}"#,
    )
    .unwrap();
    let o = satgate(&[
        "explain",
        "--sub",
        "90-B3-D5-1F-30-01-00-00",
        "--role",
        "IS",
        "--party",
        "SUPA",
        "--record",
        record,
        "--inventory",
        inv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = out(&o);
    assert!(text.contains("principalIsUser: false"), "{text}");
    assert!(text.contains("device.principalParty.importSupplier: true"), "{text}");
    assert!(
        text.contains("decided by import-supplier-titles (policies/device-owners.cedar:"),
        "{text}"
    );
    assert!(
        text.contains("decided by titles-only-for-others (policies/scope.cedar:"),
        "{text}"
    );
    assert!(text.contains("result: written with title"), "{text}");
    assert!(
        !text.contains("SECRET") && !text.contains("UEFZTE9BRC1TRUNSRVQ="),
        "{text}"
    );

    let file = dir.path().join("record.json");
    std::fs::write(&file, record).unwrap();
    let o = satgate(&[
        "explain",
        "--sub",
        "BB-00-00-00-00-00-00-09",
        "--role",
        "OU",
        "--party",
        "X",
        "--record",
        file.to_str().unwrap(),
        "--inventory",
        inv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        out(&o).contains("decided by own-records (policies/own-records.cedar:"),
        "{}",
        out(&o)
    );
    assert!(
        out(&o).contains("result: written with title, identity, metadata, payload"),
        "{}",
        out(&o)
    );
}
