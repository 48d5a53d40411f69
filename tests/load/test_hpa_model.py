"""The knee, the HPA sizing and the HPA controller simulator against hand-computed answers."""

from __future__ import annotations

import pytest

from bench.hpa_model import (
    SCALE_DOWN,
    SCALE_UP,
    CpuModel,
    HpaController,
    HpaSpec,
    LatencyModel,
    Policy,
    Rules,
    Step,
    derive_plan,
    find_knee,
    fit_cpu_model,
    replicas_for_utilization,
    simulate,
    target_utilization,
    traffic_curve,
)


def step(users, rps, p95, failures=0, cpu=0.5):
    return Step(users=users, rps=rps, p95_ms=p95, failures=failures, cpu_utilization=cpu, requests=1000)


RUN = [
    step(10, 20.0, 10, cpu=0.2),
    step(20, 40.0, 12, cpu=0.4),
    step(30, 60.0, 20, cpu=0.6),
    step(40, 70.0, 80, cpu=0.75),
    step(50, 72.0, 400, failures=3, cpu=0.8),
]


# --- knee ----------------------------------------------------------------------------------


def test_knee_is_the_highest_throughput_step_within_the_slo():
    assert find_knee(RUN, slo_p95_ms=100).users == 40
    assert find_knee(RUN, slo_p95_ms=15).users == 20


def test_failures_disqualify_a_step_even_with_a_good_latency():
    run = [step(10, 20.0, 10), step(20, 40.0, 10, failures=1)]
    assert find_knee(run, slo_p95_ms=100).users == 10


def test_a_step_after_the_first_breach_is_not_capacity():
    run = [step(10, 20.0, 10), step(20, 45.0, 300), step(30, 50.0, 20)]
    assert find_knee(run, slo_p95_ms=100).users == 10


def test_no_knee_when_the_first_step_breaks_the_slo():
    assert find_knee([step(10, 20.0, 500)], slo_p95_ms=100) is None


def test_cpu_model_fits_the_line_through_the_steps_up_to_the_knee():
    model = fit_cpu_model(RUN, find_knee(RUN, 100))
    # The first three steps lie on 0.01 * rps; the fourth pulls the line a little.
    assert model.per_rps == pytest.approx(0.0107, abs=5e-4)
    assert model.saturation == 0.8
    assert model.utilization(10_000) == 0.8


# --- HPA derivation ------------------------------------------------------------------------


def test_target_leaves_room_for_tolerance_and_growth_during_the_lag():
    # 0.9 / ((1 + 0.1) * (1 + 0.2 * 60 / 60)) = 0.9 / 1.32 = 68.18 % -> 68
    assert target_utilization(0.9, growth_per_minute=0.2, lag_s=60, tolerance=0.1) == 68


def test_target_is_at_least_one_percent():
    assert target_utilization(0.005, growth_per_minute=0.2, lag_s=60, tolerance=0.1) == 1


def test_plan_from_a_known_knee():
    knee = step(40, 100.0, 50, cpu=0.9)
    plan = derive_plan(knee, base_rps=150, peak_rps=1000, growth_per_minute=0.2, lag_s=60)
    assert plan.target_cpu_utilization == 68
    assert plan.min_replicas == 2  # ceil(150 / 100) = 2, and never below 2
    # At 68 % a pod serves 100 * 0.68 / 0.9 = 75.6 rps: ceil(1000 / 75.6) = 14, plus one spare.
    assert plan.max_replicas == 15
    assert derive_plan(knee, 450, 1000, 0.2, 60).min_replicas == 5


def test_plan_never_has_max_below_min():
    plan = derive_plan(step(10, 100.0, 50, cpu=0.9), base_rps=900, peak_rps=100, growth_per_minute=0.2, lag_s=60)
    assert plan.max_replicas >= plan.min_replicas == 9


# --- replica calculator --------------------------------------------------------------------


def test_ratio_within_tolerance_changes_nothing():
    # 52.5 % against 50 % is a ratio of 1.05 (the integer utilisation 52 gives 1.04).
    assert replicas_for_utilization(4, 4, 0, 52.5, target=50, tolerance=0.1) == 4
    assert replicas_for_utilization(4, 4, 0, 45.0, target=50, tolerance=0.1) == 4


def test_ratio_beyond_tolerance_scales_proportionally():
    assert replicas_for_utilization(4, 4, 0, 56.0, target=50, tolerance=0.1) == 5  # ceil(4.48)
    assert replicas_for_utilization(4, 4, 0, 20.0, target=50, tolerance=0.1) == 2  # ceil(1.6)


def test_unready_pods_count_as_idle_on_a_scale_up():
    # 2 ready at 120 %, 2 starting: floor(120 * 2 / 4) = 60 % -> ratio 1.2 -> ceil(4.8) = 5
    assert replicas_for_utilization(4, 2, 2, 120.0, target=50, tolerance=0.1) == 5
    # 80 % -> 40 % with the starting pods: the direction flips, so no change.
    assert replicas_for_utilization(4, 2, 2, 80.0, target=50, tolerance=0.1) == 4
    # 105 % -> 52 %: within the tolerance.
    assert replicas_for_utilization(4, 2, 2, 105.0, target=50, tolerance=0.1) == 4


# --- controller: behaviour -----------------------------------------------------------------


def controller(min_replicas=1, max_replicas=50, target=50, scale_up=SCALE_UP, scale_down=SCALE_DOWN):
    return HpaController(HpaSpec(min_replicas, max_replicas, target, scale_up, scale_down))


