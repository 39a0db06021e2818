//! One module per subcommand, each with its own arguments and a `run` returning an exit code.

pub mod activity;
pub mod audit;
pub mod bundle;
pub mod demo;
pub mod diff;
pub mod explain;
pub mod ext_proc;
pub mod filter;
pub mod matrix;
pub mod sample;
pub mod serve;
pub mod test;
pub mod validate;
pub mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Why a command stopped short. Commands return it; [`run`] prints it, once, and picks the exit
/// code.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// Usage, configuration or I/O (exit code 2), printed as `error: ...`.
    #[error("{0}")]
    Failed(String),
    /// The input itself is the finding (invalid policies: exit code 1), printed as it is.
    #[error("{0}")]
    Findings(String),
}

impl CmdError {
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }
}

impl From<String> for CmdError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

impl From<&str> for CmdError {
    fn from(message: &str) -> Self {
        Self::Failed(message.to_owned())
    }
}

impl From<serve::StartError> for CmdError {
    fn from(e: serve::StartError) -> Self {
        Self::new(e)
    }
}

impl From<crate::decision::LoadError> for CmdError {
    fn from(e: crate::decision::LoadError) -> Self {
        match e {
            crate::decision::LoadError::Invalid(_) => Self::Findings(e.to_string()),
            crate::decision::LoadError::Io { .. } | crate::decision::LoadError::Bundle(_) => {
                Self::Failed(e.to_string())
            }
        }
    }
}

/// Exit codes shared by every command (docs/contract.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Pass.
    Ok = 0,
    /// Findings: invalid policies, failed tests, a widening change, ...
    Findings = 1,
    /// Usage, configuration or I/O error.
    Error = 2,
}

#[derive(Parser, Debug)]
#[command(
    name = "satgate",
    version,
    about = "Policy-as-code authorization sidecar for the DCC Service Audit Trail"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check the policies against the schema (strict validation).
    Validate(validate::Args),
    /// Redact an NDJSON SAT export offline, as one principal would see it.
    Filter(filter::Args),
    /// Summarise an NDJSON SAT export per Device, as one principal would see it, flagging
    /// Devices with more activity than usual.
    Activity(activity::Args),
    /// Answer from decision logs: who was shown titles about a Device, or what a User was shown.
    Audit(audit::Args),
    /// Run a sample SSI upstream with the sidecar in front of it, and show example requests.
    Demo(demo::Args),
    /// Run the sidecar in front of the SSI audit endpoint.
    Serve(Box<crate::config::ServeArgs>),
    /// Filter inside Envoy: serve Envoy's external processing API (ext_proc) with the same
    /// configuration as `serve`; --listen is the gRPC address (loopback only).
    ExtProc(Box<crate::config::ServeArgs>),
    /// Write a generated sample market (inventory, Users, SAT records) to a directory.
    Sample(sample::Args),
    /// Print who may see which class, over the whole decision space the policies can see.
    Matrix(matrix::Args),
    /// Run policy test files (Cedar run-tests format or satgate's record-level format).
    Test(test::Args),
    /// Show what a policy change would newly allow or deny.
    Diff(diff::Args),
    /// Prove invariants over every request with the Cedar symbolic compiler (needs cvc5).
    Verify(verify::Args),
    /// Explain the decision for one principal, one record and an inventory.
    Explain(explain::Args),
    /// Build, sign and check signed policy bundles.
    #[command(subcommand)]
    Bundle(bundle::Command),
}

/// The policy set every command works on.
#[derive(clap::Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Directory of `*.cedar` policy files.
    #[arg(long, env = "SATGATE_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// Cedar schema file.
    #[arg(long, env = "SATGATE_SCHEMA", default_value = "schemas/sat.cedarschema")]
    pub schema: PathBuf,
}

impl PolicyArgs {
    /// The policy set, strictly validated; invalid policies are the command's findings.
    pub fn load(&self) -> Result<crate::decision::PolicyEngine, CmdError> {
        Ok(crate::decision::PolicyEngine::load(&self.policies, &self.schema)?)
    }

    /// The policy set as `serve` would admit it: also checked by the load-time guard against the
    /// built-in invariants and `<policies>/invariants/`, over the whole decision space.
    pub fn load_guarded(&self) -> Result<crate::decision::PolicyEngine, CmdError> {
        use crate::decision::guard;
        let engine = self.load()?;
        guard::check(&engine, &guard::invariants(&self.policies.join("invariants"))?)?;
        Ok(engine)
    }
}

/// The principal a command acts as, given on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct PrincipalArgs {
    /// The principal's User ID (EUI-64).
    #[arg(long)]
    pub sub: String,
    /// The principal's role (IS, ES, GS, ED, GT, RSA, OU).
    #[arg(long)]
    pub role: String,
    /// The principal's Party id.
    #[arg(long)]
    pub party: String,
}

impl PrincipalArgs {
    pub fn principal(&self) -> Result<crate::model::Principal, crate::model::InvalidValue> {
        crate::model::Principal::from_claims(&self.sub, &self.role, &self.party)
    }
}

impl Command {
    /// Whether the command serves on sockets (its output is a log, not something to pipe).
    pub fn serves(&self) -> bool {
        matches!(self, Command::Serve(_) | Command::ExtProc(_) | Command::Demo(_))
    }
}

/// Gives SIGPIPE back its default action, as every Unix tool has it: `satgate diff ... | head`
/// then ends when `head` does, silently, instead of panicking in `println!` on EPIPE (Rust
/// ignores SIGPIPE by default). Not for the serving commands: a peer closing a socket must never
/// end the process (the demo handles its own closed stdout).
pub fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called once at start-up, before any thread is spawned; `signal` with SIG_DFL
    // installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs the command; an error is printed here, once, and exits 2.
pub fn run(cli: Cli) -> Exit {
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Filter(args) => filter::run(&args),
        Command::Activity(args) => activity::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Sample(args) => sample::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::ExtProc(args) => ext_proc::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Matrix(args) => matrix::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Bundle(command) => bundle::run(&command),
    };
    match result {
        Ok(exit) => exit,
        Err(CmdError::Findings(report)) => {
            eprintln!("{report}");
            Exit::Findings
        }
        Err(e @ CmdError::Failed(_)) => {
            eprintln!("error: {e}");
            Exit::Error
        }
    }
}
