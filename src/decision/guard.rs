//! The load-time guard: a policy set that allows anything the invariants do not is refused, so a
//! directory caught half-rewritten (say, without `scope.cedar` and its forbids), or a careless
//! edit, never goes into service, at start-up or on reload.
//!
//! Invariants are permit-only policy sets describing the most that may ever be allowed (the same
//! files `satgate verify` proves symbolically). The shipped ones are built into the binary and
//! always apply; `<policies>/invariants/*.cedar`, when present, adds more. The check needs no
//! solver: the schema is principal-relative, so the whole decision space is finite (see
//! [`crate::review::space`]), and the guard asks Cedar about every cell of it: for each action
//! the candidate allows in a cell, every invariant covering that action must allow it too. A
//! policy set that reads something the enumeration does not vary cannot be checked this way,
//! and is refused as well.

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{ActionConstraint, Authorizer, Decision, Effect, EntityUid, PolicySet};

use super::{request, LoadError, PolicyEngine};
use crate::model::Class;
use crate::review::space;

/// The shipped invariants (`policies/invariants/`), compiled in: a floor no deployment's files
/// can lower.
const BUILT_IN: [(&str, &str); 3] = [
    ("han-scope", include_str!("../../policies/invariants/han-scope.cedar")),
    (
        "owner-roles-only",
        include_str!("../../policies/invariants/owner-roles-only.cedar"),
    ),
    (
        "titles-only-for-others",
        include_str!("../../policies/invariants/titles-only-for-others.cedar"),
    ),
];

/// One invariant: a named permit-only policy set.
#[derive(Clone, Debug)]
pub struct Invariant {
    pub name: String,
    policies: PolicySet,
    /// The actions it bounds: those its policies name (all four when one names any action).
    covers: [bool; 4],
}

impl Invariant {
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let policies = PolicySet::from_str(text).map_err(|e| format!("invariant {name}: {e}"))?;
        if policies.policies().next().is_none() {
            return Err(format!("invariant {name}: no policies"));
        }
        if let Some(p) = policies.policies().find(|p| p.effect() != Effect::Permit) {
            return Err(format!(
                "invariant {name}: policy {} is a forbid; invariants are permits describing the most allowed",
                p.id()
            ));
        }
        let covers = Class::ALL.map(|c| {
            let action = request::action(c);
            policies.policies().any(|p| names(p.action_constraint(), action))
        });
        Ok(Self {
            name: name.to_owned(),
            policies,
            covers,
        })
    }
}

fn names(constraint: ActionConstraint, action: &EntityUid) -> bool {
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => &a == action,
        ActionConstraint::In(list) => list.contains(action),
    }
}

/// The built-in invariants plus `dir/*.cedar` when `dir` exists. An unreadable or invalid file
/// there fails the load: it may be the one that matters.
pub fn invariants(dir: &Path) -> Result<Vec<Invariant>, LoadError> {
    let mut out = built_in()?;
    let files = match super::policies::cedar_files(dir) {
        Ok(files) => files,
        Err(LoadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for path in files {
        let text = super::policies::read_text(&path)?;
        let name = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        if BUILT_IN.contains(&(name.as_str(), text.as_str())) {
            continue; // the shipped file, already in force
        }
        out.push(Invariant::parse(&name, &text).map_err(|e| invalid(&path, e))?);
    }
    Ok(out)
}

/// The shipped invariants, compiled in.
fn built_in() -> Result<Vec<Invariant>, LoadError> {
    BUILT_IN
        .iter()
        .map(|(name, text)| Invariant::parse(name, text))
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(Path::new("(built-in invariants)"), e))
}

/// The built-in invariants plus those a bundle carries (the shipped ones are not counted twice).
pub fn with_bundled(bundled: &[(std::path::PathBuf, String)]) -> Result<Vec<Invariant>, LoadError> {
    let mut out = built_in()?;
    for (path, text) in bundled {
        let name = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        if !BUILT_IN.contains(&(name.as_str(), text.as_str())) {
            out.push(Invariant::parse(&name, text).map_err(|e| invalid(path, e))?);
        }
    }
    Ok(out)
}

fn invalid(file: &Path, message: String) -> LoadError {
    LoadError::Invalid(vec![super::Finding {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        message,
    }])
}

/// What a passed check looked at.
#[derive(Clone, Copy, Debug)]
pub struct Checked {
    pub cells: usize,
    pub invariants: usize,
    pub elapsed: Duration,
}

/// Most violations a refusal lists.
const MAX_LISTED: usize = 5;

/// Asks Cedar about every cell of the decision space; `Err` lists what the candidate allows that
/// an invariant does not (or why the space cannot be enumerated).
pub fn check(engine: &PolicyEngine, invariants: &[Invariant]) -> Result<Checked, LoadError> {
    let started = Instant::now();
    let refuse = |message: String| invalid(Path::new("(policy guard)"), message);
    let scan = space::scan(engine.policies());
    if let Some(first) = scan.findings.first() {
        return Err(refuse(format!(
            "the policy set cannot be checked against the invariants: {first}"
        )));
    }
    let mut types = scan.extra_device_types;
    for inv in invariants {
        types.extend(space::scan(&inv.policies).extra_device_types);
    }
    let cells = space::cells(&space::device_types(&space::Scan {
        findings: vec![],
        extra_device_types: types,
    }));

    // Two halves on two threads: the check runs at every load, and cells are independent.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let per = cells.len().div_ceil(threads);
    let mut violations: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cells
            .chunks(per.max(1))
            .map(|chunk| s.spawn(move || violations_in(engine, invariants, chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec!["the check panicked".into()]))
            .collect()
    });
    if violations.is_empty() {
        return Ok(Checked {
            cells: cells.len(),
            invariants: invariants.len(),
            elapsed: started.elapsed(),
        });
    }
    let total = violations.len();
    violations.truncate(MAX_LISTED);
    Err(refuse(format!(
        "the policy set allows what the invariants do not ({total} case(s)); refused: {}",
        violations.join("; ")
    )))
}

