//! `satgate validate`: parse and strictly validate the policies against the schema.

use super::{Exit, PolicyArgs};
use crate::decision::{LoadError, PolicyEngine};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(args: &Args) -> Exit {
    match PolicyEngine::load(&args.policy.policies, &args.policy.schema) {
        Ok(engine) => {
            for w in &engine.loaded().warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "ok: {} policies in {} valid against {}",
                engine.policies().policies().count(),
                args.policy.policies.display(),
                args.policy.schema.display()
            );
            Exit::Ok
        }
        Err(e @ LoadError::Invalid(_)) => {
            eprintln!("{e}");
            Exit::Findings
        }
        Err(e @ LoadError::Io { .. }) => {
            eprintln!("error: {e}");
            Exit::Error
        }
    }
}
