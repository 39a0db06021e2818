//! JUnit XML for CI test reports: one `<testsuite>` per test file, one `<testcase>` per case.

use std::fmt::Write as _;

use super::cases::{CaseResult, FileError};

/// Escapes text for XML content and attribute values; drops characters XML 1.0 cannot carry.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The report: results grouped by file in order, and files that could not be run as errors.
pub fn render(results: &[CaseResult], file_errors: &[FileError]) -> String {
    let mut files: Vec<&std::path::Path> = Vec::new();
    for r in results {
        if !files.contains(&r.file.as_path()) {
            files.push(&r.file);
        }
    }
    let failures = results.iter().filter(|r| r.failure.is_some()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"satgate policy tests\" tests=\"{}\" failures=\"{failures}\" errors=\"{}\">",
        results.len(),
        file_errors.len()
    );
    for file in files {
        let cases: Vec<&CaseResult> = results.iter().filter(|r| r.file == file).collect();
        let name = escape(&file.display().to_string());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"0\">",
            cases.len(),
            cases.iter().filter(|r| r.failure.is_some()).count()
        );
        for c in cases {
            let case_name = escape(&c.name);
            match &c.failure {
                None => {
                    let _ = writeln!(out, "    <testcase classname=\"{name}\" name=\"{case_name}\"/>");
                }
                Some(why) => {
                    let why = escape(why);
                    let _ = writeln!(
                        out,
                        "    <testcase classname=\"{name}\" name=\"{case_name}\">\n      <failure message=\"{why}\">{why}</failure>\n    </testcase>"
                    );
                }
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    for e in file_errors {
        let name = escape(&e.file.display().to_string());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase classname=\"{name}\" name=\"load\">\n      <error message=\"{m}\">{m}</error>\n    </testcase>\n  </testsuite>",
            m = escape(&e.message)
        );
    }
    out.push_str("</testsuites>\n");
    out
}

/// A small well-formedness check (tags balance, attributes quoted, entities known), enough to
/// catch an escaping mistake without an XML parser dependency.
pub fn well_formed(xml: &str) -> Result<(), String> {
    let body = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .ok_or("missing XML declaration")?;
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find(['<', '&']) {
        check_text(&rest[..start])?;
        let tail = &rest[start..];
        if tail.starts_with('&') {
            let end = tail.find(';').ok_or("unterminated entity")?;
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&&tail[..=end]) {
                return Err(format!("unknown entity {}", &tail[..=end]));
            }
            rest = &tail[end + 1..];
            continue;
        }
        let end = tag_end(tail)?;
        let tag = &tail[1..end];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("unexpected </{name}>"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
        } else {
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().ok_or("empty tag")?;
            check_attributes(&tag[name.len()..])?;
            if !self_closing {
                stack.push(name);
            }
        }
        rest = &tail[end + 1..];
    }
    check_text(rest)?;
    match stack.last() {
        Some(open) => Err(format!("<{open}> never closed")),
        None => Ok(()),
    }
}

/// The `>` closing a tag, skipping quoted attribute values.
fn tag_end(tag: &str) -> Result<usize, String> {
    let mut quoted = false;
    for (i, c) in tag.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if i > 0 && !quoted => return Err("'<' inside a tag".into()),
            '<' if quoted => return Err("'<' inside an attribute value".into()),
            '>' if !quoted => return Ok(i),
            _ => {}
        }
    }
    Err("unterminated tag".into())
}

fn check_attributes(attrs: &str) -> Result<(), String> {
    let mut rest = attrs.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or(format!("attribute without value: {rest}"))?;
        let value = rest[eq + 1..].strip_prefix('"').ok_or("unquoted attribute value")?;
        let close = value.find('"').ok_or("unterminated attribute value")?;
        check_text(
            &value[..close]
                .replace("&amp;", "")
                .replace("&quot;", "")
                .replace("&lt;", "")
                .replace("&gt;", "")
                .replace("&apos;", ""),
        )?;
        rest = value[close + 1..].trim_start();
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), String> {
    if text.contains(['<', '>', '&']) {
        return Err(format!("unescaped markup in text: {text:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn hostile_names_and_messages_stay_well_formed() {
        let results = vec![
            CaseResult {
                file: PathBuf::from("a&b<c>.json"),
                name: "quote \" apostrophe ' <tag> & \u{1} control".into(),
                failure: Some("expected [title], got [] </failure> & \"more\"".into()),
            },
            CaseResult {
                file: PathBuf::from("ok.json"),
                name: "fine".into(),
                failure: None,
            },
        ];
        let errors = vec![FileError {
            file: PathBuf::from("bad.json"),
            message: "not JSON: <eof>".into(),
        }];
        let xml = render(&results, &errors);
        well_formed(&xml).unwrap();
        assert!(xml.contains("failures=\"1\""));
    }

    #[test]
    fn the_checker_rejects_broken_xml() {
        let decl = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
        assert!(well_formed(&format!("{decl}<a><b></a>")).is_err());
        assert!(well_formed(&format!("{decl}<a x=\"1 < 2\"/>")).is_err());
        assert!(well_formed(&format!("{decl}<a>x & y</a>")).is_err());
        assert!(well_formed(&format!("{decl}<a x=\"&amp;\">ok &lt;</a>")).is_ok());
    }
}
