"""Deadlines for many tasks on one coarse timer.

``asyncio.timeout`` arms and cancels a loop timer on every use, about 5 us: a tenth of a small
request, spent on a deadline that almost never fires. Here a task's deadline is one dict entry,
and a single tick checks all of them every ``resolution_s`` while any are set, so a deadline
fires up to that much late. When it fires, the task is cancelled and the ``with`` block raises
TimeoutError, as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadlines:
    """``with deadlines.within(): ...`` raises TimeoutError once ``seconds`` have passed."""

    def __init__(self, seconds: float, resolution_s: float = 0.25) -> None:
        self.seconds = seconds
        self.resolution_s = resolution_s
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._tick: asyncio.TimerHandle | None = None

    def within(self) -> _Deadline:
        return _Deadline(self)

    def _watch(self, task: asyncio.Task[object]) -> None:
        loop = task.get_loop()
        self._due[task] = loop.time() + self.seconds
        if self._tick is None:
            self._tick = loop.call_later(self.resolution_s, self._check, loop)

    def _forget(self, task: asyncio.Task[object]) -> bool:
        """Stop watching ``task``; True when its deadline had passed."""
        del self._due[task]
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, due in self._due.items():
            if due <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._tick = loop.call_later(self.resolution_s, self._check, loop) if self._due else None


class _Deadline:
    __slots__ = ("_deadlines", "_task", "_cancelling")

    def __init__(self, deadlines: Deadlines) -> None:
        self._deadlines = deadlines

    def __enter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self._task = task
        self._cancelling = task.cancelling()
        self._deadlines._watch(task)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # Our cancellation, not someone else's: undo it and report a timeout instead.
        if self._deadlines._forget(self._task) and self._task.uncancel() <= self._cancelling:
            if exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
