//! `satgate audit`: answers an auditor's two questions from decision logs (the file and its
//! rotated files): who was shown titles about a Device between two times, under which policy
//! revisions (`--device`); and what one User was shown (`--sub`). JSON on stdout.
//!
//! A request with a start record and no end record (satgate stopped while answering) may have
//! disclosed anything its policy set allowed: it is listed under `unfinished`, never left out.
//! An end record that named its first 1,000 Devices only, and counted records about more, may
//! have shown the Device asked about: listed under `capped`. A last line without its line end (a
//! write cut short) is skipped and counted; any other line that is not a decision record is
//! counted as unreadable.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{CmdError, Exit};
use crate::bundle::clock::{parse_time, rfc3339};
use crate::model::Eui64;
use crate::server::decision_log::file::numbered;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("question").required(true).args(["device", "sub"])))]
pub struct Args {
    /// Decision log file (`--decision-log`); its rotated files FILE.1, FILE.2, ... are read too.
    /// Repeat for several satgate instances.
    #[arg(long, required = true)]
    pub log: Vec<PathBuf>,
    /// Who was shown titles about this Device (EUI-64), and under which policies.
    #[arg(long)]
    pub device: Option<String>,
    /// What this User (the token's `sub`, EUI-64) was shown.
    #[arg(long)]
    pub sub: Option<String>,
    /// From this time (unix seconds or RFC 3339 UTC); requests that ended before it are out.
    #[arg(long)]
    pub from: Option<String>,
    /// Until this time; requests that started after it are out.
    #[arg(long)]
    pub to: Option<String>,
}

/// What the logs held, apart from the records answering the question.
#[derive(Default)]
struct Reading {
    files: Vec<String>,
    lines: u64,
    partial_last_lines: u64,
    unreadable: u64,
}

/// One request as its records tell it.
struct Request {
    start: Option<Value>,
    end: Option<Value>,
}

impl Request {
    /// The record that says most: the end record when there is one.
    fn best(&self) -> &Value {
        self.end.as_ref().or(self.start.as_ref()).unwrap_or(&Value::Null)
    }

    fn time(&self, which: &Option<Value>) -> Option<f64> {
        which.as_ref().and_then(|v| v["time"].as_f64())
    }

    /// From its start (or end) to its end (or start).
    fn span(&self) -> (f64, f64) {
        let start = self.time(&self.start).or(self.time(&self.end)).unwrap_or(0.0);
        let end = self.time(&self.end).unwrap_or(start);
        (start, end)
    }
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let time = |t: &Option<String>, default: f64| -> Result<f64, CmdError> {
        t.as_deref()
            .map_or(Ok(default), |t| parse_time(t).map(|s| s as f64).map_err(CmdError::new))
    };
    let (from, to) = (time(&args.from, 0.0)?, time(&args.to, f64::MAX)?);
    let eui = |what: &str, v: &str| {
        Eui64::parse(v)
            .map(|id| id.to_string())
            .map_err(|_| CmdError::new(format!("--{what} must be an EUI-64 (like 00-DB-12-34-56-78-90-A0)")))
    };
    let (requests, reading) = read_logs(&args.log)?;
    let in_range: Vec<&Request> = requests
        .iter()
        .filter(|r| {
            let (start, end) = r.span();
            end >= from && start <= to
        })
        .collect();
    let mut answer = match (&args.device, &args.sub) {
        (Some(device), _) => by_device(&eui("device", device)?, &in_range),
        (None, Some(sub)) => by_sub(&eui("sub", sub)?, &in_range),
        (None, None) => return Err(CmdError::new("give --device or --sub")),
    };
    answer["from"] = args.from.as_ref().map_or(Value::Null, |_| json!(rfc3339(from as u64)));
    answer["to"] = args.to.as_ref().map_or(Value::Null, |_| json!(rfc3339(to as u64)));
    answer["logs"] = json!({
        "files": reading.files,
        "lines": reading.lines,
        "partialLastLines": reading.partial_last_lines,
        "unreadable": reading.unreadable,
    });
    let text = serde_json::to_string_pretty(&answer).map_err(CmdError::new)?;
    println!("{text}");
    Ok(Exit::Ok)
}

/// The files of each log, oldest first, and their requests in the order they started.
fn read_logs(logs: &[PathBuf]) -> Result<(Vec<Request>, Reading), CmdError> {
    let mut reading = Reading::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut requests: Vec<Request> = Vec::new();
    for log in logs {
        if !log.exists() {
            return Err(CmdError::new(format!("{}: no such file", log.display())));
        }
        for path in rotated_oldest_first(log) {
            reading.files.push(path.display().to_string());
            read_file(&path, &mut reading, |v| {
                let Some(id) = v["requestId"].as_str().map(str::to_owned) else {
                    return false;
                };
                let at = *index.entry(id).or_insert_with(|| {
                    requests.push(Request { start: None, end: None });
                    requests.len() - 1
                });
                let slot = &mut requests[at];
                match (v["schema"].as_str(), v["event"].as_str()) {
                    (Some("satgate.decision/2"), Some("start")) => slot.start = Some(v),
                    (Some("satgate.decision/2"), Some("end")) => slot.end = Some(v),
                    // The first schema wrote one record per request, at its end.
                    (Some("satgate.decision/1"), _) => slot.end = Some(v),
                    _ => return false,
                }
                true
            })?;
        }
    }
    requests.sort_by(|a, b| a.span().0.total_cmp(&b.span().0));
    Ok((requests, reading))
}

