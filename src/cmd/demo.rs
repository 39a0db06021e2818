//! `satgate demo`: a sample SSI upstream and the sidecar in front of it, with example requests
//! made and explained, and ready-to-paste `curl` commands with freshly minted tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use super::{CmdError, Exit, PolicyArgs};
use crate::config::{defaults, JwtKey, LogFormat, OwnershipSourceConfig, ServeConfig};
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

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    // Quiet by default so the walkthrough reads cleanly; RUST_LOG=info shows the access log.
    super::serve::init_logging(LogFormat::Text, "warn");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::new(format!("cannot start the runtime: {e}")))?;
    rt.block_on(demo(args))?;
    Ok(Exit::Ok)
}

/// What the demo sets up: a sample market on disk and the HS256 key its tokens are signed with.
struct Setup {
    market: Market,
    dir: PathBuf,
    inventory: PathBuf,
    secret: String,
    secret_file: PathBuf,
}

async fn demo(args: &Args) -> Result<(), CmdError> {
    let setup = write_market()?;
    let lines: Vec<String> = setup
        .market
        .ndjson(args.records, 2026)
        .lines()
        .map(str::to_owned)
        .collect();
    let upstream_listener = tokio::net::TcpListener::bind(args.upstream_listen)
        .await
        .map_err(|e| format!("sample upstream: cannot bind {}: {e}", args.upstream_listen))?;
    tokio::spawn(crate::sample::upstream::serve(upstream_listener, Arc::new(lines)));

    let mut config = ServeConfig::new(
        args.listen,
        format!("http://{}", args.upstream_listen),
        OwnershipSourceConfig::File(setup.inventory.clone()),
        JwtKey::Hs256SecretFile(setup.secret_file.clone()),
    );
    config.policies = args.policy.policies.clone();
    config.schema = args.policy.schema.clone();
    config.shutdown_grace = Duration::from_secs(5);
    let (state, listeners) = super::serve::start(&config).await?;
    server::spawn_reloader(Arc::clone(&state), config.reload_interval);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::run(
        listeners,
        state,
        async move {
            let _ = stop_rx.await;
        },
        config.shutdown_grace,
    ));

    println!(
        "\nsatgate demo: sidecar on http://{}, sample SSI upstream on http://{}",
        args.listen, args.upstream_listen
    );
    println!(
        "  {} SAT records about {} Devices; inventory {}; policies {}\n",
        args.records,
        setup.market.devices.len(),
        setup.inventory.display(),
        args.policy.policies.display()
    );
    let failures = walkthrough(&setup, &format!("http://{}", args.listen)).await?;
    println!(
        "Tokens expire in one hour. Edit {} or {} and they reload within {}.",
        setup.inventory.display(),
        args.policy.policies.display(),
        defaults::show(2 * config.reload_interval)
    );
    if failures > 0 {
        return Err(format!("{failures} example request(s) failed").into());
    }
    if !args.exit_after_examples {
        println!("\nServing until Ctrl-C.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(());
    let _ = serving.await;
    let _ = std::fs::remove_dir_all(&setup.dir);
    Ok(())
}

/// A generated market's inventory and a fresh random HS256 secret, in a temporary directory.
fn write_market() -> Result<Setup, CmdError> {
    let market = Market::generate(8, 2026);
    let dir = std::env::temp_dir().join(format!("satgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rng = Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let secret: String = (0..48)
        .map(|_| char::from(b"0123456789abcdef"[rng.below(16)]))
        .collect();
    let (inventory, secret_file) = (dir.join("inventory.json"), dir.join("hs256.secret"));
    std::fs::write(&inventory, &market.inventory_json).map_err(|e| format!("{}: {e}", inventory.display()))?;
    std::fs::write(&secret_file, &secret).map_err(|e| format!("{}: {e}", secret_file.display()))?;
    Ok(Setup {
        market,
        dir,
        inventory,
        secret,
        secret_file,
    })
}

/// The example requests, as four Users and with a bad token, each with a `curl` to repeat it.
/// Returns how many did not answer as they should.
async fn walkthrough(setup: &Setup, base: &str) -> Result<usize, CmdError> {
    let key = EncodingKey::from_secret(setup.secret.as_bytes());
    let picks = [
        "Supplier A, import",
        "Network operator DNO1",
        "Gas transporter GT1",
        "Other user",
    ];
    let mut failures = 0;
    for user in setup.market.users.iter().filter(|u| picks.contains(&u.name)) {
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
    Ok(failures)
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
