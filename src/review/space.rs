//! The finite decision space, and the scan that keeps it honest.
//!
//! The schema is principal-relative, so everything a policy can see is a role, whether the
//! principal is the record's User, the record's message type, and (when the record has a Device)
//! the Device type and five registration flags of the principal's Party. Only three inputs are free
//! strings: the principal's entity id, `principal.party` and `resource.device.deviceType`. The
//! enumeration fixes the first two to representatives and covers the third with the HAN types, any
//! other string literal a policy mentions, and one non-HAN representative. [`scan`] reports every
//! policy that reads something this enumeration does not vary, so a matrix is never silently
//! incomplete.

use std::collections::BTreeSet;
use std::sync::Arc;

use cedar_policy::PolicySet;
use serde_json::Value;

use crate::decision::{DeviceFacts, Facts, PolicyEngine};
use crate::model::{Classes, Eui64, MessageType, Principal, Role};
use crate::ownership::PartyRegistration;

/// The HAN Device types of docs/contract.md §4.
pub const HAN_TYPES: [&str; 8] = ["ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS", "IHD", "CAD"];

/// Stands for every Device type no policy names (non-HAN or unknown to the inventory).
pub const OTHER_TYPE: &str = "OTHER";

/// The representative principal's User ID and Party: policies may not depend on them (see [`scan`]).
pub const REPRESENTATIVE_SUB: Eui64 = Eui64::from_u64(0x0000_0000_0000_0001);
pub const REPRESENTATIVE_PARTY: &str = "PARTY";

/// What a policy reads that the enumeration does not vary, and literal Device types it names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Inputs the matrix cannot cover, as `policy-id: what`.
    pub findings: Vec<String>,
    /// String literals outside the known types, added to the enumeration as Device types.
    pub extra_device_types: BTreeSet<String>,
}

/// Looks through each policy's JSON form for inputs outside the enumerated space.
pub fn scan(policies: &PolicySet) -> Scan {
    let mut scan = Scan::default();
    for policy in policies.policies() {
        let id = policy.id().to_string();
        match policy.to_json() {
            Ok(json) => {
                // Annotations are documentation, not conditions.
                let mut seen = BTreeSet::new();
                for key in ["principal", "action", "resource", "conditions"] {
                    if let Some(v) = json.get(key) {
                        walk(v, &mut seen, &mut scan.extra_device_types);
                    }
                }
                scan.findings
                    .extend(seen.into_iter().map(|what| format!("{id}: {what}")));
            }
            Err(e) => scan.findings.push(format!("{id}: could not be scanned: {e}")),
        }
    }
    scan.extra_device_types
        .retain(|s| !HAN_TYPES.contains(&s.as_str()) && s != OTHER_TYPE);
    scan
}

fn walk(v: &Value, findings: &mut BTreeSet<String>, strings: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            if map.get("Var").and_then(Value::as_str) == Some("context") {
                findings.insert("reads `context`, which the matrix does not vary".into());
            }
            for op in [".", "has"] {
                if let Some(access) = map.get(op) {
                    let on_principal =
                        access.get("left").and_then(|l| l.get("Var")).and_then(Value::as_str) == Some("principal");
                    if on_principal && access.get("attr").and_then(Value::as_str) == Some("party") {
                        findings.insert(
                            "reads `principal.party`, which the matrix fixes to one representative party".into(),
                        );
                    }
                }
            }
            if let (Some(ty), Some(id)) = (map.get("type").and_then(Value::as_str), map.get("id")) {
                if ty == "User" || ty == "Record" {
                    findings.insert(format!(
                        "names the entity {ty}::{id}, but the matrix uses one representative {ty}"
                    ));
                }
            }
            if map.contains_key("like") {
                findings.insert("uses a `like` pattern, whose matches the matrix does not enumerate".into());
            }
            if let Some(Value::String(s)) = map.get("Value") {
                strings.insert(s.clone());
            }
            for child in map.values() {
                walk(child, findings, strings);
            }
        }
        Value::Array(items) => {
            for child in items {
                walk(child, findings, strings);
            }
        }
        _ => {}
    }
}

/// One point of the decision space.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    pub role: Role,
    pub principal_is_user: bool,
    /// The Device's type and the principal's Party registration on it; `None`: no Device.
    pub device: Option<(Arc<str>, u8)>,
    pub message_type: MessageType,
}

impl Cell {
    pub fn principal(&self) -> Principal {
        Principal {
            user_id: REPRESENTATIVE_SUB,
            role: self.role,
            party: REPRESENTATIVE_PARTY.into(),
        }
    }

    pub fn facts(&self) -> Facts {
        Facts {
            message_type: self.message_type,
            principal_is_user: self.principal_is_user,
            device: self.device.as_ref().map(|(t, bits)| DeviceFacts {
                device_type: Arc::clone(t),
                principal_party: PartyRegistration::from_bits(*bits),
            }),
        }
    }

