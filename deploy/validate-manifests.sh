#!/usr/bin/env bash
# Renders deploy/kubernetes (and its signed-bundle variant) and validates every manifest, strictly and offline, against the two
# newest Kubernetes versions kubernetes-validate ships schemas for.
#
#   bash deploy/validate-manifests.sh      (kubectl and `pip install kubernetes-validate`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Exactly the command README gives: default kustomize settings, as `kubectl apply -k` uses them.
render() { kubectl kustomize "$1"; }
versions=$(python3 - <<'PY'
import os, re, kubernetes_validate
root = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
found = {tuple(map(int, m.groups())) for d in os.listdir(root) if (m := re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", d))}
print(" ".join(".".join(map(str, v)) for v in sorted(found)[-2:]))
PY
)
# The base, and the variant that takes the policy set from a signed bundle.
for dir in deploy/kubernetes deploy/kubernetes-bundle; do
  render "$dir" > "$out"
  for v in $versions; do
    kubernetes-validate --strict --quiet -k "$v" "$out"
    echo "ok: $dir: $(grep -c '^kind:' "$out") manifests ($(grep '^kind:' "$out" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $3, $1; sep=", "}')) valid for Kubernetes $v (strict)"
  done
done
