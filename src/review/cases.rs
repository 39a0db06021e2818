//! Policy test files, in two formats told apart by their top-level shape:
//!
//! - a JSON array: the Cedar CLI's `run-tests` format, one Cedar request each, evaluated against the
//!   loaded (renamed) policy set. Listed reasons must be a subset of the actual ones.
//! - a JSON object with `cases`: satgate's record-level format. Each case is a principal, an
//!   inventory (docs/contract.md §2; a file-level `inventory` applies to cases without one), SAT
//!   records (docs/contract.md §1) and, per `recordId`, the classes that must appear in the output.
//!   Records go through the real record filter, so a case tests policies, inventory reading and
//!   projection together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, Request};
use serde::Deserialize;
use serde_json::Value;

use crate::decision::PolicyEngine;
use crate::model::{Class, Principal};
use crate::ownership::Inventory;

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub file: PathBuf,
    pub name: String,
    /// `None`: passed; `Some(why)`: failed.
    pub failure: Option<String>,
}

/// Why a test file could not be run at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: PathBuf,
    pub message: String,
}

/// Every `*.json` file under `paths` (files are taken as given), sorted.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FileError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(FileError {
                file: p.clone(),
                message: "no such file or directory".into(),
            });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), FileError> {
    let err = |e: std::io::Error| FileError {
        file: dir.to_path_buf(),
        message: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs every case of one file.
pub fn run_file(engine: &Arc<PolicyEngine>, file: &Path) -> Result<Vec<CaseResult>, FileError> {
    let fail = |message: String| FileError {
        file: file.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail(e.to_string()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
    match doc {
        Value::Array(cases) => Ok(cases
            .iter()
            .enumerate()
            .map(|(i, case)| {
                let name = case
                    .get("name")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("case {}", i + 1), str::to_owned);
                CaseResult {
                    file: file.to_path_buf(),
                    name,
                    failure: run_cedar_case(engine, case).err(),
                }
            })
            .collect()),
        Value::Object(_) => {
            let suite: RecordSuite =
                serde_json::from_value(doc).map_err(|e| fail(format!("not a record-level test file: {e}")))?;
            Ok(suite
                .cases
                .iter()
                .enumerate()
                .map(|(i, case)| CaseResult {
                    file: file.to_path_buf(),
                    name: case.name.clone().unwrap_or_else(|| format!("case {}", i + 1)),
                    failure: run_record_case(engine, suite.inventory.as_ref(), case).err(),
                })
                .collect())
        }
        _ => Err(fail(
            "expected an array (Cedar run-tests format) or an object with \"cases\"".into(),
        )),
    }
}

/// An entity uid written as `Type::"id"`, `{"type","id"}` or `{"__entity":{"type","id"}}`.
fn entity_uid(v: &Value, what: &str) -> Result<EntityUid, String> {
    match v {
        Value::String(s) => EntityUid::from_str(s).map_err(|e| format!("{what}: {e}")),
        _ => EntityUid::from_json(v.clone()).map_err(|e| format!("{what}: {e}")),
    }
}

/// One Cedar-format case; `Err` says why it failed.
fn run_cedar_case(engine: &PolicyEngine, case: &Value) -> Result<(), String> {
    let schema = engine.schema();
    let req = case.get("request").ok_or("no \"request\"")?;
    let field = |k: &str| req.get(k).ok_or(format!("request has no \"{k}\""));
    let principal = entity_uid(field("principal")?, "principal")?;
    let action = entity_uid(field("action")?, "action")?;
    let resource = entity_uid(field("resource")?, "resource")?;
    let context = match req.get("context") {
        None | Some(Value::Null) => Context::empty(),
        Some(c) => Context::from_json_value(c.clone(), Some((schema, &action))).map_err(|e| format!("context: {e}"))?,
    };
    let request =
        Request::new(principal, action, resource, context, Some(schema)).map_err(|e| format!("request: {e}"))?;
    let entities = Entities::from_json_value(
        case.get("entities").cloned().unwrap_or(Value::Array(vec![])),
        Some(schema),
    )
    .map_err(|e| format!("entities: {e}"))?;
    let expected = match case.get("decision").and_then(Value::as_str) {
        Some(d) if d.eq_ignore_ascii_case("allow") => Decision::Allow,
        Some(d) if d.eq_ignore_ascii_case("deny") => Decision::Deny,
        _ => return Err("\"decision\" must be \"allow\" or \"deny\"".into()),
    };
    let response = Authorizer::new().is_authorized(&request, engine.policies(), &entities);
    let reasons: BTreeSet<String> = response.diagnostics().reason().map(ToString::to_string).collect();
    let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
    let mut problems = Vec::new();
    if response.decision() != expected {
        problems.push(format!(
            "expected {}, got {} (reasons: [{}])",
            word(expected),
            word(response.decision()),
            reasons.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(listed) = case.get("reason").and_then(Value::as_array) {
        let missing: Vec<&str> = listed
            .iter()
            .filter_map(Value::as_str)
            .filter(|r| !reasons.contains(*r))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "expected reason(s) {} not among actual [{}]",
                missing.join(", "),
                reasons.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if let Some(n) = case.get("num_errors").and_then(Value::as_u64) {
        if n != errors.len() as u64 {
            problems.push(format!(
                "expected {n} errors, got {}: {}",
                errors.len(),
                errors.join("; ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn word(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordSuite {
    /// Free text for readers of the file.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    inventory: Option<Value>,
    cases: Vec<RecordCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordCase {
    #[serde(default)]
    name: Option<String>,
    principal: CasePrincipal,
    #[serde(default)]
    inventory: Option<Value>,
    records: Vec<Value>,
    /// recordId -> class names expected in the output (`[]`: left out).
    expect: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasePrincipal {
    sub: String,
    role: String,
    party: String,
}

/// Which classes have at least one field in an output record.
pub fn classes_present(record: &serde_json::Map<String, Value>) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for (class, fields) in [
        (
            Class::Title,
            &["recordId", "timestamp", "messageType", "deviceType", "userRole"][..],
        ),
        (Class::Identity, &["userId", "requestId"][..]),
        (Class::Metadata, &["metadata"][..]),
        (Class::Payload, &["payload"][..]),
    ] {
        if fields.iter().any(|f| record.contains_key(*f)) {
            out.insert(class.name());
        }
    }
    out
}

/// One record-level case; `Err` says why it failed (record ids and class names only).
fn run_record_case(
    engine: &Arc<PolicyEngine>,
    shared_inventory: Option<&Value>,
    case: &RecordCase,
) -> Result<(), String> {
    let p = &case.principal;
    let principal = Principal::from_claims(&p.sub, &p.role, &p.party).map_err(|e| format!("principal: {e}"))?;
    let inventory_doc = case
        .inventory
        .as_ref()
        .or(shared_inventory)
        .ok_or("no inventory (in the case or the file)")?;
    let (inventory, _warnings) = Inventory::parse(&inventory_doc.to_string()).map_err(|e| format!("inventory: {e}"))?;

    let mut input = Vec::new();
    let mut input_ids = Vec::new();
    for r in &case.records {
        let id = r
            .get("recordId")
            .and_then(Value::as_str)
            .ok_or("every record needs a string recordId")?;
        input_ids.push(id.to_owned());
        input.extend(serde_json::to_vec(r).map_err(|e| e.to_string())?);
        input.push(b'\n');
    }
    for id in &input_ids {
        if !case.expect.contains_key(id) {
            return Err(format!("no expectation for record {id}"));
        }
    }
    for id in case.expect.keys() {
        if !input_ids.contains(id) {
            return Err(format!("expectation for {id}, which is not among the records"));
        }
    }

    let (out, _stats) = crate::views::filter_bytes(engine.for_principal(&principal), &input, |id| {
        inventory.get(id).cloned()
    });
    let mut actual: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("output is not JSON: {e}"))?;
        let obj = v.as_object().ok_or("output line is not an object")?;
        let id = obj
            .get("recordId")
            .and_then(Value::as_str)
            .ok_or("output record without recordId")?;
        actual.insert(id.to_owned(), classes_present(obj));
    }
    let mut problems = Vec::new();
    for (id, want) in &case.expect {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        for w in &want {
            if !Class::ALL.iter().any(|c| c.name() == *w) {
                return Err(format!("{id}: unknown class {w:?}"));
            }
        }
        let got: BTreeSet<&str> = actual.get(id).map(|s| s.iter().copied().collect()).unwrap_or_default();
        if want != got {
            problems.push(format!("{id}: expected [{}], got [{}]", join(&want), join(&got)));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn join(s: &BTreeSet<&str>) -> String {
    // Contract order, not alphabetical.
    Class::ALL
        .iter()
        .map(|c| c.name())
        .filter(|n| s.contains(n))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_present_reads_field_names_only() {
        let v: Value = serde_json::json!({"recordId":"r","payload":"x"});
        let got = classes_present(v.as_object().unwrap());
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["payload", "title"]);
    }
}
