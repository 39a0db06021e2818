//! `satgate verify`: symbolic proofs over every request (see [`crate::review::symbolic`]): the
//! policies stay within each invariant, no policy ever errors, and with `--against OLD_DIR`
//! whether the change widens. Exit 1 on a refuted proof or a widening, 2 when proofs cannot run.

use std::path::PathBuf;

use super::{CmdError, Exit, PolicyArgs};
use crate::review::symbolic::{self, Relation};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Compare with the policies in this directory (same schema): exit 1 if the new ones widen.
    #[arg(long, value_name = "OLD_DIR")]
    pub against: Option<PathBuf>,
    /// Invariants: a directory of `*.cedar` files (one invariant each) or one such file.
    #[arg(long, value_name = "FILE", default_value = "policies/invariants")]
    pub invariants: PathBuf,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let engine = args.policy.load()?;
    let old = match &args.against {
        None => None,
        Some(dir) => Some(
            PolicyArgs {
                policies: dir.clone(),
                schema: args.policy.schema.clone(),
            }
            .load()?,
        ),
    };
    let invariants = if args.invariants.is_file() {
        let dir = args.invariants.parent().map(PathBuf::from).unwrap_or_default();
        symbolic::load_invariants(&dir, &args.policy.schema).map(|all| {
            let stem = args.invariants.file_stem().map(|s| s.to_string_lossy().into_owned());
            all.into_iter().filter(|i| Some(&i.name) == stem.as_ref()).collect()
        })
    } else {
        symbolic::load_invariants(&args.invariants, &args.policy.schema)
    };
    let invariants = invariants.map_err(CmdError::new)?;
    println!("policy set: {}", engine.identity());
    let report = symbolic::verify(
        engine.policies(),
        engine.schema(),
        &invariants,
        old.as_ref().map(|o| o.policies()),
    )
    .map_err(CmdError::new)?;
    print_report(&report);
    Ok(if report.failed() { Exit::Findings } else { Exit::Ok })
}

fn print_report(report: &symbolic::Report) {
    println!("solver started in {:.1} ms", ms(report.solver_start));
    for c in &report.checks {
        match &c.counterexample {
            None => println!("PROVED  {} [{}] ({:.1} ms)", c.name, c.action, ms(c.elapsed)),
            Some(cex) => {
                println!("FAILED  {} [{}] ({:.1} ms)", c.name, c.action, ms(c.elapsed));
                println!("        counterexample: {cex}");
            }
        }
    }
    for c in &report.comparisons {
        let words = match c.relation {
            Relation::Equivalent => "equivalent to the old policies",
            Relation::Narrows => "narrower: the new policies allow less (new implies old)",
            Relation::Widens => "WIDER: the new policies allow more (old implies new, not the reverse)",
            Relation::Incomparable => "CHANGED BOTH WAYS: each allows something the other does not",
        };
        println!("COMPARE [{}] {words} ({:.1} ms)", c.action, ms(c.elapsed));
        if let Some(cex) = &c.counterexample {
            println!("        newly allowed, e.g.: {cex}");
        }
    }
    let total: f64 = report.checks.iter().map(|c| ms(c.elapsed)).sum::<f64>()
        + report.comparisons.iter().map(|c| ms(c.elapsed)).sum::<f64>();
    let failed = report.checks.iter().filter(|c| c.counterexample.is_some()).count();
    println!(
        "{} checks, {failed} failed; {} comparisons; solver time {total:.1} ms",
        report.checks.len(),
        report.comparisons.len()
    );
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
