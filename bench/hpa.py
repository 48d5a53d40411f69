"""Measure one pod's capacity with a Locust step load and derive the HorizontalPodAutoscaler.

    python -m bench.hpa --cpus 1 --steps 6 --step-seconds 20 --max-users 120 --write-k8s

Starts the service pinned to ``--cpus`` cores with POOL_WORKERS of the same number (one pod with
that CPU request), runs Locust on the other core(s) with the step shape from locustfile.py,
samples the CPU time of the service's whole process tree every second, and finds the capacity
knee (bench.hpa_model). Writes DIR/hpa.json, DIR/knee.png, DIR/simulation.png and DIR/hpa.yaml
(``--write-k8s`` also k8s/base/hpa.yaml). The method is in docs/load-testing.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import httpx

from bench import hpa_model, proctree
from bench._common import cpu_model
from bench.hpa_model import HpaSpec, Plan, SimulationPoint, Step

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "locustfile.py"
K8S_HPA = ROOT / "k8s" / "base" / "hpa.yaml"
# Above this share of runnable time spent waiting for a CPU, Locust counts as contended.
CONTENDED_WAIT_SHARE = 0.2
# Above this share of the service's cores used by other processes, the service counts as contended.
# (Its own event loop and pool worker queueing behind each other on one core is not contention:
# a one-CPU pod behaves the same.)
CONTENDED_FOREIGN_SHARE = 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hpa", description=__doc__.split("\n\n")[0])
    load = parser.add_argument_group("measurement")
    load.add_argument("--cpus", type=int, default=1, help="cores of one pod (its CPU request); POOL_WORKERS too")
    load.add_argument("--steps", type=int, default=6, help="number of load steps")
    load.add_argument("--step-seconds", type=float, default=20, help="length of each step")
    load.add_argument("--max-users", type=int, default=120, help="users in the last step (evenly stepped up)")
    load.add_argument("--user-rps", type=float, default=2, help="requests per second per Locust user")
    load.add_argument("--payload-sizes", help="locustfile --payload-sizes (name=numbers:chars,...)")
    load.add_argument("--payload-weights", help="locustfile --payload-weights (name=weight,...)")
    load.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the service and Locust at this niceness; below 0 (root) keeps other "
        "work on the machine from starving them, as a pod's CPU request would",
    )
    load.add_argument("--url", help="measure this running service instead of starting one (no CPU pinning)")
    load.add_argument("--service-pid", type=int, help="with --url: the service's PID, to sample its CPU")
    sizing = parser.add_argument_group("sizing")
    sizing.add_argument("--slo-p95-ms", type=float, default=250, help="p95 latency objective per pod")
    sizing.add_argument("--base-rps", type=float, default=40, help="everyday traffic (sets minReplicas)")
    sizing.add_argument("--peak-rps", type=float, default=400, help="expected peak traffic (sets maxReplicas)")
    sizing.add_argument(
        "--growth-per-minute",
        type=float,
        default=0.2,
        help="fastest expected traffic growth, relative per minute (0.2 = +20 %%/min)",
    )
    sizing.add_argument("--pod-startup-s", type=float, default=20, help="scale-up to a ready pod taking load")
    sizing.add_argument("--metrics-delay-s", type=float, default=15, help="age of the CPU metric the HPA sees")
    sizing.add_argument("--sync-period-s", type=float, default=15, help="HPA controller sync period")
    sizing.add_argument("--tolerance", type=float, default=0.1, help="HPA tolerance")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=ROOT / "bench-results" / "hpa", help="output directory")
    out.add_argument("--write-k8s", action="store_true", help=f"also write {K8S_HPA.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.cpus < 1 or args.steps < 1 or args.max_users < args.steps or args.step_seconds <= 0:
        parser.error("need --cpus >= 1, --steps >= 1, --max-users >= --steps, --step-seconds > 0")
    if args.service_pid and not args.url:
        parser.error("--service-pid goes with --url")
    return args


# --------------------------------------------------------------------------------------------
# CPU placement and sampling.
# --------------------------------------------------------------------------------------------


def split_cpus(pod_cpus: int) -> tuple[list[int], list[int], str]:
    """(service cores, Locust cores, a note): the service gets the first cores it may use."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < pod_cpus:
        raise SystemExit(f"--cpus {pod_cpus} but only {len(available)} CPU(s) are available")
    service, rest = available[:pod_cpus], available[pod_cpus:]
    if rest:
        return service, rest, f"service on cpu {_cpu_list(service)}, Locust on cpu {_cpu_list(rest)}"
    return service, service, f"service and Locust share cpu {_cpu_list(service)}: Locust's CPU use skews the numbers"


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(map(str, cpus))


