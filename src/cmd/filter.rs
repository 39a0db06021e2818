//! `satgate filter`: the sidecar's record path, offline. Reads NDJSON on stdin, writes what the
//! principal may see on stdout, and a count summary on stderr.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::{CmdError, Exit, PolicyArgs, PrincipalArgs};
use crate::decision::PolicyEngine;
use crate::ownership::{HttpSettings, HttpSource, Inventory, OwnershipSource};
use crate::stream::lines::{Line, LineSplitter};
use crate::stream::{Outcome, RecordFilter};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Inventory JSON file (docs/contract.md §2).
    #[arg(long, required_unless_present = "inventory_url", conflicts_with = "inventory_url")]
    pub inventory: Option<PathBuf>,
    /// Inventory service base URL (`GET {url}/devices/{deviceId}`), instead of --inventory.
    #[arg(long)]
    pub inventory_url: Option<String>,
    #[command(flatten)]
    pub principal: PrincipalArgs,
    /// Longest accepted record line, in bytes.
    #[arg(long, default_value_t = crate::config::defaults::MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let summary = filter(args, &mut std::io::stdin().lock(), &mut std::io::stdout().lock())?;
    eprintln!("{summary}");
    Ok(Exit::Ok)
}

/// Runs the filter over `input`, returning the summary line.
pub fn filter(args: &Args, input: &mut impl Read, output: &mut impl Write) -> Result<String, CmdError> {
    let principal = args.principal.principal().map_err(|e| e.to_string())?;
    let engine = Arc::new(PolicyEngine::load(&args.policy.policies, &args.policy.schema).map_err(|e| e.to_string())?);
    let source: Arc<dyn OwnershipSource> = match (&args.inventory, &args.inventory_url) {
        (Some(path), _) => {
            let read = Inventory::read(path).map_err(|e| e.to_string())?;
            for w in &read.warnings {
                eprintln!("warning: inventory {w}");
            }
            read.inventory
        }
        (None, Some(url)) => {
            Arc::new(HttpSource::new(url, HttpSettings::default()).map_err(|e| format!("inventory-url: {e}"))?)
        }
        (None, None) => return Err("one of --inventory or --inventory-url is required".into()),
    };
    // Look-ups are async (the HTTP source); each Device is asked once per run.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let lookup = |id| match runtime.block_on(source.lookup(id)) {
        Ok(entry) => entry,
        Err(e) => {
            eprintln!("warning: {e}; no owner view for Device {id}");
            None
        }
    };

    let mut filter = RecordFilter::new(engine.for_principal(&principal));
    let mut splitter = LineSplitter::new(args.max_line_bytes);
    let mut out = Vec::with_capacity(1 << 16);
    let mut buf = vec![0u8; 1 << 16];
    let mut malformed_lines = Vec::new();
    let mut line_no = 0u64;
    let mut on_line = |line: Line<'_>, out: &mut Vec<u8>| {
        line_no += 1;
        let outcome = match line {
            Line::Complete(l) => filter.filter_line_sync(l, out, lookup),
            Line::TooLong => filter.malformed(crate::stream::RecordError::Syntax("line too long".into())),
        };
        if let Outcome::Malformed(e) = outcome {
            // The first few, named; the rest only counted.
            if malformed_lines.len() < 20 {
                malformed_lines.push(format!("line {line_no}: {e}"));
            }
        }
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading input: {e}").into()),
        };
        splitter.push(&buf[..n], |l| on_line(l, &mut out));
        output.write_all(&out).map_err(|e| format!("writing output: {e}"))?;
        out.clear();
    }
    splitter.finish(|l| on_line(l, &mut out));
    output
        .write_all(&out)
        .and_then(|()| output.flush())
        .map_err(|e| format!("writing output: {e}"))?;

    for m in &malformed_lines {
        eprintln!("left out: {m}");
    }
    let s = &filter.stats;
    Ok(format!(
        "satgate filter: {} records in, {} out, {} not visible, {} malformed",
        s.records_in, s.records_out, s.left_out, s.malformed
    ))
}
