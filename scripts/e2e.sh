#!/usr/bin/env bash
# End to end: install the Helm chart with the image of this build and smoke-test the service.
#
# kind (a Docker engine and kind are present; the CI e2e-kind job):
#   create the kind cluster or reuse it, `kind load` the image, install the Prometheus Operator CRDs
#   (so the ServiceMonitor and PrometheusRule are accepted) and metrics-server (pinned upstream
#   manifests, each checked against its sha256, with `--kubelet-insecure-tls`: kind's kubelets serve
#   self-signed certificates; an already registered metrics.k8s.io API is reused instead),
#   `helm upgrade --install --wait` with the HPA, ServiceMonitor, PrometheusRule and NetworkPolicy
#   enabled (its only peer another namespace, so `helm test` passes only through the policy's rule
#   for the chart's test pod), `helm test`, port-forward to the Service, scripts/smoke-test.sh;
#   then a real Prometheus scrapes every pod as the installed ServiceMonitor says (through a
#   port-forward per pod, which the NetworkPolicy does not filter) and finds the smoke test's
#   predictions (scripts/prometheus-scrape.sh); last, a short load until the HPA reports the pods'
#   CPU utilisation (status.currentMetrics), which it can only compute with metrics-server.
#   On failure: kubectl describe and the pods' logs.
# podman (no Docker engine, e.g. this project's development machines): scripts/kube-play.sh runs the
#   chart's rendered workload under `podman kube play`, smoke-tests it and has the same Prometheus
#   check scrape it (KUBE_PLAY_SCRAPE=1). No HPA or metrics-server there.
#
# Environment:
#   IMAGE              image to deploy (default: wine-quality:<version in pyproject.toml>)
#   E2E_MODE           auto (default), kind or podman
#   KIND_CLUSTER_NAME  kind cluster to create or reuse (default: wine-quality)
#   NAMESPACE          namespace to install into (default: wine-quality)
#   RELEASE            Helm release name (default: wine-quality)
#   E2E_TIMEOUT        helm --wait / rollout timeout (default: 5m)
#   SCRAPE_INTERVAL    the ServiceMonitor's interval and scrape timeout for this run (default: 5s)
#   HPA_TIMEOUT        seconds of load to wait for the HPA's first computed target (default: 300)
#   LOAD_CLIENTS       concurrent clients of that load (default: 4)
#   DOCKER, KIND, KUBECTL, HELM, CURL  the commands to use (default: docker, kind, kubectl, helm,
#                      curl; CURL only downloads the metrics-server manifests)
#   PROMETHEUS, PYTHON see scripts/prometheus-scrape.sh
set -euo pipefail
shopt -s inherit_errexit # failures inside $(...) stop the script too
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
use_tools

IMAGE=${IMAGE:-wine-quality:$(scripts/version.sh)}
E2E_MODE=${E2E_MODE:-auto}
KIND_CLUSTER_NAME=${KIND_CLUSTER_NAME:-wine-quality}
NAMESPACE=${NAMESPACE:-wine-quality}
RELEASE=${RELEASE:-wine-quality}
E2E_TIMEOUT=${E2E_TIMEOUT:-5m}
SCRAPE_INTERVAL=${SCRAPE_INTERVAL:-5s}
HPA_TIMEOUT=${HPA_TIMEOUT:-300}
LOAD_CLIENTS=${LOAD_CLIENTS:-4}
CHART=chart/wine-quality
DOCKER=${DOCKER:-docker} KIND=${KIND:-kind} KUBECTL=${KUBECTL:-kubectl} HELM=${HELM:-helm}
CURL=${CURL:-curl}
# The project's .venv, else the system's python3 with PyYAML (the CI's e2e-kind runner has no .venv).
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
export PYTHON
# Prometheus Operator CRDs the chart can create objects of, from a pinned release of the operator.
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CRD_BASE=https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/$PROMETHEUS_OPERATOR_VERSION/example/prometheus-operator-crd
CRDS=(servicemonitors prometheusrules)
# metrics-server v0.8.1 (Kubernetes 1.31+): the release's manifests are its kustomize base at the
# tag's commit plus the release image; each file is checked against its sha256 before use.
METRICS_SERVER_VERSION=v0.8.1
METRICS_SERVER_BASE=https://raw.githubusercontent.com/kubernetes-sigs/metrics-server/9ce65a47f9262e19e482c259ace815f01135a898/manifests/base
METRICS_SERVER_FILES=(
  "03266df7891b56dfffebb855a031b524ed20c6736846417ccd491dd91c6c0ec3 apiservice.yaml"
  "18970227f17d0c6cb8e7a4a1cdde847117703afd3b0777badf8a006cfea252c2 deployment.yaml"
  "31dca97d3a1505d8577f41ef09feca37e51ebfa881fa0b5f1782e3a960abc713 kustomization.yaml"
  "510be174d47ae7d05ae6908ccb7ca7111008f18b5d1a920ebc6de6582c23b854 rbac.yaml"
  "1ce19a57f4769906255c3410a38a01fb0f803e21976ce160f506a90638cbb5c7 service.yaml"
)

