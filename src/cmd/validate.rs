//! `satgate validate`: parse and strictly validate the policies against the schema.

use super::{CmdError, Exit, PolicyArgs};
use crate::decision::PolicyEngine;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let engine = PolicyEngine::load(&args.policy.policies, &args.policy.schema)?;
    for w in &engine.loaded().warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "ok: {} policies in {} valid against {}",
        engine.policies().policies().count(),
        args.policy.policies.display(),
        args.policy.schema.display()
    );
    Ok(Exit::Ok)
}
