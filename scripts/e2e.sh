#!/usr/bin/env bash
# End to end: install the Helm chart with the image of this build and smoke-test the service.
#
# kind (a Docker engine and kind are present; the CI e2e-kind job):
#   create the kind cluster or reuse it, `kind load` the image, install the Prometheus Operator CRDs
#   (so the ServiceMonitor and PrometheusRule are accepted), `helm upgrade --install --wait` with the
#   HPA, ServiceMonitor, PrometheusRule and NetworkPolicy enabled (its only peer another namespace, so
#   `helm test` passes only through the policy's rule for the chart's test pod), `helm test`,
#   port-forward to the Service, scripts/smoke-test.sh.
#   On failure: kubectl describe and the pods' logs.
# podman (no Docker engine, e.g. this project's development machines): scripts/kube-play.sh runs the
#   chart's rendered workload under `podman kube play` and smoke-tests it.
#
# Environment:
#   IMAGE              image to deploy (default: wine-quality:<version in pyproject.toml>)
#   E2E_MODE           auto (default), kind or podman
#   KIND_CLUSTER_NAME  kind cluster to create or reuse (default: wine-quality)
#   NAMESPACE          namespace to install into (default: wine-quality)
#   RELEASE            Helm release name (default: wine-quality)
#   E2E_TIMEOUT        helm --wait / rollout timeout (default: 5m)
#   DOCKER, KIND, KUBECTL, HELM  the commands to use (default: docker, kind, kubectl, helm)
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
CHART=chart/wine-quality
DOCKER=${DOCKER:-docker} KIND=${KIND:-kind} KUBECTL=${KUBECTL:-kubectl} HELM=${HELM:-helm}
# Prometheus Operator CRDs the chart can create objects of, from a pinned release of the operator.
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CRD_BASE=https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/$PROMETHEUS_OPERATOR_VERSION/example/prometheus-operator-crd
CRDS=(servicemonitors prometheusrules)

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

install_chart() {
  local repository=${IMAGE%:*} tag=${IMAGE##*:}
  "$HELM" upgrade --install "$RELEASE" "$CHART" \
    --namespace "$NAMESPACE" --create-namespace \
    --set-string image.repository="$repository" --set-string image.tag="$tag" \
    --set image.pullPolicy=Never \
    --set autoscaling.enabled=true --set serviceMonitor.enabled=true \
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
  scripts/smoke-test.sh "http://127.0.0.1:$local_port"
}

forward_pid=""
on_exit() {
  local status=$?
  [ -n "$forward_pid" ] && kill "$forward_pid" 2>/dev/null
  [ "$status" -ne 0 ] && dump_state
  return "$status"
}

run_kind() {
  trap on_exit EXIT
  kind_cluster
  log "loading $IMAGE into kind cluster $KIND_CLUSTER_NAME"
  "$KIND" load docker-image "$IMAGE" --name "$KIND_CLUSTER_NAME"
  install_crds
  install_chart
  smoke_test
  log "passed on kind: release $RELEASE in namespace $NAMESPACE"
}

run_podman() {
  [ -x scripts/kube-play.sh ] || die "scripts/kube-play.sh is missing"
  log "no Docker engine: running the chart under podman kube play"
  IMAGE=$IMAGE scripts/kube-play.sh
}

selected=$(mode)
case "$selected" in
  kind) run_kind ;;
  podman) run_podman ;;
esac
