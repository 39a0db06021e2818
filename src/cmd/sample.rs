//! `satgate sample`: write a generated market (inventory, Users, SAT records) to a directory, for
//! trying policies by hand, fixtures and benchmarks.

use std::path::PathBuf;

use serde_json::json;

use super::{CmdError, Exit};
use crate::sample::Market;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write inventory.json, users.json and records.ndjson into.
    #[arg(long)]
    pub out: PathBuf,
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

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let market = Market::generate(args.premises, args.seed);
    let users: Vec<_> = market
        .users
        .iter()
        .map(|u| json!({"name": u.name, "sub": u.principal.user_id.to_string(), "role": u.principal.role.as_str(), "party": u.principal.party}))
        .collect();
    let write = |name: &str, text: String| {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("{}: {e}", args.out.display()))
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
        args.out.display()
    );
    Ok(Exit::Ok)
}
