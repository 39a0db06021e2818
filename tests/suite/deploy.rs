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

/// The pod's Envoy configuration is the tested standalone one (deploy/envoy/envoy.yaml, which
/// tests/suite/envoy.rs runs and checks cannot fail open), setting for setting: remove its TLS
/// block and put the callers' port back, and the two are the same text after their header
/// comments. So nothing checked there can differ in the pod.
#[test]
fn the_pods_envoy_configuration_is_the_tested_one_plus_tls() {
    const FIX: &str = "run `bash deploy/kubernetes-envoy/sync.sh` and commit the result";
    let body = |text: &str| text[text.find("\nnode:").expect("a node: line")..].to_owned();
    let shipped = body(&std::fs::read_to_string("deploy/envoy/envoy.yaml").unwrap());
    let pod = body(&std::fs::read_to_string("deploy/kubernetes-envoy/envoy.yaml").unwrap());
    let (start, end) = ("          # --- TLS ---\n", "          # --- end TLS ---\n");
    let (a, b) = (pod.find(start).expect("the TLS block"), pod.find(end).expect("its end"));
    let without_tls = format!("{}{}", &pod[..a], &pod[b + end.len()..]);
    assert!(
        pod[a..b].contains("DownstreamTlsContext"),
        "the block is TLS for callers"
    );
    assert_eq!(without_tls.matches("port_value: 8443 ").count(), 1);
    assert_eq!(
        without_tls.replace("port_value: 8443 ", "port_value: 8080 "),
        shipped,
        "{FIX}"
    );
    let kustomization = std::fs::read_to_string("deploy/kubernetes-envoy/kustomization.yaml").unwrap();
    assert!(kustomization.contains("- envoy.yaml") && kustomization.contains("- sds.yaml"));
}

/// The Istio example's ext_proc filter and satgate cluster are the standalone configuration's,
/// field for field (compared as parsed YAML, by PyYAML, which `.ci/run` has through
/// kubernetes-validate): the mesh variant cannot drift from the tested settings.
#[test]
fn the_istio_example_has_the_tested_ext_proc_settings() {
    let compare = r#"
import sys, yaml
envoy = yaml.safe_load(open("deploy/envoy/envoy.yaml"))
istio = yaml.safe_load(open("deploy/envoy/istio-envoyfilter.yaml"))
hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
ext = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
patches = istio["spec"]["configPatches"]
filt = next(p["patch"]["value"] for p in patches if p["applyTo"] == "HTTP_FILTER")
cluster = next(p["patch"]["value"] for p in patches if p["applyTo"] == "CLUSTER")
shipped_cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "satgate")
assert filt == ext, f"ext_proc differs:\n{filt}\n{ext}"
assert cluster == shipped_cluster, f"cluster differs:\n{cluster}\n{shipped_cluster}"
print("same")
"#;
    let runs = std::process::Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    let why = "python3 lacks PyYAML (pip install kubernetes-validate brings it)";
    if !crate::support::tools::available(
        "the_istio_example_has_the_tested_ext_proc_settings",
        runs,
        "SATGATE_REQUIRE_TOOLS",
        why,
    ) {
        return;
    }
    let o = std::process::Command::new("python3")
        .args(["-c", compare])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
