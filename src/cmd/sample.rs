//! `satgate sample`: write a generated market (inventory, Users, SAT records) to a directory, for
//! trying policies by hand, fixtures and benchmarks; `satgate sample serve` plays the SSI audit
//! endpoint with the same market's records (the pod test's SSI stand-in).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::{CmdError, Exit};
use crate::sample::Market;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub serve: Option<Serve>,
    /// Directory to write inventory.json, users.json and records.ndjson into.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub market: MarketArgs,
}

/// Which market: the same values give the same inventory, Users and records.
#[derive(clap::Args, Debug, Clone)]
pub struct MarketArgs {
    /// Number of homes (each with 3 to 6 Devices).
    #[arg(long, default_value_t = 20)]
    pub premises: usize,
    /// Number of SAT records.
    #[arg(long, default_value_t = 500)]
    pub records: u64,
    /// Seed: the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(clap::Subcommand, Debug)]
pub enum Serve {
    /// Serve the market's records as the SSI audit endpoint (`GET /sat/records`) until SIGTERM.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
        #[command(flatten)]
        market: MarketArgs,
        #[command(flatten)]
        inventory: InventoryServiceArgs,
    },
}

/// The market's inventory service too (`GET /devices/{deviceId}`), over HTTP or HTTPS.
#[derive(clap::Args, Debug, Clone)]
pub struct InventoryServiceArgs {
    /// Also serve the market's inventory service on this address.
    #[arg(long)]
    pub inventory_listen: Option<SocketAddr>,
    /// Serve it over TLS with this PEM certificate chain (needs --inventory-tls-key-file).
    #[arg(long, requires_all = ["inventory_listen", "inventory_tls_key_file"])]
    pub inventory_tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --inventory-tls-cert-file.
    #[arg(long, requires = "inventory_tls_cert_file")]
    pub inventory_tls_key_file: Option<PathBuf>,
    /// Require a client certificate of this PEM CA (mutual TLS).
    #[arg(long, requires = "inventory_tls_cert_file")]
    pub inventory_client_ca_file: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    match (&args.serve, &args.out) {
        (
            Some(Serve::Serve {
                listen,
                market,
                inventory,
            }),
            _,
        ) => serve(*listen, market, inventory),
        (None, Some(out)) => write(out, &args.market),
        (None, None) => Err(CmdError::new("--out DIR is required")),
    }
}

fn serve(listen: SocketAddr, args: &MarketArgs, inventory: &InventoryServiceArgs) -> Result<Exit, CmdError> {
    super::serve::init_logging(crate::config::LogFormat::Text, "info");
    let market = Market::generate(args.premises, args.seed);
    let lines: Vec<String> = market
        .ndjson(args.records, args.seed)
        .lines()
        .map(str::to_owned)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::new(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| CmdError::new(format!("listen: cannot bind {listen}: {e}")))?;
        tracing::info!(%listen, records = lines.len(), "sample SSI audit endpoint serving");
        if let Some(addr) = inventory.inventory_listen {
            let document: serde_json::Value = serde_json::from_str(&market.inventory_json)
                .map_err(|e| CmdError::new(format!("the generated inventory: {e}")))?;
            let acceptor = match (&inventory.inventory_tls_cert_file, &inventory.inventory_tls_key_file) {
                (Some(cert), Some(key)) => Some(
                    crate::sample::inventory_service::acceptor(
                        cert,
                        key,
                        inventory.inventory_client_ca_file.as_deref(),
                    )
                    .map_err(|e| CmdError::new(format!("inventory TLS: {e}")))?,
                ),
                _ => None,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CmdError::new(format!("inventory-listen: cannot bind {addr}: {e}")))?;
            tracing::info!(%addr, tls = acceptor.is_some(), "sample inventory service serving");
            let document = Arc::new(document);
            tokio::spawn(async move {
                match acceptor {
                    None => crate::sample::inventory_service::serve(listener, document).await,
                    Some(a) => crate::sample::inventory_service::serve_tls(listener, document, a).await,
                }
            });
        }
        tokio::select! {
            () = crate::sample::upstream::serve(listener, Arc::new(lines)) => {}
            () = super::serve::shutdown_signal() => tracing::info!("sample SSI audit endpoint stopping"),
        }
        Ok(Exit::Ok)
    })
}

fn write(out: &std::path::Path, args: &MarketArgs) -> Result<Exit, CmdError> {
    let market = Market::generate(args.premises, args.seed);
    let users: Vec<_> = market
        .users
        .iter()
        .map(|u| json!({"name": u.name, "sub": u.principal.user_id.to_string(), "role": u.principal.role.as_str(), "party": u.principal.party}))
        .collect();
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    std::fs::create_dir_all(out)
        .map_err(|e| format!("{}: {e}", out.display()))
        .and_then(|()| write("inventory.json", market.inventory_json.clone() + "\n"))
        .and_then(|()| {
            write(
                "users.json",
                serde_json::to_string_pretty(&users).unwrap_or_default() + "\n",
            )
        })
        .and_then(|()| write("records.ndjson", market.ndjson(args.records, args.seed)))
        .map_err(CmdError::new)?;
    println!(
        "wrote inventory.json, users.json and records.ndjson to {}",
        out.display()
    );
    Ok(Exit::Ok)
}
