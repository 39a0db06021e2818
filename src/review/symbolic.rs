//! Proofs over every well-formed request, not just the enumerated ones, with the Cedar symbolic
//! compiler (`cedar-policy-symcc`) and the cvc5 solver.
//!
//! Invariants are reviewable policy sets (`policies/invariants/*.cedar`, one invariant per file):
//! permit-only policies describing the most a principal may ever be allowed. "The policies
//! satisfy the invariant" means, for each action the invariant's policies name, the policies imply
//! the invariant: they permit nothing the invariant does not.

use std::path::Path;
use std::time::{Duration, Instant};

use cedar_policy::{ActionConstraint, Effect, Entities, EntityUid, EvalResult, PolicySet, RequestEnv, Schema};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};

use crate::decision::policies;
use crate::ownership::PartyRegistration;

/// One invariant: a named permit-only policy set.
#[derive(Clone, Debug)]
pub struct Invariant {
    pub name: String,
    pub policies: PolicySet,
}

impl Invariant {
    /// Whether any of its policies applies to `action` (so it bounds that action).
    pub fn covers(&self, action: &EntityUid) -> bool {
        self.policies.policies().any(|p| match p.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => &a == action,
            ActionConstraint::In(list) => list.contains(action),
        })
    }
}

/// Reads every `*.cedar` file in `dir` as one invariant, validated against the schema.
pub fn load_invariants(dir: &Path, schema_file: &Path) -> Result<Vec<Invariant>, String> {
    let schema_text = policies::read_text(schema_file).map_err(|e| e.to_string())?;
    let files = policies::cedar_files(dir).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for file in files {
        let text = policies::read_text(&file).map_err(|e| e.to_string())?;
        let loaded =
            policies::from_sources(&[(file.clone(), text)], (schema_file, &schema_text)).map_err(|e| e.to_string())?;
        if let Some(p) = loaded.policies.policies().find(|p| p.effect() != Effect::Permit) {
            return Err(format!(
                "{}: invariant policy {} is a forbid; write invariants as permits describing the most allowed",
                file.display(),
                p.id()
            ));
        }
        let name = file
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        out.push(Invariant {
            name,
            policies: loaded.policies,
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no invariants (*.cedar)", dir.display()));
    }
    Ok(out)
}

/// One proof obligation and its outcome.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub action: String,
    /// `None`: proved. `Some(text)`: refuted, with the counterexample in words.
    pub counterexample: Option<String>,
    pub elapsed: Duration,
}

/// How the new policies relate to the old ones, for one action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relation {
    Equivalent,
    /// New permits only what old permits (and less somewhere).
    Narrows,
    /// New permits something old does not (and everything old does).
    Widens,
    /// Each permits something the other does not.
    Incomparable,
}

#[derive(Clone, Debug)]
pub struct Comparison {
    pub action: String,
    pub relation: Relation,
    /// When the new policies widen: a request they allow that the old ones deny.
    pub counterexample: Option<String>,
    pub elapsed: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    pub comparisons: Vec<Comparison>,
    pub solver_start: Duration,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.counterexample.is_some())
            || self
                .comparisons
                .iter()
                .any(|c| matches!(c.relation, Relation::Widens | Relation::Incomparable))
    }
}

/// Runs every proof. `Err` means the proofs could not be run (no solver, compile failure).
pub fn verify(
    policies: &PolicySet,
    schema: &Schema,
    invariants: &[Invariant],
    against: Option<&PolicySet>,
) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime.block_on(verify_async(policies, schema, invariants, against))
}

