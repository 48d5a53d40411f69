#!/usr/bin/env bash
# Build the offline base image (Debian bookworm minbase + python3, python3-venv, ca-certificates)
# from Debian packages with debootstrap, for machines that cannot pull python:3.11-slim-bookworm.
#
#   scripts/build-base-image.sh [--force] [--tag IMAGE] [--mirror URL]
#
# The Debian mirror is the one apt is configured with on this host (DEBIAN_MIRROR overrides).
# Skips the work when the image already exists, unless --force. Needs root (debootstrap).
set -euo pipefail

TAG="localhost/sre-microservice-base:bookworm"
SUITE="bookworm"
PACKAGES="python3,python3-venv,ca-certificates"
FORCE=0
MIRROR="${DEBIAN_MIRROR:-}"

usage() { sed -n '2,8s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --tag) TAG="${2:?--tag needs a value}"; shift ;;
        --mirror) MIRROR="${2:?--mirror needs a value}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# The engine that will run the image: a Docker engine if one answers, else podman.
container_engine() {
    if [ -n "${CONTAINER_ENGINE:-}" ]; then
        echo "$CONTAINER_ENGINE"
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        echo docker
    elif command -v podman >/dev/null; then
        echo podman
    else
        echo "error: neither a Docker engine nor podman is available" >&2
        return 1
    fi
}

# apt_mirror: the first Debian archive URI (not the security archive) apt is configured with.
apt_mirror() {
    local uri
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' \
        | grep -v -- '-security' | head -n1 || true)"
    if [ -z "$uri" ]; then
        uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break } }' \
            | grep -v -- '-security' | head -n1 || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

ENGINE="$(container_engine)"
if [ "$FORCE" -eq 0 ] && "$ENGINE" image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG already exists (use --force to rebuild)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: debootstrap needs root; run as root (e.g. sudo $0)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
MIRROR="${MIRROR:-$(apt_mirror)}"

WORKDIR="$(mktemp -d /var/tmp/sre-base.XXXXXX)"
ROOTFS="$WORKDIR/rootfs"
cleanup() {
    # debootstrap mounts /proc and /sys inside the target; never delete through a live mount.
    findmnt -rn -o TARGET | grep "^$ROOTFS" | sort -r | xargs -r umount -l || true
    rm -rf --one-file-system "$WORKDIR"
}
trap cleanup EXIT

echo "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
start=$SECONDS
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" > "$WORKDIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/debootstrap.log" >&2; exit 1; }

# Slim the tree the way the Debian "slim" images do: no docs (copyright files stay), man pages,
# translations, apt lists or package caches; keep future dpkg installs from adding them back.
cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
    "$ROOTFS"/usr/share/lintian/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* \
    "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* \
    "$ROOTFS"/etc/resolv.conf "$ROOTFS"/etc/hostname

tar --numeric-owner --xattrs -C "$ROOTFS" -cf - . | "$ENGINE" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/usr/bin/python3"]' \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase with python3 and python3-venv, built by scripts/build-base-image.sh\"" \
    - "$TAG" >/dev/null

echo "built $TAG in $((SECONDS - start)) s ($("$ENGINE" image inspect --format '{{.Size}}' "$TAG") bytes)"
