//! A stand-in for the SSI audit endpoint, for the demo and for trying satgate by hand:
//! `GET /sat/records[?deviceId=EUI][&from=T][&to=T][&limit=N]` streams generated records as
//! NDJSON: those about one Device, with a timestamp from `from` (included) to `to` (excluded),
//! compared as text (`2026-11-08` or `2026-11-08T12:00:00Z`), the first `limit` of them. Like the
//! real one, it pages before satgate filters.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::model::Eui64;
use crate::server::ResponseBody;

/// Serves `lines` (one NDJSON record each) until the task is dropped.
pub async fn serve(listener: TcpListener, lines: Arc<Vec<String>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let lines = Arc::clone(&lines);
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(Arc::clone(&lines), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(lines: Arc<Vec<String>>, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    if req.uri().path() != "/sat/records" {
        let body = Full::new(Bytes::from_static(b"not found\n"))
            .map_err(|never| match never {})
            .boxed();
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    let mut device = None;
    let mut limit = usize::MAX;
    let (mut from, mut to) = (String::new(), None);
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("deviceId", v)) => device = Eui64::parse(v).ok().map(|d| d.to_string()),
            Some(("limit", v)) => limit = v.parse().unwrap_or(usize::MAX),
            Some(("from", v)) => from = v.to_owned(),
            Some(("to", v)) => to = Some(v.to_owned()),
            _ => {}
        }
    }
    let in_range = move |line: &str| {
        let Some(ts) = timestamp(line) else { return false };
        ts >= from.as_str() && to.as_deref().is_none_or(|to| ts < to)
    };
    let (tx, body) = crate::server::body::channel();
    tokio::spawn(async move {
        let mut chunk = String::with_capacity(64 * 1024);
        let wanted = lines
            .iter()
            .filter(|l| device.as_ref().is_none_or(|d| l.contains(d.as_str())))
            .filter(|l| in_range(l))
            .take(limit);
        for line in wanted {
            chunk.push_str(line);
            chunk.push('\n');
            if chunk.len() >= 60 * 1024 && tx.send(Bytes::from(std::mem::take(&mut chunk))).await.is_err() {
                return;
            }
        }
        if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
            return;
        }
        tx.finish();
    });
    let mut resp = Response::new(body.boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// A generated record's timestamp text.
fn timestamp(line: &str) -> Option<&str> {
    const KEY: &str = "\"timestamp\":\"";
    let start = line.find(KEY)? + KEY.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}
