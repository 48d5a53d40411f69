#!/usr/bin/env bash
# Headless Locust run against a running service: CSV and HTML reports in test-results/, a printed
# summary, and a non-zero exit when an SLO gate breaks (locustfile.py: --slo-p95-ms,
# --slo-max-failure-ratio).
#
#   scripts/load-test.sh URL [--duration 60s] [--users N] [--spawn-rate R] [--shape step|spike|soak]
#                            [any other locust / locustfile option, e.g. --slo-p95-ms 200]
#
# Without --shape it runs N users (default 10) for --duration (default 60s). A shape sets the user
# count itself and ends on its own; --duration then caps it. LOAD_TEST_RESULTS overrides the
# report directory.
set -euo pipefail
# shellcheck source=scripts/lib.sh disable=SC1091  # followed under shellcheck -x
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac
url="$1"
shift
duration="" users="10" spawn_rate="" shape=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --duration | --users | --spawn-rate | --shape)
            [ $# -ge 2 ] || { echo "load-test.sh: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --duration) duration="$2" ;;
                --users) users="$2" ;;
                --spawn-rate) spawn_rate="$2" ;;
                --shape) shape="$2" ;;
            esac
            shift 2
            ;;
        -h | --help) usage; exit 0 ;;
        *)
            extra+=("$1")
            shift
            ;;
    esac
done

ensure_venv test
cd "$ROOT"
results="${LOAD_TEST_RESULTS:-$ROOT/test-results}"
mkdir -p "$results"
prefix="$results/load-test"
rm -f "$prefix"_*.csv "$prefix.html"

args=(-f "$ROOT/locustfile.py" --headless --only-summary -H "$url"
    --csv "$prefix" --html "$prefix.html")
if [ -n "$shape" ]; then
    args+=(--shape "$shape")
    [ -z "$duration" ] || args+=(-t "$duration")
else
    args+=(-u "$users" -r "${spawn_rate:-$users}" -t "${duration:-60s}")
fi

status=0
"$VENV/bin/locust" "${args[@]}" "${extra[@]}" || status=$?

if [ -f "${prefix}_stats.csv" ]; then
    "$VENV/bin/python" - "${prefix}_stats.csv" "$status" <<'EOF'
import csv
import sys

path, status = sys.argv[1], int(sys.argv[2])
rows = list(csv.DictReader(open(path, newline="")))
print("\nload test summary")
print(f"{'request':<28} {'count':>8} {'fails':>7} {'req/s':>8} {'p50':>6} {'p95':>6} {'p99':>6}  (ms)")
for row in rows:
    print(
        f"{row['Name']:<28} {row['Request Count']:>8} {row['Failure Count']:>7} "
        f"{float(row['Requests/s']):>8.1f} {row['50%']:>6} {row['95%']:>6} {row['99%']:>6}"
    )
print("SLO gates:", "kept" if status == 0 else f"BREACHED or run failed (locust exit {status})")
EOF
fi
echo "reports: ${prefix}_stats.csv, ${prefix}_failures.csv, ${prefix}.html"
exit "$status"
