//! `satgate filter`: the sidecar's record path, offline. Reads NDJSON on stdin, writes what the
//! principal may see on stdout (NDJSON, or CSV with `--format csv`), and a count summary on
//! stderr: the record pipeline with standard input and output as its transport. [`run_filter`] is shared with `satgate activity`.

use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::{CmdError, Exit, PolicyArgs, PrincipalArgs};
use crate::decision::PolicyEngine;
use crate::model::Eui64;
use crate::ownership::{HttpSettings, InventoryFile, LookupResult, OwnershipSource, SourceConfig};
use crate::stream::{Chunks, Frames, RecordFilter, RecordStream, Sink, StreamError};
use crate::views::html::timeline::{self, Timeline};
use crate::views::{Format, Records};

/// Bytes read from the input at once.
const READ_BYTES: usize = 1 << 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format: JSON (NDJSON lines, as the sidecar answers by default), CSV (RFC 4180,
    /// a header row), or HTML (the timeline page of the Device given with --device-id, as a
    /// browser gets it from /sat/records?deviceId=...; the input is its window).
    #[arg(long, value_enum, default_value_t = FormatArg::Json)]
    pub format: FormatArg,
    /// The Device whose timeline `--format html` shows.
    #[arg(long, value_name = "EUI-64", required_if_eq("format", "html"))]
    pub device_id: Option<String>,
}

/// `--format` of `filter`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    #[value(alias = "ndjson")]
    Json,
    Csv,
    Html,
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
        FormatArg::Html => return timeline(args),
    };
    let filter = run_filter(
        &args.input,
        Records::new(format),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    )?;
    summary(&filter.stats);
    Ok(Exit::Ok)
}

/// The timeline page of one Device, offline: the records of the input the principal may see,
/// the same page `/sat/records?deviceId=...` gives a browser.
fn timeline(args: &Args) -> Result<Exit, CmdError> {
    let device = args.device_id.as_deref().ok_or("--format html needs --device-id")?;
    let device = Eui64::parse(device).map_err(|e| format!("device-id: {e}"))?;
    let caller = args.input.principal.principal().map_err(|e| e.to_string())?.user_id;
    let filter = run_filter(
        &args.input,
        Timeline::new(device).for_caller(caller),
        &mut std::io::stdin().lock(),
        &mut std::io::sink(),
    )?;
    if filter.sink().overflow() {
        return Err(format!(
            "more than {} records about {device}: give a shorter window of records",
            timeline::MAX_ENTRIES
        )
        .into());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&filter.sink().page())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing output: {e}"))?;
    summary(&filter.stats);
    Ok(Exit::Ok)
}

fn summary(s: &crate::stream::FilterStats) {
    eprintln!(
        "satgate filter: {} records in, {} out, {} not visible, {} malformed",
        s.records_in, s.records_out, s.left_out, s.malformed
    );
}

/// Runs the record pipeline with `sink` over `input`, writing what it writes to `written`, and
/// returns the filter for its counts (and the sink). Malformed lines are named on stderr (the
/// first few).
pub fn run_filter<S: Sink>(
    args: &InputArgs,
    sink: S,
    input: &mut impl Read,
    written: &mut impl Write,
) -> Result<RecordFilter<S>, CmdError> {
    let principal = args.principal.principal().map_err(|e| e.to_string())?;
    let engine = Arc::new(PolicyEngine::load(&args.policy.policies, &args.policy.schema).map_err(|e| e.to_string())?);
    let config = match (&args.inventory, &args.inventory_url) {
        (Some(path), _) => SourceConfig::File(path.clone()),
        (None, Some(url)) => SourceConfig::Http(url.clone(), HttpSettings::DEFAULT),
        (None, None) => return Err("one of --inventory or --inventory-url is required".into()),
    };
    // One run reads the file once: how long a failing reload may keep it in force is moot.
    let opened = config
        .open(InventoryFile::DEFAULT_MAX_AGE, &Default::default())
        .map_err(|e| e.to_string())?;
    for w in &opened.warnings {
        eprintln!("warning: inventory {w}");
    }
    let source = opened.source;
    // Look-ups are async (the HTTP source); each Device is asked once per run.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let filter = RecordFilter::new(engine.for_principal(&principal), sink);
    let mut stream = RecordStream::new(ReadFrames::new(input), filter, args.max_line_bytes).with_prefetch(false);
    let result = runtime.block_on(stream.run(&Warned(source), &mut WriteChunks(written)));
    match result {
        Err(StreamError::Upstream(e)) => return Err(e.into()),
        Err(e) => return Err(e.to_string().into()),
        Ok(()) => {}
    }
    written.flush().map_err(|e| format!("writing output: {e}"))?;
    for m in stream.malformed_lines() {
        eprintln!("left out: {m}");
    }
    Ok(stream.into_filter())
}

/// Standard input (or any reader) as frames: a file's last line may lack its `\n`.
struct ReadFrames<'a, R> {
    input: &'a mut R,
    buf: Vec<u8>,
    last: u8,
    ended: bool,
}

impl<'a, R: Read> ReadFrames<'a, R> {
    fn new(input: &'a mut R) -> Self {
        Self {
            input,
            buf: vec![0u8; READ_BYTES],
            last: b'\n',
            ended: false,
        }
    }
}

impl<R: Read> Frames for ReadFrames<'_, R> {
    type Frame = Bytes;

    async fn frame(&mut self) -> Result<Option<Bytes>, StreamError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            return match self.input.read(&mut self.buf) {
                Ok(0) => {
                    self.ended = true;
                    Ok((self.last != b'\n').then(|| Bytes::from_static(b"\n")))
                }
                Ok(n) => {
                    self.last = self.buf[n - 1];
                    Ok(Some(Bytes::copy_from_slice(&self.buf[..n])))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(StreamError::Upstream(format!("reading input: {e}"))),
            };
        }
    }
}

/// Standard output (or any writer) taking the filtered chunks.
struct WriteChunks<'a, W>(&'a mut W);

impl<W: Write> Chunks for WriteChunks<'_, W> {
    async fn send(&mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let written = self.0.write_all(out);
        out.clear();
        written.map_err(|e| StreamError::Upstream(format!("writing output: {e}")))
    }
}

/// The source, with each failed look-up named on stderr (a tool has no log).
struct Warned(Arc<dyn OwnershipSource>);

impl OwnershipSource for Warned {
    fn lookup(&self, id: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        Box::pin(async move {
            let answer = self.0.lookup(id).await;
            if let Err(e) = &answer {
                eprintln!("warning: {e}; no owner view for Device {id}");
            }
            answer
        })
    }
}
