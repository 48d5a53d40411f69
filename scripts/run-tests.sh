#!/usr/bin/env bash
# Run the test suite on a fresh machine: Debian tools, .venv, then pytest (arguments pass through).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
ensure_system_packages
ensure_venv test
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
