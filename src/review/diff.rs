//! What a policy change would newly allow or deny: over the whole decision space (every cell of
//! the access matrix), and optionally over a corpus of real records.
//!
//! Corpus principals, kept simple on purpose: every distinct (userId, userRole) in the corpus,
//! each acting for every Party named in the inventory. That over-approximates the real Users
//! (a User acts for one Party), so a corpus count is an upper bound; the matrix is the exact part.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::decision::space::{self, Cell};
use crate::decision::PolicyEngine;
use crate::model::{Class, Classes, DeviceType, Eui64, Principal, Role};
use crate::ownership::Inventory;

/// One cell whose answer changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellChange {
    pub cell: Cell,
    pub old: Classes,
    pub new: Classes,
}

impl CellChange {
    pub fn added(&self) -> Classes {
        self.new.iter().filter(|c| !self.old.contains(*c)).collect()
    }

    pub fn removed(&self) -> Classes {
        self.old.iter().filter(|c| !self.new.contains(*c)).collect()
    }

    /// Identity, metadata or payload newly reaching someone other than the record's own User.
    pub fn leaks_beyond_title(&self) -> bool {
        !self.cell.principal_is_user && self.added().iter().any(|c| c != Class::Title)
    }
}

/// Both policy sets over every cell (the whole space: a change anywhere shows), and what the
/// guard would refuse in the new set (entity literals; errors show as cells that change).
pub fn matrix_changes(old: &PolicyEngine, new: &PolicyEngine) -> (Vec<CellChange>, Vec<String>) {
    let cells = space::cells();
    let a = space::decide_all(old, &cells);
    let b = space::decide_all(new, &cells);
    let findings = space::refusal_findings(new.policies(), &b);
    let changes = a
        .into_iter()
        .zip(b)
        .filter(|(x, y)| x.classes != y.classes)
        .map(|(x, y)| CellChange {
            cell: x.cell,
            old: x.classes,
            new: y.classes,
        })
        .collect();
    (changes, findings)
}

/// Change lines for reviewers: message types collapsed where all seven change alike, then
/// registrations and Device types grouped where they change alike.
pub fn describe_changes(changes: &[&CellChange], limit: usize) -> Vec<String> {
    // (role, own, device type, registration) -> its changes over message types.
    type Point = (Role, bool, Option<DeviceType>, u8, Classes, Classes);
    let mut points: Vec<(Point, Vec<&str>)> = Vec::new();
    for &c in changes {
        let (ty, bits) = match c.cell.device {
            None => (None, 0),
            Some((t, b)) => (Some(t), b),
        };
        let key: Point = (c.cell.role, c.cell.principal_is_user, ty, bits, c.old, c.new);
        match points.iter_mut().find(|(k, _)| *k == key) {
            Some(p) => p.1.push(c.cell.message_type.as_str()),
            None => points.push((key, vec![c.cell.message_type.as_str()])),
        }
    }
    // Group registrations, then Device types, that change alike.
    type Row = (Role, bool, String, Classes, Classes);
    type ByType = ((Row, Option<DeviceType>), Vec<u8>);
    let mut by_type: Vec<ByType> = Vec::new();
    for ((role, own, ty, bits, old, new), mts) in points {
        let mts = if mts.len() == crate::model::MessageType::ALL.len() {
            "any message type".to_owned()
        } else {
            mts.join("/")
        };
        let key = ((role, own, mts, old, new), ty);
        match by_type.iter_mut().find(|(k, _)| *k == key) {
            Some(g) => g.1.push(bits),
            None => by_type.push((key, vec![bits])),
        }
    }
    let mut rows: Vec<((Row, String), Vec<String>)> = Vec::new();
    for ((row, ty), bits) in by_type {
        let (ty, regs) = match ty {
            None => ("no Device".to_owned(), String::new()),
            Some(t) => (
                t.to_string(),
                format!(", party registered as {}", super::matrix::describe_registrations(&bits)),
            ),
        };
        let key = (row, regs);
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some(g) => g.1.push(ty),
            None => rows.push((key, vec![ty])),
        }
    }
    let mut lines: Vec<String> = rows
        .into_iter()
        .map(|(((role, own, mts, old, new), regs), types)| {
            let device = if types == ["no Device"] {
                "no Device".to_owned()
            } else {
                format!("Device {}", types.join(", "))
            };
            format!(
                "{role}, {} record, {device}{regs}, {mts}: {} -> {}",
                if own { "own" } else { "another User's" },
                space::classes_label(old),
                space::classes_label(new)
            )
        })
        .collect();
    if lines.len() > limit {
        let more = lines.len() - limit;
        lines.truncate(limit);
        lines.push(format!("... and {more} more"));
    }
    lines
}

