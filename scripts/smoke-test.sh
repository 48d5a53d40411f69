#!/usr/bin/env bash
# Smoke-test a running deployment through its public URL (the ingress, or nginx locally).
#
#   scripts/smoke-test.sh BASE_URL        e.g. https://sre.example.com or http://127.0.0.1:8080
#
# Waits up to SMOKE_READY_TIMEOUT_S (60) for GET /ready to answer 200, then posts the seed
# example and checks every field of the analysis. Exit status 0 on success, 1 otherwise.
set -euo pipefail

usage() { sed -n '2,7s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac
BASE_URL="${1%/}"
READY_TIMEOUT_S="${SMOKE_READY_TIMEOUT_S:-60}"

deadline=$((SECONDS + READY_TIMEOUT_S))
until curl -fsS --max-time 5 -o /dev/null "$BASE_URL/ready"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "smoke test: $BASE_URL/ready did not answer 200 within ${READY_TIMEOUT_S} s" >&2
        exit 1
    fi
    sleep 2
done

response="$(curl -fsS --max-time 10 -H 'Content-Type: application/json' \
    -d '{"numbers": [1, 2, 3, 4, 5], "text": "Sample text for analysis"}' "$BASE_URL/payload")"

# Exact expected values (README's seed example); processing_time_ms varies and is only typed.
python3 - "$response" <<'EOF'
import json
import sys

body = json.loads(sys.argv[1])
expected = {
    "numeric_analysis": {"minimum": 1, "maximum": 5, "mean": 3, "median": 3,
                         "standard_deviation": 1.5811388300841898, "count": 5},
    "text_analysis": {"word_count": 4, "character_count": 24, "character_count_no_spaces": 21,
                      "sentence_count": 1, "paragraph_count": 1},
}
problems = [f"{key}: {body.get(key)} != {value}" for key, value in expected.items() if body.get(key) != value]
if not isinstance(body.get("processing_time_ms"), (int, float)):
    problems.append(f"processing_time_ms: {body.get('processing_time_ms')!r} is not a number")
if problems:
    sys.exit("smoke test: wrong analysis:\n  " + "\n  ".join(problems))
EOF
echo "smoke test passed: $BASE_URL"
