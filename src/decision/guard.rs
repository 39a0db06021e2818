//! The load-time guard: a policy set that allows anything the invariants do not is refused, so a
//! directory caught half-rewritten (say, without `scope.cedar` and its forbids), a careless edit
//! or a deliberate one never goes into service, at start-up, on reload or from a bundle.
//!
//! Invariants are permit-only policy sets describing the most that may ever be allowed (the same
//! files `satgate verify` proves symbolically). The built-in one is docs/contract.md §4 itself
//! (`policies/invariants/sec-rule.cedar`, compiled in, so no deployment can lower the ceiling);
//! `<policies>/invariants/*.cedar` or a bundle's invariants can only add more.
//!
//! The check is a proof by exhaustion, not a scan: Cedar can only ever be shown one of the
//! 28,322 cells of [`space`] (the argument is written there), and the guard asks Cedar about all
//! four actions in every one of them. It refuses the set when, in any cell:
//!
//! - the candidate allows an action that an invariant covering that action does not allow;
//! - any policy of the candidate errors, for any action, allowed or not: Cedar skips an
//!   erroring policy, so an erroring forbid is a forbid that is off, and the error would
//!   happen at run time in exactly that cell;
//! - an invariant errors where the candidate allows (it then bounds nothing there).
//!
//! It also refuses User and Record entity literals ([`space::entity_literal_findings`]): the
//! guard would judge them correctly, but they cannot mean what they say.

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{ActionConstraint, Authorizer, Decision, Effect, EntityUid, PolicySet};

use super::space;
use super::{request, LoadError, PolicyEngine};
use crate::model::Class;

/// The shipped invariants (`policies/invariants/`), compiled in: a floor no deployment's files
/// can lower.
const BUILT_IN: [(&str, &str); 1] = [("sec-rule", include_str!("../../policies/invariants/sec-rule.cedar"))];

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

/// Asks Cedar about every action in every cell of the decision space; `Err` lists what the
/// candidate allows that an invariant does not, or where a policy errors.
pub fn check(engine: &PolicyEngine, invariants: &[Invariant]) -> Result<Checked, LoadError> {
    let started = Instant::now();
    let refuse = |message: String| invalid(Path::new("(policy guard)"), message);
    let literals = space::entity_literal_findings(engine.policies());
    if !literals.is_empty() {
        return Err(refuse(format!("refused: {}", literals.join("; "))));
    }
    let cells = space::cells();

    // Halves on two threads: the check runs at every load, and cells are independent.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let per = cells.len().div_ceil(threads);
    let mut violations: Vec<(Severity, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = cells
            .chunks(per.max(1))
            .map(|chunk| s.spawn(move || violations_in(engine, invariants, chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![(Severity::Error, "the check panicked".into())])
            })
            .collect()
    });
    // Errors first: they say the set is not what was reviewed anywhere near that cell.
    violations.sort_by_key(|(severity, _)| *severity);
    if violations.is_empty() {
        return Ok(Checked {
            cells: cells.len(),
            invariants: invariants.len(),
            elapsed: started.elapsed(),
        });
    }
    let total = violations.len();
    let listed: Vec<String> = violations.into_iter().take(MAX_LISTED).map(|(_, v)| v).collect();
    Err(refuse(format!(
        "the policy set allows what the invariants do not, or errors ({total} case(s)); refused: {}",
        listed.join("; ")
    )))
}

/// What a refusal line is about, most serious first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    Error,
    Wider,
}

