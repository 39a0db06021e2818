//! The steps of a `/sat/*` request that do not depend on how the records arrive or leave:
//! authentication, a stream slot, the access-log line, the views' answers, the end of a stream
//! (counted, its end record durable) and the headers of an answer. Both transports take them in
//! the same order: the hyper proxy (`super::records`, which calls the upstream itself) and Envoy's
//! external processor (`super::extproc`, where Envoy calls it), so a refusal, a decision record or
//! an access-log line is the same whichever carried the request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderName, HeaderValue, StatusCode};

use super::correlation::Correlation;
use super::decision_log::{record, Ending, OwnerView, Shown, Subject};
use super::limits::{Busy, StreamSlot};
use super::response::Reject;
use super::State;
use crate::auth::{Identity, Refusal};
use crate::decision::PolicyIdentity;
use crate::metrics::ReasonLabel;
use crate::model::{Eui64, Principal};
use crate::ownership::OwnershipSource;
use crate::stream::{Chunks, FilterStats, Frames, RecordStream, Sink, StreamError};
use crate::views::html::timeline::{self, Timeline};
use crate::views::{activity_pieces, html, Activity, Format, Records, CSV_TYPE};

/// Which view of the records a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The visible records themselves.
    Records,
    /// A per-Device summary of the same records.
    Activity,
}

impl View {
    pub const fn as_str(self) -> &'static str {
        match self {
            View::Records => "records",
            View::Activity => "activity",
        }
    }
}

/// Names the policy set that decided a `/sat/records` answer: `sha256:HEX; revision=REV`.
pub const POLICY_HEADER: &str = "satgate-policy";

/// Seconds a refused caller is asked to wait: streams usually last well under a second, and a
/// stalled one is cut at `--idle-timeout`.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// One request's access-log line: who, what, and how it ended. Written once per request, by
/// [`Access::log`], whether it was refused or served.
pub struct Access {
    pub peer: SocketAddr,
    pub view: View,
    pub query: Option<String>,
    pub started: Instant,
    pub correlation: Correlation,
}

impl Access {
    /// `stream`: the stream's counts and ownership errors, when the request was served.
    pub fn log(
        &self,
        status: u16,
        principal: Option<&Principal>,
        outcome: &str,
        stream: Option<(&FilterStats, u64)>,
        policy: Option<&str>,
    ) {
        let stats = stream.map(|(s, _)| s);
        tracing::info!(
            target: "satgate::access",
            peer = %self.peer,
            view = self.view.as_str(),
            request_id = %self.correlation.own_id,
            caller_request_id = self.correlation.caller_id.as_deref(),
            trace_id = %self.correlation.trace_id,
            sub = principal.map(|p| p.user_id.to_string()),
            role = principal.map(|p| p.role.as_str()),
            // A Party is any 1-64 characters without controls, so U+2028 or U+202E can be one:
            // escaped (printable ASCII as is, the rest as `\u{..}`) so no claim breaks or
            // disguises a log line. `sub` and `role` are already an EUI-64 and a role name.
            party = principal.map(|p| p.party.escape_default().to_string()),
            query = self.query.as_deref().unwrap_or(""),
            status,
            records_in = stats.map(|s| s.records_in),
            records_out = stats.map(|s| s.records_out),
            records_not_visible = stats.map(|s| s.left_out),
            records_malformed = stats.map(|s| s.malformed),
            ownership_errors = stream.map(|(_, e)| e),
            policy,
            outcome,
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "{}",
            if stream.is_some() { "request served" } else { "request refused" }
        );
    }
}

impl Access {
    /// Who asked for what under `policy`: what both decision records of this request say.
    pub fn subject<'a>(&'a self, principal: &'a Principal, policy: &'a PolicyIdentity) -> Subject<'a> {
        Subject {
            request_id: &self.correlation.own_id,
            caller_request_id: self.correlation.caller_id.as_deref(),
            trace_id: &self.correlation.trace_id,
            principal,
            view: self.view.as_str(),
            query: self.query.as_deref(),
            policy,
        }
    }
}

