//! The decision space: every input Cedar can ever be shown, enumerated completely.
//!
//! # Why the enumeration is complete (the guard's soundness argument)
//!
//! Reviewers should check this argument, not only the tests.
//!
//! 1. **Cedar only ever sees a [`Cell`].** [`super::request::build`] is the only place a Cedar
//!    request and entity store are made, and its inputs are a [`Role`] and a record's [`Facts`],
//!    nothing else (not the principal's User ID, not its Party, not the record's identity, not
//!    the inventory's text). It uses one constant principal uid and one constant resource uid, an
//!    empty context and exactly two entities whose attributes come from the cell. So the whole
//!    Cedar input (request, entities, and the schema and policies fixed at load) is a function
//!    of `(role, facts, action)`.
//! 2. **A cell has finitely many values, and [`cells`] lists all of them.** `Role` (7),
//!    `principal_is_user` (2), the Device: none, or one of the 9 [`DeviceType`]s (the 8 HAN types
//!    and `OTHER`, to which every other inventory type maps) with one of the 32 values of
//!    [`PartyRegistration`] (5 flags; `from_bits` masks anything else), and `MessageType` (7):
//!    7 x 2 x (9 x 32 + 1) x 7 = 28,322 cells, each with 4 actions. [`cells`] builds `Facts`
//!    with a struct literal, so a field added to `Facts` does not compile until it is
//!    enumerated here too; `every_value_of_every_field_is_enumerated` checks the count against
//!    the types' own `ALL` lists.
//! 3. **Cedar's evaluation is a function of its input.** No clock, randomness or I/O; extension
//!    functions are pure. So whatever a policy writes (an attribute read through `if`, a record
//!    literal, a set, `has`, `like`, `is`, an entity literal, arithmetic), its answer and its
//!    errors at run time are exactly its answer and its errors on one of the enumerated cells.
//!
//! Hence asking Cedar about every cell observes every decision the policies can ever make at run
//! time: the guard, `matrix`, `diff` and `test` that use this space are complete by
//! construction, not by recognising how a policy is spelled. The schema (`schemas/`) mirrors
//! this: it exposes no string and no other unbounded value, so strict validation refuses a
//! policy that tries to read the principal's Party or the inventory's Device type text, however
//! it is written. [`entity_literal_findings`] additionally refuses User and Record literals:
//! not for soundness (the uids are constants, so such a policy is enumerated like any other)
//! but because a policy naming one User or record can never mean what it appears to say.

use cedar_policy::PolicySet;
use serde_json::Value;

use super::{DeviceFacts, Facts, PolicyEngine};
use crate::model::{Classes, DeviceType, MessageType, Role};
use crate::ownership::PartyRegistration;

/// The entity types whose literals a policy may name: every one is a finite enumeration
/// (`Action` is the four actions of the schema). Anything else (User, Record) is refused.
const LITERAL_TYPES: [&str; 4] = ["Role", "MessageType", "DeviceType", "Action"];

/// One point of the decision space: everything Cedar is shown for one record (the action
/// aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    pub role: Role,
    pub principal_is_user: bool,
    /// The Device's type and the principal's Party registration on it; `None`: no Device.
    pub device: Option<(DeviceType, u8)>,
    pub message_type: MessageType,
}

impl Cell {
    /// The cell a run-time decision falls in.
    pub fn of(role: Role, facts: &Facts) -> Self {
        Self {
            role,
            principal_is_user: facts.principal_is_user,
            device: facts.device.map(|d| (d.device_type, d.principal_party.bits())),
            message_type: facts.message_type,
        }
    }

    pub fn facts(&self) -> Facts {
        Facts {
            message_type: self.message_type,
            principal_is_user: self.principal_is_user,
            device: self.device.map(|(device_type, bits)| DeviceFacts {
                device_type,
                principal_party: PartyRegistration::from_bits(bits),
            }),
        }
    }

