//! Loading the policy set and schema from disk, with every problem reported as `file:line:col`.
//!
//! Policies are named by their `@id` annotation (Cedar itself would call them `policy0`, ...),
//! so decisions, logs and test expectations all speak the reviewer's names. A policy without an
//! `@id`, a repeated `@id`, a template, a parse error or any strict-validation error stops the
//! load: a half-loaded policy set is never used.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

/// Where a policy was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One problem, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Why a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read (exit code 2 in the CLI).
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The policies or schema are wrong (exit code 1 in the CLI).
    #[error("{}", render(.0))]
    Invalid(Vec<Finding>),
    /// A policy bundle that cannot be used: unsigned, badly signed, malformed, stale (exit code 2).
    #[error("policy bundle: {0}")]
    Bundle(#[from] crate::bundle::BundleError),
}

impl LoadError {
    /// Why, in one word: one of [`crate::bundle::BundleError::REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::Bundle(e) => e.reason(),
            LoadError::Io { .. } => "unreadable",
            _ => "invalid_policies",
        }
    }
}

fn render(findings: &[Finding]) -> String {
    findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// A policy set that parsed and passed strict validation against its schema.
#[derive(Clone, Debug)]
pub struct LoadedPolicies {
    pub policies: PolicySet,
    pub schema: Schema,
    pub origins: HashMap<PolicyId, Origin>,
    /// Non-fatal validator and schema warnings, located.
    pub warnings: Vec<Finding>,
    /// Which reviewed files these are.
    pub identity: PolicyIdentity,
}

/// A policy set's identity, named on every answer and log line: the SHA-256 of the signed bundle
/// and its revision, or for files read from a directory a SHA-256 over their names and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyIdentity {
    pub sha256: String,
    /// The bundle's revision (a commit, say); `None` for a directory. Held to the bundle character
    /// set when the bundle is opened, and escaped wherever it is written all the same.
    pub revision: Option<String>,
    /// The bundle's serial; `None` for a directory.
    pub serial: Option<u64>,
    /// When the bundle stops loading (unix seconds); `None` for a directory.
    pub expires: Option<u64>,
}

impl PolicyIdentity {
    /// A bundle's identity for tests: a fixed SHA-256, serial 1, expiring at 2, this revision.
    #[cfg(test)]
    pub(crate) fn bundle_for_test(revision: &str) -> Self {
        PolicyIdentity {
            sha256: "ab".repeat(32),
            revision: Some(revision.into()),
            serial: Some(1),
            expires: Some(2),
        }
    }

    /// Over the policy files and the schema, in order: each file's name and length, then its bytes.
    pub fn of_sources(policy_files: &[(PathBuf, String)], (schema_file, schema_text): (&Path, &str)) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let names = policy_files.iter().map(|(p, t)| (p.as_path(), t.as_str()));
        for (path, text) in names.chain([(schema_file, schema_text)]) {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            h.update(format!("{name}\0{}\0", text.len()).as_bytes());
            h.update(text.as_bytes());
        }
        Self {
            sha256: hex::encode(h.finalize()),
            revision: None,
            serial: None,
            expires: None,
        }
    }
}

impl fmt::Display for PolicyIdentity {
    /// `sha256:HEX; revision=REV`, or `sha256:HEX; source=directory`: what the `Satgate-Policy`
    /// header and the text logs say. Both parts are escaped ([`crate::bundle::escape_text`]): a
    /// valid revision is written as it is, anything else can never end the field or the line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sha = crate::bundle::escape_text(&self.sha256);
        match &self.revision {
            Some(rev) => write!(f, "sha256:{sha}; revision={}", crate::bundle::escape_text(rev)),
            None => write!(f, "sha256:{sha}; source=directory"),
        }
    }
}

/// Every `*.cedar` entry directly in `dir`, sorted by name: the one definition of "the policy
/// files of a directory", for loading, watching and invariants alike. Each entry counts, even
/// one that cannot be read as a file (a dangling symlink, a directory): reading it then fails the
/// load rather than drop its policies, which may be the forbids.
pub fn cedar_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "cedar") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads `path` whole, naming it in the error.
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every `*.cedar` file directly in `dir` (sorted by name) and the schema file.
pub fn load(dir: &Path, schema_file: &Path) -> Result<LoadedPolicies, LoadError> {
    let schema_text = read_text(schema_file)?;
    let sources = cedar_files(dir)?
        .into_iter()
        .map(|path| read_text(&path).map(|text| (path, text)))
        .collect::<Result<Vec<_>, _>>()?;
    from_sources(&sources, (schema_file, &schema_text))
}

