"""Capacity knee, HPA sizing and a simulator of the Kubernetes HPA control loop. Pure: no I/O.

The simulator follows the HorizontalPodAutoscaler controller of Kubernetes (autoscaling/v2):

* replica count from a resource metric -- pkg/controller/podautoscaler/replica_calculator.go,
  ``GetResourceReplicas``: utilisation = sum(usage) * 100 / sum(requests) over ready pods
  (integer division), ``usageRatio = utilisation / target``; within the tolerance
  (``|1 - usageRatio| <= 0.1``, flag --horizontal-pod-autoscaler-tolerance) nothing changes;
  otherwise ``ceil(usageRatio * readyPods)``. Pods that are not ready yet are left out of the
  average; on a scale-up they are counted back in at 0 % usage, and if that brings the ratio
  within the tolerance or flips its direction, the replica count stays.
* behaviour -- pkg/controller/podautoscaler/horizontal.go: ``reconcileAutoscaler`` clamps a
  count outside [min, max] first; otherwise ``normalizeDesiredReplicasWithBehaviors`` applies
  ``stabilizeRecommendationWithBehaviors`` (the lowest recommendation of the scale-up window and
  the highest of the scale-down window bound the result; the current count is moved only as far
  as both allow) and then ``convertDesiredReplicasWithBehaviorRate`` with
  ``calculateScaleUpLimitWithScalingRules`` / ``calculateScaleDownLimitWithBehaviors``: each
  policy's limit is measured from the count at the start of its period (the current count minus
  the scale-ups plus the scale-downs recorded within ``periodSeconds``, ``getReplicasChangePerPeriod``);
  Pods adds/removes ``value`` pods, Percent multiplies by ``1 +/- value/100`` (ceil up, truncate
  down); selectPolicy Max takes the largest change, Min the smallest, Disabled none.
* the loop runs every sync period (--horizontal-pod-autoscaler-sync-period, 15 s).
  Documented at https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/
  ("Algorithm details", "Configurable scaling behavior").

Simplifications (stated in docs/load-testing.md): all pods have the same CPU request, a new pod
takes no load until it is ready (``pod_startup_s`` after the scale-up), the metric the HPA sees
is the ready pods' mean utilisation over ``metrics_window_s`` ending ``metrics_delay_s`` ago, and
the load balancer spreads demand evenly over ready pods.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------
# Measurements and the capacity knee.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One plateau of a step load: what the service did at a fixed number of users."""

    users: int
    rps: float
    p95_ms: float | None
    failures: int
    cpu_utilization: float  # of the pod's CPU request: 1.0 = all requested cores busy
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    seconds: float = 0.0


def step_within_slo(step: Step, slo_p95_ms: float) -> bool:
    return step.failures == 0 and step.requests > 0 and step.p95_ms is not None and step.p95_ms <= slo_p95_ms


def find_knee(steps: Sequence[Step], slo_p95_ms: float) -> Step | None:
    """The highest-throughput step of the run before the SLO first broke.

    Steps are taken in order of users; the first step with a failure or a p95 over the SLO ends
    the search, so a lucky step after an overload is never mistaken for capacity. None when the
    first step already breaks the SLO.
    """
    within = []
    for step in sorted(steps, key=lambda s: s.users):
        if not step_within_slo(step, slo_p95_ms):
            break
        within.append(step)
    return max(within, key=lambda s: s.rps) if within else None


@dataclass(frozen=True)
class CpuModel:
    """Utilisation (fraction of the request) as idle + per_rps * rps, capped at saturation."""

    idle: float
    per_rps: float
    saturation: float

    def utilization(self, rps: float) -> float:
        return min(self.idle + self.per_rps * rps, self.saturation)


def fit_cpu_model(steps: Sequence[Step], knee: Step) -> CpuModel:
    """Least-squares line through the steps up to the knee (through the origin for one step)."""
    points = [(s.rps, s.cpu_utilization) for s in steps if s.rps <= knee.rps and s.rps > 0]
    saturation = max(s.cpu_utilization for s in steps)
    if len(points) < 2:
        return CpuModel(0.0, knee.cpu_utilization / knee.rps, saturation)
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return CpuModel(0.0, knee.cpu_utilization / knee.rps, saturation)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    idle = mean_y - slope * mean_x
    if slope <= 0 or idle < 0:
        # Noise can tilt the line; fall back to proportional usage through the knee.
        return CpuModel(0.0, knee.cpu_utilization / knee.rps, saturation)
    return CpuModel(idle, slope, saturation)


