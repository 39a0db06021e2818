//! What callers can make satgate hold, and the budget that bounds it.
//!
//! A record stream holds buffers until it ends, and a caller who opens streams and never reads
//! them keeps them until `--idle-timeout`. So streams in flight are counted, overall
//! (`--max-streams`) and per User (`--max-streams-per-user`), and a stream that would go over
//! either is refused before the upstream is called: 503 when satgate is full, 429 when that User
//! is, both with `Retry-After`. With every buffer bounded (below), memory is bounded by
//! [`worst_case_bytes`].

use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use crate::model::Eui64;

pub use crate::stream::{IO_BUFFER_BYTES, UPSTREAM_BUFFER_BYTES};

/// The ownership memo of one stream at its largest (see `stream::filter`), in bytes.
pub const MEMO_BYTES: usize = crate::stream::MAX_DEVICES_PER_STREAM * 40;

/// What one stream's decision log entries can hold at most: the owner view's count of Devices
/// (about 40 bytes each) and its end record, once as text and once in the writer's batch (about
/// 45 bytes a Device each). A request has one entry in the writer's queue at a time.
pub const DECISION_LOG_BYTES: usize = super::decision_log::shown::MAX_DEVICES * (40 + 2 * 45);

/// Memory not tied to a stream: the process, the policy set and its decision cache, and the
/// ownership cache at capacity (about 200 bytes a Device). Measured idle RSS is ~15 MiB.
pub fn base_bytes(ownership_cache_capacity: u64) -> usize {
    32 * 1024 * 1024 + ownership_cache_capacity as usize * 200
}

/// The most one stream can hold: the upstream connection's read buffer and one frame read ahead
/// (`2 x U`), an unfinished line (`L`) and the ownership memo; then either, for records, the
/// chunk being filtered and the one waiting in the channel (`IO + L` each: a chunk is flushed at
/// `IO` bytes, so it can pass that by one record) and hyper's write buffer with the chunk it is
/// writing (`2 x IO + L`), or, for the activity view, its tallies (capped at `A`, see
/// [`crate::views::activity::Limits`]); and its decision log entries.
pub fn worst_case_stream_bytes(max_line_bytes: usize) -> usize {
    let records = 4 * IO_BUFFER_BYTES + 3 * max_line_bytes;
    let activity = crate::views::activity::Limits::DEFAULT.max_bytes;
    2 * UPSTREAM_BUFFER_BYTES + max_line_bytes + MEMO_BYTES + DECISION_LOG_BYTES + records.max(activity)
}

/// The most the sidecar can hold with every stream slot taken: `base + S x stream`.
pub fn worst_case_bytes(limits: &StreamLimits, max_line_bytes: usize, ownership_cache_capacity: u64) -> usize {
    base_bytes(ownership_cache_capacity) + limits.max_streams * worst_case_stream_bytes(max_line_bytes)
}

/// How many record streams may be in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_streams: usize,
    pub max_streams_per_user: usize,
}

impl StreamLimits {
    /// With the default 1 MiB line limit and 100,000-Device ownership cache, 32 streams keep the
    /// worst case under 256 MiB, the memory limit the Kubernetes manifest sets.
    pub const DEFAULT: StreamLimits = StreamLimits {
        max_streams: 32,
        max_streams_per_user: 4,
    };
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// Every stream slot is taken (503).
    Full,
    /// This User has all the streams it may have (429).
    User,
}

impl Busy {
    pub const fn label(self) -> &'static str {
        match self {
            Busy::Full => "max_streams",
            Busy::User => "max_streams_per_user",
        }
    }
}

/// Streams in flight, overall and per User.
#[derive(Clone, Debug)]
pub struct StreamBudget {
    limits: StreamLimits,
    in_flight: Arc<Mutex<InFlight>>,
}

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_user: FxHashMap<Eui64, usize>,
}

impl StreamBudget {
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            in_flight: Arc::default(),
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// A slot for one stream of `user`, held until the slot is dropped.
    pub fn try_take(&self, user: Eui64) -> Result<StreamSlot, Busy> {
        let mut f = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mine = f.per_user.get(&user).copied().unwrap_or(0);
        if mine >= self.limits.max_streams_per_user {
            return Err(Busy::User);
        }
        if f.total >= self.limits.max_streams {
            return Err(Busy::Full);
        }
        f.total += 1;
        f.per_user.insert(user, mine + 1);
        Ok(StreamSlot {
            budget: self.clone(),
            user,
        })
    }

    /// Streams in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One taken stream slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct StreamSlot {
    budget: StreamBudget,
    user: Eui64,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut f = self.budget.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        f.total = f.total.saturating_sub(1);
        // Users with no stream are forgotten, so the map stays as small as the streams in flight.
        if let Some(n) = f.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                f.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn slots_are_bounded_overall_and_per_user_and_come_back_when_dropped() {
        let budget = StreamBudget::new(StreamLimits {
            max_streams: 3,
            max_streams_per_user: 2,
        });
        let (a, b, c) = (Eui64::from_u64(1), Eui64::from_u64(2), Eui64::from_u64(3));
        let a1 = budget.try_take(a).unwrap();
        let _a2 = budget.try_take(a).unwrap();
        assert_eq!(budget.try_take(a).unwrap_err(), Busy::User);
        let _b1 = budget.try_take(b).unwrap();
        assert_eq!(budget.try_take(c).unwrap_err(), Busy::Full);
        assert_eq!(budget.in_flight(), 3);
        drop(a1);
        assert_eq!(budget.in_flight(), 2);
        let _c1 = budget.try_take(c).unwrap();
        assert_eq!(budget.try_take(b).unwrap_err(), Busy::Full);
    }

    #[test]
    fn a_user_that_is_done_leaves_nothing_behind() {
        let budget = StreamBudget::new(StreamLimits::DEFAULT);
        for i in 0..1000 {
            drop(budget.try_take(Eui64::from_u64(i)).unwrap());
        }
        assert_eq!(budget.in_flight(), 0);
        assert!(budget.in_flight.lock().unwrap().per_user.is_empty());
    }

    /// The defaults fit the memory limit the shipped Kubernetes manifest gives the sidecar.
    #[test]
    fn the_default_worst_case_fits_the_manifests_memory_limit() {
        let manifest = include_str!("../../deploy/kubernetes/deployment.yaml");
        let limit_mib: usize = manifest
            .lines()
            .skip_while(|l| !l.contains("name: satgate"))
            .skip_while(|l| !l.trim_start().starts_with("limits:"))
            .find_map(|l| l.trim().strip_prefix("memory: ").map(str::to_owned))
            .and_then(|v| v.trim_end_matches("Mi").trim_matches('"').parse().ok())
            .expect("the satgate container sets a memory limit in Mi");
        let worst = worst_case_bytes(&StreamLimits::DEFAULT, 1 << 20, 100_000);
        assert!(
            worst < limit_mib * MIB,
            "worst case {} MiB does not fit the {limit_mib} MiB limit",
            worst / MIB
        );
    }
}
