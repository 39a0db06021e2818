//! One HTTP request through Envoy, as one ext_proc stream, in the order Envoy sends its phases:
//!
//! 1. **Request headers**: the route, the token and a stream slot, as `serve` checks them; a
//!    refusal is an `ImmediateResponse` with `serve`'s status and JSON body, and the upstream is
//!    never asked. Then the start record is made durable, and only then is the request let on,
//!    with every header the caller sent removed but the correlation and `Accept` satgate sets (the
//!    upstream gets what `serve` would send it: never the caller's token).
//! 2. **Response headers**: held until the first line is checked (as `serve` does before it
//!    answers): an upstream status other than 200, or a body that is not NDJSON, is `serve`'s
//!    502. Then every upstream header is replaced by the answer's own.
//! 3. **Response body**: filtered chunk by chunk as Envoy streams it (`FULL_DUPLEX_STREAMED`,
//!    so satgate, not Envoy, decides where a chunk ends: a record split across chunks is held
//!    until its end arrives). A failure after the headers went ends the gRPC stream with an
//!    error, and Envoy, which must not fail open (`failure_mode_allow: false`), resets the
//!    caller's stream: an answer cut short, never one that looks whole. The last chunk is sent
//!    only after the end record is durable.
//!
//! A view answered at the end (the activity summary, a timeline page) reads the whole body
//! while the response headers wait, then answers with one `ImmediateResponse`: its refusals (422,
//! 502, 504) keep their status, as under `serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request::Request as Phase, HttpHeaders, ProcessingRequest, ProcessingResponse,
};
use http::{header, HeaderName, HeaderValue, StatusCode};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::body::{EnvoyBody, ToEnvoy};
use super::message::{self, Headers};
use crate::metrics::{ReasonLabel, StatusLabel};
use crate::server::correlation::{Correlation, REQUEST_ID, SATGATE_REQUEST_ID};
use crate::server::decision_log::{record, Ending, Shown, Subject};
use crate::server::negotiate;
use crate::server::response::Reject;
use crate::server::routes::{self, NoRoute, Route, Side};
use crate::server::steps::{
    answer_headers, authenticate, finished, policy_header, read, read_to_end, refusal, refused, refused_unlogged,
    take_slot, unlogged, Access, Active, Answer, View,
};
use crate::server::State;
use crate::stream::{RecordFilter, RecordStream};
use crate::views::html::timeline::{self, Timeline};
use crate::views::{Activity, Format, Limits, Records};

/// The sending half of the stream back to Envoy.
type Out = mpsc::Sender<Result<ProcessingResponse, Status>>;

/// What every phase of one request needs.
struct Exchange {
    state: Arc<State>,
    inbound: Streaming<ProcessingRequest>,
    out: Out,
    access: Access,
    request: Headers,
    /// The token payload Envoy's `jwt_authn` verified, when it sent one.
    verified: Option<serde_json::Value>,
    /// `X-Request-Id` and `Satgate-Request-Id`, on every answer.
    ids: Vec<(HeaderName, HeaderValue)>,
}

impl Exchange {
    async fn send(&self, message: ProcessingResponse) -> bool {
        self.out.send(Ok(message)).await.is_ok()
    }

    /// A refusal as `serve` answers it, counted and logged; `principal` once it is known.
    async fn refuse(&self, reject: &Reject, principal: Option<&crate::model::Principal>) {
        self.refuse_with(reject, principal, &[]).await;
    }

    /// A refusal with headers of its own (`Allow`).
    async fn refuse_with(
        &self,
        reject: &Reject,
        principal: Option<&crate::model::Principal>,
        headers: &[(HeaderName, HeaderValue)],
    ) {
        let policy = principal.map(|_| self.state.policies.current().identity().to_string());
        let status = reject.status.as_u16();
        self.access
            .log(status, principal, &reject.message, None, policy.as_deref());
        count(&self.state, status);
        let mut all = self.ids.clone();
        all.extend_from_slice(headers);
        let _ = self.send(message::refusal(reject, &all)).await;
    }

