#!/usr/bin/env bash
# The crash and distributed test files, N times in a row, beside one CPU-burning process (docs/RELIABILITY.md).
# Usage: bash tools/under_load.sh [RUNS=20] [LOG_DIR=${TMPDIR:-/tmp}/under_load]
# Each run's pytest output goes to LOG_DIR/run_<i>.log, one line a run to LOG_DIR/summary.txt and the screen.
# Exit status: 0 when every run passed. On 2 cores one run took about 3.5 minutes (2026-11-28).
set -u
cd "$(dirname "$0")/.."
runs=${1:-20}
logs=${2:-${TMPDIR:-/tmp}/under_load}
mkdir -p "$logs"
python -c "while True: pass" &
burner=$!
trap 'kill "$burner"' EXIT
failed=0
for i in $(seq 1 "$runs"); do
    start=$(date +%s)
    python -m pytest -q -p no:cacheprovider tests/test_distributed.py tests/test_crash_safety.py > "$logs/run_$i.log" 2>&1
    rc=$?
    echo "run $i rc=$rc seconds=$(( $(date +%s) - start )) $(tail -n 1 "$logs/run_$i.log")" | tee -a "$logs/summary.txt"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
done
echo "$failed of $runs runs failed"
[ "$failed" -eq 0 ]
