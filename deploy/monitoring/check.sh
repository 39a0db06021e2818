#!/usr/bin/env bash
# Checks the alerting rules (run by .ci/run; needs promtool and python3 with PyYAML):
#   - promtool check rules, and promtool test rules over tests/<group>.test.yml, one per group;
#   - every alert has a case where it fires and one where it does not, in its group's test file;
#   - prometheusrule.yaml holds exactly the groups of satgate.rules.yml;
#   - every alert has a severity and a runbook_url naming a section of README.md here.
#
#   bash deploy/monitoring/check.sh            check
#   bash deploy/monitoring/check.sh --write    regenerate prometheusrule.yaml from the rules file
set -euo pipefail
cd "$(dirname "$0")"

if [[ "${1:-}" == "--write" ]]; then
  {
    cat <<'HEAD'
# Generated from satgate.rules.yml by `bash deploy/monitoring/check.sh --write`; edit that file
# instead (check.sh, run by CI, fails while the two differ). The same rules for the Prometheus
# Operator: its Prometheus must select this PrometheusRule (ruleSelector, ruleNamespaceSelector).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: satgate
spec:
HEAD
    sed -e 's/^\(.\)/  \1/' satgate.rules.yml
  } > prometheusrule.yaml
  echo "wrote deploy/monitoring/prometheusrule.yaml"
fi

promtool check rules satgate.rules.yml
promtool test rules tests/*.test.yml

python3 - <<'PY'
import glob, re, sys, yaml

rules = yaml.safe_load(open("satgate.rules.yml"))
crd = yaml.safe_load(open("prometheusrule.yaml"))
problems = []
if crd.get("kind") != "PrometheusRule" or crd.get("spec", {}).get("groups") != rules["groups"]:
    problems.append("prometheusrule.yaml does not hold the groups of satgate.rules.yml: "
                    "run `bash deploy/monitoring/check.sh --write`")

# GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes.
readme = open("README.md").read()
anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.*)$", readme, re.M)}

tests = {f[len("tests/"):-len(".test.yml")] for f in glob.glob("tests/*.test.yml")}
if tests != {g["name"] for g in rules["groups"]}:
    problems.append(f"test files {sorted(tests)} are not one per rule group")
alerts = 0
for group in rules["groups"]:
    cases = {"fires": set(), "quiet": set()}
    try:
        spec = yaml.safe_load(open(f"tests/{group['name']}.test.yml"))
    except FileNotFoundError:
        continue
    for test in spec["tests"]:
        for case in test.get("alert_rule_test", []):
            cases["fires" if case.get("exp_alerts") else "quiet"].add(case["alertname"])
    for rule in group["rules"]:
        name = rule.get("alert")
        if not name:
            continue
        alerts += 1
        for kind in ("fires", "quiet"):
            if name not in cases[kind]:
                problems.append(f"{name}: no test case where it {'fires' if kind == 'fires' else 'stays quiet'}")
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity must be critical, warning or info")
        url = rule.get("annotations", {}).get("runbook_url", "")
        want = f"deploy/monitoring/README.md#{name.lower()}"
        if url != want or name.lower() not in anchors:
            problems.append(f"{name}: runbook_url must be {want}, a section of README.md here")
        for key in ("summary", "description"):
            if not rule.get("annotations", {}).get(key):
                problems.append(f"{name}: no {key} annotation")
for p in problems:
    print(f"FAIL: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"ok: {alerts} alerts in {len(rules['groups'])} groups, each tested firing and quiet, "
      "with a runbook; prometheusrule.yaml holds the same rules")
PY
