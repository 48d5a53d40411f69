#!/usr/bin/env python3
"""Render deploy/nginx/nginx.conf.template: substitute its ${NGINX_*} placeholders, nothing else.

    python3 deploy/nginx/render.py --listen 127.0.0.1:8080 \\
        --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002 --runtime-dir /tmp/nginx > nginx.conf
    nginx -c "$PWD/nginx.conf"

Same result as the nginx image's envsubst entrypoint given the same NGINX_* variables; this one
also fails when a placeholder is left without a value. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
PLACEHOLDER = re.compile(r"\$\{(NGINX_[A-Z_]+)\}")
# Passive health check: after MAX_FAILS failed attempts within FAIL_TIMEOUT a replica gets no
# requests for FAIL_TIMEOUT. Three, so one reset connection or 503 does not eject a replica.
SERVER_PARAMETERS = "max_fails=3 fail_timeout=10s"


def upstream_servers(addresses: Sequence[str]) -> str:
    """The upstream's `server` lines for host:port addresses."""
    if not addresses:
        raise ValueError("at least one upstream address is needed")
    return "\n        ".join(f"server {address} {SERVER_PARAMETERS};" for address in addresses)


def render(values: Mapping[str, str], template: str | None = None) -> str:
    """Substitute every ${NGINX_*} placeholder; a placeholder without a value is an error."""
    text = TEMPLATE.read_text() if template is None else template
    missing = sorted({name for name in PLACEHOLDER.findall(text) if name not in values})
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def render_config(
    *,
    listen: str,
    upstreams: Sequence[str],
    runtime_dir: Path,
    error_log: Path | None = None,
    access_log: Path | None = None,
    worker_processes: str = "auto",
) -> str:
    """A complete nginx.conf; logs default to files in runtime_dir."""
    return render(
        {
            "NGINX_LISTEN": listen,
            "NGINX_UPSTREAM_SERVERS": upstream_servers(upstreams),
            "NGINX_WORKER_PROCESSES": worker_processes,
            "NGINX_RUNTIME_DIR": str(runtime_dir),
            "NGINX_ERROR_LOG": str(error_log or runtime_dir / "error.log"),
            "NGINX_ACCESS_LOG": str(access_log or runtime_dir / "access.log"),
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="port or address:port nginx listens on")
    parser.add_argument("--upstream", action="append", required=True, help="a replica's host:port (repeat)")
    parser.add_argument("--runtime-dir", type=Path, required=True, help="writable dir: pid file, temp files")
    parser.add_argument("--error-log", type=Path, help="default: RUNTIME_DIR/error.log")
    parser.add_argument("--access-log", type=Path, help="default: RUNTIME_DIR/access.log (JSON lines)")
    parser.add_argument("--worker-processes", default="auto")
    parser.add_argument("--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    config = render_config(
        listen=args.listen,
        upstreams=args.upstream,
        runtime_dir=args.runtime_dir.resolve(),
        error_log=args.error_log,
        access_log=args.access_log,
        worker_processes=args.worker_processes,
    )
    if args.output:
        args.output.write_text(config)
    else:
        sys.stdout.write(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
