# shellcheck shell=bash
# Shared set-up for the scripts: a project virtualenv at .venv, installed from constraints.txt.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"

# ensure_venv EXTRA: create .venv when missing and install the project with the given extra
# ("" for runtime only). A stamp of the inputs skips pip when nothing changed.
ensure_venv() {
    local extra="$1" spec stamp wanted
    spec="$ROOT"
    [ -n "$extra" ] && spec="${ROOT}[$extra]"
    if [ ! -x "$VENV/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    stamp="$VENV/.installed-${extra:-runtime}"
    wanted="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$spec"
        echo "$wanted" > "$stamp"
    fi
}

# ensure_system_packages: install the Debian packages the tests use (scripts/system-packages.txt)
# when they are missing and this user may; otherwise say which are missing.
ensure_system_packages() {
    local missing=() pkg
    while read -r pkg; do
        [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done < "$ROOT/scripts/system-packages.txt"
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "warning: missing Debian packages (tests that need them are skipped): ${missing[*]}" >&2
    fi
}