    /// Ends Envoy's stream with an error: with `failure_mode_allow: false`, Envoy answers an
    /// error, or resets a response already begun. Never a clean end.
    async fn abort(&self, why: &'static str) {
        let _ = self.out.send(Err(Status::aborted(why))).await;
    }
}

/// Serves one ext_proc stream: one HTTP request and its response.
pub async fn exchange(state: Arc<State>, mut inbound: Streaming<ProcessingRequest>, out: Out, grpc_peer: SocketAddr) {
    let first = match inbound.message().await {
        Ok(Some(first)) => first,
        _ => return,
    };
    let headers = match &first.request {
        Some(Phase::RequestHeaders(headers)) => headers,
        Some(Phase::ResponseHeaders(response)) => return answered_before(&state, response, &out).await,
        _ => {
            let _ = out
                .send(Err(Status::failed_precondition(
                    "the first message must carry the request headers",
                )))
                .await;
            return;
        }
    };
    let request = Headers::read(headers.headers.as_ref());
    let correlation = Correlation::from_headers(&request.map);
    let ids = [
        (REQUEST_ID, &correlation.request_id),
        (SATGATE_REQUEST_ID, &correlation.own_id),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, HeaderValue::from_str(v).ok()?)))
    .collect();
    let target = request.path.clone().unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target.as_str(), None),
    };
    // A method Envoy sent that is not one (it never should) is no method: 405 for a served path.
    let method =
        http::Method::from_bytes(request.method.as_deref().unwrap_or("").as_bytes()).unwrap_or(http::Method::CONNECT);
    let route = routes::route(Side::Callers, &method, path);
    let view = match route {
        Ok(Route::Records) => View::Records,
        Ok(_) => View::Activity,
        Err(_) => View::Records,
    };
    let peer = message::source_address(&first).unwrap_or(grpc_peer);
    // Read only when tokens are Envoy's to verify: otherwise no metadata names a caller.
    let verified = state
        .auth
        .verified_by_envoy()
        .then(|| message::verified_payload(&first))
        .flatten();
    let cx = Exchange {
        state,
        inbound,
        out,
        access: Access {
            peer,
            view,
            query,
            started: Instant::now(),
            correlation,
        },
        request,
        verified,
        ids,
    };
    if let Some(reject) = message::unsafe_mode(&first) {
        cx.state
            .metrics
            .streams_refused
            .get_or_create(&ReasonLabel {
                reason: "proxy_misconfigured",
            })
            .inc();
        tracing::error!(
            "Envoy's ext_proc filter is configured to let bodies pass without satgate \
             (response_body_mode must be FULL_DUPLEX_STREAMED, without observability mode); refusing"
        );
        return cx.refuse(&reject, None).await;
    }
    let route = match route {
        Ok(route @ (Route::Records | Route::Activity)) => route,
        Ok(_) | Err(NoRoute::NotFound) => {
            let reject = Reject::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
            return cx.refuse(&reject, None).await;
        }
        Err(NoRoute::MethodNotAllowed(allowed)) => {
            let reject = Reject::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("only {allowed} is supported"),
            );
            let allow = (header::ALLOW, HeaderValue::from_static(allowed.as_str()));
            return cx.refuse_with(&reject, None, &[allow]).await;
        }
    };
    let format = |page| negotiate::format(&cx.request.map, page);
    // The one place a view is picked, as in `serve`.
    match route {
        Route::Records => {
            let device = timeline::device_of(cx.access.query.as_deref());
            match (format(device.is_some()), device) {
                (Format::Html, Some(device)) => answer(cx, Timeline::new(device), Format::Html).await,
                (format, _) => answer(cx, Records::new(format), format).await,
            }
        }
        _ => {
            let format = format(true);
            answer(cx, Activity::new(Limits::DEFAULT), format).await
        }
    }
}

