//! `GET /sat/records?{query}` and `GET /sat/activity?{query}`, as named steps. Both views share
//! every step up to the filter: authentication, a stream slot, the policy set, the same upstream
//! call, the same decisions. Each step before streaming either hands the next one what it needs
//! or refuses with a [`Reject`], which becomes both the response and the access-log line. Once
//! records stream, a failure ends the response early (see [`super::body`]); the activity
//! view answers only at the end, so its failures are ordinary error answers.
//!
//! The decision log brackets every disclosure (see [`super::decision_log`]): once the stream slot
//! is taken, the start record is made durable while the upstream is asked, and before anything is
//! sent (if it cannot be, and the log is required, the answer is a 503 and nothing is disclosed;
//! while the log is failing, the upstream is not asked at all); the end record is
//! made durable before the answer's last byte (if it cannot be, a streamed answer is cut short
//! and an activity summary is never sent). So a client that got a whole answer finds its end
//! record in the log, and one that got any byte of it finds its start record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, Nothing, Response as Chunked};
use super::correlation::{Correlation, REQUEST_ID, SATGATE_REQUEST_ID};
use super::decision_log::{record, Ending, OwnerView, Shown, Subject};
use super::limits::{Busy, StreamSlot};
use super::negotiate;
use super::response::{Reject, ResponseBody};
use super::State;
use crate::auth::{Identity, Refusal};
use crate::decision::PolicyIdentity;
use crate::metrics::ReasonLabel;
use crate::model::{Eui64, Principal};
use crate::ownership::OwnershipSource;
use crate::stream::{Chunks, FilterStats, RecordFilter, RecordStream, Sink, StreamError};
use crate::views::html::timeline::{self, Timeline};
use crate::views::{activity_pieces, html, Activity, Format, Limits, Records, CSV_TYPE};

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
const RETRY_AFTER_SECONDS: u32 = 1;

/// One request's access-log line: who, what, and how it ended. Written once per request, by
/// [`Access::log`], whether it was refused or served.
struct Access {
    peer: SocketAddr,
    view: View,
    query: Option<String>,
    started: Instant,
    correlation: Correlation,
}

