//! `satgate matrix`: who may see which class, over every role x record relation x Device type x
//! Party registration x message type: every input a policy can see (`decision::space`). Exit 1
//! when the load-time guard would refuse the set for what the matrix shows (a policy errors, or
//! names a User or Record) or when `--check FILE` is out of date.

use std::path::PathBuf;

use super::{CmdError, Exit, PolicyArgs};
use crate::review::matrix::Matrix;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Markdown,
    Csv,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: Format,
    /// Instead of printing, compare with FILE (a committed matrix) and exit 1 if it differs.
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    let engine = args.policy.load()?;
    let matrix = Matrix::build(&engine);
    let text = match args.format {
        Format::Markdown => matrix.markdown(),
        Format::Csv => matrix.csv(),
        Format::Json => matrix.json(),
    };
    let mut exit = Exit::Ok;
    for f in &matrix.findings {
        eprintln!("REFUSED AT LOAD: {f}");
        exit = Exit::Findings;
    }
    match &args.check {
        None => print!("{text}"),
        Some(file) => match std::fs::read_to_string(file) {
            Err(e) => return Err(CmdError::new(format!("{}: {e}", file.display()))),
            Ok(committed) if committed == text => println!("ok: {} is up to date", file.display()),
            Ok(_) => {
                eprintln!(
                    "{} is out of date: the policies now give a different matrix; regenerate it with \
                     `satgate matrix > {}` and review the change",
                    file.display(),
                    file.display()
                );
                exit = Exit::Findings;
            }
        },
    }
    Ok(exit)
}