mode() {
  case "$E2E_MODE" in
    kind | podman) echo "$E2E_MODE" ;;
    auto)
      if command -v "$KIND" >/dev/null 2>&1 && "$DOCKER" info >/dev/null 2>&1; then
        echo kind
      elif command -v podman >/dev/null 2>&1; then
        echo podman
      else
        die "neither docker+kind nor podman is available"
      fi
      ;;
    *) log "E2E_MODE must be auto, kind or podman, not '$E2E_MODE'"; exit 2 ;;
  esac
}

dump_state() {
  log "failed; state of namespace $NAMESPACE follows"
  "$KUBECTL" --namespace "$NAMESPACE" get all,hpa,servicemonitor,prometheusrule,networkpolicy,events 2>&1 || true
  "$KUBECTL" --namespace "$NAMESPACE" describe deployment,replicaset,pod,service,hpa 2>&1 || true
  "$KUBECTL" --namespace "$NAMESPACE" logs --selector "app.kubernetes.io/instance=$RELEASE" \
    --all-containers --prefix --tail=200 2>&1 || true
}

kind_cluster() {
  if "$KIND" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
    log "reusing kind cluster $KIND_CLUSTER_NAME"
  else
    "$KIND" create cluster --name "$KIND_CLUSTER_NAME" --wait 120s
  fi
  "$KUBECTL" config use-context "kind-$KIND_CLUSTER_NAME" >/dev/null
}

install_crds() {
  local crd
  for crd in "${CRDS[@]}"; do
    # Server-side apply: these CRDs exceed the client-side last-applied annotation limit.
    "$KUBECTL" apply --server-side --force-conflicts \
      --filename "$CRD_BASE/monitoring.coreos.com_$crd.yaml"
    "$KUBECTL" wait --for condition=established --timeout=60s "crd/$crd.monitoring.coreos.com"
  done
}

# Writes to DIR a kustomization of the verified upstream base: the release image and the flag
# kind's self-signed kubelet certificates need.
metrics_server_kustomization() {
  local dir=$1 entry sum file
  mkdir -p "$dir/base"
  for entry in "${METRICS_SERVER_FILES[@]}"; do
    read -r sum file <<<"$entry"
    "$CURL" -fsSL --max-time 60 -o "$dir/base/$file" "$METRICS_SERVER_BASE/$file" \
      || die "could not download metrics-server $file"
    echo "$sum  $dir/base/$file" | sha256sum --check --status \
      || die "metrics-server $file does not match its pinned sha256 $sum"
  done
  cat >"$dir/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [base]
images:
  - name: gcr.io/k8s-staging-metrics-server/metrics-server
    newName: registry.k8s.io/metrics-server/metrics-server
    newTag: $METRICS_SERVER_VERSION
patches:
  - target: {group: apps, version: v1, kind: Deployment, name: metrics-server}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --kubelet-insecure-tls
YAML
}

