"""The autoscaling policy on recorded load shapes: burst, ramp, idle, scale from zero, bounds, delays."""

from byzer_like.autoscale import LoadSample, ScalerState, decide
from byzer_like.spec import ScalingSpec


def sample(workers, running=0, queued=0, idle=None, ready=None):
    idle = tuple(idle if idle is not None else [0.0] * workers)
    return LoadSample(workers=workers, ready=workers if ready is None else ready, running=running, queued=queued,
                      idle_s=idle)


def test_cold_start_from_zero_when_a_request_waits():
    spec = ScalingSpec(min_workers=0, max_workers=3)
    state = ScalerState()
    assert decide(spec, 1, 1, sample(0), state, now=0) is None  # idle and empty: stay at zero
    got = decide(spec, 1, 1, sample(0, queued=1), state, now=1)
    assert got.desired == 1 and "cold start" in got.reason


def test_burst_adds_step_workers_up_to_max():
    spec = ScalingSpec(min_workers=1, max_workers=3, scale_up_step=2)
    state = ScalerState()
    got = decide(spec, 1, 1, sample(1, running=1, queued=5), state, now=0)
    assert got.desired == 3 and "queued 5" in got.reason
    assert decide(spec, 1, 1, sample(3, running=3, queued=5), state, now=1) is None  # at max: stay


def test_upscale_delay_needs_sustained_load():
    spec = ScalingSpec(min_workers=1, max_workers=4, upscale_delay_s=2)
    state = ScalerState()
    assert decide(spec, 1, 1, sample(1, running=1, queued=1), state, now=0) is None
    assert decide(spec, 1, 1, sample(1, running=1, queued=1), state, now=1) is None
    assert decide(spec, 1, 1, sample(1, running=1, queued=0), state, now=1.5) is None  # the spike ended: reset
    assert decide(spec, 1, 1, sample(1, running=1, queued=1), state, now=2) is None
    assert decide(spec, 1, 1, sample(1, running=1, queued=1), state, now=4).desired == 2


def test_target_counts_running_and_queued_per_worker():
    spec = ScalingSpec(min_workers=1, max_workers=8, target_ongoing_requests=4)
    state = ScalerState()
    assert decide(spec, 8, 1, sample(2, running=8), state, now=0) is None  # 8 <= 4 x 2
    assert decide(spec, 8, 1, sample(2, running=8, queued=1), state, now=0).desired == 3


def test_idle_workers_leave_after_max_idle_time_down_to_min():
    spec = ScalingSpec(min_workers=1, max_workers=3, max_idle_time_s=10)
    state = ScalerState()
    assert decide(spec, 1, 1, sample(3, idle=[9, 9, 9]), state, now=0) is None
    got = decide(spec, 1, 1, sample(3, idle=[11, 12, 3]), state, now=0)
    assert got.desired == 1 and "idle" in got.reason
    assert decide(spec, 1, 1, sample(1, idle=[50]), state, now=0) is None  # at min


def test_scale_to_zero_when_idle():
    spec = ScalingSpec(min_workers=0, max_workers=2, max_idle_time_s=5)
    assert decide(spec, 1, 1, sample(1, idle=[6]), ScalerState(), now=0).desired == 0


def test_busy_workers_are_not_removed_even_when_others_idle():
    spec = ScalingSpec(min_workers=1, max_workers=3, max_idle_time_s=5)
    got = decide(spec, 1, 1, sample(3, running=2, idle=[0, 0, 30]), ScalerState(), now=0)
    assert got.desired == 2


def test_downscale_delay_after_scale_up_and_no_change_while_starting():
    spec = ScalingSpec(min_workers=1, max_workers=3, max_idle_time_s=1, downscale_delay_s=30)
    state = ScalerState()
    assert decide(spec, 1, 1, sample(1, running=1, queued=1), state, now=0).desired == 2
    assert decide(spec, 1, 1, sample(2, idle=[5, 5]), state, now=10) is None  # within downscale delay
    assert decide(spec, 1, 1, sample(2, idle=[5, 5]), state, now=31).desired == 1
    assert decide(spec, 1, 1, sample(2, idle=[5], ready=1), ScalerState(), now=100) is None  # one still starting


def test_out_of_bounds_is_corrected_first():
    spec = ScalingSpec(min_workers=2, max_workers=3)
    assert decide(spec, 1, 2, sample(1), ScalerState(), now=0).desired == 2
    assert decide(spec, 1, 2, sample(5), ScalerState(), now=0).desired == 3


def test_without_bounds_the_pool_keeps_num_workers():
    spec = ScalingSpec()
    assert decide(spec, 1, 2, sample(2, running=2, queued=50), ScalerState(), now=0) is None
    assert decide(spec, 1, 2, sample(1), ScalerState(), now=0).desired == 2  # a lost worker is replaced