fn violations_in(engine: &PolicyEngine, invariants: &[Invariant], cells: &[space::Cell]) -> Vec<(Severity, String)> {
    let authorizer = Authorizer::new();
    let mut out = Vec::new();
    for cell in cells {
        // Fail closed: a cell whose request cannot be built is a finding, not a skip (run time
        // would deny it, but a schema that cannot describe the space is not what was reviewed).
        let built = match request::build(engine.schema(), cell.role, &cell.facts()) {
            Ok(built) => built,
            Err(e) => {
                out.push((
                    Severity::Error,
                    format!("no request can be built for {}: {e}", cell.describe()),
                ));
                continue;
            }
        };
        for (i, class) in Class::ALL.into_iter().enumerate() {
            let req = &built.requests[i];
            let answer = authorizer.is_authorized(req, engine.policies(), &built.entities);
            if let Some(error) = answer.diagnostics().errors().next() {
                out.push((
                    Severity::Error,
                    format!(
                        "a policy errors when deciding {} for {} ({error}); an erroring policy is skipped by Cedar",
                        class.name(),
                        cell.describe()
                    ),
                ));
                continue;
            }
            if answer.decision() != Decision::Allow {
                continue;
            }
            for inv in invariants.iter().filter(|inv| inv.covers[i]) {
                let bound = authorizer.is_authorized(req, &inv.policies, &built.entities);
                if bound.decision() != Decision::Allow || bound.diagnostics().errors().next().is_some() {
                    out.push((
                        Severity::Wider,
                        format!(
                            "{} allowed to {} against invariant {}",
                            class.name(),
                            cell.describe(),
                            inv.name
                        ),
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

    fn sources(extra: &str, drop_file: Option<&str>) -> Vec<(PathBuf, String)> {
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
        sources
    }

    fn load(sources: &[(PathBuf, String)]) -> Result<PolicyEngine, LoadError> {
        let schema = std::fs::read_to_string("schemas/sat.cedarschema").unwrap();
        let loaded = policies::from_sources(sources, (Path::new("schemas/sat.cedarschema"), &schema))?;
        PolicyEngine::new(loaded)
    }

    fn engine_from(extra: &str, drop_file: Option<&str>) -> PolicyEngine {
        load(&sources(extra, drop_file)).unwrap()
    }

    fn built_in() -> Vec<Invariant> {
        invariants(Path::new("/nonexistent")).unwrap()
    }

    fn refusal(extra: &str, drop_file: Option<&str>) -> String {
        check(&engine_from(extra, drop_file), &built_in())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_shipped_policies_pass_and_the_built_in_invariant_is_the_shipped_file() {
        let checked = check(&engine_from("", None), &built_in()).unwrap();
        assert_eq!(checked.cells, 28_322);
        // The compiled-in copy is the file reviewers read.
        let on_disk = invariants(Path::new("policies/invariants")).unwrap();
        assert_eq!(on_disk.len(), BUILT_IN.len(), "shipped files are not counted twice");
        for (name, text) in BUILT_IN {
            let file = std::fs::read_to_string(format!("policies/invariants/{name}.cedar")).unwrap();
            assert_eq!(file, text, "{name}");
        }
    }

    #[test]
    fn the_built_in_invariant_is_exactly_what_the_shipped_policies_allow() {
        // §4 is both the ceiling (the invariant) and what ships (the policies): the invariant,
        // loaded as a policy set, decides every cell as the shipped policies do. So the ceiling
        // is no wider than the rule, and the shipped policies use all of it.
        let (_, text) = BUILT_IN[0];
        let ceiling = load(&[(PathBuf::from("sec-rule.cedar"), text.to_owned())]).unwrap();
        let shipped = engine_from("", None);
        check(&ceiling, &built_in()).unwrap();
        let cells = space::cells();
        let a = space::decide_all(&ceiling, &cells);
        let b = space::decide_all(&shipped, &cells);
        let differ: Vec<String> = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.classes != y.classes)
            .map(|(x, _)| x.cell.describe())
            .collect();
        assert!(
            differ.is_empty(),
            "{} cells differ, e.g. {:?}",
            differ.len(),
            differ.first()
        );
        assert!(a.iter().all(|d| d.errors.is_empty()));
    }

    #[test]
    fn a_set_without_its_forbids_is_refused() {
        let text = refusal("", Some("scope.cedar"));
        assert!(text.contains("against invariant sec-rule"), "{text}");
    }

    #[test]
    fn a_widening_permit_is_refused_with_the_case_in_words() {
        let wide = r#"@id("oops") permit (principal, action == Action::"ViewPayload", resource);"#;
        let text = refusal(wide, Some("scope.cedar"));
        assert!(text.contains("payload allowed to"), "{text}");
        assert!(text.contains("another User's record"), "{text}");
    }

    #[test]
    fn titles_of_devices_the_party_is_not_registered_on_are_refused() {
        // Every Supplier and Network Operator sees the titles of every HAN Device, registered on
        // it or not: within the old, weaker invariants; outside §4.
        let unregistered = r#"@id("all-han-titles") permit (principal, action == Action::"ViewTitle", resource)
            when { [Role::"IS", Role::"ES", Role::"GS", Role::"ED", Role::"GT"].contains(principal.role) };"#;
        let text = refusal(unregistered, None);
        assert!(text.contains("title allowed to"), "{text}");
        assert!(text.contains("party registered as none"), "{text}");
        // And the gas supplier seeing what the import supplier holds: a registration, but not in
        // the principal's role.
        let wrong_role = r#"@id("gs-on-import") permit (principal, action == Action::"ViewTitle", resource)
            when { principal.role == Role::"GS" && resource has device && resource.device.principalParty.importSupplier };"#;
        assert!(refusal(wrong_role, None).contains("GS, another User's record"));
    }

    #[test]
    fn reading_the_party_or_the_device_type_text_cannot_be_written() {
        // However the principal's Party or the inventory's type text is reached, the schema has
        // no such value: strict validation refuses the set before the guard is asked.
        for read in [
            r#"principal.party == "SUPA""#,
            r#"(if true then principal else principal).party == "SUPA""#,
            r#"{p: principal}.p.party == "SUPA""#,
            r#"principal has party && principal["party"] == "SUPA""#,
            r#"resource has device && resource.device.deviceType == "ESME""#,
            r#"resource has device && resource.device.deviceType like "E*""#,
            r#"context has party"#,
        ] {
            let extra = format!("permit (principal, action, resource) when {{ {read} }};");
            assert!(load(&sources(&extra, None)).is_err(), "{read} was accepted");
        }
    }

    #[test]
    fn user_and_record_literals_are_refused() {
        for extra in [
            r#"@id("u") permit (principal == User::"90-B3-D5-1F-30-01-00-00", action, resource);"#,
            r#"@id("u") permit (principal, action, resource) when { [User::"principal"].contains(principal) };"#,
            r#"@id("r") forbid (principal, action, resource) unless { resource == Record::"record" || true };"#,
        ] {
            let text = refusal(extra, None);
            assert!(text.contains("names a"), "{extra}: {text}");
        }
    }

    #[test]
    fn a_policy_that_errors_in_any_cell_is_refused() {
        // Allows everything, except that it errors (and so is skipped, denying) in one corner of
        // the space. An old guard that skipped erroring cells would look only at the corner.
        let error_in_a_corner = r#"@id("corner") permit (principal, action, resource) when {
            if principal.role == Role::"OU" && resource.messageType == MessageType::"DCCAlert"
            then 9223372036854775807 + 1 > 0 else true };"#;
        let text = refusal(error_in_a_corner, None);
        assert!(text.contains("errors when deciding"), "{text}");
        // An erroring forbid is a forbid that is off: the titles-only forbid, rewritten so that
        // it errors exactly where it should hold, plus a wide permit.
        let forbid_off = r#"@id("wide") permit (principal, action, resource);
            @id("off") forbid (principal, action, resource) unless {
              resource.principalIsUser || 9223372036854775807 + 1 > 0 };"#;
        let text = refusal(forbid_off, Some("scope.cedar"));
        assert!(text.contains("errors when deciding"), "{text}");
        // Even when every erroring cell is denied anyway, an error is refused: it is not what
        // was reviewed.
        let harmless_error = r#"@id("noisy") forbid (principal, action, resource) when {
            principal.role == Role::"RSA" && 9223372036854775807 * 2 > 0 };"#;
        assert!(refusal(harmless_error, None).contains("errors when deciding"));
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
