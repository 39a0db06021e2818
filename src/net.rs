//! The two HTTP clients satgate makes, to the SSI upstream and to the inventory service: one
//! place for what their base URLs may be and how their connections are set up (plain TCP, or
//! TLS by [`crate::tls::client`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::client::ClientTls;

/// An `http(s)://host:port[/prefix]` base URL that is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {problem}")]
pub struct UrlError {
    pub url: String,
    pub problem: String,
}

/// A checked `http(s)://host:port[/prefix]` base URL, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    base: String,
    authority: String,
    https: bool,
    loopback: bool,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let bad = |problem: &str| UrlError {
            url: url.to_owned(),
            problem: problem.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().filter(|_| https || uri.scheme_str() == Some("http"));
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return Err(bad("expected http(s)://host:port[/prefix]"));
        };
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad("must not carry credentials"));
        }
        Ok(Self {
            authority: format!("{host}:{}", uri.port_u16().unwrap_or(if https { 443 } else { 80 })),
            base: url.trim_end_matches('/').to_owned(),
            https,
            loopback: is_loopback(host),
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Whether the host is this machine's (pod's) loopback: `localhost`, 127.0.0.0/8 or `::1`.
    /// Plain HTTP to anything else can be read and answered by whoever sits on the network path.
    pub fn is_loopback(&self) -> bool {
        self.loopback
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

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An error and its sources, one line: hyper's own message alone says only "client error
/// (Connect)", the cause (refused, a certificate problem) is further down.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(err) = source {
        parts.push(err.to_string());
        source = err.source();
    }
    parts.join(": ")
}

/// A pooled HTTP/1.1 client for GET requests, with TCP_NODELAY and a connect timeout. Its read
/// buffer is capped at `max_buf` bytes, which also caps every response frame it yields.
/// `https://` URLs go over `tls`; without it they fail to connect (never in plain text).
pub fn client(
    connect_timeout: Duration,
    max_buf: usize,
    tls: Option<Arc<ClientTls>>,
) -> Client<Connector, Empty<Bytes>> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // The scheme is this connector's business: it refuses https without TLS below.
    http.enforce_http(false);
    Client::builder(TokioExecutor::new())
        // Without a timer the pool never reaps: idle connections stayed open until reused.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .http1_max_buf_size(max_buf)
        .build(Connector { http, tls })
}

/// TCP, then TLS for `https://` URLs.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<Arc<ClientTls>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default().to_owned();
        let tls = self.tls.clone();
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            if !https {
                return Ok(TokioIo::new(Stream::Plain(tcp)));
            }
            let Some(tls) = tls else {
                return Err("https:// without a CA file to verify the server with".into());
            };
            let generation = tls.current_generation();
            let stream = tls.connect(&host, tcp).await?;
            Ok(TokioIo::new(Stream::Tls(Box::new(stream), tls, generation)))
        })
    }
}

/// A connection of [`Connector`].
pub enum Stream {
    Plain(TcpStream),
    /// With the client that made it (to count a refusal that arrives after the handshake) and
    /// the generation of the files it was verified with.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>, Arc<ClientTls>, u64),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(tcp) => tcp.connected(),
            Stream::Tls(tls, _, _) => tls.get_ref().0.connected(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(stream, tls, _) => {
                let before = buf.filled().len();
                let polled = Pin::new(stream.as_mut()).poll_read(cx, buf);
                match &polled {
                    Poll::Ready(Err(e)) => tls.failed(e),
                    Poll::Ready(Ok(())) if buf.filled().len() > before => tls.succeeded(),
                    _ => {}
                }
                polled
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            // A new request on a connection verified with files since replaced: refused, so the
            // pool drops it and the next request verifies a new one.
            Stream::Tls(_, tls, generation) if *generation != tls.current_generation() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "TLS files rotated since this connection was made",
                )))
            }
            Stream::Tls(stream, _, _) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(stream, _, _) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(stream, _, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
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
        assert_eq!(BaseUrl::parse("https://inv").unwrap().authority(), "inv:443");
        assert!(BaseUrl::parse("https://inv:8443").unwrap().is_https());
        for (url, loopback) in [
            ("http://127.0.0.1:9090", true),
            ("http://127.1.2.3", true),
            ("http://localhost:1", true),
            ("http://[::1]:1", true),
            ("http://ssi:9090", false),
            ("http://10.0.0.1", false),
            ("http://127.0.0.1.nip.io", false),
            ("http://[::2]:1", false),
        ] {
            assert_eq!(BaseUrl::parse(url).unwrap().is_loopback(), loopback, "{url}");
        }
        for bad in [
            "ftp://x",
            "http://user:pw@inv:1",
            "ssi:9090",
            "http://ssi:1/?q=1",
            "",
            "http://",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
