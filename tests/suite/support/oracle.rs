//! docs/contract.md §4, written out independently of `policies/` and of satgate's own inventory
//! code, so the tests compare the real policies against the contract rather than against
//! themselves.

use serde_json::Value;

pub const HAN: [&str; 8] = ["ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS", "IHD", "CAD"];

/// What the contract says `principal` may see of a record: (title, identity, metadata, payload).
/// `inventory` is the docs/contract.md §2 document; every entry in it is assumed valid.
pub fn visible(
    principal: (&str, &str, &str),
    record_user: &str,
    record_device: Option<&str>,
    inventory: &Value,
) -> [bool; 4] {
    let (sub, role, party) = principal;
    if sub.eq_ignore_ascii_case(record_user) {
        return [true; 4];
    }
    let Some(device_id) = record_device else {
        return [false; 4];
    };
    let empty = vec![];
    let devices = inventory["devices"].as_array().unwrap_or(&empty);
    let points = inventory["meterPoints"].as_array().unwrap_or(&empty);
    let Some(device) = devices.iter().find(|d| {
        d["deviceId"]
            .as_str()
            .is_some_and(|id| id.eq_ignore_ascii_case(device_id))
    }) else {
        return [false; 4];
    };
    if !HAN.contains(&device["deviceType"].as_str().unwrap_or("")) {
        return [false; 4];
    }
    let owns = device["mpxns"].as_array().unwrap_or(&empty).iter().any(|mpxn| {
        points.iter().filter(|mp| mp["mpxn"] == *mpxn).any(|mp| {
            let fuel = mp["fuel"].as_str().unwrap_or("");
            let holds = |field: &str| mp[field].as_str() == Some(party);
            match role {
                "IS" => fuel == "electricity" && holds("importSupplier"),
                "ES" => fuel == "electricity" && holds("exportSupplier"),
                "GS" => fuel == "gas" && holds("gasSupplier"),
                "ED" => fuel == "electricity" && holds("networkOperator"),
                "GT" => fuel == "gas" && holds("networkOperator"),
                _ => false,
            }
        })
    });
    [owns, false, false, false]
}

/// Field names and classes of docs/contract.md §1, in order (0 title, 1 identity, 2 metadata,
/// 3 payload).
pub const FIELDS: [(&str, usize); 14] = [
    ("recordId", 0),
    ("timestamp", 0),
    ("messageType", 0),
    ("srv", 0),
    ("srvTitle", 0),
    ("alertCode", 0),
    ("responseCode", 0),
    ("deviceId", 0),
    ("deviceType", 0),
    ("userRole", 0),
    ("userId", 1),
    ("requestId", 1),
    ("metadata", 2),
    ("payload", 3),
];

/// The exact output line for a record given as (field, raw JSON text) pairs in any order.
pub fn expected_line(fields: &[(String, String)], allowed: [bool; 4]) -> String {
    if !allowed[0] {
        return String::new();
    }
    let parts: Vec<String> = FIELDS
        .iter()
        .filter(|(_, class)| allowed[*class])
        .filter_map(|(name, _)| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(k, v)| format!("\"{k}\":{v}"))
        })
        .collect();
    format!("{{{}}}\n", parts.join(","))
}
