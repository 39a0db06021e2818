//! An inventory service over HTTP or HTTPS: `GET {base}/devices/{deviceId}`.
//!
//! The service answers `200` with an inventory document (docs/contract.md §2) holding that one
//! Device and the meter points it is linked to, so the same validation applies as for the file;
//! `404` means unknown. Anything else (another status, a body that does not parse or does not
//! describe the Device asked for, a timeout, too many bytes) is an error: satgate then gives no
//! owner view for that Device. Calls in flight are bounded; beyond the bound callers queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use tokio::sync::Semaphore;

use super::{Inventory, LookupResult, OwnershipSource, SourceError};
use crate::model::Eui64;
use crate::net::{BaseUrl, Connector, UrlError};
use crate::tls::client::{ClientTls, ClientTlsFiles};

/// Largest response accepted for one Device.
const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    /// For an `https://` service: the CA to verify it with, and satgate's client certificate.
    pub tls: Option<ClientTlsFiles>,
}

impl HttpSettings {
    /// The defaults (`config::defaults` shows them in help and resolves flags against them).
    pub const DEFAULT: Self = Self {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        max_in_flight: 32,
        tls: None,
    };
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

pub struct HttpSource {
    base: BaseUrl,
    client: Client<Connector, Empty<Bytes>>,
    permits: Semaphore,
    request_timeout: Duration,
}

impl HttpSource {
    /// `base` is an `http://host:port[/prefix]` URL (`https://` needs [`Self::with_tls`]).
    pub fn new(base: &str, settings: HttpSettings) -> Result<Self, UrlError> {
        Self::with_tls(base, settings, None)
    }

    /// `base` is an `http(s)://host:port[/prefix]` URL; `https://` is verified with `tls`.
    pub fn with_tls(base: &str, settings: HttpSettings, tls: Option<Arc<ClientTls>>) -> Result<Self, UrlError> {
        let base = BaseUrl::parse(base)?;
        let problem = |problem: &str| UrlError {
            url: base.join(""),
            problem: problem.into(),
        };
        if settings.max_in_flight == 0 {
            return Err(problem("at least one call in flight is needed"));
        }
        if base.is_https() && tls.is_none() {
            return Err(problem("https:// needs a CA file to verify the service with"));
        }
        Ok(Self {
            client: crate::net::client(settings.connect_timeout, MAX_BODY_BYTES, tls),
            base,
            permits: Semaphore::new(settings.max_in_flight),
            request_timeout: settings.request_timeout,
        })
    }

    /// The service's `host:port`, for readiness probes.
    pub fn authority(&self) -> &str {
        self.base.authority()
    }

    async fn fetch(&self, device: Eui64) -> LookupResult {
        let url = self.base.join(&format!("/devices/{device}"));
        // The timeout covers waiting for a free slot too: a caller never waits longer than it.
        let (status, body) = tokio::time::timeout(self.request_timeout, self.call(&url))
            .await
            .map_err(|_| SourceError(format!("{url}: no answer within {:?}", self.request_timeout)))??;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let text = std::str::from_utf8(&body).map_err(|_| SourceError(format!("{url}: body is not UTF-8")))?;
                let (inventory, warnings) = Inventory::parse(text).map_err(|e| SourceError(format!("{url}: {e}")))?;
                match inventory.get(device) {
                    Some(entry) => Ok(Some(Arc::clone(entry))),
                    // The service described the Device, but unusably: no owners, and say why.
                    None if !warnings.is_empty() => {
                        let why: Vec<String> = warnings.iter().map(ToString::to_string).collect();
                        Err(SourceError(format!("{url}: unusable entry: {}", why.join("; "))))
                    }
                    None => Err(SourceError(format!("{url}: the answer does not describe {device}"))),
                }
            }
            other => Err(SourceError(format!("{url}: answered {other}"))),
        }
    }

    /// One bounded call: a slot, the request, and at most `MAX_BODY_BYTES` of body.
    async fn call(&self, url: &str) -> Result<(StatusCode, Bytes), SourceError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SourceError("inventory client closed".into()))?;
        let mut req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| SourceError(format!("{url}: {e}")))?;
        req.headers_mut().extend(crate::net::correlation_headers());
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| SourceError(format!("{url}: {}", crate::net::error_chain(&e))))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| SourceError(format!("{url}: reading the body: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}

impl OwnershipSource for HttpSource {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        Box::pin(self.fetch(device))
    }
}