/// How a view answers over HTTP.
pub trait Answer: Sink + Send + Sync + 'static {
    /// Whether the answer streams while the records are read (else it is sent at the end).
    const LIVE: bool;

    fn content_type(&self, format: Format) -> &'static str;

    /// The view for `caller`, once it is known (a view that tells the caller's own records from
    /// other Users' needs it).
    fn for_caller(self, _caller: Eui64) -> Self
    where
        Self: Sized,
    {
        self
    }

    /// At the end, for a view that answers then: a refusal in place of the answer.
    fn refusal(&self) -> Option<Reject> {
        None
    }

    /// At the end, for a view that answers then: the answer, in pieces.
    fn pieces(&self, _format: Format) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
        std::iter::empty()
    }
}

impl Answer for Records {
    const LIVE: bool = true;

    fn content_type(&self, _format: Format) -> &'static str {
        Records::content_type(self)
    }
}

/// A view counted for the decision log answers as the view does.
impl<V: Answer> Answer for Shown<V> {
    const LIVE: bool = V::LIVE;

    fn content_type(&self, format: Format) -> &'static str {
        self.view().content_type(format)
    }

    fn refusal(&self) -> Option<Reject> {
        self.view().refusal()
    }

    fn pieces(&self, format: Format) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
        self.view().pieces(format)
    }
}

impl Answer for Timeline {
    const LIVE: bool = false;

    fn for_caller(self, caller: Eui64) -> Self {
        Timeline::for_caller(self, caller)
    }

    fn content_type(&self, _format: Format) -> &'static str {
        html::CONTENT_TYPE
    }

    /// 422 past the page's cap on records.
    fn refusal(&self) -> Option<Reject> {
        self.overflow().then(|| {
            Reject::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_records",
                format!(
                    "more than {} records about this Device; narrow the query's date range",
                    timeline::MAX_ENTRIES
                ),
            )
        })
    }

    fn pieces(&self, _format: Format) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
        std::iter::once(self.page())
    }
}

impl Answer for Activity {
    const LIVE: bool = false;

    fn for_caller(self, caller: Eui64) -> Self {
        Activity::for_caller(self, caller)
    }

    fn content_type(&self, format: Format) -> &'static str {
        match format {
            Format::Json => "application/json",
            Format::Csv => CSV_TYPE,
            Format::Html => html::CONTENT_TYPE,
        }
    }

    /// 422 when the summary went over a cap.
    fn refusal(&self) -> Option<Reject> {
        self.overflow()
            .map(|over| Reject::new(StatusCode::UNPROCESSABLE_ENTITY, "too_much_activity", over.to_string()))
    }

    /// Streamed in pieces, so the answer's size adds nothing to the tallies' memory.
    fn pieces(&self, format: Format) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
        activity_pieces(self, format)
    }
}

/// 401 or 403, with texts that never quote the token.
/// `authorization`: the request's `Authorization` header, if it has one.
pub fn authenticate(state: &State, authorization: Option<&[u8]>) -> Result<Identity, Reject> {
    state.auth.identify(authorization).map_err(refused)
}

/// The answer to a caller without a usable token: 401 or 403.
pub fn refused(refusal: Refusal) -> Reject {
    match refusal {
        Refusal::Unauthenticated(why) => Reject::new(StatusCode::UNAUTHORIZED, "unauthenticated", why),
        Refusal::Forbidden(why) => Reject::new(StatusCode::FORBIDDEN, "forbidden", why),
    }
}