/// Per role, what the corpus would show differently.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoleCorpus {
    pub principals: usize,
    pub records_newly_visible: u64,
    pub records_newly_hidden: u64,
    pub fields_newly_visible: u64,
    pub fields_newly_hidden: u64,
    /// Identity, metadata or payload fields newly visible to someone other than the record's User.
    pub sensitive_fields_newly_visible: u64,
    pub examples_visible: BTreeSet<String>,
    pub examples_hidden: BTreeSet<String>,
}

/// Corpus comparison: record ids and field names only, never values.
pub fn corpus_changes(
    old: &Arc<PolicyEngine>,
    new: &Arc<PolicyEngine>,
    records: &[u8],
    inventory: &Inventory,
) -> BTreeMap<Role, RoleCorpus> {
    let mut users: BTreeSet<(Eui64, Role)> = BTreeSet::new();
    let mut owner_of: HashMap<String, Eui64> = HashMap::new();
    for line in records.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        let user = v
            .get("userId")
            .and_then(Value::as_str)
            .and_then(|s| Eui64::parse(s).ok());
        let role = v
            .get("userRole")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Role>().ok());
        if let (Some(u), Some(r)) = (user, role) {
            users.insert((u, r));
            if let Some(id) = v.get("recordId").and_then(Value::as_str) {
                owner_of.insert(id.to_owned(), u);
            }
        }
    }
    let mut parties: BTreeSet<String> = BTreeSet::new();
    for d in inventory.devices() {
        for mp in &d.meter_points {
            for p in [
                &mp.import_supplier,
                &mp.export_supplier,
                &mp.gas_supplier,
                &mp.network_operator,
            ]
            .into_iter()
            .flatten()
            {
                parties.insert(p.clone());
            }
        }
    }
    let mut out: BTreeMap<Role, RoleCorpus> = Role::ALL.iter().map(|r| (*r, RoleCorpus::default())).collect();
    for (user, role) in &users {
        for party in &parties {
            let principal = Principal {
                user_id: *user,
                role: *role,
                party: party.clone(),
            };
            let seen = |engine: &Arc<PolicyEngine>| {
                let (bytes, _) = crate::views::filter_bytes(engine.for_principal(&principal), records, |id| {
                    inventory.get(id).cloned()
                });
                visible_fields(&bytes)
            };
            let (before, after) = (seen(old), seen(new));
            let stats = out.entry(*role).or_default();
            stats.principals += 1;
            let ids: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            for id in ids {
                let empty = BTreeSet::new();
                let b = before.get(id).unwrap_or(&empty);
                let a = after.get(id).unwrap_or(&empty);
                if b.is_empty() && !a.is_empty() {
                    stats.records_newly_visible += 1;
                    add_example(&mut stats.examples_visible, id);
                }
                if !b.is_empty() && a.is_empty() {
                    stats.records_newly_hidden += 1;
                    add_example(&mut stats.examples_hidden, id);
                }
                let gained: Vec<&String> = a.difference(b).collect();
                let lost = b.difference(a).count() as u64;
                stats.fields_newly_visible += gained.len() as u64;
                stats.fields_newly_hidden += lost;
                if !gained.is_empty() && !b.is_empty() && !a.is_empty() {
                    add_example(&mut stats.examples_visible, id);
                }
                if lost > 0 && !b.is_empty() && !a.is_empty() {
                    add_example(&mut stats.examples_hidden, id);
                }
                if owner_of.get(id.as_str()) != Some(user) {
                    stats.sensitive_fields_newly_visible +=
                        gained.iter().filter(|f| !TITLE_FIELDS.contains(&f.as_str())).count() as u64;
                }
            }
        }
    }
    out.retain(|_, s| s.principals > 0);
    out
}

const TITLE_FIELDS: [&str; 10] = [
    "recordId",
    "timestamp",
    "messageType",
    "srv",
    "srvTitle",
    "alertCode",
    "responseCode",
    "deviceId",
    "deviceType",
    "userRole",
];

fn add_example(examples: &mut BTreeSet<String>, id: &str) {
    if examples.len() < 5 {
        examples.insert(id.to_owned());
    }
}

/// recordId -> names of the fields written.
fn visible_fields(ndjson: &[u8]) -> HashMap<String, BTreeSet<String>> {
    let mut out = HashMap::new();
    for line in ndjson.split(|b| *b == b'\n') {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(line) {
            if let Some(id) = map.get("recordId").and_then(Value::as_str) {
                out.insert(id.to_owned(), map.keys().cloned().collect());
            }
        }
    }
    out
}
