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

/// `println!` for the demo's story: a closed standard output (`satgate demo | head`) ends the
/// demo quietly, as SIGPIPE ends the other commands, instead of a panic. (The demo serves on
/// sockets, so it keeps SIGPIPE ignored: see [`super::end_quietly_on_a_closed_pipe`].)
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

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
    /// Write the decision log to this file (as `serve --decision-log`), for `satgate audit`.
    #[arg(long)]
    pub decision_log: Option<PathBuf>,
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
    let mut text = setup.market.ndjson(args.records, 2026);
    // One erratic Device: a burst of records on the last day, for the activity example to find.
    if let Some(device) = setup.burst_device() {
        text.push_str(&setup.market.burst(device, BURST_DAY, BURST_RECORDS, args.records, 7));
    }
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
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
    config.decision_log = args.decision_log.clone();
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

    out!(
        "\nsatgate demo: sidecar on http://{}, sample SSI upstream on http://{}",
        args.listen,
        args.upstream_listen
    );
    out!(
        "  {} SAT records about {} Devices over four weeks of November 2026, and a burst of {} about one Device on day {}; inventory {}; policies {}\n",
        args.records,
        setup.market.devices.len(),
        BURST_RECORDS,
        BURST_DAY,
        setup.inventory.display(),
        args.policy.policies.display()
    );
    let failures = walkthrough(&setup, &format!("http://{}", args.listen)).await?;
    out!(
        "Tokens expire in one hour. Edit {} or {} and they reload within {}.",
        setup.inventory.display(),
        args.policy.policies.display(),
        defaults::show(2 * config.reload_interval)
    );
    if failures > 0 {
        return Err(format!("{failures} example request(s) failed").into());
    }
    if !args.exit_after_examples {
        out!("\nServing until Ctrl-C.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(());
    let _ = serving.await;
    let _ = std::fs::remove_dir_all(&setup.dir);
    Ok(())
}

/// The erratic Device's burst: how many records, on which day of November 2026.
const BURST_RECORDS: u64 = 60;
const BURST_DAY: u64 = 28;

/// The queries the walkthrough makes (and prints as `curl` lines).
const WEEK: &str = "from=2026-11-01&to=2026-11-08";
const MONTH: &str = "from=2026-11-01&to=2026-11-29";

impl Setup {
    /// The Device the burst is about: one whose owners include the Supplier the activity example
    /// asks as.
    fn burst_device(&self) -> Option<&crate::sample::SampleDevice> {
        let supplier = self.market.users.iter().position(|u| u.name == SUPPLIER)?;
        self.market.devices.iter().find(|d| d.owners.contains(&supplier))
    }
}

const SUPPLIER: &str = "Supplier A, import";

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

/// The example requests, as four Users and with a bad token, each with a `curl` to repeat it:
/// a week of records, what paging does through the filter, the activity view and CSV. Returns
/// how many did not answer as they should.
async fn walkthrough(setup: &Setup, base: &str) -> Result<usize, CmdError> {
    let key = EncodingKey::from_secret(setup.secret.as_bytes());
    let picks = [SUPPLIER, "Network operator DNO1", "Gas transporter GT1", "Other user"];
    let mut failures = 0;
    let mut check = |what: &str, answer: Result<(u16, Bytes), String>| -> Option<Bytes> {
        match answer {
            Ok((200, body)) => Some(body),
            Ok((status, body)) => {
                failures += 1;
                out!("{what}: unexpected {status}: {}", String::from_utf8_lossy(&body));
                None
            }
            Err(e) => {
                failures += 1;
                out!("{what}: request failed: {e}");
                None
            }
        }
    };
    out!("Records of the first week of November ({WEEK}), as four Users:\n");
    let mut supplier_token = None;
    for user in setup.market.users.iter().filter(|u| picks.contains(&u.name)) {
        let token = mint(&key, user)?;
        let url = format!("{base}/sat/records?{WEEK}");
        if let Some(body) = check(user.name, fetch(&url, &token, None).await) {
            let (own, titles) = count(&body);
            out!(
                "{} (sub {}, role {}, party {}): {} records visible: {own} of its own in full, {titles} others' as titles only",
                user.name, user.principal.user_id, user.principal.role, user.principal.party, own + titles
            );
        }
        out!("  curl -s -H 'Authorization: Bearer {token}' '{url}'\n");
        if user.name == SUPPLIER {
            supplier_token = Some(token);
        }
    }
    let Some(token) = supplier_token else {
        return Err("the sample market has no Supplier A".into());
    };

    // Paging happens upstream, before the filter: say so with a real answer.
    let url = format!("{base}/sat/records?limit=20");
    if let Some(body) = check("paging", fetch(&url, &token, None).await) {
        let (own, titles) = count(&body);
        out!(
            "Paging: the SSI applies `limit` before satgate filters, so `limit=20` as {SUPPLIER} gives {} record(s): \
             the visible part of the upstream's first 20. Ask for a Device and a date range instead; \
             /sat/activity gives totals.\n  curl -s -H 'Authorization: Bearer {token}' '{url}'\n",
            own + titles
        );
    }

    let url = format!("{base}/sat/activity?{MONTH}");
    if let Some(body) = check("activity", fetch(&url, &token, None).await) {
        print_activity(&body);
    }
    out!("  curl -s -H 'Authorization: Bearer {token}' '{url}'");
    if let Some(body) = check("activity as CSV", fetch(&url, &token, Some("text/csv")).await) {
        let rows = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        out!("The same as CSV ({rows} rows with the header; `Accept: text/csv` works on /sat/records too):");
    }
    out!("  curl -s -H 'Accept: text/csv' -H 'Authorization: Bearer {token}' '{url}'");
    // A browser cannot send the Bearer token by itself: the page is fetched here and saved, and
    // its file URL printed, beside the curl line that fetches it the same way.
    if let Some(body) = check("activity page", fetch(&url, &token, Some("text/html")).await) {
        let page = setup.dir.join("activity.html");
        match std::fs::write(&page, &body) {
            Ok(()) => out!(
                "The same as a page for a browser (`Accept: text/html`), saved to open: file://{}",
                page.display()
            ),
            Err(e) => out!("activity page: cannot save {}: {e}", page.display()),
        }
    }
    out!("  curl -s -H 'Accept: text/html' -H 'Authorization: Bearer {token}' '{url}'");
    if let Some(device) = setup.burst_device() {
        let url = format!("{base}/sat/records?deviceId={}&from=2026-11-{BURST_DAY:02}", device.id);
        if let Some(body) = check("one Device", fetch(&url, &token, None).await) {
            let (own, titles) = count(&body);
            out!(
                "That Device's records on day {BURST_DAY}: {} visible to {SUPPLIER}:",
                own + titles
            );
        }
        out!("  curl -s -H 'Authorization: Bearer {token}' '{url}'\n");
    }

    match fetch(&format!("{base}/sat/records"), "not-a-token", None).await {
        Ok((401, body)) => out!("A bad token is refused: 401 {}", String::from_utf8_lossy(&body)),
        other => {
            failures += 1;
            out!("A bad token should give 401, got {other:?}");
        }
    }
    out!("  curl -s -i -H 'Authorization: Bearer not-a-token' '{base}/sat/records'");
    out!("Metrics, health and readiness:");
    out!("  curl -s {base}/metrics\n  curl -s {base}/healthz\n  curl -s {base}/readyz");
    Ok(failures)
}

/// The first lines of an activity summary: totals, then the most unusual Devices.
fn print_activity(body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        out!("activity: the answer is not JSON");
        return;
    };
    out!(
        "Activity as {SUPPLIER} over four weeks ({MONTH}): {} records about {} Devices, {} flagged for more activity than usual; the top three:",
        v["records"],
        v["devices"].as_array().map_or(0, Vec::len),
        v["devicesFlagged"]
    );
    for d in v["devices"].as_array().into_iter().flatten().take(3) {
        let flag = match d["unusual"]["days"].as_array().and_then(|days| days.last()) {
            Some(day) => format!(
                ", flagged on {} ({} records; a typical day has {}, the threshold is {})",
                day["day"].as_str().unwrap_or("?"),
                day["records"],
                d["unusual"]["median"],
                d["unusual"]["threshold"]
            ),
            None => String::new(),
        };
        out!(
            "  {}: {} records{flag}",
            d["deviceId"].as_str().unwrap_or("?"),
            d["records"]
        );
    }
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

async fn fetch(url: &str, token: &str, accept: Option<&str>) -> Result<(u16, Bytes), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = http::Request::get(url).header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(accept) = accept {
        req = req.header(http::header::ACCEPT, accept);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
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
