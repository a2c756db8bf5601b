#!/usr/bin/env bash
# Throughput and latency of both endpoints at concurrency 1 and 64, with batching on and off,
# measured with `hey` against `python -m app` on the committed models, all in one run.
#   bench/serving_matrix.sh              (DURATION=15s PORT=8765 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DURATION=${DURATION:-15s}
PORT=${PORT:-8765}
BASE="http://127.0.0.1:$PORT"
command -v hey >/dev/null || { echo "needs hey (apt install hey)" >&2; exit 1; }

measure() {  # endpoint content-type body concurrency -> "req/s p50_ms p99_ms errors"
  hey -z "$DURATION" -c "$4" -m POST -T "$2" -D "$3" "$BASE$1" | awk '
    /Requests\/sec/ {rps=$2}
    /50% in/ {p50=$3*1000} /99% in/ {p99=$3*1000}
    /^\s*\[[0-9]+\]/ {code=substr($1,2,3); if (code != "200") errors+=$2}
    END {printf "%.0f %.1f %.1f %d\n", rps, p50, p99, errors}'
}

echo "| endpoint | batching | concurrency | req/s | p50 ms | p99 ms | non-200 |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for batching in on off; do
  extra=()
  [ "$batching" = off ] && extra=(DEEPSERVE_MAX_BATCH_SIZE=1)
  env "${extra[@]}" DEEPSERVE_PORT="$PORT" DEEPSERVE_LOG_LEVEL=warning "$PY" -m app &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  until curl -sf "$BASE/readyz" >/dev/null; do sleep 0.2; done
  # Warm up both paths (first-call allocations, caches) before anything is measured.
  DURATION=3s measure /v1/fraud/score application/json tests/data/transaction.json 8 >/dev/null
  DURATION=3s measure /v1/classify image/jpeg tests/data/cat.jpg 8 >/dev/null
  for concurrency in 1 64; do
    read -r rps p50 p99 errors < <(measure /v1/fraud/score application/json tests/data/transaction.json "$concurrency")
    echo "| fraud/score (1 tx) | $batching | $concurrency | $rps | $p50 | $p99 | $errors |"
    read -r rps p50 p99 errors < <(measure /v1/classify image/jpeg tests/data/cat.jpg "$concurrency")
    echo "| classify (1 image) | $batching | $concurrency | $rps | $p50 | $p99 | $errors |"
  done
  kill "$server"
  wait "$server" 2>/dev/null || true
done
