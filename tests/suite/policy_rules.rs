//! Each rule of docs/contract.md §4, scenario by scenario, through the real `policies/`.

use std::path::PathBuf;
use std::sync::Arc;

use satgate::decision::{policies, PolicyEngine};
use satgate::model::Principal;
use satgate::ownership::Inventory;
use serde_json::{json, Value};

use crate::support::engine;

const SUPA_IS: (&str, &str, &str) = ("AA-00-00-00-00-00-00-01", "IS", "SUPA");
const SENDER: &str = "BB-00-00-00-00-00-00-09";
const ESME: &str = "00-DB-12-34-56-78-90-A0";
const CHF: &str = "00-DB-12-34-56-78-90-B1";
const GONE: &str = "00-DB-12-34-56-78-90-FF";

/// ESME on an electricity point (import SUPA, export SUPC, network DNO1); CHF on that point and
/// a gas point (gas SUPB, network GT1).
fn inventory(import_supplier: &str) -> Value {
    json!({"meterPoints":[
        {"mpxn":"1012345678901","fuel":"electricity","importSupplier":import_supplier,"exportSupplier":"SUPC","networkOperator":"DNO1"},
        {"mpxn":"1234567890","fuel":"gas","gasSupplier":"SUPB","networkOperator":"GT1"}],
     "devices":[
        {"deviceId":ESME,"deviceType":"ESME","mpxns":["1012345678901"]},
        {"deviceId":CHF,"deviceType":"CHF","mpxns":["1012345678901","1234567890"]},
        {"deviceId":"00-DB-12-34-56-78-90-C2","deviceType":"SMETS1","mpxns":["1012345678901"]},
        {"deviceId":"00-DB-12-34-56-78-90-C3","deviceType":"esme","mpxns":["1012345678901"]},
        {"deviceId":"00-DB-12-34-56-78-90-C4","deviceType":"ESME","mpxns":["9999999999999"]}]})
}

fn record(user: &str, device: Option<&str>, record_type: &str) -> String {
    json!({"recordId":"r-1","timestamp":"2026-11-01T09:30:00Z","messageType":"ServiceRequest","srv":"4.1.1",
           "srvTitle":"Read Instantaneous Import Registers","alertCode":null,"responseCode":null,
           "deviceId":device,"deviceType":record_type,"userId":user,"userRole":"IS",
           "requestId":format!("{user}:{}:1", device.unwrap_or("")),"metadata":{"transport":"WAN"},"payload":"UEFZTE9BRA=="})
    .to_string()
}

/// The classes `principal` sees of one record, as satgate writes them.
fn sees_with(engine: &Arc<PolicyEngine>, principal: (&str, &str, &str), inv: &Value, line: &str) -> Vec<&'static str> {
    let p = Principal::from_claims(principal.0, principal.1, principal.2).unwrap();
    let (inventory, warnings) = Inventory::parse(&inv.to_string()).unwrap();
    assert!(warnings.len() <= 1, "{warnings:?}");
    let (out, _) = satgate::views::filter_bytes(engine.for_principal(&p), line.as_bytes(), |id| {
        inventory.get(id).cloned()
    });
    if out.is_empty() {
        return vec![];
    }
    let v: Value = serde_json::from_slice(&out).unwrap();
    [
        ("title", "recordId"),
        ("identity", "userId"),
        ("metadata", "metadata"),
        ("payload", "payload"),
    ]
    .into_iter()
    .filter(|(_, f)| v.get(f).is_some())
    .map(|(c, _)| c)
    .collect()
}

fn sees(principal: (&str, &str, &str), device: Option<&str>) -> Vec<&'static str> {
    sees_with(
        &engine(),
        principal,
        &inventory("SUPA"),
        &record(SENDER, device, "ESME"),
    )
}

const ALL: [&str; 4] = ["title", "identity", "metadata", "payload"];
const TITLE: [&str; 1] = ["title"];
const NOTHING: [&str; 0] = [];

#[test]
fn every_role_sees_all_of_its_own_records_whatever_the_device() {
    for role in ["IS", "ES", "GS", "ED", "GT", "RSA", "OU"] {
        for device in [Some(ESME), Some(GONE), None, Some("00-DB-12-34-56-78-90-C2")] {
            let line = record(&SENDER.to_lowercase(), device, "ESME");
            assert_eq!(
                sees_with(&engine(), (SENDER, role, "NOBODY"), &inventory("SUPA"), &line),
                ALL,
                "{role} {device:?}"
            );
        }
    }
}

#[test]
fn responsible_import_supplier_sees_titles_of_others_records() {
    assert_eq!(sees(SUPA_IS, Some(ESME)), TITLE);
    assert_eq!(
        sees(SUPA_IS, Some(&ESME.to_lowercase())),
        TITLE,
        "Device ids compare case-insensitively"
    );
}

#[test]
fn another_partys_supplier_sees_nothing() {
    assert_eq!(sees(("AA-00-00-00-00-00-00-02", "IS", "SUPB"), Some(ESME)), NOTHING);
}

#[test]
fn the_party_must_hold_the_principals_own_role() {
    // SUPC is the export supplier, not the import supplier; SUPB supplies gas, not electricity.
    assert_eq!(sees(("AA-00-00-00-00-00-00-03", "IS", "SUPC"), Some(ESME)), NOTHING);
    assert_eq!(sees(("AA-00-00-00-00-00-00-03", "ES", "SUPC"), Some(ESME)), TITLE);
    assert_eq!(sees(("AA-00-00-00-00-00-00-04", "IS", "SUPB"), Some(CHF)), NOTHING);
    assert_eq!(sees(("AA-00-00-00-00-00-00-04", "GS", "SUPB"), Some(ESME)), NOTHING);
}

