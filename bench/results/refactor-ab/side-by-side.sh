#!/bin/bash
# Old and new service side by side on one machine, wrk alternating between them, 8 rounds
# of 4 s per workload (fraud-1 and fraud-100 at c=64). The server started second and measured
# second was ~7% slower with identical code (an A/A run), so run it twice with the trees
# swapped and take the geometric mean of the two medians of new/old.
#   OLD_TREE=<checkout of 2ce5257> NEW_TREE=<checkout of the new code> ./side-by-side.sh
set -eu
work=$(mktemp -d)
python - "$work" <<'PY'
import json, sys
t = json.load(open("tests/data/transaction.json"))
bodies = {"one": t, "hundred": {"transactions": [dict(t, transaction_id=i) for i in range(100)]}}
for name, body in bodies.items():
    lua = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    open(f"{sys.argv[1]}/{name}.lua", "w").write(lua + "wrk.body = " + json.dumps(json.dumps(body)) + "\n")
PY
(cd "$OLD_TREE" && DEEPSERVE_PORT=8101 DEEPSERVE_LOG_LEVEL=warning python -m app >"$work/old.log" 2>&1) &
old=$!
(cd "$NEW_TREE" && DEEPSERVE_PORT=8102 DEEPSERVE_LOG_LEVEL=warning python -m app >"$work/new.log" 2>&1) &
new=$!
for p in 8101 8102; do for _ in $(seq 100); do curl -sf "localhost:$p/readyz" >/dev/null && break; sleep 0.2; done; done
for w in one hundred; do
  for round in 1 2 3 4 5 6 7 8; do
    for side in old new; do
      port=8101; [ "$side" = new ] && port=8102
      rps=$(wrk -t2 -c64 -d4s -s "$work/$w.lua" "http://127.0.0.1:$port/v1/fraud/score" | awk '/Requests\/sec/ {print $2}')
      echo "$w $round $side $rps"
    done
  done
done
kill "$old" "$new"