async fn verify_async(
    policies: &PolicySet,
    schema: &Schema,
    invariants: &[Invariant],
    against: Option<&PolicySet>,
) -> Result<Report, String> {
    let start = Instant::now();
    let solver = LocalSolver::cvc5().map_err(|e| {
        format!(
            "cannot start the cvc5 solver ({e}); install it (e.g. `apt-get install -y cvc5`) or set CVC5 to its path"
        )
    })?;
    let mut symcc = CedarSymCompiler::new(solver).map_err(|e| e.to_string())?;
    let mut report = Report {
        solver_start: start.elapsed(),
        ..Report::default()
    };
    let mut envs: Vec<RequestEnv> = schema.request_envs().collect();
    envs.sort_by_key(|e| e.action().to_string());
    for env in &envs {
        let action = action_name(env.action());
        let compile = |ps: &PolicySet| {
            CompiledPolicySet::compile(ps, env, schema).map_err(|e| format!("compiling for {action}: {e}"))
        };
        let current = compile(policies)?;

        for inv in invariants.iter().filter(|i| i.covers(env.action())) {
            let bound = compile(&inv.policies)?;
            let t = Instant::now();
            let cex = symcc
                .check_implies_with_counterexample_opt(&current, &bound)
                .await
                .map_err(|e| format!("solver: {e}"))?;
            report.checks.push(Check {
                name: format!("invariant {}", inv.name),
                action: action.clone(),
                counterexample: cex.map(|env| describe(&env)),
                elapsed: t.elapsed(),
            });
        }

        for p in policies.policies() {
            let compiled = CompiledPolicy::compile(p, env, schema).map_err(|e| format!("compiling {}: {e}", p.id()))?;
            let t = Instant::now();
            let cex = symcc
                .check_never_errors_with_counterexample_opt(&compiled)
                .await
                .map_err(|e| format!("solver: {e}"))?;
            report.checks.push(Check {
                name: format!("policy {} never errors", p.id()),
                action: action.clone(),
                counterexample: cex.map(|env| describe(&env)),
                elapsed: t.elapsed(),
            });
        }

        if let Some(old) = against {
            let old = compile(old)?;
            let t = Instant::now();
            let widening = symcc
                .check_implies_with_counterexample_opt(&current, &old)
                .await
                .map_err(|e| format!("solver: {e}"))?;
            let old_implies_new = symcc
                .check_implies_opt(&old, &current)
                .await
                .map_err(|e| format!("solver: {e}"))?;
            let relation = match (widening.is_none(), old_implies_new) {
                (true, true) => Relation::Equivalent,
                (true, false) => Relation::Narrows,
                (false, true) => Relation::Widens,
                (false, false) => Relation::Incomparable,
            };
            report.comparisons.push(Comparison {
                action,
                relation,
                counterexample: widening.map(|env| describe(&env)),
                elapsed: t.elapsed(),
            });
        }
    }
    Ok(report)
}

fn action_name(uid: &EntityUid) -> String {
    uid.id().unescaped().to_owned()
}

fn attr(entities: &Entities, uid: Option<&EntityUid>, name: &str) -> Option<EvalResult> {
    entities.get(uid?)?.attr(name)?.ok()
}

fn words(v: &EvalResult) -> String {
    match v {
        EvalResult::EntityUid(uid) => uid.id().unescaped().to_owned(),
        EvalResult::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// A counterexample in the reviewer's terms.
pub fn describe(env: &Env) -> String {
    let req = &env.request;
    let ents = &env.entities;
    let principal = req.principal();
    let resource = req.resource();
    let role = attr(ents, principal, "role").map_or("?".into(), |v| words(&v));
    let action = req.action().map_or("?".into(), action_name);
    let is_user = attr(ents, resource, "principalIsUser").map_or("?".into(), |v| words(&v));
    let message_type = attr(ents, resource, "messageType").map_or("?".into(), |v| words(&v));
    let device = match attr(ents, resource, "device") {
        Some(EvalResult::Record(d)) => {
            let ty = d.get("deviceType").map_or("?".into(), words);
            let regs: Vec<&str> = match d.get("principalParty") {
                Some(EvalResult::Record(r)) => PartyRegistration::FLAGS
                    .iter()
                    .filter(|(_, n)| matches!(r.get(n), Some(EvalResult::Bool(true))))
                    .map(|(_, n)| *n)
                    .collect(),
                _ => vec![],
            };
            format!(
                "about a Device of type {ty} on which the principal's Party is registered as {}",
                if regs.is_empty() {
                    "nothing".to_owned()
                } else {
                    regs.join(" and ")
                }
            )
        }
        _ => "with no Device".to_owned(),
    };
    let whose = match is_user.as_str() {
        "true" => "its own record",
        "false" => "another User's record",
        _ => "a record",
    };
    format!("a User in role {role} asking {action} of {whose} ({message_type}) {device}")
}