def test_scale_up_is_limited_by_the_larger_policy_per_period():
    hpa = controller()
    # Wanted: ceil(10 * 2) = 20. Limits: 100 % of 2 -> 4, 2 + 4 pods -> 6; Max picks 6.
    assert hpa.reconcile(0, current=2, ready=2, unready=0, utilization_percent=500) == 6
    # 5 s later the period (15 s) still counts the +4: it started at 2, so the limit is still 6.
    assert hpa.reconcile(5, current=6, ready=6, unready=0, utilization_percent=500) == 6
    # At 15 s the event has left the period (timestamps must be strictly after the cutoff):
    # limits 100 % of 6 -> 12 and 6 + 4 -> 10; Max picks 12.
    assert hpa.reconcile(15, current=6, ready=6, unready=0, utilization_percent=500) == 12


def test_select_policy_min_takes_the_smaller_limit():
    rules = Rules(0, SCALE_UP.policies, "Min")
    assert controller(scale_up=rules).reconcile(0, 2, 2, 0, 500) == 4


def test_disabled_scale_up_keeps_the_count():
    rules = Rules(0, SCALE_UP.policies, "Disabled")
    assert controller(scale_up=rules).reconcile(0, 2, 2, 0, 500) == 2


def test_scale_down_is_held_by_the_stabilization_window():
    generous = Rules(300, (Policy("Percent", 100, 15),))
    hpa = controller(min_replicas=1, scale_down=generous)
    assert hpa.reconcile(0, 10, 10, 0, 50) == 10  # at target: recommendation 10
    counts = [hpa.reconcile(t, 10, 10, 0, 10) for t in range(15, 300, 15)]
    # Every recommendation is ceil(0.2 * 10) = 2, but the 10 from t=0 is within the window.
    assert counts == [10] * len(counts)
    # At t=300 the t=0 recommendation is exactly at the cutoff and no longer counts.
    assert hpa.reconcile(300, 10, 10, 0, 10) == 2


def test_scale_down_is_limited_to_one_pod_per_minute():
    one_pod = Rules(0, (Policy("Pods", 1, 60),))
    hpa = controller(scale_down=one_pod)
    assert hpa.reconcile(0, 10, 10, 0, 10) == 9
    assert hpa.reconcile(15, 9, 9, 0, 10) == 9  # the period started at 10: limit 9
    assert hpa.reconcile(45, 9, 9, 0, 10) == 9
    assert hpa.reconcile(60, 9, 9, 0, 10) == 8


def test_min_and_max_clamp_the_count():
    fast_down = Rules(0, (Policy("Percent", 100, 15),))
    assert controller(min_replicas=2, max_replicas=10).reconcile(0, 12, 12, 0, 50) == 10
    assert controller(min_replicas=2, max_replicas=10).reconcile(0, 1, 1, 0, 50) == 2
    assert controller(min_replicas=2, scale_down=fast_down).reconcile(0, 4, 4, 0, 1) == 2
    assert controller(min_replicas=2, max_replicas=5).reconcile(0, 4, 4, 0, 500) == 5


# --- simulation ----------------------------------------------------------------------------

CPU = CpuModel(idle=0.0, per_rps=0.01, saturation=1.0)
LATENCY = LatencyModel(rps=(10.0, 50.0, 90.0), p95_ms=(10.0, 20.0, 200.0))


def test_steady_demand_at_the_target_keeps_min_replicas():
    spec = HpaSpec(min_replicas=2, max_replicas=10, target_utilization=50)
    history = simulate(spec, lambda t: 100.0, 600, CPU, LATENCY)  # 50 rps per pod = 50 %
    assert {p.replicas for p in history} == {2}
    assert all(p.utilization == pytest.approx(0.5) for p in history)
    assert history[0].p95_ms == 20.0


def test_new_pods_take_load_only_after_start_up():
    spec = HpaSpec(min_replicas=2, max_replicas=10, target_utilization=50)
    history = simulate(spec, lambda t: 200.0, 60, CPU, LATENCY, pod_startup_s=20, metrics_delay_s=0)
    # 100 rps per pod is beyond the measured 90: overloaded, 100 % busy.
    assert history[14].p95_ms is None and history[14].utilization == 1.0
    # The 15 s sync sees 100 % against 50 %: ceil(2 * 2) = 4 (policy limit 6 does not bind).
    assert (history[15].replicas, history[15].ready) == (4, 2)
    assert history[34].ready == 2
    assert history[35].ready == 4 and history[35].p95_ms == 20.0


def test_ramp_scales_up_and_back_down_within_bounds():
    spec = HpaSpec(min_replicas=2, max_replicas=12, target_utilization=60)
    demand, duration = traffic_curve(base_rps=60, peak_rps=600, growth_per_minute=0.5)
    history = simulate(spec, demand, duration, CPU, LatencyModel((10.0, 80.0, 95.0), (10.0, 30.0, 250.0)))
    replicas = [p.replicas for p in history]
    assert min(replicas) == 2 and max(replicas) <= 12
    assert max(replicas) >= 10  # 600 rps at 60 % needs 10 pods
    assert replicas[-1] < max(replicas)  # the tail shows the scale-down
    # Scale-down removes at most one pod per 60 s.
    drops = [
        (a.t, a.replicas - b.replicas) for a, b in zip(history, history[1:], strict=False) if b.replicas < a.replicas
    ]
    assert all(change == 1 for _, change in drops)
    assert all(later - earlier >= 60 for (earlier, _), (later, _) in zip(drops, drops[1:], strict=False))
