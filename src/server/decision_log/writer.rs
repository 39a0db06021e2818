//! The one writer of the decision log file: a thread of its own, fed by a bounded queue, so no
//! request ever does file I/O on the async runtime. It commits in groups: everything queued while
//! the previous `fdatasync` ran goes out in the next write and the next `fdatasync`, so many
//! concurrent requests share one flush, and an entry waits at most for the commit in progress
//! plus its own. A full queue makes requests wait (backpressure); nothing is dropped.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::file::LogFile;
use crate::metrics::DecisionLogStats;

/// Entries waiting for the writer at most; more senders wait for room.
pub const QUEUE_ENTRIES: usize = 1024;

/// The most bytes one commit writes (then the next commit takes the rest).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Why an entry was not written: the file system's words.
pub type WriteError = Arc<str>;

enum Job {
    Entry {
        line: String,
        done: oneshot::Sender<Result<(), WriteError>>,
    },
    Reopen,
}

/// Whether the last commit failed, and why: what `/readyz` reports.
#[derive(Default)]
pub struct Health {
    error: Mutex<Option<WriteError>>,
}

impl Health {
    pub fn error(&self) -> Option<WriteError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, error: Option<WriteError>) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }
}

/// The sending side: cheap to share between requests.
pub struct Writer {
    tx: mpsc::Sender<Job>,
    pub health: Arc<Health>,
    stats: DecisionLogStats,
}

impl Writer {
    /// Starts the writer thread on an open file.
    pub fn start(file: LogFile, stats: DecisionLogStats) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_ENTRIES);
        let health = Arc::new(Health::default());
        stats.writable.set(1);
        let thread_health = Arc::clone(&health);
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || run(rx, file, &thread_health, &thread_stats))?;
        Ok(Self { tx, health, stats })
    }

    /// Queues one line (waiting for room when the queue is full) and waits until it is durable
    /// or has failed.
    pub async fn append(&self, line: String) -> Result<(), WriteError> {
        let (done, wait) = oneshot::channel();
        self.stats.queued.inc();
        if self.tx.send(Job::Entry { line, done }).await.is_err() {
            self.stats.queued.dec();
            self.stats.failed.inc();
            return Err("the decision log writer has stopped".into());
        }
        wait.await
            .unwrap_or_else(|_| Err("the decision log writer has stopped".into()))
    }

    /// Asks the writer to open the file at its path again (after an external rotation).
    pub async fn reopen(&self) {
        let _ = self.tx.send(Job::Reopen).await;
    }
}

fn run(mut rx: mpsc::Receiver<Job>, mut file: LogFile, health: &Health, stats: &DecisionLogStats) {
    let mut lines: Vec<String> = Vec::new();
    let mut waiting = Vec::new();
    let mut buf = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut reopen = false;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Entry { line, done } => {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    lines.push(line);
                    waiting.push(done);
                }
                Job::Reopen => reopen = true,
            }
            if buf.len() < MAX_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if reopen {
            match file.reopen() {
                Ok(()) => tracing::info!(path = %file.path().display(), "decision log reopened"),
                Err(e) => {
                    tracing::error!(path = %file.path().display(), error = %e, "decision log reopen failed; still writing to the file open before")
                }
            }
        }
        if waiting.is_empty() {
            continue;
        }
        let started = Instant::now();
        let result = file.append(&buf).map_err(|e| WriteError::from(e.to_string()));
        stats.commit_seconds.observe(started.elapsed().as_secs_f64());
        let n = waiting.len() as u64;
        match &result {
            Ok(()) => {
                stats.written.inc_by(n);
                if health.error().is_some() {
                    tracing::info!(path = %file.path().display(), "decision log writable again");
                }
                stats.writable.set(1);
                health.set(None);
            }
            Err(e) => {
                stats.failed.inc_by(n);
                stats.writable.set(0);
                health.set(Some(Arc::clone(e)));
                // Not written to the file, but not lost either: each entry goes to the process
                // log, already escaped (ASCII only).
                for line in &lines {
                    tracing::error!(target: "satgate::decision", path = %file.path().display(), error = %e, decision = %line, "decision log write failed");
                }
            }
        }
        stats.queued.dec_by(n as i64);
        for done in waiting.drain(..) {
            let _ = done.send(result.clone());
        }
        lines.clear();
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::{LogFile, Settings};
    use super::*;

    /// Many requests at once share commits, every entry is acknowledged only once durable, and
    /// the counters account for each one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_entries_share_commits_and_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let file = LogFile::open(Settings {
            path: path.clone(),
            max_bytes: 0,
            max_files: 1,
        })
        .unwrap();
        let stats = DecisionLogStats::default();
        let writer = Arc::new(Writer::start(file, stats.clone()).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let w = Arc::clone(&writer);
                tokio::spawn(async move { w.append(format!("{{\"n\":{i}}}")).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 200);
        assert_eq!(
            (stats.written.get(), stats.failed.get(), stats.queued.get()),
            (200, 0, 0)
        );
        let commits = {
            let mut m = prometheus_client::registry::Registry::default();
            m.register("c", "c", stats.commit_seconds.clone());
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &m).unwrap();
            out.lines()
                .find_map(|l| l.strip_prefix("c_count "))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap()
        };
        assert!(commits < 200, "{commits} commits for 200 entries: no group commit");
        assert!(writer.health.error().is_none());
    }
}