/// Parses, renames and strictly validates policies given as `(file name, text)` pairs.
pub fn from_sources(
    policy_files: &[(PathBuf, String)],
    (schema_file, schema_text): (&Path, &str),
) -> Result<LoadedPolicies, LoadError> {
    let mut warnings = Vec::new();
    let mut gathered = Gathered::default();
    let schema = match Schema::from_cedarschema_str(schema_text) {
        Ok((schema, schema_warnings)) => {
            for w in schema_warnings {
                warnings.extend(locate(schema_file, schema_text, &w));
            }
            Some(schema)
        }
        Err(e) => {
            gathered.findings.extend(locate(schema_file, schema_text, &e));
            None
        }
    };
    for (file, text) in policy_files {
        gathered.add_file(file, text);
    }
    if let Some(schema) = &schema {
        gathered.validate(schema, &mut warnings);
    }
    match schema {
        Some(schema) if gathered.findings.is_empty() => Ok(LoadedPolicies {
            policies: gathered.policies,
            schema,
            origins: gathered.origins,
            warnings,
            identity: PolicyIdentity::of_sources(policy_files, (schema_file, schema_text)),
        }),
        _ => Err(LoadError::Invalid(gathered.findings)),
    }
}

/// The policies of the files read so far, each renamed to its `@id`, where each came from, and
/// what was wrong.
#[derive(Default)]
struct Gathered<'a> {
    policies: PolicySet,
    origins: HashMap<PolicyId, Origin>,
    texts: HashMap<PolicyId, (&'a Path, &'a str)>,
    findings: Vec<Finding>,
}

impl<'a> Gathered<'a> {
    fn add_file(&mut self, file: &'a Path, text: &'a str) {
        let parsed = match PolicySet::from_str(text) {
            Ok(p) => p,
            Err(errs) => {
                for e in errs.iter() {
                    self.findings.extend(locate(file, text, e));
                }
                return;
            }
        };
        for t in parsed.templates() {
            let offset = text.find(&t.to_string()).unwrap_or(0);
            self.findings.push(at(
                file,
                text,
                offset,
                "templates are not supported; write a static policy",
            ));
        }
        // Cedar numbers a file's policies policy0, policy1, ... in text order, and keeps each
        // policy's exact text: that is enough to find where each one starts.
        let mut in_file: Vec<_> = parsed.policies().collect();
        in_file.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let mut cursor = 0;
        for p in in_file {
            let src = p.to_string();
            let offset = match text[cursor..].find(&src) {
                Some(i) => {
                    cursor += i + src.len();
                    cursor - src.len()
                }
                None => cursor,
            };
            self.add_policy(p, file, text, offset);
        }
    }

    /// Adds one policy under its `@id`, or records why it cannot be.
    fn add_policy(&mut self, p: &Policy, file: &'a Path, text: &'a str, offset: usize) {
        let Some(id) = p.annotation("id").map(str::trim).filter(|s| !s.is_empty()) else {
            self.findings
                .push(at(file, text, offset, "policy has no @id(\"...\") annotation"));
            return;
        };
        let id = PolicyId::new(id);
        if let Some(first) = self.origins.get(&id) {
            let message = format!("@id {:?} is already used at {first}", id.to_string());
            self.findings.push(at(file, text, offset, &message));
            return;
        }
        if let Err(e) = self.policies.add(p.new_id(id.clone())) {
            self.findings.push(at(file, text, offset, &e.to_string()));
            return;
        }
        let origin = Origin {
            file: file.to_path_buf(),
            line: line_col(text, offset).0,
        };
        self.origins.insert(id.clone(), origin);
        self.texts.insert(id, (file, text));
    }

    /// Strict validation against the schema; errors become findings, located in their files.
    fn validate(&mut self, schema: &Schema, warnings: &mut Vec<Finding>) {
        let result = Validator::new(schema.clone()).validate(&self.policies, ValidationMode::Strict);
        for e in result.validation_errors() {
            let (file, text) = self.texts[e.policy_id()];
            self.findings.extend(locate(file, text, e).into_iter().map(|mut f| {
                f.message = format!("policy {:?}: {}", e.policy_id().to_string(), f.message);
                f
            }));
        }
        for w in result.validation_warnings() {
            let (file, text) = self.texts[w.policy_id()];
            warnings.extend(locate(file, text, w));
        }
    }
}

