"""WEB_CONCURRENCY > 1: uvicorn's Multiprocess supervisor, running our GracefulServer in each worker.

uvicorn's own workers run a plain ``uvicorn.Server``; ours must run GracefulServer (draining,
exit status 0), so the supervisor starts GracefulWorker processes. On SIGTERM or SIGINT the
supervisor sends SIGTERM to every worker and closes its copy of the listening socket; each worker
drains like a single-process service, and the supervisor exits 0 once all of them have exited
cleanly. A second SIGINT meanwhile is passed on: the workers exit without waiting, and the
supervisor with EXIT_FORCED (130) when any of them was forced out. A worker
that dies is replaced, and its live gauges are dropped from the shared metrics directory. The
worker count is fixed: SIGHUP, SIGTTIN and SIGTTOU (uvicorn's restart and scaling signals) are
logged and ignored.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing import resource_tracker
from socket import socket

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from service.lifecycle import EXIT_FORCED, GracefulServer
from service.metrics import MetricsListener, multiprocess_dir, render_shared

log = logging.getLogger("service.supervisor")

EXIT_WORKER_FAILED = 1
_DRAIN_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class GracefulWorker(Process):
    """A uvicorn worker process whose server comes from ``server_factory`` (called in the child)."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket], server_factory: Callable[[], GracefulServer]
    ) -> None:
        # Set before Process.__init__: the whole object is pickled into the spawned child.
        self.server_factory = server_factory
        super().__init__(config, sockets)

    @property
    def server(self) -> GracefulServer:
        if self._server is None:
            self._server = self.server_factory()
        return self._server

    def target(self, sockets: list[socket] | None = None) -> None:
        # Runs in the child. The server handles SIGTERM/SIGINT only while it serves. A signal sent
        # to the whole process group and then forwarded by the supervisor reaches a worker twice:
        # before serving, the server's own handler starts the drain; after it, the signals are
        # ignored, because interpreter shutdown restores the default action of Python-handled
        # signals and would turn a clean exit into "killed by SIGTERM".
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.server.handle_exit)
        # Blocked since the supervisor started this process (see _start_worker); one that came
        # meanwhile is handled now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DRAIN_SIGNALS)
        super().target(sockets)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if self.server.forced:
            sys.exit(EXIT_FORCED)


class GracefulSupervisor(Multiprocess):
    def __init__(
        self, config: uvicorn.Config, sockets: list[socket], server_factory: Callable[[], GracefulServer]
    ) -> None:
        super().__init__(config, sockets)
        self.server_factory = server_factory
        self.startup_failed = False

    def _start_worker(self) -> GracefulWorker:
        worker = GracefulWorker(self.config, self.sockets, self.server_factory)
        # The child inherits the mask: a SIGTERM forwarded while it still imports (a shutdown
        # right after start) waits for its drain handler instead of killing it. Starting the
        # resource tracker (the first spawn does) would unblock them: it is started beforehand.
        resource_tracker.ensure_running()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _DRAIN_SIGNALS)
        try:
            worker.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return worker

    def init_processes(self) -> None:
        self.processes = [self._start_worker() for _ in range(self.processes_num)]

    def terminate_all(self) -> None:
        super().terminate_all()
        # Each worker closes its copy of the listening socket when its drain closes the listener.
        # The supervisor's copy must go now too: while any copy is open the kernel keeps accepting
        # connections, which no worker would read and which are reset when the supervisor exits.
        for sock in self.sockets:
            sock.close()

    def join_all(self) -> None:
        exited: set[int] = set()
        while True:
            alive = []
            for worker in self.processes:
                if worker.process.is_alive():
                    alive.append(worker)
                elif worker.pid not in exited:
                    # Its live gauges (requests in flight, pool workers) would otherwise still be
                    # served, a dead worker's included, while the others drain.
                    mark_process_dead(worker.pid)
                    exited.add(worker.pid)
            if not alive:
                break
            # A second SIGINT while the workers drain ends them now, as it ends a single service.
            if signal.SIGINT in self.signal_queue:
                self.signal_queue.clear()
                log.warning("second SIGINT: workers exit without waiting for in-flight requests")
                for worker in alive:
                    os.kill(worker.pid, signal.SIGINT)
            alive[0].process.join(0.1)
        super().join_all()

    def keep_subprocess_alive(self) -> None:
        for index, worker in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if worker.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            worker.kill()  # hung, or already dead
            worker.join()
            mark_process_dead(worker.pid)
            if worker.exitcode == STARTUP_FAILURE:
                # It would fail the same way again: the app, the pool or the socket is broken.
                log.error("worker %s failed to start; stopping", worker.pid)
                self.startup_failed = True
                self.should_exit.set()
                return
            log.warning("worker %s died (exit code %s); starting a replacement", worker.pid, worker.exitcode)
            self.processes[index] = self._start_worker()

    def handle_hup(self) -> None:
        self._refuse(signal.SIGHUP)

    def handle_ttin(self) -> None:
        self._refuse(signal.SIGTTIN)

    def handle_ttou(self) -> None:
        self._refuse(signal.SIGTTOU)

    def _refuse(self, sig: signal.Signals) -> None:
        log.warning("%s ignored: the worker count is fixed by WEB_CONCURRENCY", sig.name)

    def exit_status(self) -> int:
        """0 only when every worker drained and exited 0; EXIT_FORCED when a second SIGINT cut any short."""
        if self.startup_failed:
            return STARTUP_FAILURE
        codes = {worker.pid: worker.exitcode for worker in self.processes}
        failed = {pid: code for pid, code in codes.items() if code not in (0, EXIT_FORCED)}
        if failed:
            log.error("workers exited uncleanly", extra={"exit_codes": failed})
            return EXIT_WORKER_FAILED
        return EXIT_FORCED if EXIT_FORCED in codes.values() else 0


def run_workers(
    config: uvicorn.Config,
    *,
    server_factory: Callable[[], GracefulServer],
    metrics_listener: MetricsListener | None,
) -> int:
    """Bind the socket, start the workers, supervise them until a signal; the exit status."""
    config.configure_logging()
    shared_dir = multiprocess_dir()
    assert shared_dir is not None, "the CLI sets PROMETHEUS_MULTIPROC_DIR for several workers"
    sock = config.bind_socket()
    supervisor = GracefulSupervisor(config, [sock], server_factory)
    if metrics_listener is not None:
        # Only the supervisor may bind the metrics port; it merges what the workers wrote.
        supervisor_pid = os.getpid()
        metrics_listener.serve(lambda: render_shared(shared_dir, supervisor_pid))
    try:
        supervisor.run()
    finally:
        sock.close()
    return supervisor.exit_status()