/// A stream slot held by a started stream, and the one place that moves the active-streams
/// gauge: up when a stream starts, down when this is dropped (the answer sent, cut or refused).
pub struct Active {
    _slot: StreamSlot,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Active {
    pub fn new(slot: StreamSlot, metrics: &Arc<crate::metrics::Metrics>) -> Self {
        metrics.active_streams.inc();
        Self {
            _slot: slot,
            metrics: Arc::clone(metrics),
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.metrics.active_streams.dec();
    }
}

/// A stream slot for the principal, or 503 (all taken) or 429 (the User's all taken), counted.
pub fn take_slot(state: &State, principal: &Principal) -> Result<StreamSlot, Reject> {
    state.streams.try_take(principal.user_id).map_err(|busy| {
        state
            .metrics
            .streams_refused
            .get_or_create(&ReasonLabel { reason: busy.label() })
            .inc();
        match busy {
            Busy::Full => Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many record streams in flight; try again shortly",
            ),
            Busy::User => Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                "this User has too many record streams in flight",
            ),
        }
        .retry_after(RETRY_AFTER_SECONDS)
    })
}

/// 503 for a request whose start record could not be written, counted.
pub fn refused_unlogged(state: &State) -> Reject {
    state
        .metrics
        .streams_refused
        .get_or_create(&ReasonLabel { reason: "decision_log" })
        .inc();
    unlogged()
}

/// Reads the whole stream into `chunks` (ended at the caller's token expiry, wherever it is),
/// then counts it.
pub async fn read<F: Frames, V: Answer>(
    stream: &mut RecordStream<F, Shown<V>>,
    deadline: Option<Instant>,
    state: &State,
    mut chunks: impl Chunks,
) -> Result<(), StreamError> {
    let ownership = state.ownership.as_ref() as &dyn OwnershipSource;
    let run = stream.run(ownership, &mut chunks);
    let result = match deadline {
        None => run.await,
        Some(at) => tokio::time::timeout_at(at.into(), run)
            .await
            .unwrap_or(Err(StreamError::TokenExpired)),
    };
    state.metrics.record_stream(stream.stats());
    if let Err(e) = &result {
        state
            .metrics
            .streams_aborted
            .get_or_create(&ReasonLabel { reason: e.reason() })
            .inc();
    }
    result
}

/// For a view answered at the end: reads the whole stream into `chunks` (with the request's
/// correlation on the inventory calls), then writes its end record and access-log line. Returns
/// the refusal that replaces the answer (a stream failure, or the view's own), and whether the
/// end record was taken (when the log is required and it was not, nothing may be sent).
#[allow(clippy::too_many_arguments)]
pub async fn read_to_end<F: Frames, V: Answer>(
    state: &State,
    access: &Access,
    principal: &Principal,
    policy: &PolicyIdentity,
    stream: &mut RecordStream<F, Shown<V>>,
    deadline: Option<Instant>,
    chunks: impl Chunks,
) -> (Option<Reject>, bool) {
    let correlation = access.correlation.upstream_headers();
    let result = crate::net::CORRELATION
        .scope(correlation, read(stream, deadline, state, chunks))
        .await;
    let reject = match result {
        Err(e) => Some(refusal(&e)),
        Ok(()) => stream.filter().sink().refusal(),
    };
    let (status, outcome) = match &reject {
        Some(r) => (r.status.as_u16(), r.message.as_str()),
        None => (200, "complete"),
    };
    let logged = finished(state, access, principal, policy, status, outcome, stream).await;
    (reject, logged)
}

/// The one mapping from a stream's failure to an error answer (before any byte was sent).
pub fn refusal(e: &StreamError) -> Reject {
    match e {
        StreamError::IdleTimeout => Reject::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", e.to_string()),
        StreamError::TokenExpired => Reject::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()),
        _ => Reject::new(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()),
    }
}

/// 503 when the decision log cannot take a record (disk full, I/O error): nothing is disclosed
/// that the log does not record.
pub fn unlogged() -> Reject {
    Reject::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "decision_log_unavailable",
        "the decision log cannot be written; nothing was disclosed; try again shortly",
    )
    .retry_after(RETRY_AFTER_SECONDS)
}

