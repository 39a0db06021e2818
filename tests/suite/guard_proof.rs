//! The load-time guard agrees with the symbolic proof.
//!
//! Invariant: for every policy set that loads (parses and strictly validates), the guard admits
//! it exactly when `satgate verify`'s proofs all hold: every invariant implied for every action
//! and no policy ever erroring, over *every* well-formed request, not only the enumerated ones.
//! In particular: whenever the guard admits a set, the proof holds (the guard is sound); whenever
//! the proof finds a counterexample, the guard refuses.
//!
//! The sets are mutations of the shipped policies: a shipped file or policy dropped, and policies
//! added whose conditions read the model through indirect forms (conditionals, record literals,
//! sets, `has`, `like`, `is`, action lists, extension calls, arithmetic that overflows), so that
//! a guard that recognised spellings rather than enumerating the space would disagree. Sets that
//! do not load (templates, reads of attributes the schema does not have) are counted: they are
//! refused before either check runs.
//!
//! Needs cvc5 (skipped without it, required when `SATGATE_REQUIRE_SOLVER` is set, as in CI).
//! Cases: `PROPTEST_CASES / 10` (200 in CI), at least 20.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use satgate::decision::{guard, policies, PolicyEngine};
use satgate::model::{DeviceType, MessageType, Role};
use satgate::ownership::PartyRegistration;
use satgate::review::symbolic;

const ACTIONS: [&str; 4] = ["ViewTitle", "ViewIdentity", "ViewMetadata", "ViewPayload"];
const SHIPPED: [&str; 3] = ["device-owners.cedar", "own-records.cedar", "scope.cedar"];

fn solver() -> bool {
    let bin = std::env::var("CVC5").unwrap_or_else(|_| "cvc5".into());
    let runs = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let why = format!("the cvc5 solver ({bin}) is not installed; `apt-get install -y cvc5` (or set CVC5)");
    crate::support::tools::available(
        "guard_proof::guard_agrees_with_the_symbolic_proof",
        runs,
        "SATGATE_REQUIRE_SOLVER",
        &why,
    )
}

/// A boolean condition over the model, written the indirect ways an attacker would try.
fn condition() -> impl Strategy<Value = String> {
    // The model's own lists, so the generator names every member the schema has.
    let names = |all: Vec<&'static str>| proptest::sample::select(all);
    let role = names(Role::ALL.iter().map(|r| r.as_str()).collect());
    let mt = names(MessageType::ALL.iter().map(|m| m.as_str()).collect());
    let ty = names(DeviceType::ALL.iter().map(|t| t.as_str()).collect());
    let flag = names(PartyRegistration::FLAGS.iter().map(|(_, name)| *name).collect());
    let leaf = prop_oneof![
        Just("resource.principalIsUser".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("resource has device".to_owned()),
        role.clone().prop_map(|r| format!("principal.role == Role::\"{r}\"")),
        mt.clone().prop_map(|m| format!("resource.messageType == MessageType::\"{m}\"")),
        flag.clone()
            .prop_map(|f| format!("(resource has device && resource.device.principalParty.{f})")),
        ty.clone().prop_map(|t| format!("(resource has device && resource.device.deviceType == DeviceType::\"{t}\")")),
        // Indirect reads: the same attributes through a record literal, a conditional, a set.
        role.clone().prop_map(|r| format!("{{p: principal}}.p.role == Role::\"{r}\"")),
        role.clone().prop_map(|r| format!("(if resource.principalIsUser then principal else principal).role == Role::\"{r}\"")),
        (role.clone(), role.clone()).prop_map(|(a, b)| format!("[Role::\"{a}\", Role::\"{b}\"].contains(principal.role)")),
        (ty.clone(), ty).prop_map(|(a, b)| format!(
            "(resource has device && resource.device.deviceType in [DeviceType::\"{a}\", DeviceType::\"{b}\"])"
        )),
        flag.clone().prop_map(|f| format!(
            "(if resource has device then resource.device.principalParty has {f} && resource.device.principalParty.{f} else false)"
        )),
        flag.prop_map(|f| format!("(resource has device && {{d: resource.device}}.d[\"principalParty\"][\"{f}\"])")),
        // `is`, `like`, action lists, extension calls.
        Just("principal is User".to_owned()),
        Just("resource is Record && \"SUPA\" like \"SUP*\"".to_owned()),
        proptest::sample::select(&ACTIONS[..]).prop_map(|a| format!("action == Action::\"{a}\"")),
        Just("action in [Action::\"ViewTitle\", Action::\"ViewPayload\"]".to_owned()),
        Just("decimal(\"1.5\").lessThan(decimal(\"2.25\"))".to_owned()),
        Just("ip(\"10.1.2.3\").isInRange(ip(\"10.0.0.0/8\"))".to_owned()),
        // Arithmetic that overflows in some cells only: an error exactly there.
        (role.clone(), 0i64..3).prop_map(|(r, n)| format!(
            "(9223372036854775806 + (if principal.role == Role::\"{r}\" then {n} else 0) > 0)"
        )),
        (mt, 1i64..3).prop_map(|(m, n)| format!(
            "(if resource.messageType == MessageType::\"{m}\" then 4611686018427387904 * {n} > 0 else true)"
        )),
    ];
    // Reads the schema does not offer, rarely: such a set must not load at all.
    let leaf = prop_oneof![
        40 => leaf,
        1 => Just("principal.party == \"SUPA\"".to_owned()),
        1 => Just("(resource has device && resource.device.deviceType like \"E*\")".to_owned()),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.clone().prop_map(|a| format!("!({a})")),
            (inner.clone(), inner.clone(), inner).prop_map(|(a, b, c)| format!("(if {a} then {b} else {c})")),
        ]
    })
}

