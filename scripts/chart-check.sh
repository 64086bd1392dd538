#!/usr/bin/env bash
# Checks the Helm chart offline, the way a cluster would judge it:
#   1. helm lint --strict with Helm 4 and Helm 3, with the default values and each chart/wine-quality/ci/*.yaml
#   2. helm template of each values set with both Helms, at the oldest Kubernetes version the chart
#      claims (Chart.yaml kubeVersion); both Helms must render the same manifests
#   3. every rendered Kubernetes manifest validated by kubernetes-validate --strict against the oldest
#      claimed version and the newest version kubernetes-validate knows
#   4. ServiceMonitor / PrometheusRule / PodMonitor validated against their CRD schemas (check-jsonschema)
#   5. checkov on the rendered manifests (settings and justified skips: chart/wine-quality/.checkov.yaml)
#   6. the chart README's values table matches values.yaml (scripts/chart-values-table.py --check)
# Output: build/chart-check/ (rendered manifests, one file per document). Exit status 1 names what failed.
# Environment:
#   CRD_SCHEMA_DIR  folder of the CRD JSON schemas (see scripts/crd-schemas.sh for the fallbacks).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
use_tools

chart=chart/wine-quality
out=build/chart-check
release=wine
namespace=wine-quality
python=.venv/bin/python
bin=.venv/bin

failed=()
fail() { log "FAILED: $*"; failed+=("$1"); }

scripts/install-helm.sh

# Kubernetes versions: the oldest the chart claims, and the newest kubernetes-validate knows.
read -r oldest newest < <("$python" - "$chart/Chart.yaml" <<'EOF'
import pathlib, re, sys
import kubernetes_validate, yaml
claim = yaml.safe_load(open(sys.argv[1]))["kubeVersion"]
match = re.search(r">=\s*v?(\d+)\.(\d+)", claim)
if not match:
    sys.exit(f"chart-check: kubeVersion {claim!r} names no lower bound")
schemas = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
known = sorted({tuple(map(int, re.match(r"v(\d+)\.(\d+)", p.name).groups()))
                for p in schemas.glob("v*-local-strict")})
oldest = (int(match.group(1)), int(match.group(2)))
if oldest not in known:
    sys.exit(f"chart-check: kubernetes-validate has no schema for {oldest}, the oldest version claimed")
print(f"{oldest[0]}.{oldest[1]}.0 {known[-1][0]}.{known[-1][1]}.0")
EOF
)
log "Kubernetes versions: $oldest (oldest claimed) and $newest (newest known)"

crd_dir() { scripts/crd-schemas.sh; }

rm -rf "$out"
mkdir -p "$out/helm4" "$out/helm3" "$out/manifests"

value_sets=(default)
for file in "$chart"/ci/*.yaml; do
  value_sets+=("$(basename "$file" .yaml)")
done

# The manifests with the values of Secrets' `data` masked: the chart's CSRF key is random on every
# render, so the two Helms' renders differ there and only there.
without_secret_data() {
  awk '/^---/ { secret = 0; data = 0 }
       /^kind: Secret$/ { secret = 1 }
       secret && /^data:$/ { data = 1; print; next }
       data && /^  [^ ]/ { sub(/: .*/, ": <random>") }
       data && /^[^ ]/ { data = 0 }
       { print }' "$1"
}

values_args() {
  [ "$1" = default ] || printf '%s\n' --values "$chart/ci/$1.yaml"
}

# 1 + 2: lint and render with both Helms.
for set in "${value_sets[@]}"; do
  mapfile -t args < <(values_args "$set")
  for helm in helm helm3; do
    "$helm" lint --strict --quiet --kube-version "$oldest" "$chart" "${args[@]}" >/dev/null \
      || fail "lint-$helm-$set"
  done
  "helm" template "$release" "$chart" --namespace "$namespace" --kube-version "$oldest" \
    "${args[@]}" >"$out/helm4/$set.yaml" || fail "template-helm-$set"
  "helm3" template "$release" "$chart" --namespace "$namespace" --kube-version "$oldest" \
    "${args[@]}" >"$out/helm3/$set.yaml" || fail "template-helm3-$set"
  diff -u <(without_secret_data "$out/helm3/$set.yaml") <(without_secret_data "$out/helm4/$set.yaml") >&2 \
    || fail "helm3-helm4-differ-$set"
done
log "linted and rendered ${#value_sets[@]} values sets (${value_sets[*]}) with $(helm version --short) and $(helm3 version --short)"

# Route every document to its validator.
kube_files=()
crd_files=()
for set in "${value_sets[@]}"; do
  while read -r kind file; do
    case $kind in
      ServiceMonitor | PrometheusRule | PodMonitor) crd_files+=("$kind=$file") ;;
      *) kube_files+=("$file") ;;
    esac
  done < <("$python" scripts/manifests.py split "$out/helm4/$set.yaml" "$out/manifests/$set")
done

# 3: Kubernetes schemas, strict (unknown fields are errors).
for version in "$oldest" "$newest"; do
  if "$bin/kubernetes-validate" --kubernetes-version "$version" --strict --quiet "${kube_files[@]}"; then
    log "kubernetes-validate --strict $version: ${#kube_files[@]} manifests valid"
  else
    fail "kubernetes-validate-$version"
  fi
done

# 4: Prometheus Operator custom resources against their CRD schemas.
if [ ${#crd_files[@]} -gt 0 ]; then
  schemas=$(crd_dir)
  for entry in "${crd_files[@]}"; do
    kind=${entry%%=*}
    file=${entry#*=}
    name=monitoring.coreos.com-$(echo "$kind" | tr '[:upper:]' '[:lower:]')_v1.json
    schema=$out/schemas/$name
    if [ ! -f "$schema" ]; then
      mkdir -p "$out/schemas"
      # The CRD schemas carry a few Go-dialect regexes that JSON Schema tools reject; see manifests.py.
      "$python" scripts/manifests.py portable-schema "$schemas/$name" "$schema" \
        | sed "s|^|chart-check: $name: dropped Go-only pattern |" >&2
    fi
    "$bin/check-jsonschema" --schemafile "$schema" "$file" >/dev/null || fail "crd-schema-$file"
  done
  log "check-jsonschema: ${#crd_files[@]} custom resources checked against $schemas"
fi

# 5: checkov security scan of what a cluster would receive.
if "$bin/checkov" --config-file "$chart/.checkov.yaml" --directory "$out/manifests" >"$out/checkov.txt" 2>&1; then
  log "checkov: $(grep -m1 'Passed checks' "$out/checkov.txt")"
else
  cat "$out/checkov.txt" >&2
  fail checkov
fi

# 6: the README's values table is what values.yaml says.
"$python" scripts/chart-values-table.py --check "$chart" || fail values-table

if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all chart checks passed"