# --------------------------------------------------------------------------------------------
# Deriving the HPA.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    per_pod_capacity_rps: float
    knee_cpu_utilization: float
    target_cpu_utilization: int  # percent, as averageUtilization
    min_replicas: int
    max_replicas: int
    scale_up_lag_s: float
    headroom_factor: float


def scale_up_lag(metrics_delay_s: float, sync_period_s: float, pod_startup_s: float) -> float:
    """Worst-case seconds from a load increase to new pods serving it."""
    return metrics_delay_s + sync_period_s + pod_startup_s


def target_utilization(knee_utilization: float, growth_per_minute: float, lag_s: float, tolerance: float) -> int:
    """averageUtilization (percent) that keeps a growing load under the knee while pods start.

    The HPA acts only once utilisation exceeds target * (1 + tolerance); demand growing by
    ``growth_per_minute`` (relative) for ``lag_s`` seconds reaches (1 + growth * lag / 60) times
    that before new pods take load. Both together must stay at or below the knee:
        target = knee / ((1 + tolerance) * (1 + growth_per_minute * lag_s / 60))
    in whole percent, rounded down, and at least 1 (the API's minimum).
    """
    factor = (1 + tolerance) * (1 + growth_per_minute * lag_s / 60)
    return max(1, math.floor(100 * knee_utilization / factor))


def derive_plan(
    knee: Step,
    base_rps: float,
    peak_rps: float,
    growth_per_minute: float,
    lag_s: float,
    tolerance: float = 0.1,
    min_for_availability: int = 2,
    spare_replicas: int = 1,
) -> Plan:
    """min/max replicas and the CPU target from the knee (see docs/load-testing.md)."""
    if knee.rps <= 0 or knee.cpu_utilization <= 0:
        raise ValueError("the knee step has no throughput or no CPU use")
    target = target_utilization(knee.cpu_utilization, growth_per_minute, lag_s, tolerance)
    min_replicas = max(min_for_availability, math.ceil(base_rps / knee.rps))
    # At the target a pod runs at target/knee of its capacity (CPU grows with throughput).
    load_fraction = min(1.0, target / 100 / knee.cpu_utilization)
    max_replicas = math.ceil(peak_rps / (knee.rps * load_fraction)) + spare_replicas
    return Plan(
        per_pod_capacity_rps=knee.rps,
        knee_cpu_utilization=knee.cpu_utilization,
        target_cpu_utilization=target,
        min_replicas=min_replicas,
        max_replicas=max(max_replicas, min_replicas),
        scale_up_lag_s=lag_s,
        headroom_factor=knee.cpu_utilization * 100 / target,
    )


# --------------------------------------------------------------------------------------------
# The HPA controller.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    type: str  # "Pods" | "Percent"
    value: int
    period_seconds: int


@dataclass(frozen=True)
class Rules:
    stabilization_window_seconds: int
    policies: tuple[Policy, ...]
    select_policy: str = "Max"  # "Max" | "Min" | "Disabled"


# The behaviour this project uses (justified in docs/load-testing.md).
SCALE_UP = Rules(0, (Policy("Percent", 100, 15), Policy("Pods", 4, 15)), "Max")
SCALE_DOWN = Rules(300, (Policy("Pods", 1, 60),), "Max")


@dataclass(frozen=True)
class HpaSpec:
    min_replicas: int
    max_replicas: int
    target_utilization: int  # percent
    scale_up: Rules = SCALE_UP
    scale_down: Rules = SCALE_DOWN
    tolerance: float = 0.1


