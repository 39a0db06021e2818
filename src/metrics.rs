//! Prometheus metrics, in one registry. Every counter here is about counts and timings; none
//! carries record data or token contents as a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
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
pub struct PolicyLabel {
    pub sha256: LabelText,
    pub revision: LabelText,
}

/// A label value from outside satgate's own code (a bundle's revision), escaped for the
/// exposition. prometheus-client writes label values as they are (0.24: no escaping at all), so a
/// `"` would end the value, and a newline the sample. Both text formats satgate serves (OpenMetrics
/// 1.0, and Prometheus 0.0.4, derived from it in [`Metrics::encode_prometheus`]) escape a label
/// value the same way: `\` as `\\`, `"` as `\"` and a line feed as `\n`; nothing else is special.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelText(pub String);

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: &'static str,
    pub cedar_version: &'static str,
}

/// The pinned policy language version (Cargo.toml pins `cedar-policy` exactly).
pub const CEDAR_VERSION: &str = "4.14.1";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabel {
    pub component: &'static str,
}

/// What satgate reloads from files, as `satgate_last_reload_successful{component}` names it.
pub const RELOADED_COMPONENTS: [&str; 6] = ["policy", "inventory", "tls", "jwt_key", "inventory_tls", "upstream_tls"];

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
    /// TLS failures of satgate's own calls (inventory service, upstream), by peer and reason.
    pub outbound_tls_failures: crate::tls::client::Failures,
    /// 1 while the newest files of a component are the ones in force; 0 while they fail to load
    /// and the last good ones serve. A failed load is counted once per change, so only this
    /// state tells an alert that the failure is still there.
    pub last_reload_successful: Family<ComponentLabel, Gauge>,
    /// 1 while owner views are withheld because the inventory file is past `--inventory-max-age`.
    pub owner_views_withheld: Gauge,
    /// Seconds the inventory file in force has been known to be out of date (0: it is not).
    pub inventory_stale_seconds: Gauge,
    /// 1 for the policy set in force, labelled with its identity.
    pub policy: Family<PolicyLabel, Gauge>,
    /// Policy bundles refused at reload, by [`crate::decision::LoadError::reason`].
    pub policy_bundle_refusals: Family<ReasonLabel, Counter>,
    /// The serial of the policy bundle in force (0: policies from a directory).
    pub policy_bundle_serial: Gauge,
    /// When the policy bundle in force stops loading, in unix seconds (0: from a directory).
    pub policy_bundle_expiry: Gauge,
    pub decisions: DecisionStats,
    pub ownership: OwnershipStats,
    pub decision_log: DecisionLogStats,
}

/// The decision log writer's counts: every entry is written, failed or still queued.
#[derive(Clone, Debug)]
pub struct DecisionLogStats {
    /// Entries made durable (or logged, without a file).
    pub written: Counter,
    /// Entries the file did not take (each then went to the process log instead).
    pub failed: Counter,
    /// Entries waiting for the writer or its commit.
    pub queued: Gauge,
    /// 1 while the last commit succeeded (or there is no decision log: none can fail), 0 after a
    /// failed one. An alert on `== 0` then needs no second series to tell "not configured".
    pub writable: Gauge,
    /// Time of one group commit: the write and the `fdatasync`.
    pub commit_seconds: Histogram,
}