def tree_cpu_and_wait_seconds(root_pid: int) -> tuple[float, float]:
    """(CPU seconds, run-queue wait seconds) of a process and all its descendants.

    The wait is the time threads were runnable but not running (/proc/<pid>/task/*/schedstat).
    """
    members = [root_pid, *proctree.descendants(root_pid)]
    cpu = sum(proctree.cpu_seconds(pid) for pid in members)
    return cpu, sum(_run_queue_wait_ns(pid) for pid in members) / 1e9


def _run_queue_wait_ns(pid: int) -> int:
    waited = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as schedstat:
                waited += int(schedstat.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return waited


def cores_busy_seconds(cores: list[int]) -> float:
    """CPU seconds the given cores spent on any work (not idle or iowait), from /proc/stat."""
    busy = 0
    wanted = {f"cpu{core}" for core in cores}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name in wanted:
            # user nice system idle iowait irq softirq steal (guest time is inside user).
            ticks = [int(value) for value in fields[:8]]
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy / proctree.CLOCK_TICKS


class CpuSampler(threading.Thread):
    """Every ``interval`` seconds: (wall time, CPU s, wait s) of each watched process tree, and
    (wall time, busy s) of the service's cores."""

    def __init__(self, pids: dict[str, int], service_cores: list[int] | None, interval: float = 1.0):
        super().__init__(daemon=True)
        self.pids, self.service_cores, self.interval = pids, service_cores, interval
        self.samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in pids}
        self.core_samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.time()
            for name, pid in self.pids.items():
                self.samples[name].append((now, *tree_cpu_and_wait_seconds(pid)))
            if self.service_cores:
                self.core_samples.append((now, cores_busy_seconds(self.service_cores)))
            self._stop_event.wait(self.interval)

    def foreign_share(self, start: float, end: float) -> float | None:
        """Share of the service's cores used by other processes between ``start`` and ``end``."""
        cores = [s for s in self.core_samples if start <= s[0] <= end]
        service = [s for s in self.samples.get("service", []) if start <= s[0] <= end]
        if not self.service_cores or len(cores) < 2 or len(service) < 2:
            return None
        (t0, busy0), (t1, busy1) = cores[0], cores[-1]
        own = service[-1][1] - service[0][1]
        return max(busy1 - busy0 - own, 0.0) / ((t1 - t0) * len(self.service_cores))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def cores_busy(self, name: str, start: float, end: float) -> tuple[float, float] | None:
        """(mean cores used, share of runnable time spent waiting) of tree ``name`` between the
        samples nearest inside [start, end]."""
        inside = [s for s in self.samples[name] if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        (t0, c0, w0), (t1, c1, w1) = inside[0], inside[-1]
        used, waited = c1 - c0, max(w1 - w0, 0.0)
        return used / (t1 - t0), waited / (used + waited) if used + waited > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Service and Locust processes.
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}/ready did not answer 200 within {timeout:.0f} s")


def _niced(niceness: int) -> list[str]:
    return ["nice", "-n", str(niceness)] if niceness else []