def replicas_for_utilization(
    current_replicas: int, ready_pods: int, unready_pods: int, utilization_percent: float, target: int, tolerance: float
) -> int:
    """replica_calculator.go GetResourceReplicas for pods with equal requests, no missing metrics."""
    utilization = math.floor(utilization_percent)  # int64 arithmetic in metricsclient
    usage_ratio = utilization / target
    scale_up_with_unready = unready_pods > 0 and usage_ratio > 1.0
    if not scale_up_with_unready:
        if abs(1.0 - usage_ratio) <= tolerance:
            return current_replicas
        return math.ceil(usage_ratio * ready_pods)
    # Unready pods count at 0 % usage on a scale-up; no change if that flips the direction.
    new_ratio = math.floor(utilization_percent * ready_pods / (ready_pods + unready_pods)) / target
    if abs(1.0 - new_ratio) <= tolerance or new_ratio < 1.0:
        return current_replicas
    new_replicas = math.ceil(new_ratio * (ready_pods + unready_pods))
    return current_replicas if new_replicas < current_replicas else new_replicas


@dataclass
class HpaController:
    """The state the controller keeps per HPA: recommendations and scale events, by time."""

    spec: HpaSpec
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    scale_up_events: list[tuple[float, int]] = field(default_factory=list)
    scale_down_events: list[tuple[float, int]] = field(default_factory=list)

    def reconcile(self, now: float, current: int, ready: int, unready: int, utilization_percent: float) -> int:
        """One sync: the replica count the controller sets (reconcileAutoscaler)."""
        spec = self.spec
        if current > spec.max_replicas:
            desired = spec.max_replicas
        elif current < spec.min_replicas:
            desired = spec.min_replicas
        else:
            proposal = replicas_for_utilization(
                current, ready, unready, utilization_percent, spec.target_utilization, spec.tolerance
            )
            stabilized = self._stabilize(now, current, proposal)
            desired = self._limit_rate(now, current, stabilized)
        if desired > current:
            self.scale_up_events.append((now, desired - current))
        elif desired < current:
            self.scale_down_events.append((now, current - desired))
        return desired

    def _stabilize(self, now: float, current: int, desired: int) -> int:
        up_cutoff = now - self.spec.scale_up.stabilization_window_seconds
        down_cutoff = now - self.spec.scale_down.stabilization_window_seconds
        up = down = desired
        for stamp, recommendation in self.recommendations:
            if stamp > up_cutoff:
                up = min(up, recommendation)
            if stamp > down_cutoff:
                down = max(down, recommendation)
        oldest_kept = min(up_cutoff, down_cutoff)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > oldest_kept]
        self.recommendations.append((now, desired))
        return min(max(current, up), down)

    def _limit_rate(self, now: float, current: int, desired: int) -> int:
        spec = self.spec
        if desired > current:
            limit = max(self._scale_up_limit(now, current), current)
            return min(desired, spec.max_replicas, limit)
        if desired < current:
            limit = min(self._scale_down_limit(now, current), current)
            return max(desired, spec.min_replicas, limit)
        return desired

    def _period_start(self, now: float, current: int, period: int) -> int:
        cutoff = now - period
        added = sum(change for stamp, change in self.scale_up_events if stamp > cutoff)
        removed = sum(change for stamp, change in self.scale_down_events if stamp > cutoff)
        return current - added + removed

    def _scale_up_limit(self, now: float, current: int) -> int:
        rules = self.spec.scale_up
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                proposals.append(start + policy.value)
            else:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
        return min(proposals) if rules.select_policy == "Min" else max(proposals)

    def _scale_down_limit(self, now: float, current: int) -> int:
        rules = self.spec.scale_down
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                proposals.append(start - policy.value)
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        return max(proposals) if rules.select_policy == "Min" else min(proposals)


# --------------------------------------------------------------------------------------------
# Traffic and the simulation.
# --------------------------------------------------------------------------------------------


def traffic_curve(
    base_rps: float,
    peak_rps: float,
    growth_per_minute: float,
    warm_s: float = 120,
    hold_s: float = 600,
    ramp_down_s: float = 300,
    tail_s: float = 900,
) -> tuple[Callable[[float], float], float]:
    """Base, then growth at ``growth_per_minute`` (compounding) up to the peak, hold, a linear
    fall back to base, and a tail that shows the scale-down. Returns (rps(t), duration)."""
    per_second = math.log1p(growth_per_minute) / 60
    ramp_up_s = math.log(peak_rps / base_rps) / per_second if peak_rps > base_rps else 0.0
    t_peak = warm_s + ramp_up_s
    t_fall = t_peak + hold_s
    t_base = t_fall + ramp_down_s

    def rps(t: float) -> float:
        if t < warm_s:
            return base_rps
        if t < t_peak:
            return base_rps * math.exp(per_second * (t - warm_s))
        if t < t_fall:
            return peak_rps
        if t < t_base:
            return peak_rps + (base_rps - peak_rps) * (t - t_fall) / ramp_down_s
        return base_rps

    return rps, t_base + tail_s


