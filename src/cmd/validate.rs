//! `satgate validate`: parse and strictly validate the policies against the schema, then check
//! them with the load-time guard, so a set that passes is one `serve` admits.

use super::{CmdError, Exit, PolicyArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let engine = args.policy.load_guarded()?;
    for w in &engine.loaded().warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "ok: {} policies in {} valid against {} and within the invariants",
        engine.policies().policies().count(),
        args.policy.policies.display(),
        args.policy.schema.display()
    );
    Ok(Exit::Ok)
}
