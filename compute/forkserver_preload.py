"""Imported by the pool's forkserver only (its preload); the service never imports it.

The forkserver, and every worker it forks, ignores SIGTERM from birth (the forkserver already
ignores SIGINT). A SIGTERM to the whole process group, as container runtimes and
``kill -- -PGID`` send, must not kill the forkserver: workers whose forkserver died can no longer
be joined by the pool and are left orphaned. The service alone ends them. Until this runs, both
signals are blocked: the pool starts the forkserver with them blocked (compute/pool.py).
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)

import compute.handoff  # noqa: E402,F401 - preload the kernels and the hand-off for fast worker start
