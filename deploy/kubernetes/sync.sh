#!/usr/bin/env bash
# Copies the shipped policy set and schema into this kustomize base, so that `kubectl kustomize
# deploy/kubernetes` (and `kubectl apply -k`, Argo CD, Flux) work with kustomize's default load
# restrictor, which reads no file outside the kustomization's directory. Run it after changing
# policies/*.cedar or schemas/sat.cedarschema; `cargo test` fails while the copies differ
# (tests/suite/deploy.rs), and says to run this.
#
#   bash deploy/kubernetes/sync.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -f deploy/kubernetes/policies/*.cedar
cp policies/*.cedar deploy/kubernetes/policies/
cp schemas/sat.cedarschema deploy/kubernetes/schema/