/// A response satgate never saw the request of: a filter before ext_proc answered the request
/// itself (`jwt_authn`'s 401, an RBAC 403), and only the answer passes through. No upstream was
/// asked (a request reaches the upstream only through satgate's request phase), but satgate
/// cannot vouch for that answer's body or headers either: it keeps only the status, in its own
/// JSON error, as an error status (anything else is a 502).
async fn answered_before(state: &State, response: &HttpHeaders, out: &Out) {
    let status = Headers::read(response.headers.as_ref())
        .status
        .and_then(|s| StatusCode::from_bytes(s.as_bytes()).ok())
        .filter(|s| s.is_client_error() || s.is_server_error());
    let reject = match status {
        Some(StatusCode::UNAUTHORIZED) => Reject::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the proxy in front of satgate refused the token",
        ),
        Some(StatusCode::FORBIDDEN) => Reject::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the proxy in front of satgate refused the request",
        ),
        Some(status) => Reject::new(
            status,
            "refused",
            format!("the proxy in front of satgate answered {status}"),
        ),
        None => Reject::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the proxy answered a request satgate did not see",
        ),
    };
    count(state, reject.status.as_u16());
    tracing::info!(target: "satgate::access", status = reject.status.as_u16(), outcome = %reject.message, "request refused before satgate");
    let _ = out.send(Ok(message::refusal(&reject, &[]))).await;
}

fn count(state: &State, status: u16) {
    state.metrics.requests.get_or_create(&StatusLabel { status }).inc();
}

