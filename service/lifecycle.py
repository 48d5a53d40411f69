"""The service's life, top to bottom: start-up, serving, and the graceful shutdown.

start-up   the lifespan starts the compute pool and waits until every worker is warm;
           only then does uvicorn open the listener.
serving    /ready answers 200 while the pool is warm and the service is not draining; the
           service_ready gauge follows it every second, whether or not anyone asks.
signal     SIGTERM or SIGINT: /ready turns 503 at once (draining), so load balancers stop
           sending new requests; requests that still arrive are served.
drain      after SHUTDOWN_DELAY_S the listener closes and idle keep-alive connections are
           shut; a request whose head is still arriving is read and answered as its
           connection's last (service/http_guards.py); in-flight requests complete, for up
           to GRACEFUL_TIMEOUT_S. Those still running then are answered 503 shut-down
           (service/middleware.py), and connections whose client stopped reading are
           dropped (GracefulServer.shutdown).
pool join  the lifespan shuts the pool down with wait=True: its workers are joined after
           their futures finish.
exit       status 0. uvicorn would re-raise the caught signal after shutdown, turning a clean
           drain into "killed by SIGTERM"; GracefulServer does not record the signal, so the
           process exits 0. A second SIGINT forces an immediate exit (uvicorn's Ctrl-C twice):
           requests in flight are cut short, the pool's workers are killed, their jobs
           abandoned, and the process exits EXIT_FORCED (130) so that whoever waits for it can
           tell.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from service.metrics import METRICS_STATE_KEY

if TYPE_CHECKING:
    from compute.dispatch import Dispatcher
    from service.metrics import Metrics
    from service.services import Services

log = logging.getLogger("service.lifecycle")

# How often service_ready is brought in line with what /ready would answer.
READINESS_REPORT_INTERVAL_S = 1.0
# How long the shutdown waits for the requests of the connections it dropped to end (at once).
_STALLED_REQUESTS_END_S = 1.0
# A forced exit's status: 128 + SIGINT, as a shell reports a program Ctrl-C ended. An exit code,
# not death by the signal: systemd counts death by SIGINT as a clean exit.
EXIT_FORCED = 128 + signal.SIGINT


class Lifecycle:
    """Shared state between the signal handler and the readiness probe."""

    def __init__(self) -> None:
        self.draining = False
        # Set by a forced exit before the app's shutdown: how many requests it cut short.
        self.cut_short: int | None = None

    def not_ready_reason(self, dispatcher: Dispatcher) -> str | None:
        if self.draining:
            return "draining"
        if not dispatcher.ready:
            return "compute pool starting"
        return None


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Metrics]]:
    services: Services = app.state.services
    dispatcher = services.dispatcher
    await dispatcher.start()
    if dispatcher.pool is not None:
        services.metrics.pool_workers.set(dispatcher.pool.workers)
    reporting = asyncio.create_task(_report_readiness(services))
    log.info(
        "service ready",
        extra={
            "dispatch": dispatcher.dispatch.value,
            "workers": dispatcher.workers,
            # Derived from the pool size unless set: say which one this process runs with.
            "inline_threshold_bytes": dispatcher.inline_threshold_bytes,
        },
    )
    # Becomes uvicorn's app state, which its protocols see too (service/http_guards.py).
    yield {METRICS_STATE_KEY: services.metrics}
    # uvicorn runs this after in-flight requests completed (or the graceful timeout passed);
    # GracefulServer.shutdown runs it at once on a forced exit.
    reporting.cancel()
    cut_short = services.lifecycle.cut_short
    if cut_short is None:
        log.info("joining the compute pool")
        await dispatcher.shutdown()
        log.info("compute pool joined")
    else:
        dispatcher.abandon()
        killed = dispatcher.pool.workers if dispatcher.pool is not None else 0
        log.warning("forced exit: %d request(s) cut short, %d pool worker(s) killed", cut_short, killed)
    services.metrics.pool_workers.set(0)


async def _report_readiness(services: Services) -> None:
    """Keep service_ready at what /ready would answer: draining and pool rebuilds need no probe."""
    while True:
        services.metrics.ready.set(0 if services.lifecycle.not_ready_reason(services.dispatcher) else 1)
        await asyncio.sleep(READINESS_REPORT_INTERVAL_S)


class GracefulServer(uvicorn.Server):
    """uvicorn's server with a draining phase before the listener closes, and exit status 0.

    ``forced`` tells whether a second SIGINT cut the drain short (exit with EXIT_FORCED then).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        build_app: Callable[[Lifecycle], ASGIApp],
        shutdown_delay_s: float,
    ) -> None:
        super().__init__(config)
        self.build_app = build_app
        self.shutdown_delay_s = shutdown_delay_s
        self.lifecycle = Lifecycle()
        self._draining_since: float | None = None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        # Built here, in the process that serves it (uvicorn's worker processes included).
        self.config.app = self.build_app(self.lifecycle)
        self.config.loaded = False
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining_since is None:
            log.info(
                "%s received: draining for %.1f s, then closing the listener",
                signal.Signals(sig).name,
                self.shutdown_delay_s,
            )
            self.lifecycle.draining = True
            self._draining_since = time.monotonic()
        elif sig == signal.SIGINT:
            log.warning("second SIGINT: exiting without waiting for in-flight requests")
            self.should_exit = self.force_exit = True

    async def shutdown(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        await super().shutdown(sockets)
        # A connection whose client stopped reading has its writes paused: a request cut off on
        # it would wait for ever to write its answer (the 503, then uvicorn's 500 once the loop's
        # closing cancels it), and the process would never exit. Drop those connections, as the
        # exit would, and let their requests end before the loop closes.
        stalled = [connection for connection in self.server_state.connections if connection.flow.write_paused]
        for connection in stalled:
            connection.transport.abort()
        if stalled and self.server_state.tasks:
            await asyncio.wait(list(self.server_state.tasks), timeout=_STALLED_REQUESTS_END_S)
        if self.force_exit and not self.lifespan.shutdown_event.is_set():
            # uvicorn skipped the app's shutdown. Run it, in its forced form (kill the pool's
            # workers, wait for nothing): the loop's closing would otherwise cancel the lifespan,
            # which Starlette logs as a traceback, and a uvicorn worker process (WEB_CONCURRENCY
            # > 1) would wait for the pool's workers for ever as it exits (multiprocessing joins
            # its children before the pool's own exit hook).
            self.lifecycle.cut_short = len(self.server_state.tasks)
            await self.lifespan.shutdown()

    @property
    def forced(self) -> bool:
        return self.lifecycle.cut_short is not None

    async def on_tick(self, counter: int) -> bool:
        since = self._draining_since
        if since is not None and time.monotonic() - since >= self.shutdown_delay_s:
            self.should_exit = True
        return await super().on_tick(counter)