fn violations_in(engine: &PolicyEngine, invariants: &[Invariant], cells: &[space::Cell]) -> Vec<String> {
    let authorizer = Authorizer::new();
    let mut out = Vec::new();
    for cell in cells {
        let (principal, facts) = (cell.principal(), cell.facts());
        // A request the schema cannot build is denied everywhere: nothing to bound.
        let Ok(built) = request::build(engine.schema(), &principal, &facts) else {
            continue;
        };
        for (i, class) in Class::ALL.into_iter().enumerate() {
            let req = &built.requests[i];
            let allowed = authorizer.is_authorized(req, engine.policies(), &built.entities);
            if allowed.decision() != Decision::Allow || allowed.diagnostics().errors().next().is_some() {
                continue;
            }
            for inv in invariants.iter().filter(|inv| inv.covers[i]) {
                let bound = authorizer.is_authorized(req, &inv.policies, &built.entities);
                if bound.decision() != Decision::Allow || bound.diagnostics().errors().next().is_some() {
                    out.push(format!(
                        "{} allowed to {} against invariant {}",
                        class.name(),
                        cell.describe(),
                        inv.name
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::policies;

    fn engine_from(extra: &str, drop_file: Option<&str>) -> PolicyEngine {
        let mut sources = Vec::new();
        for f in ["device-owners.cedar", "own-records.cedar", "scope.cedar"] {
            if Some(f) == drop_file {
                continue;
            }
            let text = std::fs::read_to_string(Path::new("policies").join(f)).unwrap();
            sources.push((PathBuf::from(f), text));
        }
        if !extra.is_empty() {
            sources.push((PathBuf::from("extra.cedar"), extra.to_owned()));
        }
        let schema = std::fs::read_to_string("schemas/sat.cedarschema").unwrap();
        let loaded = policies::from_sources(&sources, (Path::new("schemas/sat.cedarschema"), &schema)).unwrap();
        PolicyEngine::new(loaded).unwrap()
    }

    fn built_in() -> Vec<Invariant> {
        invariants(Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn the_shipped_policies_pass_and_the_built_in_invariants_are_the_shipped_files() {
        let checked = check(&engine_from("", None), &built_in()).unwrap();
        assert_eq!(checked.cells, 28_322);
        // The compiled-in copies are the files reviewers read.
        let on_disk = invariants(Path::new("policies/invariants")).unwrap();
        assert_eq!(on_disk.len(), BUILT_IN.len(), "shipped files are not counted twice");
        for (name, text) in BUILT_IN {
            let file = std::fs::read_to_string(format!("policies/invariants/{name}.cedar")).unwrap();
            assert_eq!(file, text, "{name}");
        }
    }

    #[test]
    fn a_set_without_its_forbids_is_refused() {
        let e = check(&engine_from("", Some("scope.cedar")), &built_in()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("han-scope") || text.contains("titles-only-for-others"),
            "{text}"
        );
    }

    #[test]
    fn a_widening_permit_is_refused_with_the_case_in_words() {
        let wide = r#"@id("oops") permit (principal, action == Action::"ViewPayload", resource);"#;
        let text = check(&engine_from(wide, Some("scope.cedar")), &built_in())
            .unwrap_err()
            .to_string();
        assert!(text.contains("payload allowed to"), "{text}");
        assert!(text.contains("another User's record"), "{text}");
    }

    #[test]
    fn policies_the_enumeration_cannot_cover_are_refused() {
        let party = r#"@id("by-party") permit (principal, action == Action::"ViewTitle", resource) when { principal.party == "SUPA" };"#;
        let text = check(&engine_from(party, None), &built_in()).unwrap_err().to_string();
        assert!(text.contains("principal.party"), "{text}");
    }

    #[test]
    fn invariants_in_the_policy_directory_add_to_the_built_in_ones() {
        let dir = tempfile::tempdir().unwrap();
        // Narrower than the shipped policies: gas transporters may see nothing of others' records.
        std::fs::write(
            dir.path().join("no-gt.cedar"),
            r#"permit (principal, action, resource) when { resource.principalIsUser || principal.role != Role::"GT" };"#,
        )
        .unwrap();
        let all = invariants(dir.path()).unwrap();
        assert_eq!(all.len(), BUILT_IN.len() + 1);
        let text = check(&engine_from("", None), &all).unwrap_err().to_string();
        assert!(
            text.contains("against invariant no-gt") && text.contains("GT,"),
            "{text}"
        );
        std::fs::write(dir.path().join("broken.cedar"), "permit (").unwrap();
        assert!(invariants(dir.path()).is_err(), "a broken invariant fails the load");
    }

    #[test]
    fn a_forbid_is_not_an_invariant() {
        assert!(Invariant::parse("x", "forbid (principal, action, resource);").is_err());
        assert!(Invariant::parse("x", "").is_err());
    }
}