#[test]
fn chf_on_two_meter_points_is_seen_by_owners_of_either() {
    assert_eq!(sees(("AA-00-00-00-00-00-00-05", "GS", "SUPB"), Some(CHF)), TITLE);
    assert_eq!(sees(("AA-00-00-00-00-00-00-06", "GT", "GT1"), Some(CHF)), TITLE);
    assert_eq!(sees(("AA-00-00-00-00-00-00-07", "ED", "DNO1"), Some(CHF)), TITLE);
    assert_eq!(sees(SUPA_IS, Some(CHF)), TITLE);
}

#[test]
fn network_operators_are_matched_by_fuel() {
    assert_eq!(sees(("AA-00-00-00-00-00-00-07", "ED", "DNO1"), Some(ESME)), TITLE);
    assert_eq!(sees(("AA-00-00-00-00-00-00-08", "GT", "DNO1"), Some(ESME)), NOTHING);
    assert_eq!(sees(("AA-00-00-00-00-00-00-06", "ED", "GT1"), Some(CHF)), NOTHING);
}

#[test]
fn agents_and_other_users_see_only_their_own() {
    for role in ["RSA", "OU"] {
        for party in ["SUPA", "DNO1", "GT1"] {
            assert_eq!(
                sees(("AA-00-00-00-00-00-00-09", role, party), Some(CHF)),
                NOTHING,
                "{role} {party}"
            );
        }
    }
}

#[test]
fn non_han_and_unknown_types_are_out_of_scope() {
    assert_eq!(
        sees(SUPA_IS, Some("00-DB-12-34-56-78-90-C2")),
        NOTHING,
        "SMETS1 is not a HAN Device"
    );
    assert_eq!(
        sees(SUPA_IS, Some("00-DB-12-34-56-78-90-C3")),
        NOTHING,
        "types are exact: esme is unknown"
    );
}

#[test]
fn the_inventory_type_counts_not_the_records() {
    let inv = inventory("SUPA");
    let claims_han = record(SENDER, Some("00-DB-12-34-56-78-90-C2"), "ESME");
    assert_eq!(sees_with(&engine(), SUPA_IS, &inv, &claims_han), NOTHING);
    let claims_other = record(SENDER, Some(ESME), "SMETS1");
    assert_eq!(sees_with(&engine(), SUPA_IS, &inv, &claims_other), TITLE);
}

#[test]
fn missing_unusable_or_null_device_has_no_owners() {
    assert_eq!(sees(SUPA_IS, Some(GONE)), NOTHING, "not in the inventory");
    assert_eq!(
        sees(SUPA_IS, Some("00-DB-12-34-56-78-90-C4")),
        NOTHING,
        "linked to an unknown meter point"
    );
    assert_eq!(sees(SUPA_IS, None), NOTHING, "non-device request");
    for role in ["ED", "GT", "GS", "ES"] {
        assert_eq!(sees(("AA-00-00-00-00-00-00-0A", role, "DNO1"), None), NOTHING);
    }
}

#[test]
fn change_of_supplier_moves_history_to_the_new_supplier() {
    let history = record(SENDER, Some(ESME), "ESME");
    let supb = ("AA-00-00-00-00-00-00-02", "IS", "SUPB");
    assert_eq!(sees_with(&engine(), SUPA_IS, &inventory("SUPA"), &history), TITLE);
    assert_eq!(sees_with(&engine(), supb, &inventory("SUPA"), &history), NOTHING);
    // Registration changes: same records, judged at the time of the query.
    assert_eq!(sees_with(&engine(), SUPA_IS, &inventory("SUPB"), &history), NOTHING);
    assert_eq!(sees_with(&engine(), supb, &inventory("SUPB"), &history), TITLE);
}

fn shipped_plus(extra: &str) -> Arc<PolicyEngine> {
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir("policies")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .map(|p| (p.clone(), std::fs::read_to_string(p).unwrap()))
        .collect();
    files.push(("extra.cedar".into(), extra.to_owned()));
    let schema = std::fs::read_to_string("schemas/sat.cedarschema").unwrap();
    Arc::new(PolicyEngine::new(policies::from_sources(&files, ("schema".as_ref(), &schema)).unwrap()).unwrap())
}

#[test]
fn a_policy_error_fails_closed() {
    // Cedar skips a policy that errors; a skipped forbid would let the permits through. satgate
    // denies the whole class instead.
    let engine = shipped_plus(
        "@id(\"overflowing-forbid\")\nforbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };",
    );
    let own = record(SUPA_IS.0, Some(ESME), "ESME");
    assert_eq!(sees_with(&engine, SUPA_IS, &inventory("SUPA"), &own), NOTHING);
}

#[test]
fn forbids_hold_against_a_widening_permit() {
    let engine = shipped_plus("@id(\"everyone-everything\")\npermit (principal, action, resource);");
    let others = record(SENDER, Some(ESME), "ESME");
    assert_eq!(
        sees_with(&engine, SUPA_IS, &inventory("SUPA"), &others),
        TITLE,
        "titles-only-for-others holds"
    );
    let non_han = record(SENDER, Some("00-DB-12-34-56-78-90-C2"), "ESME");
    assert_eq!(
        sees_with(&engine, SUPA_IS, &inventory("SUPA"), &non_han),
        NOTHING,
        "han-devices-only holds"
    );
}