/// One request, top to bottom, as `serve` answers it.
async fn answer<V: Answer>(mut cx: Exchange, view: V, format: Format) {
    let identity = if cx.state.auth.verified_by_envoy() {
        // Envoy verified the token (`--jwt-from-envoy`); its payload, never a header, names the
        // caller.
        cx.state.auth.identify_verified(cx.verified.as_ref()).map_err(refused)
    } else {
        let authorization = cx.request.map.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        authenticate(&cx.state, authorization)
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(reject) => return cx.refuse(&reject, None).await,
    };
    let principal = &identity.principal;
    let view = Shown::new(principal.user_id, view.for_caller(principal.user_id));
    let slot = match take_slot(&cx.state, principal) {
        Ok(slot) => slot,
        Err(reject) => return cx.refuse(&reject, Some(principal)).await,
    };
    // The policy set in force now; this request keeps it even if a reload happens meanwhile.
    let engine = cx.state.policies.current();
    let policy = engine.identity().clone();
    let state = Arc::clone(&cx.state);
    let subject = cx.access.subject(principal, &policy);
    // The start record is durable before the upstream is asked: Envoy asks it once satgate
    // lets the request on.
    if let Err(e) = state.decision_log.append(record::start(&subject)).await {
        if state.decision_log.required() {
            return cx.refuse(&refused_unlogged(&state), Some(principal)).await;
        }
        tracing::warn!(error = %e, "decision log start record not written; serving (--decision-log-required=false)");
    }
    let mut upstream = cx.access.correlation.upstream_headers();
    upstream.push((header::ACCEPT, HeaderValue::from_static("application/x-ndjson")));
    let asked = Instant::now();
    if !cx
        .send(message::request_headers(message::replace_all(
            &cx.request.names,
            &upstream,
        )))
        .await
    {
        ended(&state, &subject, 499, "the caller went away").await;
        return;
    }

    let response = match next_headers(&mut cx.inbound, &state).await {
        Ok(response) => response,
        Err(reject) => {
            ended(&state, &subject, reject.status.as_u16(), &reject.message).await;
            return cx.refuse(&reject, Some(principal)).await;
        }
    };
    state.metrics.upstream_latency.observe(asked.elapsed().as_secs_f64());
    let upstream_headers = Headers::read(response.headers.as_ref());
    if upstream_headers.status.as_deref() != Some("200") {
        let status = upstream_headers
            .status
            .as_deref()
            .and_then(|s| StatusCode::from_bytes(s.as_bytes()).ok())
            .map_or_else(|| "without a status".to_owned(), |s| s.to_string());
        let reject = Reject::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("upstream answered {status}"),
        );
        ended(&state, &subject, 502, &reject.message).await;
        return cx.refuse(&reject, Some(principal)).await;
    }

    let deadline = identity.expires.map(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now() + left
    });
    let idle = state.upstream.timeouts().idle;
    let content_type = view.content_type(format);
    let mut headers = answer_headers(content_type, policy_header(&policy));
    headers.extend(cx.ids.iter().cloned());
    let filter = RecordFilter::new(engine.for_principal(principal), view);
    let frames = EnvoyBody::new(&mut cx.inbound, idle, response.end_of_stream);
    let mut stream = RecordStream::new(frames, filter, state.max_line_bytes);
    if let Err(e) = stream.check_first_line().await {
        let reject = refusal(&e);
        ended(&state, &subject, reject.status.as_u16(), &reject.message).await;
        drop(stream);
        return cx.refuse(&reject, Some(principal)).await;
    }
    let active = Active::new(slot, &state.metrics);
    let correlation = cx.access.correlation.upstream_headers();
    let to_envoy = ToEnvoy { out: &cx.out, idle };

    if V::LIVE && !response.end_of_stream {
        // Records stream as they are filtered.
        let sent = to_envoy
            .send(message::response_headers(message::replace_all(
                &upstream_headers.names,
                &headers,
            )))
            .await;
        count(&state, 200);
        let result = match sent {
            Ok(()) => {
                let chunks = ToEnvoy { out: &cx.out, idle };
                crate::net::CORRELATION
                    .scope(correlation, read(&mut stream, deadline, &state, chunks))
                    .await
            }
            Err(e) => Err(e),
        };
        drop(active);
        let outcome = match &result {
            Ok(()) => "complete".to_owned(),
            Err(e) => format!("ended early: {e}"),
        };
        // The end record is durable before the last chunk: no whole answer without it.
        let logged = finished(&state, &cx.access, principal, &policy, 200, &outcome, &stream).await;
        let trailers = stream.frames().trailers.clone();
        drop(stream);
        if result.is_ok() && logged {
            let mut done = to_envoy.send(message::body_chunk(Vec::new(), true)).await;
            if let (Ok(()), Some(names)) = (&done, trailers) {
                done = to_envoy.send(message::no_trailers(&names)).await;
            }
            if done.is_ok() {
                return;
            }
        }
        cx.abort("the answer ended early").await;
        return;
    }

    // Everything is read first (the summary, a page, or an answer that has no body to carry
    // chunks); a failure is then an ordinary error answer.
    let mut collected = Vec::new();
    let (reject, logged) = read_to_end(
        &state,
        &cx.access,
        principal,
        &policy,
        &mut stream,
        deadline,
        &mut collected,
    )
    .await;
    drop(active);
    if let Some(reject) = reject {
        drop(stream);
        count(&state, reject.status.as_u16());
        let _ = cx.send(message::refusal(&reject, &cx.ids)).await;
        return;
    }
    if !logged {
        drop(stream);
        count(&state, 503);
        let _ = cx.send(message::refusal(&unlogged(), &cx.ids)).await;
        return;
    }
    let body = if V::LIVE {
        collected
    } else {
        stream.filter().sink().pieces(format).flatten().collect()
    };
    drop(stream);
    count(&state, 200);
    let _ = cx.send(message::immediate(200, &headers, body)).await;
}

/// The upstream's response headers, or why there are none: Envoy ended the stream (the caller
/// went, or the upstream could not be reached and Envoy's own answer was refused), or sent
/// something else.
async fn next_headers(inbound: &mut Streaming<ProcessingRequest>, state: &State) -> Result<HttpHeaders, Reject> {
    let timeouts = state.upstream.timeouts();
    let wait = timeouts.connect + timeouts.first_byte;
    match tokio::time::timeout(wait, inbound.message()).await {
        Err(_) => Err(Reject::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "upstream timed out: no response headers in time",
        )),
        Ok(Ok(Some(ProcessingRequest {
            request: Some(Phase::ResponseHeaders(h)),
            ..
        }))) => Ok(h),
        Ok(Ok(Some(_))) => Err(Reject::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the proxy sent a message out of order",
        )),
        Ok(_) => Err(Reject::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the proxy ended the request before the upstream answered",
        )),
    }
}

/// The end record of a request that ended before any record was read.
async fn ended(state: &State, subject: &Subject<'_>, status: u16, outcome: &str) {
    let line = record::end(
        subject,
        &Ending {
            status,
            outcome,
            stream: None,
        },
    );
    let _ = state.decision_log.append(line).await;
}
