# sre-microservice container image. Build with scripts/build.sh (it passes the CA secret, index
# settings, version and revision); without registry access use
#   --build-arg BASE_IMAGE=localhost/sre-microservice-base:bookworm  (scripts/build-base-image.sh).
# Works with the official python image (python at /usr/local/bin) and with the Debian-built base
# (python3 at /usr/bin): everything runs from the venv at /opt/venv.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder

# Forwarded by scripts/build.sh from the host environment when set (pip ignores empty values).
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120

WORKDIR /src
RUN python3 -m venv /opt/venv

# Dependencies first (their own layer, reused while only the code changes), pinned by
# constraints.txt; PIP_CONSTRAINT also pins the build backend pip fetches for the project below.
# The host CA bundle arrives as a build secret so it never lands in a layer.
COPY pyproject.toml constraints.txt ./
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem REQUESTS_CA_BUNDLE=/run/secrets/ca.pem; fi \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt

COPY README.md LICENSE ./
COPY compute ./compute
COPY service ./service
RUN --mount=type=secret,id=ca,target=/run/secrets/ca.pem \
    if [ -s /run/secrets/ca.pem ]; then export PIP_CERT=/run/secrets/ca.pem REQUESTS_CA_BUNDLE=/run/secrets/ca.pem; fi \
    && PIP_CONSTRAINT=/src/constraints.txt /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools


# The runtime tree without per-build metadata, in its own stage so the large venv layer stays
# cached when only the version or revision changes. pip and setuptools are left out of it
# (not needed at runtime: fewer bytes, fewer CVEs to track).
FROM ${BASE_IMAGE} AS runtime
COPY --from=builder /opt/venv /opt/venv


FROM runtime

ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE_URL=""

# Smoke test of the installed packages. Being a RUN after the ARGs, it also makes buildah
# notice a new version/revision: its layer cache ignores ARG values in LABEL and ENV
# (containers/buildah#5501), which would otherwise keep a stale revision.
RUN /opt/venv/bin/python -c "import compute, service.app"

LABEL org.opencontainers.image.title="sre-microservice" \
      org.opencontainers.image.description="Analyses JSON payloads (numeric statistics and text counts) behind a graceful, observable HTTP service." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# Read-only root filesystem: nothing writes outside /tmp (no bytecode, HOME there too).
# REVISION feeds the build_info metric.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LANG=C.UTF-8 \
    REVISION=${REVISION}

WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=3); sys.exit(0)"]

# Exec form: python is PID 1 and receives SIGTERM itself.
CMD ["python", "-m", "service"]
