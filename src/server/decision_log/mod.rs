//! The decision log: what satgate disclosed, to whom, under which policies, for audit (a SIEM,
//! an information request), apart from the operational logs.
//!
//! - [`record`]: the `start` and `end` records of a request (schema `satgate.decision/2`);
//! - [`shown`]: the count of records shown through the owner view, by Device;
//! - [`writer`]: the one writer thread, its bounded queue and group commit;
//! - [`file`]: the file: whole lines only, `fdatasync`, mode 0600, rotation and reopening.
//!
//! With `--decision-log FILE` every record is durable (written and `fdatasync`ed) before the step
//! it records goes on: the start record before the answer's first byte, the end record before its
//! last. Without it the records go to the process log as the `decision` field of target
//! `satgate::decision` (nothing there is durable).

pub mod file;
pub mod record;
pub mod shown;
pub mod writer;

use serde_json::{json, Value};

pub use file::Settings;
pub use record::{Ending, Subject};
pub use shown::{OwnerView, Shown};
pub use writer::WriteError;

use crate::metrics::DecisionLogStats;

/// Where decision records go.
pub struct DecisionLog {
    target: Target,
    /// Refuse requests (503) when a start record cannot be written.
    required: bool,
    stats: DecisionLogStats,
}

enum Target {
    Tracing,
    File(writer::Writer, Settings),
}

impl DecisionLog {
    /// Records go to the process log.
    pub fn tracing(stats: DecisionLogStats) -> Self {
        Self {
            target: Target::Tracing,
            required: false,
            stats,
        }
    }

    /// Records go to the file, through the writer thread started here.
    pub fn open(settings: Settings, required: bool, stats: DecisionLogStats) -> std::io::Result<Self> {
        let file = file::LogFile::open(settings.clone())?;
        let writer = writer::Writer::start(file, stats.clone())?;
        Ok(Self {
            target: Target::File(writer, settings),
            required,
            stats,
        })
    }

    /// Whether a request must be refused when its start record cannot be written.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Appends one record; returns once it is durable (or logged, without a file).
    pub async fn append(&self, line: String) -> Result<(), WriteError> {
        match &self.target {
            Target::Tracing => {
                tracing::info!(target: "satgate::decision", decision = %line);
                self.stats.written.inc();
                Ok(())
            }
            Target::File(writer, _) => writer.append(line).await,
        }
    }

    /// Why the last write failed, while it has not succeeded since.
    pub fn unwritable(&self) -> Option<WriteError> {
        match &self.target {
            Target::Tracing => None,
            Target::File(writer, _) => writer.health.error(),
        }
    }

    /// Opens the file again (SIGUSR1, after an external rotation); nothing without a file.
    pub async fn reopen(&self) {
        if let Target::File(writer, _) = &self.target {
            writer.reopen().await;
        }
    }

    /// For `/readyz`.
    pub fn status(&self) -> Value {
        match &self.target {
            Target::Tracing => json!({"sink": "log", "required": false}),
            Target::File(writer, settings) => {
                let error = writer.health.error();
                json!({
                    "sink": "file",
                    "required": self.required,
                    "writable": error.is_none(),
                    "lastWriteError": error.as_deref(),
                    "maxBytes": settings.max_bytes,
                    "maxFiles": settings.max_files,
                    "queued": self.stats.queued.get(),
                })
            }
        }
    }
}
