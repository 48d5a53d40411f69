#!/usr/bin/env bash
# Build the container image sre-microservice:<version from pyproject> and :latest.
#
#   scripts/build.sh [--tag TAG]... [--base IMAGE|local] [--engine docker|podman|buildah]
#
# Engine: `docker build` when a Docker engine answers, else podman (or buildah) with chroot
# isolation. Base: python:3.11-slim-bookworm by default; when it is neither present nor pullable
# (no registry access) the build falls back to the local Debian base
# localhost/sre-microservice-base:bookworm, built by scripts/build-base-image.sh when missing
# (that needs root and a Debian mirror). `--base local` asks for that base directly.
# --tag adds tags. The host CA bundle goes in as a build secret (never into a layer);
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS are forwarded when set, and local
# directories they name are mounted read-only into the build (podman/buildah only).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="sre-microservice"
OFFICIAL_BASE="docker.io/library/python:3.11-slim-bookworm"
LOCAL_BASE="localhost/sre-microservice-base:bookworm"
BASE=""
ENGINE="${CONTAINER_ENGINE:-}"
EXTRA_TAGS=()

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --tag) EXTRA_TAGS+=("${2:?--tag needs a value}"); shift ;;
        --base) BASE="${2:?--base needs a value}"; shift ;;
        --engine) ENGINE="${2:?--engine needs a value}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ "$BASE" = "local" ] && BASE="$LOCAL_BASE"

if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    elif command -v buildah >/dev/null; then
        ENGINE=buildah
    else
        echo "error: no container engine: install Docker, podman or buildah" >&2
        exit 1
    fi
fi
case "$ENGINE" in
    docker|podman|buildah) ;;
    *) echo "error: unsupported engine: $ENGINE" >&2; exit 2 ;;
esac

image_present() {
    if [ "$ENGINE" = buildah ]; then buildah inspect --type image "$1" >/dev/null 2>&1
    else "$ENGINE" image inspect "$1" >/dev/null 2>&1; fi
}

pull_image() {
    if [ "$ENGINE" = buildah ]; then buildah pull "$1"
    else "$ENGINE" pull "$1"; fi
}

build_local_base() {
    # build-base-image.sh imports with podman or docker; buildah shares podman's storage.
    CONTAINER_ENGINE="$([ "$ENGINE" = docker ] && echo docker || echo podman)" \
        "$ROOT/scripts/build-base-image.sh"
}

# Choose the base image: present, pullable, or the local Debian base as a fallback.
if [ -z "$BASE" ]; then
    if image_present "$OFFICIAL_BASE" || pull_image "$OFFICIAL_BASE" >/dev/null 2>&1; then
        BASE="$OFFICIAL_BASE"
    else
        echo "cannot pull $OFFICIAL_BASE (no registry access?): using the local base $LOCAL_BASE"
        BASE="$LOCAL_BASE"
    fi
fi
if ! image_present "$BASE"; then
    if [ "$BASE" = "$LOCAL_BASE" ]; then
        build_local_base
    elif ! pull_image "$BASE"; then
        echo "error: base image $BASE is not available; without registry access run" \
            "scripts/build-base-image.sh and pass --base local" >&2
        exit 1
    fi
fi

VERSION="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
SOURCE_URL="$(git -C "$ROOT" remote get-url origin 2>/dev/null || true)"
TAGS=("$NAME:$VERSION" "$NAME:latest" "${EXTRA_TAGS[@]}")

ARGS=(--build-arg "BASE_IMAGE=$BASE" --build-arg "VERSION=$VERSION"
      --build-arg "REVISION=$REVISION" --build-arg "SOURCE_URL=$SOURCE_URL")
for tag in "${TAGS[@]}"; do ARGS+=(--tag "$tag"); done

CA_BUNDLE="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
[ -s "$CA_BUNDLE" ] && ARGS+=(--secret "id=ca,src=$CA_BUNDLE")

# local_dir LOCATION: the directory to mount for a file:// URL or absolute path (a PEP 503
# ".../simple" index links to files beside it, so its parent), else nothing.
local_dir() {
    local path="${1#file://}"
    case "$path" in /*) ;; *) return 0 ;; esac
    [ "$(basename "$path")" = simple ] && path="$(dirname "$path")"
    [ -d "$path" ] && echo "$path"
    return 0
}

declare -A MOUNTED=()
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS; do
    value="${!var:-}"
    [ -n "$value" ] || continue
    kept=()
    for location in $value; do
        dir="$(local_dir "$location")"
        if [ -z "$dir" ]; then
            kept+=("$location")
        elif [ "$ENGINE" = docker ]; then
            echo "note: docker build cannot mount $dir; ignoring $var entry $location" >&2
        else
            kept+=("$location")
            [ -n "${MOUNTED[$dir]:-}" ] || ARGS+=(--volume "$dir:$dir:ro")
            MOUNTED[$dir]=1
        fi
    done
    [ "${#kept[@]}" -gt 0 ] && ARGS+=(--build-arg "$var=${kept[*]}")
done

echo "building ${TAGS[*]} from $BASE with $ENGINE (revision $REVISION)"
start=$SECONDS
case "$ENGINE" in
    docker) DOCKER_BUILDKIT=1 docker build "${ARGS[@]}" "$ROOT" ;;
    # HEALTHCHECK only survives in the Docker image format (OCI has no such field).
    podman) podman build --isolation chroot --format docker "${ARGS[@]}" "$ROOT" ;;
    buildah) buildah build --isolation chroot --format docker "${ARGS[@]}" "$ROOT" ;;
esac
echo "built ${TAGS[*]} in $((SECONDS - start)) s"