/// Turns a diagnostic into one finding, located at its first labelled span (or at 1:1 when it
/// has none), with the diagnostic's help text appended.
fn locate(file: &Path, text: &str, d: &dyn Diagnostic) -> Vec<Finding> {
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message = format!("{message} ({help})");
    }
    let first = d.labels().and_then(|mut ls| ls.next()).map_or(0, |l| l.offset());
    vec![at(file, text, first, &message)]
}

fn at(file: &Path, text: &str, offset: usize, message: &str) -> Finding {
    let (line, column) = line_col(text, offset);
    Finding {
        file: file.to_path_buf(),
        line,
        column,
        message: message.to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../../schemas/sat.cedarschema");

    fn load_texts(files: &[(&str, &str)]) -> Result<LoadedPolicies, LoadError> {
        let files: Vec<_> = files.iter().map(|(n, t)| (PathBuf::from(n), t.to_string())).collect();
        from_sources(&files, (Path::new("sat.cedarschema"), SCHEMA))
    }

    fn findings(r: Result<LoadedPolicies, LoadError>) -> String {
        match r {
            Err(LoadError::Invalid(f)) => render(&f),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("loaded"),
        }
    }

    #[test]
    fn shipped_policies_load_and_are_named_by_id() {
        let loaded = load(Path::new("policies"), Path::new("schemas/sat.cedarschema")).unwrap();
        let mut ids: Vec<String> = loaded.policies.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "electricity-distributor-titles",
                "export-supplier-titles",
                "gas-supplier-titles",
                "gas-transporter-titles",
                "han-devices-only",
                "import-supplier-titles",
                "own-records",
                "titles-only-for-others"
            ]
        );
        let origin = &loaded.origins[&PolicyId::new("own-records")];
        assert!(
            origin.file.ends_with("own-records.cedar") && origin.line == 2,
            "{origin}"
        );
    }

    #[test]
    fn unknown_attribute_is_located() {
        let text = "// a\n@id(\"bad\")\npermit (principal, action, resource)\nwhen { resource.colour == \"red\" };\n";
        let f = findings(load_texts(&[("bad.cedar", text)]));
        assert!(f.starts_with("bad.cedar:4:"), "{f}");
        assert!(f.contains("colour") && f.contains("\"bad\""), "{f}");
    }

    #[test]
    fn missing_and_duplicate_ids_are_errors() {
        let f = findings(load_texts(&[("a.cedar", "permit (principal, action, resource);")]));
        assert!(f.contains("a.cedar:1:1: policy has no @id"), "{f}");
        let p = "@id(\"x\") permit (principal, action, resource) when { resource.principalIsUser };";
        let f = findings(load_texts(&[("a.cedar", p), ("b.cedar", p)]));
        assert!(f.contains("b.cedar:1:1: @id \"x\" is already used at a.cedar:1"), "{f}");
    }

    #[test]
    fn parse_errors_and_templates_are_located() {
        let f = findings(load_texts(&[(
            "a.cedar",
            "\n\n@id(\"x\") permit (principal, action, resource) when { ;",
        )]));
        assert!(f.starts_with("a.cedar:3:"), "{f}");
        let f = findings(load_texts(&[(
            "t.cedar",
            "@id(\"t\") permit (principal == ?principal, action, resource);",
        )]));
        assert!(f.contains("templates are not supported"), "{f}");
    }

    #[test]
    fn broken_schema_is_located() {
        let files = vec![(PathBuf::from("a.cedar"), String::new())];
        let r = from_sources(
            &files,
            (Path::new("s.cedarschema"), "entity User = {\n  role: Nope,\n};"),
        );
        let f = findings(r);
        assert!(f.starts_with("s.cedarschema:"), "{f}");
    }

    #[test]
    fn the_identity_is_written_escaped() {
        let id = PolicyIdentity::bundle_for_test;
        assert_eq!(
            id("rev-1").to_string(),
            format!("sha256:{}; revision=rev-1", "ab".repeat(32))
        );
        let forged = id("x\nsatgate::access: forged\"}\u{7}").to_string();
        assert!(
            forged.ends_with("revision=x%0Asatgate%3A%3Aaccess%3A%20forged%22%7D%07"),
            "{forged}"
        );
        let mut dir = id("r");
        dir.revision = None;
        assert!(dir.to_string().ends_with("; source=directory"));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 5), (1, 1));
    }
}
