import numpy as np
import pytest

from simulators import mobility as mob

B = (-500.0, -300.0, 700.0, 400.0)


def _inside(xy, b=B):
    return np.all((xy[:, 0] >= b[0]) & (xy[:, 0] <= b[2]) & (xy[:, 1] >= b[1]) & (xy[:, 1] <= b[3]))


def test_reflect_mirrors_any_overshoot():
    b = (0.0, 0.0, 10.0, 10.0)
    xy, fx, fy = mob.reflect(np.array([[12.0, 5.0], [-3.0, 25.0], [5.0, 5.0], [31.0, -1.0]]), b)
    assert np.allclose(xy, [[8.0, 5.0], [3.0, 5.0], [5.0, 5.0], [9.0, 1.0]])
    assert fx.tolist() == [True, True, False, True]
    assert fy.tolist() == [False, False, False, True]  # 25 bounces twice in y: direction kept


def test_random_waypoint_walks_at_the_configured_speed_inside_the_area():
    rng = np.random.default_rng(1)
    n = 2000
    speed = np.where(np.arange(n) < n // 2, mob.kmh_to_mps(mob.PEDESTRIAN_KMH), mob.kmh_to_mps(mob.VEHICULAR_KMH))
    st = mob.init_mobility(mob.uniform_points(n, B, rng), speed, B, rng)
    model = np.full(n, mob.RANDOM_WAYPOINT)
    total = np.zeros(n)
    start = st.xy.copy()
    for _ in range(300):
        st, moved = mob.step_mobility(st, model, speed, 1.0, B, rng)
        assert _inside(st.xy)
        total += moved
    # path length is exactly speed x time (arrivals carry the rest of the step over)
    assert np.allclose(total, 300 * speed, rtol=1e-6)
    assert np.all(np.hypot(*(st.xy - start).T) <= total + 1e-9)
    assert total[n // 2 :].mean() / total[: n // 2].mean() == pytest.approx(10.0)


def test_random_waypoint_reaches_waypoints_and_draws_new_ones():
    rng = np.random.default_rng(2)
    xy = np.array([[0.0, 0.0]])
    wp = np.array([[3.0, 4.0]])  # 5 m away
    new_xy, new_wp, moved = mob.random_waypoint_step(xy, wp, np.array([7.0]), 1.0, B, rng)
    assert moved[0] == pytest.approx(7.0)
    assert not np.allclose(new_wp, wp)
    # 2 m walked beyond the old waypoint, towards the new one
    assert np.hypot(*(new_xy - wp)[0]) == pytest.approx(2.0)
    d_before = np.hypot(*(new_wp - wp)[0])
    assert np.hypot(*(new_wp - new_xy)[0]) == pytest.approx(d_before - 2.0)


def test_gauss_markov_bounded_mean_speed_and_deterministic():
    def run(seed):
        rng = np.random.default_rng(seed)
        n = 1000
        mean = np.full(n, 15.0)
        st = mob.init_mobility(mob.uniform_points(n, B, rng), mean, B, rng)
        model = np.full(n, mob.GAUSS_MARKOV)
        speeds = []
        for _ in range(400):
            st, moved = mob.step_mobility(st, model, mean, 1.0, B, rng)
            assert _inside(st.xy)
            assert np.all(moved >= 0)
            speeds.append(moved)
        return st, np.array(speeds)

    a, sp = run(5)
    b, _ = run(5)
    c, _ = run(6)
    assert np.array_equal(a.xy, b.xy)
    assert not np.allclose(a.xy, c.xy)
    assert sp.mean() == pytest.approx(15.0, rel=0.03)
    assert sp.std() > 1.0  # speed really varies around its mean
    # users spread over the whole area rather than piling up at the walls
    x = a.xy[:, 0]
    assert np.mean(x < B[0] + 60) < 0.15 and np.mean(x > B[2] - 60) < 0.15


def test_gauss_markov_memory_keeps_direction():
    rng = np.random.default_rng(4)
    n = 5000
    xy = np.zeros((n, 2))
    heading = np.zeros(n)
    big = (-1e6, -1e6, 1e6, 1e6)
    _, _, h1, _, _ = mob.gauss_markov_step(xy, np.ones(n), heading, np.ones(n), heading, 1.0, big, rng, alpha=0.95)
    _, _, h2, _, _ = mob.gauss_markov_step(xy, np.ones(n), heading, np.ones(n), heading, 1.0, big, rng, alpha=0.2)
    assert np.abs(h1).mean() < np.abs(h2).mean()


def test_mixed_models_and_static_users():
    rng = np.random.default_rng(7)
    n = 300
    model = np.array([mob.STATIC, mob.RANDOM_WAYPOINT, mob.GAUSS_MARKOV] * 100)
    speed = np.full(n, 2.0)
    st0 = mob.init_mobility(mob.uniform_points(n, B, rng), speed, B, rng)
    st, moved = mob.step_mobility(st0, model, speed, 1.0, B, rng)
    static = model == mob.STATIC
    assert np.array_equal(st.xy[static], st0.xy[static])
    assert np.all(moved[static] == 0.0) and np.all(moved[~static] > 0.0)
    assert np.all(st.speed[static] == 0.0)
    with pytest.raises(ValueError):
        mob.step_mobility(st0, np.full(n, 9), speed, 1.0, B, rng)
    with pytest.raises(ValueError):
        mob.init_mobility(st0.xy, np.full(n, -1.0), B, rng)
    with pytest.raises(ValueError):
        mob.step_mobility(st0, model, speed, 1.0, (0.0, 0.0, -1.0, 1.0), rng)
