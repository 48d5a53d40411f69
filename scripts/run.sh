#!/usr/bin/env bash
# Run the service with its defaults (options and environment variables: ./scripts/run.sh --help).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
ensure_venv ""
exec "$VENV/bin/python" -m service "$@"
