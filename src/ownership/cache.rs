//! A bounded cache in front of any ownership source.
//!
//! - Known Devices are kept for `ttl`, unknown ones for the shorter `unknown_ttl` (a Device
//!   being installed should not stay invisible to its owners for long).
//! - Concurrent misses for one Device are coalesced into a single source call.
//! - Errors are never cached: the next request asks again. The caller treats an error as "no
//!   owners" for that Device (fail closed).
//!
//! Staleness bound: an answer is at most `ttl` old (`unknown_ttl` for "unknown"), plus the source's
//! own lag (for the file source, two reload intervals, as a change must look the same on two
//! polls; its reloads also clear this cache).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::{DeviceEntry, LookupResult, OwnershipSource, SourceError};
use crate::model::Eui64;

/// Counters for the cache and the source behind it. Cloning shares them.
#[derive(Clone, Debug)]
pub struct OwnershipStats {
    pub hits: Counter,
    pub source_calls: Counter,
    pub coalesced_waits: Counter,
    pub source_errors: Counter,
    pub source_latency: Histogram,
    pub entries: Gauge,
}

impl Default for OwnershipStats {
    fn default() -> Self {
        Self {
            hits: Counter::default(),
            source_calls: Counter::default(),
            coalesced_waits: Counter::default(),
            source_errors: Counter::default(),
            source_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            entries: Gauge::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CacheSettings {
    pub capacity: u64,
    pub ttl: Duration,
    pub unknown_ttl: Duration,
}

impl CacheSettings {
    /// The defaults (`config::defaults` shows them in help and resolves flags against them).
    /// A registration change is seen within `ttl`; "unknown" is kept shorter, so a Device
    /// added to the inventory gets its owner view soon.
    pub const DEFAULT: Self = Self {
        capacity: 100_000,
        ttl: Duration::from_secs(30),
        unknown_ttl: Duration::from_secs(5),
    };
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An answer and the cache generation it was asked in.
type Answer = (u64, Option<Arc<DeviceEntry>>);

struct Ttl(CacheSettings);

impl moka::Expiry<Eui64, Answer> for Ttl {
    fn expire_after_create(&self, _: &Eui64, value: &Answer, _: Instant) -> Option<Duration> {
        Some(if value.1.is_some() {
            self.0.ttl
        } else {
            self.0.unknown_ttl
        })
    }
}

pub struct CachedSource {
    source: Arc<dyn OwnershipSource>,
    cache: moka::future::Cache<Eui64, Answer>,
    /// Bumped by `invalidate_all`: a look-up that started before it may finish after it, and its
    /// answer must not survive the invalidation.
    generation: AtomicU64,
    stats: OwnershipStats,
}

impl CachedSource {
    pub fn new(source: Arc<dyn OwnershipSource>, settings: CacheSettings, stats: OwnershipStats) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(Ttl(settings))
            .build();
        Self {
            source,
            cache,
            generation: AtomicU64::new(0),
            stats,
        }
    }

    /// Forgets one Device, e.g. after a known Change of Supplier. A look-up of it already in
    /// flight may carry the old registration, so the generation moves too: every other entry is
    /// asked again once (rare admin action; exactness over efficiency).
    pub async fn invalidate(&self, device: Eui64) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(&device).await;
    }

    /// Forgets everything, e.g. after the source itself changed.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    pub fn stats(&self) -> &OwnershipStats {
        &self.stats
    }

    async fn cached_lookup(&self, device: Eui64) -> LookupResult {
        // At most two rounds: the second only when the first answer predates an invalidation.
        for _ in 0..2 {
            let generation = self.generation.load(Ordering::SeqCst);
            let (asked_in, answer) = self.lookup_once(device, generation).await?;
            // Asked in this generation or a later one: nothing it predates was invalidated.
            if asked_in >= generation {
                return Ok(answer);
            }
            self.cache.invalidate(&device).await;
        }
        // Invalidated twice while asking: ask the source directly rather than loop.
        self.source.lookup(device).await
    }

    async fn lookup_once(&self, device: Eui64, generation: u64) -> Result<Answer, SourceError> {
        if let Some(answer) = self.cache.get(&device).await {
            if answer.0 == generation {
                self.stats.hits.inc();
                return Ok(answer);
            }
            self.cache.invalidate(&device).await;
        }
        let ran = AtomicBool::new(false);
        let result = self
            .cache
            .try_get_with(device, async {
                ran.store(true, Ordering::Relaxed);
                self.stats.source_calls.inc();
                let started = Instant::now();
                let answer = self.source.lookup(device).await;
                self.stats.source_latency.observe(started.elapsed().as_secs_f64());
                answer.map(|a| (generation, a))
            })
            .await;
        let ran = ran.load(Ordering::Relaxed);
        if !ran {
            // Another request's look-up for this Device answered this one too.
            self.stats.coalesced_waits.inc();
        }
        self.stats.entries.set(self.cache.entry_count() as i64);
        result.map_err(|e: Arc<SourceError>| {
            if ran {
                self.stats.source_errors.inc();
            }
            (*e).clone()
        })
    }
}

impl OwnershipSource for CachedSource {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        Box::pin(self.cached_lookup(device))
    }
}
