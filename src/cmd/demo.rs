//! `satgate demo`: a sample SSI upstream and the sidecar in front of it, with example requests
//! made and explained, and ready-to-paste `curl` commands with freshly minted tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use super::{Exit, PolicyArgs};
use crate::config::{JwtKey, LogFormat, OwnershipSourceConfig, ServeConfig};
use crate::ownership::CacheSettings;
use crate::sample::{Market, Rng, SampleUser};
use crate::server;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Where the sidecar listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the sample SSI upstream listens.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub upstream_listen: SocketAddr,
    /// How many SAT records the sample upstream holds.
    #[arg(long, default_value_t = 2000)]
    pub records: u64,
    /// Make the example requests, then stop (instead of serving until Ctrl-C).
    #[arg(long)]
    pub exit_after_examples: bool,
}

pub fn run(args: &Args) -> Exit {
    // Quiet by default so the walkthrough reads cleanly; RUST_LOG=info shows the access log.
    super::serve::init_logging(LogFormat::Text, "warn");
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    match rt.block_on(demo(args)) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Error
        }
    }
}

async fn demo(args: &Args) -> Result<(), String> {
    let market = Market::generate(8, 2026);
    let lines: Vec<String> = market.ndjson(args.records, 2026).lines().map(str::to_owned).collect();

    let dir = std::env::temp_dir().join(format!("satgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let inventory = dir.join("inventory.json");
    let secret_file = dir.join("hs256.secret");
    let mut rng = Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let secret: String = (0..48)
        .map(|_| char::from(b"0123456789abcdef"[rng.below(16)]))
        .collect();
    std::fs::write(&inventory, &market.inventory_json).map_err(|e| e.to_string())?;
    std::fs::write(&secret_file, &secret).map_err(|e| e.to_string())?;

    let upstream_listener = tokio::net::TcpListener::bind(args.upstream_listen)
        .await
        .map_err(|e| format!("sample upstream: cannot bind {}: {e}", args.upstream_listen))?;
    tokio::spawn(crate::sample::upstream::serve(upstream_listener, Arc::new(lines)));

    let config = ServeConfig {
        listen: args.listen,
        ops_listen: None,
        upstream: format!("http://{}", args.upstream_listen),
        ownership: OwnershipSourceConfig::File(inventory.clone()),
        ownership_cache: CacheSettings::default(),
        tls: None,
        admin_token_file: None,
        policies: args.policy.policies.clone(),
        schema: args.policy.schema.clone(),
        jwt_key: JwtKey::Hs256SecretFile(secret_file.clone()),
        jwt_issuer: None,
        jwt_audience: None,
        max_line_bytes: 1 << 20,
        max_connections: 1024,
        stream_limits: crate::server::StreamLimits::DEFAULT,
        header_timeout: crate::config::DEFAULT_HEADER_TIMEOUT,
        connect_timeout: Duration::from_secs(2),
        first_byte_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        reload_interval: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(5),
        log_format: LogFormat::Text,
    };
    let (state, listener) = super::serve::start(&config).await?;
    server::spawn_reloader(Arc::clone(&state), config.reload_interval);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::run(
        listener,
        state,
        async move {
            let _ = stop_rx.await;
        },
        config.shutdown_grace,
    ));

    let key = EncodingKey::from_secret(secret.as_bytes());
    let base = format!("http://{}", args.listen);
    println!(
        "\nsatgate demo: sidecar on {base}, sample SSI upstream on http://{}",
        args.upstream_listen
    );
    println!(
        "  {} SAT records about {} Devices; inventory {}; policies {}\n",
        args.records,
        market.devices.len(),
        inventory.display(),
        args.policy.policies.display()
    );

    let picks = [
        "Supplier A, import",
        "Network operator DNO1",
        "Gas transporter GT1",
        "Other user",
    ];
    let mut failures = 0;
    for user in market.users.iter().filter(|u| picks.contains(&u.name)) {
        let token = mint(&key, user)?;
        match fetch(&format!("{base}/sat/records"), &token).await {
            Ok((200, body)) => {
                let (own, titles) = count(&body);
                println!(
                    "{} (sub {}, role {}, party {}): {} records visible: {own} of its own in full, {titles} others' as titles only",
                    user.name, user.principal.user_id, user.principal.role, user.principal.party, own + titles
                );
            }
            Ok((status, body)) => {
                failures += 1;
                println!("{}: unexpected {status}: {}", user.name, String::from_utf8_lossy(&body));
            }
            Err(e) => {
                failures += 1;
                println!("{}: request failed: {e}", user.name);
            }
        }
        println!("  curl -s -H 'Authorization: Bearer {token}' '{base}/sat/records?limit=20'\n");
    }
    match fetch(&format!("{base}/sat/records"), "not-a-token").await {
        Ok((401, body)) => println!("A bad token is refused: 401 {}", String::from_utf8_lossy(&body)),
        other => {
            failures += 1;
            println!("A bad token should give 401, got {other:?}");
        }
    }
    println!("  curl -s -i -H 'Authorization: Bearer not-a-token' '{base}/sat/records'");
    println!("Metrics, health and readiness:");
    println!("  curl -s {base}/metrics\n  curl -s {base}/healthz\n  curl -s {base}/readyz");
    println!(
        "Tokens expire in one hour. Edit {} or {} and they reload within 2 s.",
        inventory.display(),
        args.policy.policies.display()
    );

    if failures > 0 {
        return Err(format!("{failures} example request(s) failed"));
    }
    if !args.exit_after_examples {
        println!("\nServing until Ctrl-C.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(());
    let _ = serving.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn mint(key: &EncodingKey, user: &SampleUser) -> Result<String, String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        + 3600;
    let claims = json!({"sub": user.principal.user_id.to_string(), "role": user.principal.role.as_str(), "party": user.principal.party, "exp": exp});
    encode(&Header::new(Algorithm::HS256), &claims, key).map_err(|e| e.to_string())
}

async fn fetch(url: &str, token: &str) -> Result<(u16, Bytes), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// (records with a payload, records with titles only).
fn count(body: &[u8]) -> (usize, usize) {
    let lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    lines.fold((0, 0), |(own, titles), l| {
        if l.windows(10).any(|w| w == b"\"payload\":") {
            (own + 1, titles)
        } else {
            (own, titles + 1)
        }
    })
}
