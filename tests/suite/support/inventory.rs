//! An in-test inventory service answering from the sample inventory, with a hook that sees each
//! request first and may make it fail (503): a service that goes down, flaps, or records what it
//! was sent.

use std::sync::Arc;

use bytes::Bytes;

/// Decides, per request, whether the service answers (`true`) or fails with 503 (`false`).
pub type Hook = Arc<dyn Fn(&hyper::Request<hyper::body::Incoming>) -> bool + Send + Sync>;

/// Starts the service; gives its base URL.
pub async fn start(hook: Hook) -> String {
    let inventory: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/inventory.json").unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (inventory, hook) = (inventory.clone(), Arc::clone(&hook));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (status, body) = if hook(&req) {
                        let id = req.uri().path().trim_start_matches("/devices/");
                        match satgate::sample::inventory_service::answer(&inventory, id) {
                            Some(b) => (200, b),
                            None => (404, String::new()),
                        }
                    } else {
                        (503, String::new())
                    };
                    let mut r = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    url
}
