#!/usr/bin/env bash
# Smoke-test a running wine-quality service with curl only:
#   scripts/smoke-test.sh [BASE_URL]        (default http://127.0.0.1:8080)
# Waits (bounded) for readiness, then checks one prediction, one batch, one Open Inference
# Protocol v2 request, a 422 for bad input and the prediction counter in /metrics.
# Env: SMOKE_READY_TIMEOUT (seconds to wait for /readyz, default 60).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_URL="${1:-http://127.0.0.1:8080}"
BASE_URL="${BASE_URL%/}"
READY_TIMEOUT="${SMOKE_READY_TIMEOUT:-60}"

WINE='{"fixed acidity": 7.4, "volatile acidity": 0.7, "citric acid": 0.0, "residual sugar": 1.9,
 "chlorides": 0.076, "free sulfur dioxide": 11.0, "total sulfur dioxide": 34.0, "density": 0.9978,
 "pH": 3.51, "sulphates": 0.56, "alcohol": 9.4}'
WINE_SNAKE='{"fixed_acidity": 7.8, "volatile_acidity": 0.88, "citric_acid": 0.0, "residual_sugar": 2.6,
 "chlorides": 0.098, "free_sulfur_dioxide": 25.0, "total_sulfur_dioxide": 67.0, "density": 0.9968,
 "ph": 3.2, "sulphates": 0.68, "alcohol": 9.8}'
V2='{"inputs": [{"name": "input-0", "shape": [2, 11], "datatype": "FP64",
 "data": [[7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4],
          [7.8, 0.88, 0.0, 2.6, 0.098, 25.0, 67.0, 0.9968, 3.2, 0.68, 9.8]]}]}'

fail() {
    echo "smoke test FAILED against ${BASE_URL}: $*" >&2
    exit 1
}

# request METHOD PATH [JSON_BODY] -> sets STATUS and BODY
request() {
    local method="$1" path="$2" data="${3:-}" out
    local args=(--silent --show-error --max-time 10 --write-out '\n%{http_code}' -X "$method")
    if [[ -n "$data" ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$data")
    fi
    out="$(curl "${args[@]}" "${BASE_URL}${path}")" || fail "$method $path: curl could not connect"
    STATUS="${out##*$'\n'}"
    BODY="${out%$'\n'*}"
}

# check WHAT STATUS REGEX METHOD PATH [JSON_BODY]: the answer has STATUS and a body matching REGEX
check() {
    local what="$1" want="$2" pattern="$3"
    request "${@:4}"
    [[ "$STATUS" == "$want" ]] || fail "$what: expected HTTP $want, got $STATUS: ${BODY:0:300}"
    grep -qE "$pattern" <<<"$BODY" || fail "$what: no match for '$pattern' in: ${BODY:0:300}"
    echo "$what: ok"
}

# A quality between 3 and 8 (what the red wines in the data set score) is a sane prediction.
sane_quality() {
    local q="$1"
    [[ "$q" =~ ^[0-9]+(\.[0-9]+)?$ ]] || return 1
    local whole="${q%%.*}"
    (( whole >= 3 && whole < 8 ))
}

echo "waiting up to ${READY_TIMEOUT}s for ${BASE_URL}/readyz"
if ! wait_for_url "${BASE_URL}/readyz" "$READY_TIMEOUT"; then
    reason="$(curl --silent --max-time 2 "${BASE_URL}/readyz" || echo 'no answer')"
    fail "not ready after ${READY_TIMEOUT}s: ${reason:0:300}"
fi
echo "ready"

check "single prediction" 200 '"model_version"' POST /predict "$WINE"
grep -q '"grade"' <<<"$BODY" || fail "single prediction: no grade in ${BODY:0:300}"
quality="$(grep -oE '"quality": *[0-9.eE+-]+' <<<"$BODY" | head -n1 | grep -oE '[0-9.eE+-]+$' || true)"
sane_quality "$quality" || fail "single prediction: quality '${quality}' is not between 3 and 8"
echo "predicted quality ${quality}"

check "batch prediction" 200 '"count": *2' POST /v1/predict "{\"instances\": [${WINE}, ${WINE_SNAKE}]}"
check "v2 infer" 200 '"shape": *\[2\]' POST /v2/models/wine-quality/infer "$V2"
check "invalid input answered 422" 422 '"invalid_input"' POST /v1/predict '{"fixed acidity": "a lot"}'
check "metrics" 200 '^wine_quality_predictions_total [0-9.e+]+$' GET /metrics
echo "smoke test passed against ${BASE_URL}"