    /// `IS, another User's record, ESME, party importSupplier, ServiceRequest`.
    pub fn describe(&self) -> String {
        let whose = if self.principal_is_user {
            "own record"
        } else {
            "another User's record"
        };
        let device = match &self.device {
            None => "no Device".to_owned(),
            Some((t, bits)) => format!("Device {t}, party registered as {}", registration_label(*bits)),
        };
        format!("{}, {whose}, {device}, {}", self.role, self.message_type)
    }
}

/// `importSupplier+gasSupplier`, or `none`.
pub fn registration_label(bits: u8) -> String {
    let reg = PartyRegistration::from_bits(bits);
    let names: Vec<&str> = PartyRegistration::FLAGS
        .iter()
        .filter(|(f, _)| reg.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("+")
    }
}

/// Device types to enumerate: the HAN types, literal types the policies name, then [`OTHER_TYPE`].
pub fn device_types(scan: &Scan) -> Vec<Arc<str>> {
    HAN_TYPES
        .iter()
        .map(|s| Arc::from(*s))
        .chain(scan.extra_device_types.iter().map(|s| Arc::from(s.as_str())))
        .chain([Arc::from(OTHER_TYPE)])
        .collect()
}

/// Every cell, in a fixed order (role, own/other, device type, registration, message type).
pub fn cells(device_types: &[Arc<str>]) -> Vec<Cell> {
    let mut devices: Vec<Option<(Arc<str>, u8)>> = Vec::new();
    for t in device_types {
        for bits in 0..32u8 {
            devices.push(Some((Arc::clone(t), bits)));
        }
    }
    devices.push(None);
    let mut out = Vec::with_capacity(Role::ALL.len() * 2 * devices.len() * MessageType::ALL.len());
    for &role in Role::ALL {
        for principal_is_user in [true, false] {
            for device in &devices {
                for &message_type in MessageType::ALL {
                    out.push(Cell {
                        role,
                        principal_is_user,
                        device: device.clone(),
                        message_type,
                    });
                }
            }
        }
    }
    out
}

/// A decided cell: the classes the principal sees, and any policy errors (which fail closed).
#[derive(Clone, Debug)]
pub struct Decided {
    pub cell: Cell,
    pub classes: Classes,
    pub errors: Vec<String>,
}

/// Asks Cedar directly (no memo) about every cell.
pub fn decide_all(engine: &PolicyEngine, cells: &[Cell]) -> Vec<Decided> {
    cells
        .iter()
        .map(|cell| {
            let verdict = engine.evaluate(&cell.principal(), &cell.facts());
            let errors = verdict.classes.iter().flat_map(|d| d.errors.iter().cloned()).collect();
            Decided {
                cell: cell.clone(),
                classes: verdict.allowed(),
                errors,
            }
        })
        .collect()
}

/// `title, identity, metadata, payload`, or `nothing (left out)`.
pub fn classes_label(c: Classes) -> String {
    if c == Classes::NONE {
        "nothing (left out)".into()
    } else {
        c.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn scan_of(src: &str) -> Scan {
        scan(&PolicySet::from_str(src).unwrap())
    }

    #[test]
    fn plain_policies_have_no_findings() {
        let s = scan_of(
            r#"permit (principal, action, resource) when { resource.principalIsUser };
               forbid (principal, action, resource) unless {
                 resource has device && ["ESME", "CHF"].contains(resource.device.deviceType) };"#,
        );
        assert!(s.findings.is_empty(), "{:?}", s.findings);
        assert!(s.extra_device_types.is_empty());
    }

    #[test]
    fn party_user_literals_context_and_like_are_reported() {
        let s = scan_of(
            r#"permit (principal, action, resource) when { principal.party == "SUPA" };
               permit (principal == User::"AA-00-00-00-00-00-00-01", action, resource);
               permit (principal, action, resource) when { context has x };
               permit (principal, action, resource) when { resource.device.deviceType like "ES*" };"#,
        );
        let all = s.findings.join("\n");
        for what in ["principal.party", "User::", "context", "like"] {
            assert!(all.contains(what), "{what} missing from {all}");
        }
    }

    #[test]
    fn literal_device_types_are_added_to_the_enumeration() {
        let s = scan_of(
            r#"permit (principal, action, resource) when {
                 resource has device && resource.device.deviceType == "SMETS1" };"#,
        );
        assert!(s.findings.is_empty());
        let types = device_types(&s);
        assert!(types.iter().any(|t| &**t == "SMETS1"));
        assert_eq!(types.last().map(|t| &**t), Some(OTHER_TYPE));
        assert_eq!(cells(&types).len(), 7 * 2 * (10 * 32 + 1) * 7);
    }

    #[test]
    fn registration_labels() {
        assert_eq!(registration_label(0), "none");
        assert_eq!(registration_label(1 | 4), "importSupplier+gasSupplier");
    }
}
