//! `satgate filter`: the sidecar's record path, offline. Reads NDJSON on stdin, writes what the
//! principal may see on stdout (NDJSON, or CSV with `--format csv`), and a count summary on
//! stderr. [`run_filter`] is shared with `satgate activity`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::{CmdError, Exit, PolicyArgs, PrincipalArgs};
use crate::decision::PolicyEngine;
use crate::ownership::{HttpSettings, HttpSource, Inventory, OwnershipSource};
use crate::stream::lines::{Line, LineSplitter};
use crate::stream::{Format, Outcome, Output, RecordFilter};

/// Bytes read from the input at once.
const READ_BYTES: usize = 1 << 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format: JSON (NDJSON lines, as the sidecar answers by default) or CSV (RFC 4180,
    /// a header row).
    #[arg(long, value_enum, default_value_t = FormatArg::Json)]
    pub format: FormatArg,
}

/// `--format` of `filter` and `activity`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    #[value(alias = "ndjson")]
    Json,
    Csv,
}

/// What `filter` and `activity` read: the policy set, the inventory, the principal.
#[derive(clap::Args, Debug)]
pub struct InputArgs {
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
    let format = match args.format {
        FormatArg::Json => Format::Json,
        FormatArg::Csv => Format::Csv,
    };
    let filter = run_filter(
        &args.input,
        Output::records(format),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    )?;
    let s = &filter.stats;
    eprintln!(
        "satgate filter: {} records in, {} out, {} not visible, {} malformed",
        s.records_in, s.records_out, s.left_out, s.malformed
    );
    Ok(Exit::Ok)
}

/// Runs the filter with `output` over `input`, writing what it writes to `written`, and returns
/// it for its counts (and summary). Malformed lines are named on stderr (the first few).
pub fn run_filter(
    args: &InputArgs,
    output: Output,
    input: &mut impl Read,
    written: &mut impl Write,
) -> Result<RecordFilter, CmdError> {
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

    let mut filter = RecordFilter::with_output(engine.for_principal(&principal), output);
    let mut splitter = LineSplitter::new(args.max_line_bytes);
    let mut out = Vec::with_capacity(READ_BYTES + (1 << 16));
    let mut buf = vec![0u8; READ_BYTES];
    filter.begin(&mut out);
    let mut malformed_lines = Vec::new();
    let mut line_no = 0u64;
    let mut on_line = |filter: &mut RecordFilter, line: Line<'_>, out: &mut Vec<u8>| {
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
        if filter.stopped() {
            break;
        }
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading input: {e}").into()),
        };
        splitter.push(&buf[..n], |l| on_line(&mut filter, l, &mut out));
        written.write_all(&out).map_err(|e| format!("writing output: {e}"))?;
        out.clear();
    }
    splitter.finish(|l| on_line(&mut filter, l, &mut out));
    written
        .write_all(&out)
        .and_then(|()| written.flush())
        .map_err(|e| format!("writing output: {e}"))?;

    for m in &malformed_lines {
        eprintln!("left out: {m}");
    }
    Ok(filter)
}
