//! `satgate diff OLD_DIR NEW_DIR`: what a policy change would newly allow or deny, over every
//! cell of the access matrix and optionally over a corpus of records (see
//! [`crate::review::diff`]). `--fail-on` decides which changes are findings (exit 1).

use std::path::PathBuf;
use std::sync::Arc;

use super::matrix::load;
use super::{Exit, PolicyArgs};
use crate::ownership::Inventory;
use crate::review::diff::{self, CellChange};
use crate::review::space::classes_label;

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

pub fn run(args: &Args) -> Exit {
    let side = |dir: &PathBuf| PolicyArgs {
        policies: dir.clone(),
        schema: args.schema.clone(),
    };
    let old = match load(&side(&args.old)) {
        Ok(e) => Arc::new(e),
        Err(code) => return code,
    };
    let new = match load(&side(&args.new)) {
        Ok(e) => Arc::new(e),
        Err(code) => return code,
    };

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

    println!("access matrix: {} of its cells change", changes.len());
    println!("\nnewly allowed ({} cells, {leaks} give identity, metadata or payload to someone other than the record's User):", widened.len());
    for line in diff::describe_changes(&widened, args.limit) {
        println!("  + {line}");
    }
    println!("\nnewly denied ({} cells):", narrowed.len());
    for line in diff::describe_changes(&narrowed, args.limit) {
        println!("  - {line}");
    }

    let mut corpus_widens = false;
    let mut corpus_leaks = false;
    if let (Some(corpus), Some(inventory)) = (&args.corpus, &args.inventory) {
        let records = match std::fs::read(corpus) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}: {e}", corpus.display());
                return Exit::Error;
            }
        };
        let inventory = match std::fs::read_to_string(inventory)
            .map_err(|e| e.to_string())
            .and_then(|t| Inventory::parse(&t).map_err(|e| e.to_string()))
        {
            Ok((i, _)) => i,
            Err(e) => {
                eprintln!("error: {}: {e}", inventory.display());
                return Exit::Error;
            }
        };
        let per_role = diff::corpus_changes(&old, &new, &records, &inventory);
        println!(
            "\ncorpus {} (each (userId, userRole) in it, acting for each Party in the inventory):",
            corpus.display()
        );
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
            if !s.examples_visible.is_empty() {
                println!(
                    "    e.g. newly visible: {}",
                    s.examples_visible.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            if !s.examples_hidden.is_empty() {
                println!(
                    "    e.g. newly hidden: {}",
                    s.examples_hidden.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            corpus_widens |= s.fields_newly_visible > 0;
            corpus_leaks |= s.sensitive_fields_newly_visible > 0;
        }
    }

    let fail = match args.fail_on {
        FailOn::Widen => !widened.is_empty() || corpus_widens,
        FailOn::Payload => leaks > 0 || corpus_leaks,
        FailOn::None => false,
    };
    if fail {
        eprintln!(
            "FAIL (--fail-on {}): the new policies {}",
            match args.fail_on {
                FailOn::Widen => "widen",
                FailOn::Payload => "payload",
                FailOn::None => "none",
            },
            if matches!(args.fail_on, FailOn::Payload) {
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
            }
        );
        Exit::Findings
    } else {
        Exit::Ok
    }
}