    /// `IS, another User's record, Device ESME, party registered as importSupplier, ServiceRequest`.
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

/// How many values a registration can take: every subset of the five flags.
pub const REGISTRATIONS: u8 = 1 << PartyRegistration::FLAGS.len();

/// Every cell, in a fixed order (role, own/other, Device type, registration, message type).
pub fn cells() -> Vec<Cell> {
    let mut devices: Vec<Option<(DeviceType, u8)>> = Vec::new();
    for &t in DeviceType::ALL {
        for bits in 0..REGISTRATIONS {
            devices.push(Some((t, bits)));
        }
    }
    devices.push(None);
    let mut out = Vec::with_capacity(Role::ALL.len() * 2 * devices.len() * MessageType::ALL.len());
    for &role in Role::ALL {
        for principal_is_user in [true, false] {
            for &device in &devices {
                for &message_type in MessageType::ALL {
                    // Built through `Facts` (a struct literal) so that a new field of `Facts`
                    // stops this from compiling until the field is enumerated.
                    let facts = Facts {
                        message_type,
                        principal_is_user,
                        device: device.map(|(device_type, bits)| DeviceFacts {
                            device_type,
                            principal_party: PartyRegistration::from_bits(bits),
                        }),
                    };
                    out.push(Cell::of(role, &facts));
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
            let verdict = engine.evaluate(cell.role, &cell.facts());
            let errors = verdict.classes.iter().flat_map(|d| d.errors.iter().cloned()).collect();
            Decided {
                cell: *cell,
                classes: verdict.allowed(),
                errors,
            }
        })
        .collect()
}

/// What the guard would refuse in a decided space, in words: entity literals, and cells where a
/// policy errored (the first one as an example). Shared by `matrix` and `diff`.
pub fn refusal_findings(policies: &PolicySet, decided: &[Decided]) -> Vec<String> {
    let mut findings = entity_literal_findings(policies);
    let errored: Vec<&Decided> = decided.iter().filter(|d| !d.errors.is_empty()).collect();
    if let Some(first) = errored.first() {
        findings.push(format!(
            "a policy errors in {} cells (the guard refuses the set; run time would deny there), e.g. {}: {}",
            errored.len(),
            first.cell.describe(),
            first.errors.join("; ")
        ));
    }
    findings
}

/// `title, identity, metadata, payload`, or `nothing (left out)`.
pub fn classes_label(c: Classes) -> String {
    if c == Classes::NONE {
        "nothing (left out)".into()
    } else {
        c.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
    }
}

/// Policies naming an entity whose type is not one of the finite enumerations, as
/// `policy-id: what`. Walks every node of each policy's JSON form (scope, conditions, any
/// nesting), so no spelling escapes it: the JSON form is Cedar's own parse, where every entity
/// reference is `{"type": T, "id": I}` (scope) or `{"__entity": {...}}` (expressions).
pub fn entity_literal_findings(policies: &PolicySet) -> Vec<String> {
    let mut out = Vec::new();
    for policy in policies.policies() {
        let id = policy.id().to_string();
        match policy.to_json() {
            Ok(json) => {
                let mut found = std::collections::BTreeSet::new();
                for key in ["principal", "action", "resource", "conditions"] {
                    if let Some(v) = json.get(key) {
                        literals(v, &mut found);
                    }
                }
                out.extend(found.into_iter().map(|ty| {
                    format!(
                        "{id}: names a {ty} entity; decisions depend on a record's facts, never on which \
                         {ty} it is, so such a condition cannot mean what it says"
                    )
                }));
            }
            // Fail closed: a policy that cannot be inspected is not admitted.
            Err(e) => out.push(format!("{id}: could not be inspected: {e}")),
        }
    }
    out
}

fn literals(v: &Value, found: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            let ty = map
                .get("__entity")
                .and_then(|e| e.get("type"))
                .or_else(|| map.get("id").and(map.get("type")))
                .and_then(Value::as_str);
            if let Some(ty) = ty {
                if !LITERAL_TYPES.contains(&ty) {
                    found.insert(ty.to_owned());
                }
            }
            map.values().for_each(|child| literals(child, found));
        }
        Value::Array(items) => items.iter().for_each(|child| literals(child, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn every_value_of_every_field_is_enumerated() {
        let all = cells();
        let devices = DeviceType::ALL.len() * usize::from(REGISTRATIONS) + 1;
        assert_eq!(all.len(), Role::ALL.len() * 2 * devices * MessageType::ALL.len());
        assert_eq!(all.len(), 28_322);
        let distinct: std::collections::HashSet<Cell> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "no cell twice");
        // Every registration the inventory can produce is a cell's (from_bits masks to 5 bits).
        for bits in 0..=u8::MAX {
            assert!(PartyRegistration::from_bits(bits).bits() < REGISTRATIONS);
        }
        // A cell's facts round-trip, so the run-time cell of any facts is one of these.
        for c in &all {
            assert_eq!(Cell::of(c.role, &c.facts()), *c);
        }
    }

    #[test]
    fn user_and_record_literals_are_found_wherever_they_are_written() {
        let srcs = [
            r#"permit (principal == User::"a", action, resource);"#,
            r#"permit (principal in User::"a", action, resource);"#,
            r#"permit (principal, action, resource == Record::"r");"#,
            r#"permit (principal, action, resource) when { principal == User::"a" };"#,
            r#"permit (principal, action, resource) when { [User::"a"].contains(principal) };"#,
            r#"permit (principal, action, resource) when { {x: User::"a"}.x == principal };"#,
            r#"permit (principal, action, resource) when { if true then principal == User::"a" else false };"#,
            r#"permit (principal, action, resource) when { principal in [User::"a", User::"b"] };"#,
        ];
        for src in srcs {
            let set = PolicySet::from_str(src).unwrap();
            let f = entity_literal_findings(&set);
            assert_eq!(f.len(), 1, "{src}: {f:?}");
        }
        let fine = PolicySet::from_str(
            r#"permit (principal, action in [Action::"ViewTitle"], resource)
               when { principal.role == Role::"IS" && resource.messageType == MessageType::"DCCAlert"
                      && resource has device && resource.device.deviceType == DeviceType::"ESME" };"#,
        )
        .unwrap();
        assert!(entity_literal_findings(&fine).is_empty());
    }

    #[test]
    fn registration_labels() {
        assert_eq!(registration_label(0), "none");
        assert_eq!(registration_label(1 | 4), "importSupplier+gasSupplier");
    }
}
