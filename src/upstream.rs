//! The call to the SSI audit endpoint: `GET {upstream}/sat/records?{query}`, with the query
//! passed on unchanged, and bounded waits for connecting and for the response headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;

use crate::net::{error_chain, BaseUrl, Connector, UrlError};
use crate::tls::client::ClientTls;

/// Why the upstream gave no usable response. Maps to 502 or 504 (docs/contract.md §5).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream timed out: {0}")]
    Timeout(&'static str),
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream answered {0}")]
    Status(StatusCode),
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

pub struct Upstream {
    base: BaseUrl,
    client: Client<Connector, Empty<Bytes>>,
    timeouts: Timeouts,
}

impl Upstream {
    /// `base` is an `http(s)://host:port[/prefix]` URL; `https://` is verified with `tls`.
    pub fn new(base: &str, timeouts: Timeouts, tls: Option<Arc<ClientTls>>) -> Result<Self, UrlError> {
        let base = BaseUrl::parse(base)?;
        if base.is_https() && tls.is_none() {
            return Err(UrlError {
                url: base.join(""),
                problem: "https:// needs a CA file to verify the upstream with".into(),
            });
        }
        Ok(Self {
            base,
            // The read buffer caps each upstream frame, so a stream holds little when its caller
            // stalls (server::limits).
            client: crate::net::client(timeouts.connect, crate::stream::UPSTREAM_BUFFER_BYTES, tls),
            timeouts,
        })
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The `host:port` to probe for readiness.
    pub fn authority(&self) -> &str {
        self.base.authority()
    }

    /// Sends the request and waits for a 200 response's headers. Returns the time it took.
    pub async fn records(
        &self,
        query: Option<&str>,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    ) -> Result<(Response<Incoming>, Duration), UpstreamError> {
        let url = match query {
            Some(q) => self.base.join(&format!("/sat/records?{q}")),
            None => self.base.join("/sat/records"),
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| UpstreamError::Unreachable("query is not a valid URI".into()))?;
        let mut req = Request::get(uri)
            .header(http::header::ACCEPT, "application/x-ndjson")
            .body(Empty::new())
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        req.headers_mut().extend(headers);
        let start = Instant::now();
        let resp = match tokio::time::timeout(self.timeouts.first_byte, self.client.request(req)).await {
            Err(_) => return Err(UpstreamError::Timeout("no response headers in time")),
            Ok(Err(e)) if is_timeout(&e) => return Err(UpstreamError::Timeout("connect")),
            Ok(Err(e)) => return Err(UpstreamError::Unreachable(error_chain(&e))),
            Ok(Ok(resp)) => resp,
        };
        if resp.status() != StatusCode::OK {
            return Err(UpstreamError::Status(resp.status()));
        }
        Ok((resp, start.elapsed()))
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || err.to_string().contains("timed out")
        {
            return true;
        }
        source = err.source();
    }
    false
}
