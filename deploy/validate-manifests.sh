#!/usr/bin/env bash
# Renders deploy/kubernetes (and its signed-bundle and Envoy variants) and validates every manifest, strictly and offline, against the two
# newest Kubernetes versions kubernetes-validate ships schemas for.
#
#   bash deploy/validate-manifests.sh      (kubectl and `pip install kubernetes-validate`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
# The base with the monitoring component added, as a user's overlay adds it (kustomize takes
# resources and components by relative path only, so the overlay sits beside them).
overlay=$(mktemp -d deploy/.overlay.XXXXXX)
trap 'rm -f "$out"; rm -rf "$overlay"' EXIT
printf 'resources: [../kubernetes]\ncomponents: [../monitoring]\n' > "$overlay/kustomization.yaml"
# Exactly the command README gives: default kustomize settings, as `kubectl apply -k` uses them.
render() { kubectl kustomize "$1"; }
versions=$(python3 - <<'PY'
import os, re, kubernetes_validate
root = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
found = {tuple(map(int, m.groups())) for d in os.listdir(root) if (m := re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", d))}
print(" ".join(".".join(map(str, v)) for v in sorted(found)[-2:]))
PY
)
# The base, the variant that takes the policy set from a signed bundle, and the base with the
# monitoring component (kubernetes-validate has no schema for the Operator's PodMonitor and
# PrometheusRule and says so; deploy/monitoring/check.sh checks the rules in them).
for dir in deploy/kubernetes deploy/kubernetes-bundle deploy/kubernetes-envoy "$overlay"; do
  render "$dir" > "$out"
  for v in $versions; do
    kubernetes-validate --strict --quiet -k "$v" "$out"
    echo "ok: ${dir/$overlay/deploy/kubernetes + deploy/monitoring}: $(grep -c '^kind:' "$out") manifests ($(grep '^kind:' "$out" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $3, $1; sep=", "}')) valid for Kubernetes $v (strict)"
  done
done
