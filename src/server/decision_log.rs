//! The decision log: one JSON record per served request, for audit (a SIEM, say), apart from the
//! operational logs. Schema `satgate.decision/1`:
//!
//! ```json
//! {"schema":"satgate.decision/1","time":1796000000.123,"requestId":"...","traceId":"...",
//!  "principal":{"sub":"90-B3-D5-1F-30-01-00-00","role":"IS","party":"SUPA"},"view":"records",
//!  "query":"limit=20","status":200,
//!  "policy":{"sha256":"...","revision":"abc123"},"upstreamStatus":200,"outcome":"complete",
//!  "records":{"in":100,"out":41,"notVisible":59,"malformed":0},
//!  "fieldsRedacted":{"title":0,"identity":37,"metadata":37,"payload":37},
//!  "allowedBy":{"import-supplier-titles":37,"own-records":4},"deniedBy":{"han-devices-only":12,"(default deny)":47}}
//! ```
//!
//! Counts and policy ids only: never a field value of a record, never a token. With
//! `--decision-log FILE` the records are appended to FILE, one per line; without it they go to
//! the log as the `decision` field of target `satgate::decision`.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::json;

use crate::decision::{PolicyIdentity, Tally};
use crate::model::{Class, Principal};
use crate::stream::FilterStats;

/// Where decision records go.
pub enum DecisionLog {
    Tracing,
    File(Mutex<std::fs::File>),
}

/// One served request, as the decision log tells it.
pub struct DecisionRecord<'a> {
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub principal: &'a Principal,
    /// `records` or `activity`: which view of the records was asked for.
    pub view: &'a str,
    pub query: Option<&'a str>,
    /// The answer's status (an activity summary over a cap is a 422 after its records were read).
    pub status: u16,
    pub policy: &'a PolicyIdentity,
    pub outcome: &'a str,
    pub stats: &'a FilterStats,
    pub tally: &'a Tally,
}

impl DecisionLog {
    /// Appends to `path`, or logs through `tracing` when there is none.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        Ok(match path {
            None => DecisionLog::Tracing,
            Some(p) => DecisionLog::File(Mutex::new(
                std::fs::OpenOptions::new().create(true).append(true).open(p)?,
            )),
        })
    }

    pub fn write(&self, r: &DecisionRecord<'_>) {
        let line = render(r);
        match self {
            DecisionLog::Tracing => tracing::info!(target: "satgate::decision", decision = %line),
            DecisionLog::File(file) => {
                let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = writeln!(f, "{line}") {
                    tracing::error!(error = %e, "decision log write failed");
                }
            }
        }
    }
}

pub fn render(r: &DecisionRecord<'_>) -> String {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let s = r.stats;
    json!({
        "schema": "satgate.decision/1",
        "time": (time * 1000.0).round() / 1000.0,
        "requestId": r.request_id,
        "traceId": r.trace_id,
        "principal": {"sub": r.principal.user_id.to_string(), "role": r.principal.role.as_str(), "party": r.principal.party},
        "view": r.view,
        "query": r.query.unwrap_or(""),
        "status": r.status,
        "policy": {"sha256": r.policy.sha256, "revision": r.policy.revision},
        "upstreamStatus": 200,
        "outcome": r.outcome,
        "records": {"in": s.records_in, "out": s.records_out, "notVisible": s.left_out, "malformed": s.malformed},
        "fieldsRedacted": Class::ALL.iter().map(|c| (c.name().to_owned(), json!(s.redacted(*c)))).collect::<serde_json::Map<_, _>>(),
        "allowedBy": r.tally.allowed_by,
        "deniedBy": r.tally.denied_by,
    })
    .to_string()
}