impl Access {
    /// `stream`: the stream's counts and ownership errors, when the request was served.
    fn log(
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

pub async fn serve(
    state: &Arc<State>,
    req: &Request<Incoming>,
    peer: SocketAddr,
    view: View,
) -> Response<ResponseBody> {
    let access = Access {
        peer,
        view,
        query: req.uri().query().map(str::to_owned),
        started: Instant::now(),
        correlation: Correlation::from_headers(req.headers()),
    };
    let request_id = HeaderValue::from_str(&access.correlation.request_id).ok();
    let own_id = HeaderValue::from_str(&access.correlation.own_id).ok();
    let format = |page| negotiate::format(req.headers(), page);
    // The one place a view is picked: from here on its type says which it is.
    let mut resp = match view {
        View::Records => {
            // A page only for a query naming one Device: its timeline.
            let device = timeline::device_of(req.uri().query());
            match (format(device.is_some()), device) {
                (Format::Html, Some(device)) => answer(state, req, access, Timeline::new(device), Format::Html).await,
                (format, _) => answer(state, req, access, Records::new(format), format).await,
            }
        }
        View::Activity => {
            let format = format(true);
            answer(state, req, access, Activity::new(Limits::DEFAULT), format).await
        }
    };
    if let Some(id) = request_id {
        resp.headers_mut().insert(REQUEST_ID, id);
    }
    if let Some(id) = own_id {
        resp.headers_mut().insert(SATGATE_REQUEST_ID, id);
    }
    resp
}

impl Access {
    /// Who asked for what under `policy`: what both decision records of this request say.
    fn subject<'a>(&'a self, principal: &'a Principal, policy: &'a PolicyIdentity) -> Subject<'a> {
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
trait Answer: Sink + Send + Sync + 'static {
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

/// One request, top to bottom: authenticate, start the stream, then answer as the view does.
async fn answer<V: Answer>(
    state: &Arc<State>,
    req: &Request<Incoming>,
    access: Access,
    view: V,
    format: Format,
) -> Response<ResponseBody> {
    let identity = match authenticate(state, req) {
        Ok(identity) => identity,
        Err(reject) => {
            access.log(reject.status.as_u16(), None, &reject.message, None, None);
            return reject.into_response();
        }
    };
    let view = Shown::new(identity.principal.user_id, view.for_caller(identity.principal.user_id));
    let started = match start(state, &identity, &access, view).await {
        Ok(started) => started,
        Err(reject) => {
            let policy = state.policies.current().identity().to_string();
            let principal = Some(&identity.principal);
            access.log(reject.status.as_u16(), principal, &reject.message, None, Some(&policy));
            return reject.into_response();
        }
    };
    let Started {
        mut stream,
        active,
        policy,
        deadline,
    } = started;
    let principal = identity.principal;
    let content_type = stream.filter().sink().content_type(format);
    let header_policy = policy_header(&policy);
    let (tx, body) = body::channel();
    let (state, idle) = (Arc::clone(state), state.upstream.timeouts().idle);
    let correlation = access.correlation.upstream_headers();
    if V::LIVE {
        // The records stream as they are read; the task holds the stream slot until the end.
        tokio::spawn(crate::net::CORRELATION.scope(correlation, async move {
            let result = read(&mut stream, deadline, &state, Chunked { tx: &tx, idle }).await;
            drop(active);
            let outcome = match &result {
                Ok(()) => "complete".to_owned(),
                Err(e) => format!("ended early: {e}"),
            };
            // The end record is durable before the final chunk: no whole answer without it.
            let logged = finished(&state, &access, &principal, &policy, 200, &outcome, &stream).await;
            if result.is_ok() && logged {
                tx.finish();
            }
            // Otherwise `tx` is dropped unfinished: the response ends with an error.
        }));
    } else {
        // Everything is read first; a failure is then an ordinary error answer.
        let result = crate::net::CORRELATION
            .scope(correlation, read(&mut stream, deadline, &state, Nothing))
            .await;
        let refusal = match result {
            Err(e) => Some(refusal(&e)),
            Ok(()) => stream.filter().sink().refusal(),
        };
        let (status, outcome) = match &refusal {
            Some(r) => (r.status.as_u16(), r.message.as_str()),
            None => (200, "complete"),
        };
        let logged = finished(&state, &access, &principal, &policy, status, outcome, &stream).await;
        if let Some(refusal) = refusal {
            return refusal.into_response();
        }
        if !logged {
            // Nothing of the summary has left: refuse it rather than disclose it unrecorded.
            return unlogged().into_response();
        }
        let view = stream.into_filter().into_sink();
        tokio::spawn(async move {
            let mut sent = true;
            for piece in view.pieces(format) {
                // A caller that stops reading is cut off, as on /sat/records.
                if !matches!(tokio::time::timeout(idle, tx.send(piece.into())).await, Ok(Ok(()))) {
                    sent = false;
                    break;
                }
            }
            if sent {
                tx.finish();
            }
            drop(active);
        });
    }
    let mut resp = Response::new(body.boxed());
    headers(&mut resp, content_type, header_policy);
    resp
}

/// 401 or 403, with texts that never quote the token.
fn authenticate(state: &State, req: &Request<Incoming>) -> Result<Identity, Reject> {
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    state.auth.identify(header).map_err(|refusal| match refusal {
        Refusal::Unauthenticated(why) => Reject::new(StatusCode::UNAUTHORIZED, "unauthenticated", why),
        Refusal::Forbidden(why) => Reject::new(StatusCode::FORBIDDEN, "forbidden", why),
    })
}

/// The upstream's answer being filtered for one caller, counted for the decision log.
type Stream<V> = RecordStream<body::Upstream, Shown<V>>;

/// A request whose upstream answered with NDJSON: its records to filter, its place among the
/// active streams, and the policy set that decides them.
struct Started<V> {
    stream: Stream<V>,
    active: Active,
    policy: PolicyIdentity,
    deadline: Option<Instant>,
}

/// A stream slot held by a started stream, and the one place that moves the active-streams
/// gauge: up when a stream starts, down when this is dropped (the answer sent, cut or refused).
struct Active {
    _slot: StreamSlot,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Active {
    fn new(slot: StreamSlot, metrics: &Arc<crate::metrics::Metrics>) -> Self {
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

/// Takes a stream slot, then the policy set, calls the upstream and checks its first line.
async fn start<V: Answer>(
    state: &State,
    identity: &Identity,
    access: &Access,
    view: Shown<V>,
) -> Result<Started<V>, Reject> {
    let principal = &identity.principal;
    // Before the upstream call: a refused stream costs nothing but this check.
    let slot = take_slot(state, principal)?;
    // The policy set in force now; this request keeps it even if a reload happens meanwhile.
    let engine = state.policies.current();
    let subject = access.subject(principal, engine.identity());
    let answered = logged_call(state, access, &subject).await?;
    // From here every refusal has its end record, so no start record is left open.
    let end = |reject: Reject| async {
        let line = record::end(
            &subject,
            &Ending {
                status: reject.status.as_u16(),
                outcome: &reject.message,
                stream: None,
            },
        );
        let _ = state.decision_log.append(line).await;
        reject
    };
    let (upstream, latency) = match answered {
        Ok(answer) => answer,
        Err(e) => {
            let code = if e.status() == StatusCode::GATEWAY_TIMEOUT {
                "upstream_timeout"
            } else {
                "bad_gateway"
            };
            return Err(end(Reject::new(e.status(), code, e.to_string())).await);
        }
    };
    state.metrics.upstream_latency.observe(latency.as_secs_f64());

    let deadline = identity.expires.map(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now() + left
    });
    let frames = body::Upstream {
        body: upstream.into_body(),
        idle: state.upstream.timeouts().idle,
    };
    let filter = RecordFilter::new(engine.for_principal(principal), view);
    let mut stream = RecordStream::new(frames, filter, state.max_line_bytes);
    if let Err(e) = stream.check_first_line().await {
        return Err(end(refusal(&e)).await);
    }
    Ok(Started {
        stream,
        active: Active::new(slot, &state.metrics),
        policy: engine.identity().clone(),
        deadline,
    })
}

/// A stream slot for the principal, or 503 (all taken) or 429 (the User's all taken), counted.
fn take_slot(state: &State, principal: &Principal) -> Result<StreamSlot, Reject> {
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

/// The start record and the upstream call. Before anything can be disclosed, the record that it
/// may be: made durable while the upstream is asked (nothing reaches the caller before both are
/// done), or, while the log is failing, first, so that a refused request costs the upstream
/// nothing. A start record that cannot be written refuses the request (503) when the log is
/// required; an upstream answer already there is then dropped unread.
async fn logged_call(
    state: &State,
    access: &Access,
    subject: &Subject<'_>,
) -> Result<Result<(Response<Incoming>, std::time::Duration), crate::upstream::UpstreamError>, Reject> {
    let log_start = state.decision_log.append(record::start(subject));
    let upstream_headers = access.correlation.upstream_headers();
    let call = state.upstream.records(access.query.as_deref(), upstream_headers);
    let (logged, answered) = if state.decision_log.unwritable().is_some() {
        match log_start.await {
            Err(_) if state.decision_log.required() => return Err(refused_unlogged(state)),
            logged => (logged, call.await),
        }
    } else {
        tokio::join!(log_start, call)
    };
    if let Err(e) = logged {
        if state.decision_log.required() {
            return Err(refused_unlogged(state));
        }
        tracing::warn!(error = %e, "decision log start record not written; serving (--decision-log-required=false)");
    }
    Ok(answered)
}

/// 503 for a request whose start record could not be written, counted.
fn refused_unlogged(state: &State) -> Reject {
    state
        .metrics
        .streams_refused
        .get_or_create(&ReasonLabel { reason: "decision_log" })
        .inc();
    unlogged()
}

/// Reads the whole stream into `chunks` (ended at the caller's token expiry, wherever it is),
/// then counts it.
async fn read<V: Answer>(
    stream: &mut Stream<V>,
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

/// The one mapping from a stream's failure to an error answer (before any byte was sent).
fn refusal(e: &StreamError) -> Reject {
    match e {
        StreamError::IdleTimeout => Reject::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", e.to_string()),
        StreamError::TokenExpired => Reject::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()),
        _ => Reject::new(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()),
    }
}

/// 503 when the decision log cannot take a record (disk full, I/O error): nothing is disclosed
/// that the log does not record.
fn unlogged() -> Reject {
    Reject::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "decision_log_unavailable",
        "the decision log cannot be written; nothing was disclosed; try again shortly",
    )
    .retry_after(RETRY_AFTER_SECONDS)
}

/// The end record of a request whose records were read, durable, then its access-log line.
/// `false` when the log is required and did not take the record: the answer must not complete.
async fn finished<V: Answer>(
    state: &State,
    access: &Access,
    principal: &Principal,
    policy: &PolicyIdentity,
    status: u16,
    outcome: &str,
    stream: &Stream<V>,
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

/// The headers of an answer carrying records or their summary.
fn headers(resp: &mut Response<ResponseBody>, content_type: &'static str, policy: HeaderValue) {
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == html::CONTENT_TYPE {
        // A page holds upstream text: no script, no loads, not sniffed as anything else, and
        // saved under a name of its own.
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(html::CSP));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(html::DISPOSITION));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Which reviewed policy set decided this answer (the bundle's SHA-256 and revision).
    headers.insert(POLICY_HEADER, policy);
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
        let id = |revision: &str| PolicyIdentity {
            sha256: "ab".repeat(32),
            revision: Some(revision.into()),
            serial: Some(1),
            expires: Some(2),
        };
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
            let mut resp = Response::new(super::super::response::full(String::new()));
            headers(&mut resp, "application/x-ndjson", v.clone());
            assert_eq!(resp.headers().get(POLICY_HEADER), Some(&v), "{raw:?}: present");
        }
    }
}
