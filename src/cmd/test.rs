//! `satgate test [PATHS...]`: checks the policies with the load-time guard over the whole
//! decision space, then runs policy test files (see [`crate::review::cases`]) against them.
//! Exit 1 when the guard or a case fails, 2 when a file cannot be read or parsed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::{CmdError, Exit, PolicyArgs};
use crate::review::{cases, junit};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per case and totals.
    Human,
    /// JUnit XML on stdout.
    Junit,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Test files or directories of `*.json` test files. The default is `policies/tests`
    /// relative to the working directory, whatever `--policies` says, so the shipped cases can
    /// be run against another policy set.
    #[arg(default_value = "policies/tests")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let engine = Arc::new(args.policy.load()?);
    let files =
        cases::collect_files(&args.paths).map_err(|e| CmdError::new(format!("{}: {}", e.file.display(), e.message)))?;
    if files.is_empty() {
        return Err(CmdError::new("no test files (*.json) found"));
    }
    // The first case is the guard over the whole decision space: a set `serve` would refuse
    // fails here too, whatever the example cases say.
    let guard = crate::decision::guard::invariants(&args.policy.policies.join("invariants"))
        .and_then(|invariants| crate::decision::guard::check(&engine, &invariants));
    let mut results = vec![cases::CaseResult {
        file: args.policy.policies.clone(),
        name: "load-time guard (every cell of the decision space)".into(),
        failure: guard.err().map(|e| e.to_string()),
    }];
    let mut file_errors = Vec::new();
    for file in &files {
        match cases::run_file(&engine, file) {
            Ok(r) => results.extend(r),
            Err(e) => file_errors.push(e),
        }
    }
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    let mut stdout = std::io::stdout().lock();
    let written = match args.format {
        Format::Junit => stdout.write_all(junit::render(&results, &file_errors).as_bytes()),
        Format::Human => {
            let mut text = String::new();
            for r in &results {
                match &r.failure {
                    None => text.push_str(&format!("PASS {}: {}\n", r.file.display(), r.name)),
                    Some(why) => text.push_str(&format!("FAIL {}: {}: {why}\n", r.file.display(), r.name)),
                }
            }
            for e in &file_errors {
                text.push_str(&format!("ERROR {}: {}\n", e.file.display(), e.message));
            }
            text.push_str(&format!(
                "{} cases: {} passed, {failed} failed; {} files, {} unreadable\n",
                results.len(),
                results.len() - failed,
                files.len(),
                file_errors.len()
            ));
            stdout.write_all(text.as_bytes())
        }
    };
    written
        .and_then(|()| stdout.flush())
        .map_err(|e| CmdError::new(format!("writing output: {e}")))?;
    if !file_errors.is_empty() {
        let unreadable: Vec<String> = file_errors
            .iter()
            .map(|e| format!("{}: {}", e.file.display(), e.message))
            .collect();
        return Err(CmdError::new(unreadable.join("\nerror: ")));
    }
    Ok(if failed > 0 { Exit::Findings } else { Exit::Ok })
}