@dataclass(frozen=True)
class LatencyModel:
    """p95 against per-pod throughput, interpolated between the measured steps."""

    rps: tuple[float, ...]
    p95_ms: tuple[float, ...]

    @classmethod
    def from_steps(cls, steps: Sequence[Step]) -> LatencyModel:
        points = sorted((s.rps, s.p95_ms) for s in steps if s.p95_ms is not None and s.failures == 0)
        if not points:
            raise ValueError("no step has a latency without failures")
        return cls(tuple(p[0] for p in points), tuple(float(p[1]) for p in points))

    @property
    def max_rps(self) -> float:
        return self.rps[-1]

    def p95(self, rps: float) -> float | None:
        """None beyond the highest measured throughput: the pod is overloaded."""
        if rps > self.max_rps:
            return None
        i = bisect.bisect_left(self.rps, rps)
        if i == 0:
            return self.p95_ms[0]
        x0, x1, y0, y1 = self.rps[i - 1], self.rps[i], self.p95_ms[i - 1], self.p95_ms[i]
        return y0 if x1 == x0 else y0 + (y1 - y0) * (rps - x0) / (x1 - x0)


@dataclass(frozen=True)
class SimulationPoint:
    t: float
    demand_rps: float
    replicas: int
    ready: int
    utilization: float  # mean over ready pods, fraction of the request
    p95_ms: float | None  # None = overloaded


def simulate(
    spec: HpaSpec,
    demand: Callable[[float], float],
    duration_s: float,
    cpu: CpuModel,
    latency: LatencyModel,
    pod_startup_s: float = 20,
    sync_period_s: float = 15,
    metrics_delay_s: float = 15,
    metrics_window_s: float = 15,
) -> list[SimulationPoint]:
    """Run the controller against ``demand`` (rps over time), one point per second."""
    controller = HpaController(spec)
    ready_at = [0.0] * spec.min_replicas  # when each pod starts taking load
    history: list[SimulationPoint] = []
    for second in range(int(duration_s) + 1):
        t = float(second)
        if second and second % sync_period_s == 0:
            ready = sum(1 for r in ready_at if r <= t)
            seen = _seen_utilization(history, t - metrics_delay_s, metrics_window_s)
            desired = controller.reconcile(t, len(ready_at), ready, len(ready_at) - ready, 100 * seen)
            if desired > len(ready_at):
                ready_at += [t + pod_startup_s] * (desired - len(ready_at))
            elif desired < len(ready_at):
                # The ReplicaSet deletes pods that are not ready first, then the youngest.
                ready_at = sorted(ready_at)[:desired]
        ready = sum(1 for r in ready_at if r <= t)
        rps = demand(t)
        per_pod = rps / ready if ready else math.inf
        history.append(SimulationPoint(t, rps, len(ready_at), ready, cpu.utilization(per_pod), latency.p95(per_pod)))
    return history


def _seen_utilization(history: Sequence[SimulationPoint], end: float, window: float) -> float:
    samples = [p.utilization for p in history if end - window < p.t <= end]
    if not samples:
        samples = [history[0].utilization] if history else [0.0]
    return sum(samples) / len(samples)


def summarize(history: Sequence[SimulationPoint], slo_p95_ms: float) -> dict[str, float]:
    over = [p for p in history if p.p95_ms is None or p.p95_ms > slo_p95_ms]
    return {
        "duration_s": history[-1].t if history else 0.0,
        "peak_replicas": max((p.replicas for p in history), default=0),
        "final_replicas": history[-1].replicas if history else 0,
        "seconds_over_slo": float(len(over)),
        "seconds_overloaded": float(sum(1 for p in history if p.p95_ms is None)),
        "max_utilization": max((p.utilization for p in history), default=0.0),
    }
