//! `satgate activity`: the investigation view, offline. Reads an NDJSON export on stdin and
//! writes, as one principal may see it, the per-Device activity summary `GET /sat/activity`
//! answers (JSON, CSV with `--format csv`, or the page a browser gets with `--format html`: one
//! self-contained file, its Content-Security-Policy in a `<meta>` element).

use std::io::Write;

use super::filter::{run_filter, InputArgs};
use super::{CmdError, Exit};
use crate::views::{activity_pieces, Activity, Format, Limits};

/// `--format` of `activity`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    Json,
    Csv,
    Html,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format: JSON, CSV (one row per counter) or HTML (a page to open in a browser).
    #[arg(long, value_enum, default_value_t = FormatArg::Json)]
    pub format: FormatArg,
    /// Most distinct Devices in one summary.
    #[arg(long, default_value_t = Limits::DEFAULT.max_devices)]
    pub max_devices: usize,
    /// Most days from the earliest to the latest record.
    #[arg(long, default_value_t = Limits::DEFAULT.max_span_days)]
    pub max_span_days: i64,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let limits = Limits {
        max_devices: args.max_devices,
        max_span_days: args.max_span_days,
        ..Limits::DEFAULT
    };
    let caller = args.input.principal.principal().map_err(|e| e.to_string())?.user_id;
    let filter = run_filter(
        &args.input,
        Activity::new(limits).for_caller(caller),
        &mut std::io::stdin().lock(),
        &mut std::io::sink(),
    )?;
    let activity = filter.sink();
    if let Some(over) = activity.overflow() {
        return Err(CmdError::new(format!("no summary: {over}")));
    }
    let summary = activity.summary();
    let mut out = Vec::new();
    match args.format {
        FormatArg::Json => {
            serde_json::to_writer_pretty(&mut out, &summary).map_err(|e| format!("writing the summary: {e}"))?;
            out.push(b'\n');
        }
        FormatArg::Csv => out.extend(activity_pieces(activity, Format::Csv).flatten()),
        FormatArg::Html => out.extend(activity_pieces(activity, Format::Html).flatten()),
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing output: {e}"))?;
    let s = &filter.stats;
    eprintln!(
        "satgate activity: {} records in, {} summarised over {} Devices ({} flagged), {} not visible, {} malformed; tallies {} KiB of {} KiB",
        s.records_in,
        summary.records,
        summary.devices.len(),
        summary.devices_flagged,
        s.left_out,
        s.malformed,
        activity.tally_bytes() / 1024,
        activity.limits().max_bytes / 1024
    );
    Ok(Exit::Ok)
}