/// `FILE.N`, ..., `FILE.1`, `FILE`: every rotated file there is, by number.
fn rotated_oldest_first(log: &Path) -> Vec<PathBuf> {
    let mut numbers: Vec<usize> = Vec::new();
    if let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if let Some(k) = n.strip_prefix(name).and_then(|r| r.strip_prefix('.')) {
                    if let Ok(k) = k.parse::<usize>() {
                        numbers.push(k);
                    }
                }
            }
        }
    }
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    let mut files: Vec<PathBuf> = numbers.into_iter().map(|k| numbered(log, k)).collect();
    files.push(log.to_path_buf());
    files
}

/// Each whole line that is a JSON object goes to `take` (which says whether it was a decision
/// record); a last line without its line end is skipped.
fn read_file(path: &Path, reading: &mut Reading, mut take: impl FnMut(Value) -> bool) -> Result<(), CmdError> {
    let file = std::fs::File::open(path).map_err(|e| CmdError::new(format!("{}: {e}", path.display())))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| CmdError::new(format!("{}: {e}", path.display())))?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            reading.partial_last_lines += 1;
            return Ok(());
        }
        reading.lines += 1;
        let taken = match serde_json::from_slice::<Value>(&line) {
            Ok(v) if v.is_object() => take(v),
            _ => false,
        };
        if !taken {
            reading.unreadable += 1;
        }
    }
}

fn principal(v: &Value) -> Value {
    v["principal"].clone()
}

fn policy(v: &Value) -> Value {
    json!({"sha256": v["policy"]["sha256"], "revision": v["policy"]["revision"]})
}

fn when(t: f64) -> Value {
    json!(rfc3339(t as u64))
}

/// A request without an end record: may have shown anything its policy set allowed.
fn unfinished(r: &Request) -> Value {
    let v = r.best();
    json!({
        "requestId": v["requestId"], "started": when(r.span().0), "principal": principal(v),
        "view": v["view"], "query": v["query"], "policy": policy(v),
    })
}

/// One principal's requests that showed titles about the Device.
struct Seen {
    principal: Value,
    requests: u64,
    records: u64,
    first: f64,
    last: f64,
    policies: Vec<Value>,
}

/// Who was shown titles about `device`: per principal, the requests, records and policies.
fn by_device(device: &str, requests: &[&Request]) -> Value {
    let mut shown: BTreeMap<String, Seen> = BTreeMap::new();
    let (mut open, mut capped) = (Vec::new(), Vec::new());
    for r in requests {
        let Some(end) = &r.end else {
            open.push(unfinished(r));
            continue;
        };
        let (first, last) = r.span();
        let owner_view = &end["ownerView"];
        match owner_view["devices"][device].as_u64() {
            Some(records) => {
                let p = principal(end);
                let e = shown.entry(p.to_string()).or_insert(Seen {
                    principal: p,
                    requests: 0,
                    records: 0,
                    first,
                    last,
                    policies: Vec::new(),
                });
                e.requests += 1;
                e.records += records;
                e.first = e.first.min(first);
                e.last = e.last.max(last);
                let pol = policy(end);
                if !e.policies.contains(&pol) {
                    e.policies.push(pol);
                }
            }
            None if owner_view["moreDevicesRecords"].as_u64().unwrap_or(0) > 0 => capped.push(json!({
                "requestId": end["requestId"], "ended": when(last), "principal": principal(end),
                "moreDevicesRecords": owner_view["moreDevicesRecords"], "policy": policy(end),
            })),
            None => {}
        }
    }
    let shown: Vec<Value> = shown
        .into_values()
        .map(|s| {
            json!({"principal": s.principal, "requests": s.requests, "records": s.records,
                   "first": when(s.first), "last": when(s.last), "policies": s.policies})
        })
        .collect();
    json!({"question": "who was shown titles about this Device", "deviceId": device,
           "shown": shown, "capped": capped, "unfinished": open})
}

/// Every request of `sub`, what it was shown and under which policies.
fn by_sub(sub: &str, requests: &[&Request]) -> Value {
    let mut out = Vec::new();
    for r in requests.iter().filter(|r| r.best()["principal"]["sub"] == sub) {
        let v = r.best();
        let (start, end) = r.span();
        out.push(match &r.end {
            Some(e) => json!({
                "requestId": e["requestId"], "callerRequestId": e["callerRequestId"],
                "started": when(start), "ended": when(end),
                "role": e["principal"]["role"], "party": e["principal"]["party"],
                "view": e["view"], "query": e["query"], "status": e["status"], "outcome": e["outcome"],
                "records": e["records"], "ownerView": e["ownerView"], "policy": policy(e),
            }),
            None => json!({
                "requestId": v["requestId"], "callerRequestId": v["callerRequestId"],
                "started": when(start), "ended": null,
                "role": v["principal"]["role"], "party": v["principal"]["party"],
                "view": v["view"], "query": v["query"], "status": null,
                "outcome": "no end record: may have shown anything the policy set allowed",
                "policy": policy(v),
            }),
        });
    }
    json!({"question": "what this User was shown", "sub": sub, "requests": out})
}
