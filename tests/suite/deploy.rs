//! The shipped manifests: the kustomize base holds copies of the policy set and schema (so it
//! renders with kustomize's default settings; its kustomization says why), and they must be the
//! repository's own, file for file, byte for byte, every policy file listed.

use std::collections::BTreeSet;
use std::path::Path;

const FIX: &str = "run `bash deploy/kubernetes/sync.sh` and commit the result";

fn cedar_files(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cedar"))
        .collect()
}

#[test]
fn the_kustomize_base_holds_the_shipped_policies_and_schema_exactly() {
    let shipped = cedar_files("policies");
    assert!(!shipped.is_empty());
    assert_eq!(
        cedar_files("deploy/kubernetes/policies"),
        shipped,
        "deploy/kubernetes/policies/ is not the set of policies/*.cedar: {FIX}"
    );
    let mut pairs: Vec<(String, String)> = shipped
        .iter()
        .map(|n| (format!("policies/{n}"), format!("deploy/kubernetes/policies/{n}")))
        .collect();
    pairs.push((
        "schemas/sat.cedarschema".into(),
        "deploy/kubernetes/schema/sat.cedarschema".into(),
    ));
    for (source, copy) in pairs {
        let (a, b) = (std::fs::read(&source).unwrap(), std::fs::read(&copy));
        assert!(b.as_ref().is_ok_and(|b| *b == a), "{copy} differs from {source}: {FIX}");
    }

    // The ConfigMap takes exactly those files: kustomize lists files one by one, so a new policy
    // file copied but not listed would be left out of the pod without any error.
    let kustomization = std::fs::read_to_string("deploy/kubernetes/kustomization.yaml").unwrap();
    let listed: BTreeSet<String> = kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- policies/"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        listed, shipped,
        "deploy/kubernetes/kustomization.yaml must list every policies/*.cedar under satgate-policies"
    );
    // Nothing it reads lies outside its directory (the default load restrictor refuses that).
    for line in kustomization.lines().map(str::trim).filter(|l| l.starts_with("- ")) {
        assert!(
            !line.contains(".."),
            "kustomization reads outside its directory: {line}"
        );
    }
    assert!(Path::new("deploy/kubernetes/satgate.toml").is_file());
}
