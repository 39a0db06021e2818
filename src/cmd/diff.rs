//! `satgate diff OLD_DIR NEW_DIR`: what a policy change would newly allow or deny, over every
//! cell of the access matrix and optionally over a corpus of records (see
//! [`crate::review::diff`]). `--fail-on` decides which changes are findings (exit 1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CmdError, Exit, PolicyArgs};
use crate::decision::space::classes_label;
use crate::decision::PolicyEngine;
use crate::ownership::Inventory;
use crate::review::diff::{self, CellChange};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Anything newly visible to anyone.
    Widen,
    /// Identity, metadata or payload newly visible to someone other than the record's own User.
    Payload,
    /// Never fail on findings (report only).
    None,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The policy directory before the change.
    pub old: PathBuf,
    /// The policy directory after the change.
    pub new: PathBuf,
    /// Cedar schema file (both sides).
    #[arg(long, env = "SATGATE_SCHEMA", default_value = "schemas/sat.cedarschema")]
    pub schema: PathBuf,
    /// NDJSON SAT records to replay through both policy sets (needs --inventory).
    #[arg(long, requires = "inventory")]
    pub corpus: Option<PathBuf>,
    /// Inventory JSON for the corpus.
    #[arg(long, requires = "corpus")]
    pub inventory: Option<PathBuf>,
    /// Which changes make the command fail (exit 1).
    #[arg(long, value_enum, default_value = "widen")]
    pub fail_on: FailOn,
    /// Most change lines printed per section.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let side = |dir: &PathBuf| {
        PolicyArgs {
            policies: dir.clone(),
            schema: args.schema.clone(),
        }
        .load()
        .map(Arc::new)
    };
    let (old, new) = (side(&args.old)?, side(&args.new)?);

    let (changes, findings) = diff::matrix_changes(&old, &new);
    for f in &findings {
        eprintln!("warning: the matrix part of this diff may be incomplete: {f}");
    }
    let widened: Vec<&CellChange> = changes
        .iter()
        .filter(|c| c.added() != crate::model::Classes::NONE)
        .collect();
    let narrowed: Vec<&CellChange> = changes
        .iter()
        .filter(|c| c.removed() != crate::model::Classes::NONE)
        .collect();
    let leaks = widened.iter().filter(|c| c.leaks_beyond_title()).count();
    print_matrix_changes(changes.len(), &widened, &narrowed, leaks, args.limit);

    let (corpus_widens, corpus_leaks) = match (&args.corpus, &args.inventory) {
        (Some(corpus), Some(inventory)) => corpus_report(&old, &new, corpus, inventory)?,
        _ => (false, false),
    };
    let fail = match args.fail_on {
        FailOn::Widen => !widened.is_empty() || corpus_widens,
        FailOn::Payload => leaks > 0 || corpus_leaks,
        FailOn::None => false,
    };
    if !fail {
        return Ok(Exit::Ok);
    }
    let what = if matches!(args.fail_on, FailOn::Payload) {
        "give identity, metadata or payload to someone other than the record's own User".to_owned()
    } else {
        format!(
            "make more visible, e.g. {}",
            widened.first().map_or("in the corpus".to_owned(), |c| format!(
                "{}: {}",
                c.cell.describe(),
                classes_label(c.new)
            ))
        )
    };
    let flag = match args.fail_on {
        FailOn::Widen => "widen",
        FailOn::Payload => "payload",
        FailOn::None => "none",
    };
    eprintln!("FAIL (--fail-on {flag}): the new policies {what}");
    Ok(Exit::Findings)
}

fn print_matrix_changes(cells: usize, widened: &[&CellChange], narrowed: &[&CellChange], leaks: usize, limit: usize) {
    println!("access matrix: {cells} of its cells change");
    println!("\nnewly allowed ({} cells, {leaks} give identity, metadata or payload to someone other than the record's User):", widened.len());
    for line in diff::describe_changes(widened, limit) {
        println!("  + {line}");
    }
    println!("\nnewly denied ({} cells):", narrowed.len());
    for line in diff::describe_changes(narrowed, limit) {
        println!("  - {line}");
    }
}

/// Replays the corpus under both policy sets and prints what changes per role. Returns whether
/// anything became visible, and whether identity, metadata or payload of others' records did.
fn corpus_report(
    old: &Arc<PolicyEngine>,
    new: &Arc<PolicyEngine>,
    corpus: &Path,
    inventory: &Path,
) -> Result<(bool, bool), CmdError> {
    let records = std::fs::read(corpus).map_err(|e| CmdError::new(format!("{}: {e}", corpus.display())))?;
    let inventory = Inventory::read(inventory).map_err(CmdError::new)?.inventory;
    let per_role = diff::corpus_changes(old, new, &records, &inventory);
    println!(
        "\ncorpus {} (each (userId, userRole) in it, acting for each Party in the inventory):",
        corpus.display()
    );
    let (mut widens, mut leaks) = (false, false);
    for (role, s) in &per_role {
        println!(
            "  {role}: {} principals; records newly visible {}, newly hidden {}; fields newly visible {} ({} identity/metadata/payload of others' records), newly hidden {}",
            s.principals,
            s.records_newly_visible,
            s.records_newly_hidden,
            s.fields_newly_visible,
            s.sensitive_fields_newly_visible,
            s.fields_newly_hidden
        );
        for (label, examples) in [("visible", &s.examples_visible), ("hidden", &s.examples_hidden)] {
            if !examples.is_empty() {
                let list: Vec<String> = examples.iter().cloned().collect();
                println!("    e.g. newly {label}: {}", list.join(", "));
            }
        }
        widens |= s.fields_newly_visible > 0;
        leaks |= s.sensitive_fields_newly_visible > 0;
    }
    Ok((widens, leaks))
}