def start_service(cpus: list[int], pool_workers: int, niceness: int, out: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "POOL_WORKERS": str(pool_workers),
        "LOG_LEVEL": "warning",
    }
    log = (out / "service.log").open("wb")
    process = subprocess.Popen(
        [*_niced(niceness), _taskset(), "-c", _cpu_list(cpus), sys.executable, "-m", "service"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
    except BaseException:
        stop_process(process)
        raise
    return process, url


def stop_process(process: subprocess.Popen, timeout: float = 40) -> None:
    """SIGTERM the leader only (it shuts its pool down); SIGKILL the group if it hangs.

    A group-wide SIGTERM reaches multiprocessing's forkserver and resource tracker before
    the service can join them, and they were seen surviving as orphans.
    """
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _taskset() -> str:
    path = shutil.which("taskset")
    if path is None:
        raise SystemExit("taskset (util-linux) is needed to pin the service and Locust to CPUs")
    return path


def locust_command(args: argparse.Namespace, url: str, cpus: list[int] | None, out: Path) -> list[str]:
    step_users = math.ceil(args.max_users / args.steps)
    command = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless", "--only-summary",
        "-H", url,
        "--shape", "step",
        "--steps", str(args.steps),
        "--step-users", str(step_users),
        "--step-seconds", str(args.step_seconds),
        "--step-report", str(out / "steps.jsonl"),
        "--user-rps", str(args.user_rps),
        "--csv", str(out / "locust"),
        "--csv-full-history",
        "--html", str(out / "locust.html"),
        # The bench judges the steps itself; Locust's own gates stay off.
        "--slo-p95-ms", "0",
        "--slo-max-failure-ratio", "-1",
    ]  # fmt: skip
    if args.payload_sizes:
        command += ["--payload-sizes", args.payload_sizes]
    if args.payload_weights:
        command += ["--payload-weights", args.payload_weights]
    if cpus is not None:
        command = [_taskset(), "-c", _cpu_list(cpus), *command]
    return [*_niced(args.nice), *command]


def run_locust(
    command: list[str], out: Path, seconds: float, sampler_pids: dict[str, int], service_cores: list[int] | None
) -> CpuSampler:
    (out / "steps.jsonl").unlink(missing_ok=True)
    with (out / "locust.log").open("wb") as log:
        locust = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = CpuSampler({**sampler_pids, "locust": locust.pid}, service_cores)
        sampler.start()
        try:
            locust.wait(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            stop_process(locust)
            raise SystemExit(f"Locust did not finish within {seconds + 120:.0f} s; see {out / 'locust.log'}") from None
        finally:
            sampler.stop()
    if locust.returncode != 0:
        raise SystemExit(f"Locust exited with {locust.returncode}; see {out / 'locust.log'}")
    return sampler


def read_steps(out: Path, sampler: CpuSampler, pod_cpus: int) -> tuple[list[Step], list[dict]]:
    steps, raw = [], []
    for line in (out / "steps.jsonl").read_text().splitlines():
        record = json.loads(line)
        service = sampler.cores_busy("service", record["start"], record["end"]) if "service" in sampler.pids else None
        if "service" in sampler.pids and service is None:
            raise SystemExit(f"no CPU samples inside step {record['step']}; is --step-seconds too short?")
        locust = sampler.cores_busy("locust", record["start"], record["end"])
        record["service_cpu_utilization"] = None if service is None else service[0] / pod_cpus
        record["service_cpu_wait_share"] = None if service is None else service[1]
        record["foreign_cpu_share"] = sampler.foreign_share(record["start"], record["end"])
        record["locust_cpu_cores"] = None if locust is None else locust[0]
        record["locust_cpu_wait_share"] = None if locust is None else locust[1]
        raw.append(record)
        steps.append(
            Step(
                users=record["users"],
                rps=record["rps"],
                p95_ms=record["p95_ms"],
                p50_ms=record["p50_ms"],
                p99_ms=record["p99_ms"],
                failures=record["failures"],
                cpu_utilization=record["service_cpu_utilization"] or 0.0,
                requests=record["requests"],
                seconds=record["seconds"],
            )
        )
    if not steps:
        raise SystemExit(f"Locust reported no steps; see {out / 'locust.log'}")
    return steps, raw


# --------------------------------------------------------------------------------------------
# Outputs.
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


def hpa_yaml(plan: Plan, spec: HpaSpec, provenance: dict[str, object], args: argparse.Namespace) -> str:
    up = "\n".join(
        f"        - type: {p.type}\n          value: {p.value}\n          periodSeconds: {p.period_seconds}"
        for p in spec.scale_up.policies
    )
    down = "\n".join(
        f"        - type: {p.type}\n          value: {p.value}\n          periodSeconds: {p.period_seconds}"
        for p in spec.scale_down.policies
    )
    m = provenance["machine"]
    return f"""\
# HorizontalPodAutoscaler sized from a measurement; regenerate it, do not hand-edit the numbers.
# Measured {provenance["date"]} on {m["cpu_model"]} ({m["cpus"]} CPUs, Linux {m["kernel"]}, Python {m["python"]}):
#   {provenance["command"]}
# The service ran pinned to {args.cpus} core(s) with POOL_WORKERS={args.cpus} (one pod's CPU request);
# {provenance["placement"]}. Locust stepped up to {args.max_users} users at {args.user_rps} req/s each.
# Niceness {args.nice}; other processes used at most {_pct(provenance.get("max_foreign_cpu_share"))}% of the service's cores.
# Knee (highest throughput with p95 <= {args.slo_p95_ms:g} ms and no failures): {plan.per_pod_capacity_rps:.1f} req/s
# per pod at {100 * plan.knee_cpu_utilization:.0f}% CPU of the request. Method: docs/load-testing.md.
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: sre-microservice
  namespace: sre-microservice
  labels:
    app.kubernetes.io/name: sre-microservice
    app.kubernetes.io/part-of: sre-microservice
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: sre-microservice
  # ceil({args.base_rps:g} req/s everyday traffic / {plan.per_pod_capacity_rps:.1f} per pod), and at least 2 so one pod
  # can fail or be evicted without an outage.
  minReplicas: {plan.min_replicas}
  # ceil({args.peak_rps:g} req/s peak / (capacity x {plan.target_cpu_utilization}/{100 * plan.knee_cpu_utilization:.0f} load at the target)) + 1 spare.
  maxReplicas: {plan.max_replicas}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          # knee {100 * plan.knee_cpu_utilization:.0f}% / ((1 + tolerance {spec.tolerance:g}) x (1 + growth {args.growth_per_minute:g}/min x lag {plan.scale_up_lag_s:g} s / 60))
          # lag = metrics {args.metrics_delay_s:g} s + sync {args.sync_period_s:g} s + pod start-up {args.pod_startup_s:g} s
          averageUtilization: {plan.target_cpu_utilization}
  behavior:
    # Up fast: double, or add 4 pods, every 15 s (whichever is more); no stabilization, since
    # a late scale-up costs latency and errors while a needless one only costs a few pods.
    scaleUp:
      stabilizationWindowSeconds: {spec.scale_up.stabilization_window_seconds}
      selectPolicy: {spec.scale_up.select_policy}
      policies:
{up}
    # Down slow: only after 5 minutes of lower recommendations, then one pod a minute, so a
    # dip between bursts does not remove capacity the next burst needs.
    scaleDown:
      stabilizationWindowSeconds: {spec.scale_down.stabilization_window_seconds}
      selectPolicy: {spec.scale_down.select_policy}
      policies:
{down}
"""


def plot_knee(steps: list[Step], knee: Step | None, plan: Plan | None, slo_p95_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [s.users for s in steps]
    fig, (ax_rps, ax_p95, ax_cpu) = plt.subplots(3, 1, sharex=True, figsize=(8, 8))
    ax_rps.plot(users, [s.rps for s in steps], "o-", label="payload req/s")
    ax_rps.set_ylabel("throughput (req/s)")
    ax_p95.plot(
        users,
        [s.p95_ms if s.p95_ms is not None else float("nan") for s in steps],
        "o-",
        color="tab:orange",
        label="p95",
    )
    ax_p95.axhline(slo_p95_ms, color="red", linestyle="--", label=f"SLO {slo_p95_ms:g} ms")
    ax_p95.set_ylabel("p95 latency (ms)")
    failed = [s for s in steps if s.failures]
    if failed:
        ax_p95.plot(
            [s.users for s in failed],
            [s.p95_ms or 0 for s in failed],
            "x",
            color="red",
            markersize=10,
            label="failures",
        )
    ax_cpu.plot(users, [100 * s.cpu_utilization for s in steps], "o-", color="tab:green", label="service CPU")
    ax_cpu.set_ylabel("CPU (% of request)")
    ax_cpu.set_xlabel("Locust users")
    if plan is not None:
        ax_cpu.axhline(
            plan.target_cpu_utilization,
            color="purple",
            linestyle="--",
            label=f"HPA target {plan.target_cpu_utilization}%",
        )
    if knee is not None:
        for ax in (ax_rps, ax_p95, ax_cpu):
            ax.axvline(knee.users, color="grey", linestyle=":", label=f"knee: {knee.rps:.0f} req/s")
    for ax in (ax_rps, ax_p95, ax_cpu):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    fig.suptitle("Capacity of one pod (step load)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_simulation(history: list[SimulationPoint], plan: Plan, slo_p95_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p.t / 60 for p in history]
    fig, (ax_rps, ax_pods, ax_cpu, ax_p95) = plt.subplots(4, 1, sharex=True, figsize=(8, 10))
    ax_rps.plot(minutes, [p.demand_rps for p in history], label="demand")
    ax_rps.plot(minutes, [p.ready * plan.per_pod_capacity_rps for p in history], label="capacity of ready pods")
    ax_rps.set_ylabel("req/s")
    ax_pods.step(minutes, [p.replicas for p in history], where="post", label="replicas (spec)")
    ax_pods.step(minutes, [p.ready for p in history], where="post", label="ready")
    ax_pods.axhline(plan.max_replicas, color="red", linestyle="--", label=f"max {plan.max_replicas}")
    ax_pods.set_ylabel("pods")
    ax_cpu.plot(minutes, [100 * p.utilization for p in history], color="tab:green", label="CPU of ready pods")
    ax_cpu.axhline(plan.target_cpu_utilization, color="purple", linestyle="--", label="target")
    ax_cpu.set_ylabel("CPU (% of request)")
    ax_p95.plot(
        minutes,
        [p.p95_ms if p.p95_ms is not None else float("nan") for p in history],
        color="tab:orange",
        label="expected p95",
    )
    overloaded = [p.t / 60 for p in history if p.p95_ms is None]
    if overloaded:
        ax_p95.plot(overloaded, [slo_p95_ms] * len(overloaded), "|", color="red", label="over capacity")
    ax_p95.axhline(slo_p95_ms, color="red", linestyle="--", label="SLO")
    ax_p95.set_ylabel("p95 (ms)")
    ax_p95.set_xlabel("minutes")
    for ax in (ax_rps, ax_pods, ax_cpu, ax_p95):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    fig.suptitle("Simulated HPA: base -> peak -> base")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)

    if args.url:
        service, url, placement = None, args.url.rstrip("/"), "an already running service (not pinned)"
        service_cpus = locust_cpus = None
        wait_ready(url, None)
        watched = {"service": args.service_pid} if args.service_pid else {}
    else:
        service_cpus, locust_cpus, placement = split_cpus(args.cpus)
        service, url = start_service(service_cpus, args.cpus, args.nice, out)
        watched = {"service": service.pid}
    print(f"bench.hpa: {placement}", flush=True)

    run_seconds = args.steps * args.step_seconds
    command = locust_command(args, url, locust_cpus, out)
    print(
        f"bench.hpa: {args.steps} steps x {args.step_seconds:g} s up to {args.max_users} users against {url}",
        flush=True,
    )
    try:
        sampler = run_locust(command, out, run_seconds, watched, service_cpus)
    finally:
        if service is not None:
            stop_process(service)
    steps, raw_steps = read_steps(out, sampler, args.cpus)

    knee = hpa_model.find_knee(steps, args.slo_p95_ms)
    lag = hpa_model.scale_up_lag(args.metrics_delay_s, args.sync_period_s, args.pod_startup_s)
    result: dict[str, object] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "placement": placement,
        "command": "python -m bench.hpa " + shlex.join(sys.argv[1:] if argv is None else argv),
        "locust_command": shlex.join(command),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "slo_p95_ms": args.slo_p95_ms,
        "steps": raw_steps,
    }
    _print_steps(steps, raw_steps)
    waits = [w for r in raw_steps for w in (r["service_cpu_wait_share"], r["locust_cpu_wait_share"]) if w is not None]
    result["max_cpu_wait_share"] = max(waits, default=None)
    foreign = [r["foreign_cpu_share"] for r in raw_steps if r["foreign_cpu_share"] is not None]
    result["max_foreign_cpu_share"] = max(foreign, default=None)
    # Contended: other processes used the service's cores, or Locust waited for a CPU while its
    # own cores were far from busy (waiting on its own busy cores is just saturation).
    result["contended"] = any(
        (r["foreign_cpu_share"] or 0) > CONTENDED_FOREIGN_SHARE
        or (r["locust_cpu_wait_share"] or 0) > CONTENDED_WAIT_SHARE
        and (r["locust_cpu_cores"] or 0) < 0.8
        for r in raw_steps
    )
    if result["contended"]:
        print(
            f"bench.hpa: WARNING other processes used up to {_pct(result['max_foreign_cpu_share'])}% of the "
            "service's cores, or Locust waited for a CPU it did not use: latency and capacity are understated "
            "and the HPA numbers are not trustworthy (try --nice -10, or a quieter machine)",
            flush=True,
        )
    if knee is None or knee.cpu_utilization <= 0:
        result["error"] = "no step kept the SLO" if knee is None else "no CPU use measured at the knee"
        (out / "hpa.json").write_text(json.dumps(result, indent=2) + "\n")
        plot_knee(steps, None, None, args.slo_p95_ms, out / "knee.png")
        print(f"bench.hpa: {result['error']}; lower the load (--max-users) or check {out / 'locust.log'}")
        return 1

    # Capacity is only found when some step broke the SLO; otherwise the knee is a lower bound.
    capacity_reached = any(not hpa_model.step_within_slo(s, args.slo_p95_ms) for s in steps)
    if not capacity_reached:
        print(
            f"bench.hpa: WARNING every step kept the SLO, so {knee.rps:.1f} req/s is only a lower bound "
            "of a pod's capacity; raise --max-users to find the knee",
            flush=True,
        )
    plan = hpa_model.derive_plan(knee, args.base_rps, args.peak_rps, args.growth_per_minute, lag, args.tolerance)
    spec = HpaSpec(plan.min_replicas, plan.max_replicas, plan.target_cpu_utilization, tolerance=args.tolerance)
    cpu = hpa_model.fit_cpu_model(steps, knee)
    latency = hpa_model.LatencyModel.from_steps([s for s in steps if s.rps <= knee.rps])
    demand, duration = hpa_model.traffic_curve(args.base_rps, args.peak_rps, args.growth_per_minute)
    history = hpa_model.simulate(
        spec, demand, duration, cpu, latency, args.pod_startup_s, args.sync_period_s, args.metrics_delay_s
    )
    summary = hpa_model.summarize(history, args.slo_p95_ms)

    result.update(
        per_pod_capacity_rps=plan.per_pod_capacity_rps,
        capacity_reached=capacity_reached,
        target_cpu_utilization=plan.target_cpu_utilization,
        min_replicas=plan.min_replicas,
        max_replicas=plan.max_replicas,
        knee={**asdict(knee)},
        plan=asdict(plan),
        cpu_model=asdict(cpu),
        behavior={"scale_up": asdict(spec.scale_up), "scale_down": asdict(spec.scale_down)},
        simulation={
            "base_rps": args.base_rps,
            "peak_rps": args.peak_rps,
            "growth_per_minute": args.growth_per_minute,
            "pod_startup_s": args.pod_startup_s,
            "metrics_delay_s": args.metrics_delay_s,
            "sync_period_s": args.sync_period_s,
            **summary,
            "timeline": [asdict(p) for p in history[:: int(args.sync_period_s)]],
        },
    )
    (out / "hpa.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_knee(steps, knee, plan, args.slo_p95_ms, out / "knee.png")
    plot_simulation(history, plan, args.slo_p95_ms, out / "simulation.png")
    yaml_text = hpa_yaml(plan, spec, result, args)
    (out / "hpa.yaml").write_text(yaml_text)
    wrote_k8s = args.write_k8s and not result["contended"]
    if wrote_k8s:
        K8S_HPA.write_text(yaml_text)
    elif args.write_k8s:
        print(f"bench.hpa: NOT writing {K8S_HPA.relative_to(ROOT)}: the measurement was contended", flush=True)

    print(
        f"bench.hpa: knee {knee.rps:.1f} req/s per pod at {knee.users} users "
        f"(p95 {knee.p95_ms} ms, CPU {100 * knee.cpu_utilization:.0f}%)\n"
        f"bench.hpa: HPA target {plan.target_cpu_utilization}% CPU, replicas {plan.min_replicas}..{plan.max_replicas} "
        f"(scale-up lag {lag:g} s)\n"
        f"bench.hpa: simulation {args.base_rps:g} -> {args.peak_rps:g} req/s: peak {summary['peak_replicas']} pods, "
        f"{summary['seconds_over_slo']:.0f} s over the SLO, {summary['seconds_overloaded']:.0f} s over capacity\n"
        f"bench.hpa: wrote {out}/hpa.json, knee.png, simulation.png, hpa.yaml"
        + (f" and {K8S_HPA.relative_to(ROOT)}" if wrote_k8s else ""),
        flush=True,
    )
    return 0


def _print_steps(steps: list[Step], raw: list[dict]) -> None:
    print(
        f"{'users':>6} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'fail':>5} {'CPU %':>6} "
        f"{'wait %':>6} {'other %':>7} {'locust cores':>12} {'locust wait %':>13}"
    )
    for step, record in zip(steps, raw, strict=False):
        print(
            f"{step.users:>6} {step.rps:>8.1f} {_ms(step.p50_ms):>7} {_ms(step.p95_ms):>7} {_ms(step.p99_ms):>7} "
            f"{step.failures:>5} {100 * step.cpu_utilization:>6.0f} {_pct(record['service_cpu_wait_share']):>6} "
            f"{_pct(record['foreign_cpu_share']):>7} {_num(record['locust_cpu_cores']):>12} {_pct(record['locust_cpu_wait_share']):>13}"
        )


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


if __name__ == "__main__":
    sys.exit(main())