/// The end record of a request whose records were read, durable, then its access-log line.
/// `false` when the log is required and did not take the record: the answer must not complete.
pub async fn finished<F: Frames, V: Answer>(
    state: &State,
    access: &Access,
    principal: &Principal,
    policy: &PolicyIdentity,
    status: u16,
    outcome: &str,
    stream: &RecordStream<F, Shown<V>>,
) -> bool {
    let empty = OwnerView::default();
    // Only an answer that is sent shows anything; a refused summary showed nothing.
    let shown = if status == 200 {
        stream.filter().sink().owner_view()
    } else {
        &empty
    };
    let line = record::end(
        &access.subject(principal, policy),
        &Ending {
            status,
            outcome,
            stream: Some((stream.stats(), &stream.tally(), shown)),
        },
    );
    let written = state.decision_log.append(line).await;
    let logged = written.is_ok() || !state.decision_log.required();
    let outcome = match (&written, logged) {
        (Err(e), false) => format!("{outcome}; cut off: the decision log did not take the end record: {e}"),
        _ => outcome.to_owned(),
    };
    // A streamed answer's status has left already; a summary not sent is the 503 above.
    let status = if logged || V::LIVE { status } else { 503 };
    let logged_policy = policy.to_string();
    access.log(
        status,
        Some(principal),
        &outcome,
        Some((stream.stats(), stream.lookup_errors)),
        Some(&logged_policy),
    );
    logged
}

/// The headers of an answer carrying records or their summary, whatever carries it.
pub fn answer_headers(content_type: &'static str, policy: HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))];
    if content_type == html::CONTENT_TYPE {
        // A page holds upstream text: no script, no loads, not sniffed as anything else, and
        // saved under a name of its own.
        headers.push((header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(html::CSP)));
        headers.push((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")));
        headers.push((header::CONTENT_DISPOSITION, HeaderValue::from_static(html::DISPOSITION)));
    }
    headers.push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    // Which reviewed policy set decided this answer (the bundle's SHA-256 and revision).
    headers.push((HeaderName::from_static(POLICY_HEADER), policy));
    headers
}

/// The `Satgate-Policy` value naming `policy`: always present and always valid. The identity's
/// text is escaped ([`PolicyIdentity`]'s `Display`: visible ASCII and spaces only), so it is a
/// valid header value whatever a bundle carried; were it ever not, the answer would still name
/// the set, by a placeholder saying so, rather than go without the header.
pub fn policy_header(policy: &PolicyIdentity) -> HeaderValue {
    HeaderValue::from_str(&policy.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unnameable; see /readyz"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the revision holds (quotes, newlines, control characters, non-ASCII, an empty
    /// one), the header is there, is valid, and names a valid revision exactly.
    #[test]
    fn the_policy_header_is_always_valid_and_present() {
        let id = PolicyIdentity::bundle_for_test;
        assert_eq!(
            policy_header(&id("rev-1")).to_str().unwrap(),
            format!("sha256:{}; revision=rev-1", "ab".repeat(32))
        );
        for raw in [
            "\"}",
            "a\nb",
            "a\r\nSet-Cookie: x=y",
            "\u{0}",
            "\u{7}",
            "\u{7f}",
            "caf\u{e9}",
            "\u{202e}rtl",
            "",
            "\t",
        ] {
            let v = policy_header(&id(raw));
            let text = v.to_str().expect("visible ASCII");
            assert!(
                text.starts_with("sha256:") && text.contains("; revision="),
                "{raw:?}: {text}"
            );
            assert!(!text.contains(['\r', '\n', '"']), "{raw:?}: {text}");
            let headers = answer_headers("application/x-ndjson", v.clone());
            assert!(
                headers.iter().any(|(k, hv)| k == POLICY_HEADER && hv == v),
                "{raw:?}: present"
            );
        }
    }
}
