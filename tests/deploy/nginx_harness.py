"""A real nginx running the project's config (deploy/nginx) on loopback, for the deploy tests."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from bench.proctree import descendants
from tests.conftest import ROOT, free_port, wait_until


def _load_renderer():
    spec = importlib.util.spec_from_file_location("nginx_render", ROOT / "deploy" / "nginx" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()


class Logs(NamedTuple):
    """What nginx logged by the time it stopped."""

    access_entries: list[dict]
    errors: str


class Nginx:
    """nginx in the foreground (the config says `daemon off`), its files in a private directory.

    The directory is world-traversable: started as root, nginx runs its workers as nobody, and
    they must reach the temp directories inside it.
    """

    def __init__(self, binary: str, upstreams: Sequence[str], worker_processes: int = 2) -> None:
        self.binary = binary
        self.worker_processes = worker_processes
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-"))
        self.prefix.chmod(0o755)
        self.config_path = self.prefix / "nginx.conf"
        self.error_log = self.prefix / "error.log"
        self.access_log = self.prefix / "access.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.write_config(upstreams)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, upstreams: Sequence[str]) -> None:
        self.config_path.write_text(
            render.render_config(
                listen=f"127.0.0.1:{self.port}",
                upstreams=upstreams,
                runtime_dir=self.prefix,
                worker_processes=str(self.worker_processes),
            )
        )

    def command(self, *args: str) -> list[str]:
        # -e: the error log before the config is read (the compiled-in one is not writable).
        return [self.binary, "-c", str(self.config_path), "-p", str(self.prefix), "-e", str(self.error_log), *args]

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self) -> Nginx:
        tested = self.check()
        assert tested.returncode == 0, tested.stderr
        self.process = subprocess.Popen(self.command(), start_new_session=True)
        wait_until(self._listening_or_dead, 10, message=f"nginx on port {self.port}")
        assert self.process.poll() is None, f"nginx exited {self.process.returncode}:\n{self.errors()}"
        wait_until(lambda: len(self.workers()) == self.worker_processes, 10, message="nginx workers")
        return self

    def _listening_or_dead(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            return True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def workers(self) -> set[int]:
        assert self.process is not None
        return set(descendants(self.process.pid))

    def reload(self, upstreams: Sequence[str]) -> None:
        """Switch to a new upstream set as an operator would: new config, `nginx -s reload`.

        Returns once the new configuration's workers run (the master starts them only after it
        parsed the file); workers of the old one finish their in-flight requests and exit.
        """
        before = self.workers()
        self.write_config(upstreams)
        tested = self.check()
        assert tested.returncode == 0, tested.stderr
        reloaded = subprocess.run(self.command("-s", "reload"), capture_output=True, text=True, timeout=30)
        assert reloaded.returncode == 0, reloaded.stderr
        wait_until(
            lambda: len(self.workers() - before) == self.worker_processes,
            10,
            message="workers with the new configuration",
        )

    def access_entries(self) -> list[dict]:
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> Logs:
        """Shut nginx down and remove its files; returns what it logged.

        A worker writes a request's access entry after it sent the response, so a client can
        finish before the entry exists: only once the workers have exited is the log complete.
        """
        if self.process is not None and self.process.poll() is None:
            # SIGQUIT: graceful shutdown; the process group takes the workers along if it hangs.
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        logs = Logs(self.access_entries(), self.errors())
        shutil.rmtree(self.prefix, ignore_errors=True)
        return logs