impl Default for DecisionLogStats {
    fn default() -> Self {
        Self {
            written: Counter::default(),
            failed: Counter::default(),
            queued: Gauge::default(),
            writable: {
                let g = Gauge::default();
                g.set(1);
                g
            },
            // 50 us to ~1.6 s.
            commit_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("satgate");
        let upstream_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let m = Self {
            requests: register(&mut r, "requests", "HTTP requests by response status"),
            records_in: register(&mut r, "records_in", "SAT records read from the upstream"),
            records_out: register(&mut r, "records_out", "SAT records written to callers"),
            records_left_out: register(
                &mut r,
                "records_left_out",
                "SAT records not written: not_visible (policy) or malformed",
            ),
            fields_redacted: register(&mut r, "fields_redacted", "Fields dropped from written records, by class"),
            upstream_latency: register_as(
                &mut r,
                "upstream_latency_seconds",
                "Time from sending the upstream request to its response headers",
                upstream_latency,
            ),
            streams_aborted: register(&mut r, "streams_aborted", "Responses ended early, by reason"),
            streams_refused: register(
                &mut r,
                "streams_refused",
                "Record streams refused because every slot (max_streams) or the User's slots (max_streams_per_user) were taken",
            ),
            active_streams: register(&mut r, "active_streams", "Record streams in flight"),
            policy_reloads: register(&mut r, "policy_reloads", "Policy set reloads by result"),
            inventory_reloads: register(&mut r, "inventory_reloads", "Inventory reloads by result"),
            tls_reloads: register(&mut r, "tls_reloads", "TLS certificate and key reloads by result"),
            jwt_key_reloads: register(&mut r, "jwt_key_reloads", "JWT verification key reloads by result"),
            tls_handshake_failures: register(
                &mut r,
                "tls_handshake_failures",
                "Client connections that failed or timed out in the TLS handshake",
            ),
            outbound_tls_failures: register(
                &mut r,
                "outbound_tls_failures",
                "TLS failures of satgate's calls, by peer (inventory, upstream) and reason (unknown_ca, wrong_name, expired, client_cert_refused, client_cert_not_requested, other); an inventory failure means no owner view for the Devices asked about",
            ),
            last_reload_successful: register(
                &mut r,
                "last_reload_successful",
                "1 while the newest files of a component (policy, inventory, tls, jwt_key) are in force; 0 while they fail to load and the last good ones serve",
            ),
            owner_views_withheld: register(
                &mut r,
                "inventory_owner_views_withheld",
                "1 while owner views are withheld: the inventory file has failed to load for longer than --inventory-max-age",
            ),
            inventory_stale_seconds: register(
                &mut r,
                "inventory_stale_seconds",
                "Seconds a changed inventory file has kept failing to load (0: the inventory in force is current)",
            ),
            policy: register(
                &mut r,
                "policy_info",
                "The policy set in force: SHA-256 of its bundle (or files) and revision",
            ),
            policy_bundle_refusals: register(
                &mut r,
                "policy_bundle_refusals",
                "Policy bundles refused at reload, by reason (rollback, serial_reused, expired, trusted_comment, signature, ...); the last good set kept serving",
            ),
            policy_bundle_serial: register(
                &mut r,
                "policy_bundle_serial",
                "Serial of the policy bundle in force (0: policies from a directory)",
            ),
            policy_bundle_expiry: register(
                &mut r,
                "policy_bundle_expiry_timestamp_seconds",
                "When the policy bundle in force stops loading, unix seconds (0: policies from a directory); it keeps serving past it, but a restart refuses it",
            ),
            decisions: DecisionStats::default(),
            ownership: OwnershipStats::default(),
            decision_log: DecisionLogStats::default(),
            registry: Registry::default(),
        };
        let d = &m.decision_log;
        r.register(
            "decision_log_entries_written",
            "Decision log entries made durable (or logged, without --decision-log)",
            d.written.clone(),
        );
        r.register(
            "decision_log_entries_failed",
            "Decision log entries the file did not take (each went to the process log instead)",
            d.failed.clone(),
        );
        r.register(
            "decision_log_entries_queued",
            "Decision log entries waiting for the writer or its commit",
            d.queued.clone(),
        );
        r.register(
            "decision_log_writable",
            "1 while the decision log's last commit succeeded (or there is no decision log), 0 after a failed one",
            d.writable.clone(),
        );
        r.register(
            "decision_log_commit_seconds",
            "Decision log group commit duration: write and fdatasync",
            d.commit_seconds.clone(),
        );
        let o = &m.ownership;
        for (name, help, metric) in [
            (
                "ownership_cache_hits",
                "Ownership answers from the cache",
                o.hits.clone(),
            ),
            (
                "ownership_source_calls",
                "Ownership look-ups sent to the source",
                o.source_calls.clone(),
            ),
            (
                "ownership_coalesced_waits",
                "Ownership look-ups answered by another request's call in flight",
                o.coalesced_waits.clone(),
            ),
            (
                "ownership_source_errors",
                "Ownership source calls that failed",
                o.source_errors.clone(),
            ),
            (
                "decision_cache_hits",
                "Decisions answered from the cache",
                m.decisions.hits.clone(),
            ),
            (
                "decision_cache_misses",
                "Decisions evaluated by Cedar",
                m.decisions.misses.clone(),
            ),
            (
                "decision_errors",
                "Cedar evaluations that errored (denied)",
                m.decisions.errors.clone(),
            ),
        ] {
            r.register(name, help, metric);
        }
        r.register(
            "ownership_source_latency_seconds",
            "Ownership source call duration",
            o.source_latency.clone(),
        );
        r.register(
            "ownership_cache_entries",
            "Devices in the ownership cache",
            o.entries.clone(),
        );
        m.export_known_labels();
        register_build_info(&mut r);
        Self { registry: r, ..m }
    }

    /// Families whose label values are known in advance are exported at 0 from start-up, so an
    /// alert on their rate sees the first event.
    fn export_known_labels(&self) {
        for reason in [
            "max_streams",
            "max_streams_per_user",
            "decision_log",
            "proxy_misconfigured",
        ] {
            let _ = self.streams_refused.get_or_create(&ReasonLabel { reason });
        }
        for reason in crate::stream::StreamError::REASONS {
            let _ = self.streams_aborted.get_or_create(&ReasonLabel { reason });
        }
        for reason in ["not_visible", "malformed"] {
            let _ = self.records_left_out.get_or_create(&ReasonLabel { reason });
        }
        for class in Class::ALL {
            let _ = self.fields_redacted.get_or_create(&ClassLabel { class: class.name() });
        }
        for reason in crate::bundle::BundleError::REASONS {
            let _ = self.policy_bundle_refusals.get_or_create(&ReasonLabel { reason });
        }
        for reloads in [
            &self.policy_reloads,
            &self.inventory_reloads,
            &self.tls_reloads,
            &self.jwt_key_reloads,
        ] {
            for result in ["ok", "failed"] {
                let _ = reloads.get_or_create(&ResultLabel { result });
            }
        }
        // Start-up loaded every component, or satgate would not have started.
        for component in RELOADED_COMPONENTS {
            self.last_reload_successful
                .get_or_create(&ComponentLabel { component })
                .set(1);
        }
        // The statuses satgate itself answers with; an upstream's are never passed through.
        for status in [200, 400, 401, 403, 404, 405, 429, 500, 502, 503, 504] {
            let _ = self.requests.get_or_create(&StatusLabel { status });
        }
    }

    /// Names the policy set now in force (the previous one's series goes). The revision is
    /// written escaped twice over: as the `Satgate-Policy` header writes it
    /// ([`crate::bundle::escape_text`]), then for the exposition ([`LabelText`]).
    pub fn set_policy(&self, identity: &crate::decision::PolicyIdentity) {
        let text = |s: &str| LabelText(crate::bundle::escape_text(s).into_owned());
        self.policy.clear();
        self.policy
            .get_or_create(&PolicyLabel {
                sha256: text(&identity.sha256),
                revision: text(identity.revision.as_deref().unwrap_or("directory")),
            })
            .set(1);
        let gauge = |v: Option<u64>| v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
        self.policy_bundle_serial.set(gauge(identity.serial));
        self.policy_bundle_expiry.set(gauge(identity.expires));
    }

    /// Whether the newest files of `component` (one of [`RELOADED_COMPONENTS`]) are in force.
    pub fn set_reload_successful(&self, component: &'static str, ok: bool) {
        self.last_reload_successful
            .get_or_create(&ComponentLabel { component })
            .set(i64::from(ok));
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

    /// The Prometheus text exposition (format 0.0.4), which `promtool check metrics` reads: the
    /// OpenMetrics text with each counter family named as its samples are (`x_total`) in its
    /// `HELP` and `TYPE` lines, and without `# UNIT` and `# EOF`.
    pub fn encode_prometheus(&self) -> String {
        let open = self.encode();
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len() + 64 * counters.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `satgate_build_info{version,cedar_version} 1`.
fn register_build_info(r: &mut Registry) {
    let build: Family<BuildLabel, Gauge> = register(r, "build_info", "The running satgate: its version and Cedar's");
    build
        .get_or_create(&BuildLabel {
            version: env!("CARGO_PKG_VERSION"),
            cedar_version: CEDAR_VERSION,
        })
        .set(1);
}

/// A new metric of its default kind, registered under `name`.
fn register<M: Default + Clone + prometheus_client::registry::Metric>(r: &mut Registry, name: &str, help: &str) -> M {
    register_as(r, name, help, M::default())
}

fn register_as<M: Clone + prometheus_client::registry::Metric>(
    r: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    r.register(name, help, metric.clone());
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label value with a quote, a brace, a backslash and a newline stays one value of one
    /// sample in both text formats, whether or not it was escaped before.
    #[test]
    fn label_values_are_escaped_in_both_exposition_formats() {
        let forged = "x\"} 1\nsatgate_forged{a=\"b\\";
        let m = Metrics::new();
        let _ = m.policy.get_or_create(&PolicyLabel {
            sha256: LabelText("ab".into()),
            revision: LabelText(forged.into()),
        });
        let want = r#"satgate_policy_info{sha256="ab",revision="x\"} 1\nsatgate_forged{a=\"b\\"} 0"#;
        for text in [m.encode(), m.encode_prometheus()] {
            assert!(text.lines().any(|l| l == want), "{text}");
            assert!(!text.lines().any(|l| l.starts_with("satgate_forged")), "{text}");
        }
    }

    /// The policy set in force, from a revision no bundle could carry (the bundle reader refuses
    /// it): escaped like the header, then for the exposition.
    #[test]
    fn the_policy_info_series_is_one_line_whatever_the_revision() {
        let m = Metrics::new();
        m.set_policy(&crate::decision::PolicyIdentity {
            sha256: "ab".repeat(32),
            revision: Some("r\"}\n\u{7}\\".into()),
            serial: Some(7),
            expires: Some(1_800_000_000),
        });
        for text in [m.encode(), m.encode_prometheus()] {
            let info: Vec<&str> = text.lines().filter(|l| l.starts_with("satgate_policy_info")).collect();
            assert_eq!(
                info,
                [format!(
                    "satgate_policy_info{{sha256=\"{}\",revision=\"r%22%7D%0A%07%5C\"}} 1",
                    "ab".repeat(32)
                )],
                "{text}"
            );
            assert!(text.contains("satgate_policy_bundle_serial 7\n"), "{text}");
            assert!(
                text.contains("satgate_policy_bundle_expiry_timestamp_seconds 1800000000\n"),
                "{text}"
            );
            assert!(
                text.contains("satgate_policy_bundle_refusals_total{reason=\"rollback\"} 0\n"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_cedar_version_is_the_pinned_one() {
        let manifest = include_str!("../Cargo.toml");
        assert!(manifest.contains(&format!("cedar-policy = \"={}\"", super::CEDAR_VERSION)));
    }
}
