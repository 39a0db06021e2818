#!/usr/bin/env bash
# Makes this variant's envoy.yaml from deploy/envoy/envoy.yaml: the same configuration, setting
# for setting, with the callers' listener on 8443 and TLS from the satgate-tls Secret (the pod
# has no mesh in front to terminate it). Run it after changing deploy/envoy/envoy.yaml;
# `cargo test` fails while the two differ otherwise (tests/suite/deploy.rs), and says to run this.
#
#   bash deploy/kubernetes-envoy/sync.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 - <<'PY'
src = open("deploy/envoy/envoy.yaml").read()
head, sep, rest = src.partition("node:")
assert sep, "deploy/envoy/envoy.yaml has no node: line"
header = """# Made by sync.sh from deploy/envoy/envoy.yaml: the same, but the callers' listener is on 8443
# with TLS from the satgate-tls Secret (between the TLS markers). Edit that file and run sync.sh.
"""
assert rest.count("port_value: 8080 ") == 1
rest = rest.replace("port_value: 8080 ", "port_value: 8443 ")
tls = """          # --- TLS ---
          # The certificate through a file-based SDS secret (sds.yaml, this variant's ConfigMap),
          # which Envoy reloads when kubelet swaps the Secret's files: rotation without a restart.
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                tls_certificate_sds_secret_configs:
                  - name: callers
                    sds_config:
                      path_config_source:
                        path: /etc/envoy/config/sds.yaml
                        watched_directory: {path: /etc/envoy/config}
          # --- end TLS ---
"""
# The transport socket belongs to the filter chain, after its filters.
assert rest.count("  clusters:\n") == 1
rest = rest.replace("  clusters:\n", tls + "  clusters:\n")
open("deploy/kubernetes-envoy/envoy.yaml", "w").write(header + sep + rest)
PY