install_metrics_server() {
  if "$KUBECTL" get apiservice v1beta1.metrics.k8s.io >/dev/null 2>&1; then
    log "reusing the metrics.k8s.io API already registered in the cluster"
  else
    log "installing metrics-server $METRICS_SERVER_VERSION"
    metrics_server_kustomization "$work/metrics-server"
    "$KUBECTL" apply --kustomize "$work/metrics-server"
  fi
  "$KUBECTL" wait --for condition=Available --timeout "$E2E_TIMEOUT" apiservice/v1beta1.metrics.k8s.io
}

install_chart() {
  local repository=${IMAGE%:*} tag=${IMAGE##*:}
  "$HELM" upgrade --install "$RELEASE" "$CHART" \
    --namespace "$NAMESPACE" --create-namespace \
    --set-string image.repository="$repository" --set-string image.tag="$tag" \
    --set image.pullPolicy=Never \
    --set autoscaling.enabled=true --set serviceMonitor.enabled=true \
    --set-string serviceMonitor.interval="$SCRAPE_INTERVAL" \
    --set-string serviceMonitor.scrapeTimeout="$SCRAPE_INTERVAL" \
    --set prometheusRule.enabled=true \
    --set networkPolicy.enabled=true \
    --set-string 'networkPolicy.from[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=ingress-nginx' \
    --wait --timeout "$E2E_TIMEOUT"
  "$KUBECTL" --namespace "$NAMESPACE" get hpa,servicemonitor,prometheusrule,networkpolicy \
    --selector "app.kubernetes.io/instance=$RELEASE"
  "$HELM" test "$RELEASE" --namespace "$NAMESPACE" --logs --timeout "$E2E_TIMEOUT"
}

# Port-forwards to the release's Service on a free local port and smoke-tests it.
smoke_test() {
  local service port local_port
  service=$("$KUBECTL" --namespace "$NAMESPACE" get service \
    --selector "app.kubernetes.io/instance=$RELEASE" --output jsonpath='{.items[0].metadata.name}')
  port=$("$KUBECTL" --namespace "$NAMESPACE" get service "$service" --output jsonpath='{.spec.ports[0].port}')
  local_port=$(free_port)
  "$KUBECTL" --namespace "$NAMESPACE" port-forward "service/$service" "$local_port:$port" \
    --address 127.0.0.1 >/dev/null &
  forward_pid=$!
  wait_for_url "http://127.0.0.1:$local_port/healthz" 30 \
    || { log "port-forward to $service did not answer"; return 1; }
  service_url=http://127.0.0.1:$local_port
  scripts/smoke-test.sh "$service_url"
}

# A real Prometheus scrapes each pod of the release through its own port-forward, with the job
# scripts/scrape-config.py derives from the ServiceMonitor helm installed.
scrape_pods() {
  local endpoint selector container_port pod local_port targets=()
  "$HELM" get manifest "$RELEASE" --namespace "$NAMESPACE" >"$work/installed.yaml"
  endpoint=$("$PYTHON" scripts/scrape-config.py endpoint "$work/installed.yaml")
  selector=$(json_field "$endpoint" pod_selector)
  container_port=$(json_field "$endpoint" container_port)
  for pod in $("$KUBECTL" --namespace "$NAMESPACE" get pods --selector "$selector" \
    --field-selector status.phase=Running --output 'jsonpath={.items[*].metadata.name}'); do
    local_port=$(free_port)
    "$KUBECTL" --namespace "$NAMESPACE" port-forward "pod/$pod" "$local_port:$container_port" \
      --address 127.0.0.1 >/dev/null &
    background+=($!)
    wait_for_url "http://127.0.0.1:$local_port$(json_field "$endpoint" path)" 30 \
      || die "port-forward to pod $pod did not answer"
    targets+=("$pod=127.0.0.1:$local_port")
  done
  [ ${#targets[@]} -gt 0 ] || die "no running pod matches $selector"
  scripts/prometheus-scrape.sh "$work/installed.yaml" "${targets[@]}"
}

json_field() { "$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# Batches of predictions from LOAD_CLIENTS clients until the HPA reports the pods' CPU
# utilisation, which needs metrics-server's pod metrics: without them currentMetrics stays empty.
hpa_computes_target() {
  local hpa utilisation="" deadline=$((SECONDS + HPA_TIMEOUT)) client
  hpa=$("$KUBECTL" --namespace "$NAMESPACE" get hpa --selector "app.kubernetes.io/instance=$RELEASE" \
    --output 'jsonpath={.items[0].metadata.name}')
  [ -n "$hpa" ] || die "the release has no HorizontalPodAutoscaler"
  "$PYTHON" -c '
import json, sys
row = {"fixed acidity": 7.4, "volatile acidity": 0.7, "citric acid": 0.0, "residual sugar": 1.9,
       "chlorides": 0.076, "free sulfur dioxide": 11.0, "total sulfur dioxide": 34.0,
       "density": 0.9978, "pH": 3.51, "sulphates": 0.56, "alcohol": 9.4}
json.dump({"instances": [row] * 500}, sys.stdout)' >"$work/batch.json"
  for ((client = 0; client < LOAD_CLIENTS; client++)); do
    while :; do
      curl -s -o /dev/null --max-time 10 -H 'Content-Type: application/json' \
        --data-binary "@$work/batch.json" "$service_url/v1/predict" || sleep 1
    done &
    background+=($!)
  done
  log "load on $service_url/v1/predict from $LOAD_CLIENTS clients until HPA $hpa computes a target"
  until [ -n "$utilisation" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "HPA $hpa computed no CPU target within ${HPA_TIMEOUT}s"
    sleep 5
    utilisation=$("$KUBECTL" --namespace "$NAMESPACE" get hpa "$hpa" --output \
      'jsonpath={.status.currentMetrics[?(@.type=="Resource")].resource.current.averageUtilization}')
  done
  log "HPA $hpa: CPU at ${utilisation}% of the request (target" \
    "$("$KUBECTL" --namespace "$NAMESPACE" get hpa "$hpa" --output \
      'jsonpath={.spec.metrics[?(@.type=="Resource")].resource.target.averageUtilization}')%)," \
    "$("$KUBECTL" --namespace "$NAMESPACE" get hpa "$hpa" --output 'jsonpath={.status.currentReplicas}') replicas"
  stop_background
}

forward_pid="" service_url="" work="" background=()
stop_background() {
  local pid
  for pid in "${background[@]}"; do kill "$pid" 2>/dev/null || true; done
  background=()
}
on_exit() {
  local status=$?
  [ -n "$forward_pid" ] && kill "$forward_pid" 2>/dev/null
  stop_background
  [ "$status" -ne 0 ] && dump_state
  [ -z "$work" ] || rm -rf "$work"
  return "$status"
}

run_kind() {
  trap on_exit EXIT
  mkdir -p build
  work=$(mktemp -d build/e2e.XXXXXX)
  kind_cluster
  log "loading $IMAGE into kind cluster $KIND_CLUSTER_NAME"
  "$KIND" load docker-image "$IMAGE" --name "$KIND_CLUSTER_NAME"
  install_crds
  install_metrics_server
  install_chart
  smoke_test
  scrape_pods
  hpa_computes_target
  log "passed on kind: release $RELEASE in namespace $NAMESPACE"
}

run_podman() {
  [ -x scripts/kube-play.sh ] || die "scripts/kube-play.sh is missing"
  log "no Docker engine: running the chart under podman kube play"
  local values
  values=$(mktemp)
  printf 'serviceMonitor:\n  interval: %s\n  scrapeTimeout: %s\n' "$SCRAPE_INTERVAL" "$SCRAPE_INTERVAL" >"$values"
  IMAGE=$IMAGE KUBE_PLAY_SCRAPE=1 KUBE_PLAY_VALUES=$values scripts/kube-play.sh \
    || { rm -f "$values"; return 1; }
  rm -f "$values"
}

selected=$(mode)
case "$selected" in
  kind) run_kind ;;
  podman) run_podman ;;
esac
