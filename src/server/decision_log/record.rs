//! The two records a served request leaves, schema `satgate.decision/2`: `start`, durable before
//! the answer's first byte, and `end`, durable before its last.
//!
//! ```json
//! {"schema":"satgate.decision/2","event":"start","time":1796000000.123,"requestId":"<satgate's>",
//!  "callerRequestId":"req-42","traceId":"...","principal":{"sub":"90-B3-D5-1F-30-01-00-00","role":"IS","party":"SUPA"},
//!  "view":"records","query":"limit=20","policy":{"sha256":"...","revision":"abc123","serial":null}}
//! {"schema":"satgate.decision/2","event":"end", ...the same..., "status":200,"upstreamStatus":200,
//!  "outcome":"complete","records":{"in":100,"out":41,"notVisible":59,"malformed":0},
//!  "fieldsRedacted":{"title":0,"identity":37,"metadata":37,"payload":37},
//!  "allowedBy":{"import-supplier-titles":37,"own-records":4},"deniedBy":{"han-devices-only":12,"(default deny)":47},
//!  "ownerView":{"devices":{"00-DB-00-00-00-00-01-01":37},"moreDevicesRecords":0}}
//! ```
//!
//! Counts, ids and policy ids only: never a field value of a record, never a token. Every line is
//! ASCII: anything else (a claim's U+2028 or U+202E, say) is a `\u` escape, so no reader splits
//! or reorders a line, in the file or in the process log.

use serde_json::{json, Map, Value};

use super::shown::OwnerView;
use crate::decision::{PolicyIdentity, Tally};
use crate::model::{Class, Principal};
use crate::stream::FilterStats;

pub const SCHEMA: &str = "satgate.decision/2";

/// Who asked for what, under which policies: in both records of a request.
pub struct Subject<'a> {
    /// satgate's own id for the request: the key of its records.
    pub request_id: &'a str,
    /// The caller's `X-Request-Id`, when it sent a usable one; never the key.
    pub caller_request_id: Option<&'a str>,
    pub trace_id: &'a str,
    pub principal: &'a Principal,
    /// `records` or `activity`: which view of the records was asked for.
    pub view: &'a str,
    pub query: Option<&'a str>,
    pub policy: &'a PolicyIdentity,
}

/// How a request ended.
pub struct Ending<'a> {
    /// The answer's status (an activity summary over a cap is a 422 after its records were read).
    pub status: u16,
    pub outcome: &'a str,
    /// What was read and shown; `None` when the upstream failed before any record.
    pub stream: Option<(&'a FilterStats, &'a Tally, &'a OwnerView)>,
}

pub fn start(s: &Subject<'_>) -> String {
    let mut v = subject(s, "start");
    if let Value::Object(m) = &mut v {
        m.remove("status");
    }
    ascii(&v)
}

pub fn end(s: &Subject<'_>, e: &Ending<'_>) -> String {
    let mut v = subject(s, "end");
    let empty = (FilterStats::default(), Tally::default(), OwnerView::default());
    let (stats, tally, shown) = e.stream.unwrap_or((&empty.0, &empty.1, &empty.2));
    if let Value::Object(m) = &mut v {
        m.insert("status".into(), json!(e.status));
        m.insert("upstreamStatus".into(), json!(e.stream.map(|_| 200)));
        m.insert("outcome".into(), json!(e.outcome));
        m.insert(
            "records".into(),
            json!({"in": stats.records_in, "out": stats.records_out, "notVisible": stats.left_out, "malformed": stats.malformed}),
        );
        m.insert(
            "fieldsRedacted".into(),
            Class::ALL
                .iter()
                .map(|c| (c.name().to_owned(), json!(stats.redacted(*c))))
                .collect::<Map<_, _>>()
                .into(),
        );
        m.insert("allowedBy".into(), json!(tally.allowed_by));
        m.insert("deniedBy".into(), json!(tally.denied_by));
        m.insert("ownerView".into(), shown.to_json());
    }
    ascii(&v)
}

fn subject(s: &Subject<'_>, event: &str) -> Value {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    json!({
        "schema": SCHEMA,
        "event": event,
        "time": (time * 1000.0).round() / 1000.0,
        "requestId": s.request_id,
        "callerRequestId": s.caller_request_id,
        "traceId": s.trace_id,
        "principal": {"sub": s.principal.user_id.to_string(), "role": s.principal.role.as_str(), "party": s.principal.party},
        "view": s.view,
        "query": s.query.unwrap_or(""),
        "status": null,
        "policy": {"sha256": s.policy.sha256, "revision": s.policy.revision, "serial": s.policy.serial},
    })
}

/// JSON text with every character outside ASCII written as a `\u` escape (the same value to any
/// JSON reader). serde_json escapes the control characters; outside strings JSON text is ASCII.
pub fn ascii(v: &Value) -> String {
    let text = v.to_string();
    if text.is_ascii() {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_text_is_escaped_and_reads_back_the_same() {
        let party = "SUP\u{2028}A\u{202e}\u{1F600}";
        let p = Principal::from_claims("90-B3-D5-1F-30-01-00-00", "IS", party).unwrap();
        let policy = PolicyIdentity {
            sha256: "ab".into(),
            revision: Some("r\u{2029}".into()),
            serial: None,
            expires: None,
        };
        let s = Subject {
            request_id: "id",
            caller_request_id: Some("req-1"),
            trace_id: "t",
            principal: &p,
            view: "records",
            query: Some("a=\u{7}"),
            policy: &policy,
        };
        for line in [
            start(&s),
            end(
                &s,
                &Ending {
                    status: 200,
                    outcome: "complete",
                    stream: None,
                },
            ),
        ] {
            assert!(line.is_ascii() && !line.contains('\n'), "{line}");
            assert!(
                line.contains("\\u2028") && line.contains("\\u202e") && line.contains("\\u0007"),
                "{line}"
            );
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["principal"]["party"], party);
            assert_eq!(v["policy"]["revision"], "r\u{2029}");
            assert_eq!(v["schema"], SCHEMA);
        }
    }
}
