//! Prometheus metrics, in one registry. Every counter here is about counts and timings; none
//! carries record data or token contents as a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::decision::DecisionStats;
use crate::model::Class;
use crate::ownership::OwnershipStats;
use crate::stream::FilterStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabel, Counter>,
    pub records_in: Counter,
    pub records_out: Counter,
    pub records_left_out: Family<ReasonLabel, Counter>,
    pub fields_redacted: Family<ClassLabel, Counter>,
    pub upstream_latency: Histogram,
    pub streams_aborted: Family<ReasonLabel, Counter>,
    pub streams_refused: Family<ReasonLabel, Counter>,
    pub active_streams: Gauge,
    pub policy_reloads: Family<ResultLabel, Counter>,
    pub inventory_reloads: Family<ResultLabel, Counter>,
    pub tls_reloads: Family<ResultLabel, Counter>,
    pub jwt_key_reloads: Family<ResultLabel, Counter>,
    pub tls_handshake_failures: Counter,
    pub decisions: DecisionStats,
    pub ownership: OwnershipStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("satgate");
        let m = Self {
            requests: Family::default(),
            records_in: Counter::default(),
            records_out: Counter::default(),
            records_left_out: Family::default(),
            fields_redacted: Family::default(),
            upstream_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            streams_aborted: Family::default(),
            streams_refused: Family::default(),
            active_streams: Gauge::default(),
            policy_reloads: Family::default(),
            inventory_reloads: Family::default(),
            tls_reloads: Family::default(),
            jwt_key_reloads: Family::default(),
            tls_handshake_failures: Counter::default(),
            decisions: DecisionStats::default(),
            ownership: OwnershipStats::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "HTTP requests by response status", m.requests.clone());
        registry.register("records_in", "SAT records read from the upstream", m.records_in.clone());
        registry.register("records_out", "SAT records written to callers", m.records_out.clone());
        registry.register(
            "records_left_out",
            "SAT records not written: not_visible (policy) or malformed",
            m.records_left_out.clone(),
        );
        registry.register(
            "fields_redacted",
            "Fields dropped from written records, by class",
            m.fields_redacted.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time from sending the upstream request to its response headers",
            m.upstream_latency.clone(),
        );
        registry.register(
            "streams_aborted",
            "Responses ended early, by reason",
            m.streams_aborted.clone(),
        );
        registry.register(
            "streams_refused",
            "Record streams refused because every slot (max_streams) or the User's slots (max_streams_per_user) were taken",
            m.streams_refused.clone(),
        );
        // Known in advance, so exported at 0 from start-up: an alert on their rate works from
        // the first event.
        for reason in ["max_streams", "max_streams_per_user"] {
            let _ = m.streams_refused.get_or_create(&ReasonLabel { reason });
        }
        for reason in crate::stream::body::StreamError::REASONS {
            let _ = m.streams_aborted.get_or_create(&ReasonLabel { reason });
        }
        registry.register("active_streams", "Record streams in flight", m.active_streams.clone());
        registry.register(
            "policy_reloads",
            "Policy set reloads by result",
            m.policy_reloads.clone(),
        );
        registry.register(
            "inventory_reloads",
            "Inventory reloads by result",
            m.inventory_reloads.clone(),
        );
        registry.register(
            "tls_reloads",
            "TLS certificate and key reloads by result",
            m.tls_reloads.clone(),
        );
        registry.register(
            "jwt_key_reloads",
            "JWT verification key reloads by result",
            m.jwt_key_reloads.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Client connections that failed or timed out in the TLS handshake",
            m.tls_handshake_failures.clone(),
        );
        let o = &m.ownership;
        registry.register(
            "ownership_cache_hits",
            "Ownership answers from the cache",
            o.hits.clone(),
        );
        registry.register(
            "ownership_source_calls",
            "Ownership look-ups sent to the source",
            o.source_calls.clone(),
        );
        registry.register(
            "ownership_coalesced_waits",
            "Ownership look-ups answered by another request's call in flight",
            o.coalesced_waits.clone(),
        );
        registry.register(
            "ownership_source_errors",
            "Ownership source calls that failed",
            o.source_errors.clone(),
        );
        registry.register(
            "ownership_source_latency_seconds",
            "Ownership source call duration",
            o.source_latency.clone(),
        );
        registry.register(
            "ownership_cache_entries",
            "Devices in the ownership cache",
            o.entries.clone(),
        );
        registry.register(
            "decision_cache_hits",
            "Decisions answered from the cache",
            m.decisions.hits.clone(),
        );
        registry.register(
            "decision_cache_misses",
            "Decisions evaluated by Cedar",
            m.decisions.misses.clone(),
        );
        registry.register(
            "decision_errors",
            "Cedar evaluations that errored (denied)",
            m.decisions.errors.clone(),
        );
        Self { registry, ..m }
    }

    /// Adds one finished stream's counts.
    pub fn record_stream(&self, s: &FilterStats) {
        self.records_in.inc_by(s.records_in);
        self.records_out.inc_by(s.records_out);
        self.records_left_out
            .get_or_create(&ReasonLabel { reason: "not_visible" })
            .inc_by(s.left_out);
        self.records_left_out
            .get_or_create(&ReasonLabel { reason: "malformed" })
            .inc_by(s.malformed);
        for c in Class::ALL {
            self.fields_redacted
                .get_or_create(&ClassLabel { class: c.name() })
                .inc_by(s.redacted(c));
        }
    }

    /// The OpenMetrics text exposition (readable by Prometheus).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
