//! The two HTTP clients satgate makes, to the SSI upstream and to the inventory service: one
//! place for what their base URLs may be and how their connections are set up.

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// An `http://host:port[/prefix]` base URL that is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {problem}")]
pub struct UrlError {
    pub url: String,
    pub problem: String,
}

/// A checked `http://host:port[/prefix]` base URL, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    base: String,
    authority: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let bad = |problem: &str| UrlError {
            url: url.to_owned(),
            problem: problem.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let host = uri.host().filter(|_| uri.scheme_str() == Some("http"));
        let Some(host) = host else {
            return Err(bad("expected http://host:port[/prefix]"));
        };
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        Ok(Self {
            authority: format!("{host}:{}", uri.port_u16().unwrap_or(80)),
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    /// `{base}{path}`; `path` starts with `/`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port`, for readiness probes.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

tokio::task_local! {
    /// The correlation headers (`traceparent`, `tracestate`, `x-request-id`) of the request the
    /// current task serves: every outbound call it makes carries them, the upstream call and the
    /// inventory look-ups alike (a look-up shared by several requests carries the first one's).
    pub static CORRELATION: Vec<(http::HeaderName, http::HeaderValue)>;
}

/// The current request's correlation headers; none outside a request.
pub fn correlation_headers() -> Vec<(http::HeaderName, http::HeaderValue)> {
    CORRELATION.try_with(Clone::clone).unwrap_or_default()
}

/// A pooled HTTP/1.1 client for GET requests, with TCP_NODELAY and a connect timeout. Its read
/// buffer is capped at `max_buf` bytes, which also caps every response frame it yields.
pub fn client(connect_timeout: Duration, max_buf: usize) -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        // Without a timer the pool never reaps: idle connections stayed open until reused.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .http1_max_buf_size(max_buf)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("http://ssi:9090/prefix/").unwrap();
        assert_eq!(b.join("/sat/records"), "http://ssi:9090/prefix/sat/records");
        assert_eq!(b.authority(), "ssi:9090");
        assert_eq!(BaseUrl::parse("http://ssi").unwrap().authority(), "ssi:80");
        for bad in [
            "https://ssi:1",
            "ftp://x",
            "ssi:9090",
            "http://ssi:1/?q=1",
            "",
            "http://",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