fn action_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("action".to_owned()),
        proptest::sample::select(&ACTIONS[..]).prop_map(|a| format!("action == Action::\"{a}\"")),
        proptest::sample::subsequence(&ACTIONS[..], 1..4).prop_map(|list| {
            let list: Vec<String> = list.iter().map(|a| format!("Action::\"{a}\"")).collect();
            format!("action in [{}]", list.join(", "))
        }),
    ]
}

/// One added policy: a permit or forbid, `when` or `unless`, sometimes a template.
fn added_policy() -> impl Strategy<Value = String> {
    (any::<bool>(), any::<bool>(), action_scope(), condition(), 0u8..40).prop_map(
        |(permit, when, action, cond, template)| {
            let effect = if permit { "permit" } else { "forbid" };
            let clause = if when { "when" } else { "unless" };
            // Now and then a template, which satgate does not load.
            let principal = if template == 0 {
                "principal == ?principal"
            } else {
                "principal"
            };
            format!("{effect} ({principal}, {action}, resource) {clause} {{ {cond} }};")
        },
    )
}

/// A mutation of the shipped policy set: the files (some dropped, one maybe cut to one policy)
/// and added policies.
fn policy_set() -> impl Strategy<Value = Vec<(PathBuf, String)>> {
    (
        proptest::sample::subsequence(&SHIPPED[..], 0..=3),
        proptest::collection::vec(added_policy(), 1..4),
    )
        .prop_map(|(kept, added)| {
            let mut files: Vec<(PathBuf, String)> = kept
                .iter()
                .map(|f| {
                    let text = std::fs::read_to_string(Path::new("policies").join(f)).unwrap();
                    (PathBuf::from(f), text)
                })
                .collect();
            for (i, p) in added.iter().enumerate() {
                files.push((
                    PathBuf::from(format!("added-{i}.cedar")),
                    format!("@id(\"added-{i}\")\n{p}\n"),
                ));
            }
            files
        })
}

#[derive(Default, Debug)]
struct Tally {
    sets: u32,
    not_loaded: u32,
    no_policies: u32,
    admitted_and_proved: u32,
    refused_with_counterexample: u32,
}

#[test]
fn guard_agrees_with_the_symbolic_proof() {
    if !solver() {
        return;
    }
    let _alone = crate::support::measuring_alone_blocking();
    let schema_file = Path::new("schemas/sat.cedarschema");
    let schema_text = std::fs::read_to_string(schema_file).unwrap();
    let guard_invariants = guard::invariants(Path::new("/nonexistent")).unwrap();
    let proof_invariants = symbolic::load_invariants(Path::new("policies/invariants"), schema_file).unwrap();
    assert_eq!(
        guard_invariants.len(),
        proof_invariants.len(),
        "both check the same invariants"
    );

    let cases = (crate::support::cases() / 10).max(20);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let tally = std::cell::RefCell::new(Tally::default());
    let result = runner.run(&policy_set(), |files| {
        let mut t = tally.borrow_mut();
        t.sets += 1;
        let loaded = match policies::from_sources(&files, (schema_file, &schema_text)) {
            Ok(loaded) => loaded,
            Err(e) => {
                if std::env::var_os("GUARD_PROOF_DEBUG").is_some() {
                    let _ = writeln!(std::io::stderr(), "not loaded: {e}");
                }
                t.not_loaded += 1;
                return Ok(());
            }
        };
        if loaded.policies.policies().next().is_none() {
            t.no_policies += 1;
        }
        let engine = PolicyEngine::new(loaded).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let admitted = guard::check(&engine, &guard_invariants);
        let report = symbolic::verify(engine.policies(), engine.schema(), &proof_invariants, None)
            .map_err(|e| TestCaseError::fail(format!("the proofs could not run: {e}")))?;
        let refuted: Vec<String> = report
            .checks
            .iter()
            .filter_map(|c| {
                c.counterexample
                    .as_ref()
                    .map(|cex| format!("{} [{}]: {cex}", c.name, c.action))
            })
            .collect();
        let set: Vec<&str> = files.iter().map(|(_, text)| text.as_str()).collect();
        match (&admitted, refuted.first()) {
            (Ok(_), None) => t.admitted_and_proved += 1,
            (Err(_), Some(_)) => t.refused_with_counterexample += 1,
            (Ok(_), Some(cex)) => {
                return Err(TestCaseError::fail(format!(
                    "the guard admitted a set the proof refutes: {cex}\n{}",
                    set.join("\n")
                )))
            }
            (Err(why), None) => {
                return Err(TestCaseError::fail(format!(
                    "the guard refused a set every proof holds for: {why}\n{}",
                    set.join("\n")
                )))
            }
        }
        Ok(())
    });
    let t = tally.into_inner();
    let _ = writeln!(
        std::io::stderr(),
        "guard_proof: {} policy sets: {} refused at load (not valid), {} admitted by the guard and proved, \
         {} refused by the guard with a counterexample ({} with no policies at all)",
        t.sets,
        t.not_loaded,
        t.admitted_and_proved,
        t.refused_with_counterexample,
        t.no_policies
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must reach both verdicts, or the agreement says little.
    assert!(t.admitted_and_proved > 0 && t.refused_with_counterexample > 0, "{t:?}");
}
