"""The core mathematics of the Adaptive Deconvolutional Network (plugins/adn): shrinkage, 3D
pooling with switches, the reconstruction R_l and its adjoint, ||R_l||^2, ISTA, the switch update
and the filters' least-squares solve, each checked against an independent reference (hand values,
explicit numpy/scipy loops, explicit matrices). Tiny sizes, float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from vizkit_plugins.adn import (
    Switches,
    adjoint,
    cg_filters,
    cg_filters_batched,
    cost,
    gather,
    ista,
    lipschitz,
    normalise_filters,
    operator_norm_squared,
    pool,
    pooled_size,
    reconstruct,
    shrink,
    unpool,
    update_switches,
)

DTYPE = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: a second intra-op thread only adds synchronisation, which costs
    seconds per test on a loaded machine. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- references
def np_pool(z: np.ndarray, region: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Max-|z| pooling by explicit loops: pooled values ``[N, K', H', W']`` and the winners'
    ``(k, y, x)`` ``[N, K', H', W', 3]``; ties go to the first element in (map, row, column)
    order, and only real (unpadded) elements are candidates."""
    n, k, h, w = z.shape
    g, ph, pw = region
    kp, hp, wp = -(-k // g), -(-h // ph), -(-w // pw)
    values = np.zeros((n, kp, hp, wp))
    winners = np.zeros((n, kp, hp, wp, 3), dtype=np.int64)
    for b, i, j, m in itertools.product(range(n), range(kp), range(hp), range(wp)):
        best, where = -1.0, None
        for kk in range(i * g, min((i + 1) * g, k)):
            for yy in range(j * ph, min((j + 1) * ph, h)):
                for xx in range(m * pw, min((m + 1) * pw, w)):
                    if abs(z[b, kk, yy, xx]) > best:  # strict: the first of equals stays
                        best, where = abs(z[b, kk, yy, xx]), (kk, yy, xx)
        assert where is not None
        values[b, i, j, m] = z[(b, *where)]
        winners[b, i, j, m] = where
    return values, winners


def np_unpool(p: np.ndarray, winners: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Each pooled value of ``p`` at its winner ``(k, y, x)``, zeros elsewhere, by loops."""
    out = np.zeros((p.shape[0], *shape))
    for b, i, j, m in itertools.product(*(range(s) for s in p.shape)):
        kk, yy, xx = winners[b, i, j, m]
        out[b, kk, yy, xx] = p[b, i, j, m]
    return out


def np_synthesise(z: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``out[n, c] = sum_k f[k, c] * z[n, k]``: full 2-D convolution, the centre cropped to the
    maps' size."""
    n, k, h, w = z.shape
    _, c, kh, kw = weight.shape
    out = np.zeros((n, c, h, w))
    for b, kk, cc in itertools.product(range(n), range(k), range(c)):
        full = convolve2d(z[b, kk], weight[kk, cc], mode="full")
        out[b, cc] += full[kh // 2 : kh // 2 + h, kw // 2 : kw // 2 + w]
    return out


def decode(switches: Switches) -> np.ndarray:
    """The switches' flat indices as ``(k, y, x)``, ``[N, K', H', W', 3]``."""
    _, h, w = switches.shape
    index = switches.index.numpy()
    return np.stack([index // (h * w), (index // w) % h, index % w], axis=-1)


def random_model(
    layers: int, seed: int = 0, n: int = 2
) -> tuple[list[torch.Tensor], list[Switches], tuple[int, ...], list[np.ndarray]]:
    """A tiny random ADN of 1 to 3 layers: its filter banks, the switches from pooling random
    maps, the image shape, and the random unpooled maps the switches came from. Sizes are chosen
    so that padding happens (maps, rows and columns not multiples of the region) and a filter is
    not square."""
    generator = torch.Generator().manual_seed(seed)
    spec = [  # (maps, filter size, region)
        (3, (3, 3), (2, 2, 2)),
        (3, (3, 5), (2, 2, 2)),
        (2, (3, 3), (2, 1, 1)),
    ][:layers]
    channels, h, w = 1, 7, 6
    image = (n, channels, h, w)
    filters, switches, maps = [], [], []
    for k, (kh, kw), region in spec:
        filters.append(torch.randn(k, channels, kh, kw, generator=generator, dtype=DTYPE))
        z = torch.randn(n, k, h, w, generator=generator, dtype=DTYPE)
        switches.append(pool(z, region)[1])
        maps.append(z.numpy())
        channels, h, w = pooled_size((k, h, w), region)
    return filters, switches, image, maps


def operator_matrix(filters: list[torch.Tensor], switches: list[Switches]) -> np.ndarray:
    """R_l as an explicit matrix, column j the reconstruction of the j-th unit vector."""
    shape = switches[-1].pooled_shape
    columns = []
    for j in range(int(np.prod(shape))):
        e = torch.zeros(int(np.prod(shape)), dtype=DTYPE)
        e[j] = 1.0
        columns.append(reconstruct(e.view(shape), filters, switches).flatten().numpy())
    return np.stack(columns, axis=1)


def inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


# ------------------------------------------------------------------------------- shrink
def test_shrink_hand_values():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0], dtype=DTYPE)
    assert shrink(x, 1.0).tolist() == [-2.0, 0.0, 0.0, 0.0, 2.0]
    assert shrink(x, 0.0).tolist() == x.tolist()
    # a tensor threshold broadcasts element-wise
    assert shrink(x, torch.tensor([1.0, 0.25, 1.0, 0.5, 4.0], dtype=DTYPE)).tolist() == [-2.0, -0.25, 0.0, 0.0, 0.0]


def test_shrink_is_the_proximal_map_of_the_l1_norm():
    t = 0.7
    grid = np.linspace(-5.0, 5.0, 200_001)  # step 5e-5
    xs = [-3.2, -0.7, -0.3, 0.0, 0.1, 0.69, 0.71, 1.5, 4.0]
    for x in xs:
        brute = grid[np.argmin(0.5 * (grid - x) ** 2 + t * np.abs(grid))]
        assert float(shrink(torch.tensor(x, dtype=DTYPE), t)) == pytest.approx(brute, abs=1e-4), x


# ------------------------------------------------------------------------------- pooling
def test_pool_hand_example_keeps_the_winners_sign():
    z = torch.zeros(1, 4, 2, 2, dtype=DTYPE)
    # group 0 (maps 0, 1): the winner is -5 at map 1, row 0, column 1
    z[0, 0] = torch.tensor([[1.0, -4.0], [2.0, 0.5]])
    z[0, 1] = torch.tensor([[4.5, -5.0], [3.0, -1.0]])
    # group 1 (maps 2, 3): the winner is 3 at map 2, row 1, column 0
    z[0, 2] = torch.tensor([[0.0, 1.0], [3.0, -2.5]])
    z[0, 3] = torch.tensor([[-2.9, 2.0], [0.1, 1.0]])
    p, s = pool(z, (2, 2, 2))
    assert p.shape == (1, 2, 1, 1)
    assert p.flatten().tolist() == [-5.0, 3.0]
    assert s.index.flatten().tolist() == [(1 * 2 + 0) * 2 + 1, (2 * 2 + 1) * 2 + 0]  # 5, 10
    assert s.shape == (4, 2, 2)
    assert s.region == (2, 2, 2)
    assert s.pooled_shape == (1, 2, 1, 1)
    u = unpool(p, s)
    expected = torch.zeros_like(z)
    expected[0, 1, 0, 1], expected[0, 2, 1, 0] = -5.0, 3.0
    assert torch.equal(u, expected)


def test_pool_padding_switches_stay_in_the_real_maps():
    # K = 3 maps in groups of 2, H = 3 and W = 5 in windows of 2: every axis is padded
    region = (2, 2, 2)
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 3, 5, generator=generator, dtype=DTYPE)
    z[0] = 0.0  # all-zero regions: the padding (|z| = -1 inside pool) must still lose
    z[1, 2] = -1e-3 * z[1, 2].abs()  # the last, lone map: tiny negative values only
    z[1, :, 2, :] = 0.0  # the last, lone row: zeros
    p, s = pool(z, region)
    assert p.shape == (2, *pooled_size((3, 3, 5), region)) == (2, 2, 2, 3)
    where = decode(s)
    assert where[..., 0].max() < 3 and where[..., 1].max() < 3 and where[..., 2].max() < 5
    # with every element zero, each region's switch is its first element
    first = np.stack(np.meshgrid(np.arange(2) * 2, np.arange(2) * 2, np.arange(3) * 2, indexing="ij"), axis=-1)
    assert np.array_equal(where[0], first)
    values, winners = np_pool(z.numpy(), region)
    assert np.array_equal(where, winners)
    assert np.array_equal(p.numpy(), values)


def test_pool_ties_go_to_the_first_element():
    z = torch.zeros(1, 2, 2, 2, dtype=DTYPE)
    z[0, 1, 0, 0] = 2.0
    z[0, 0, 1, 0] = -2.0  # same magnitude, an earlier map: wins
    p, s = pool(z, (2, 2, 2))
    assert p.item() == -2.0
    assert s.index.item() == (0 * 2 + 1) * 2 + 0
    z = torch.zeros(1, 1, 2, 2, dtype=DTYPE)
    z[0, 0, 1, 0] = 2.0
    z[0, 0, 0, 1] = 2.0  # same map, an earlier row: wins
    p, s = pool(z, (1, 2, 2))
    assert p.item() == 2.0 and s.index.item() == 1
    z = torch.full((1, 2, 2, 2), -7.0, dtype=DTYPE)  # all equal: the very first
    p, s = pool(z, (2, 2, 2))
    assert p.item() == -7.0 and s.index.item() == 0


def test_pool_matches_explicit_loops_on_random_maps():
    generator = torch.Generator().manual_seed(2)
    for shape, region in [((2, 5, 7, 6), (2, 3, 2)), ((1, 4, 4, 4), (1, 1, 1)), ((3, 3, 5, 5), (3, 5, 5))]:
        z = torch.randn(*shape, generator=generator, dtype=DTYPE)
        z[:, :, ::2] = z[:, :, ::2].round()  # some exact ties
        p, s = pool(z, region)
        values, winners = np_pool(z.numpy(), region)
        assert np.array_equal(p.numpy(), values)
        assert np.array_equal(decode(s), winners)
        # unpool(pool(z)) keeps exactly the winners, zeros elsewhere
        assert np.array_equal(unpool(p, s).numpy(), np_unpool(values, winners, shape[1:]))
        assert torch.equal(gather(z, s), p)


def test_gather_is_the_adjoint_of_unpool():
    generator = torch.Generator().manual_seed(3)
    z0 = torch.randn(2, 5, 7, 6, generator=generator, dtype=DTYPE)
    _, s = pool(z0, (2, 3, 2))
    for _ in range(3):
        p = torch.randn(s.pooled_shape, generator=generator, dtype=DTYPE)
        z = torch.randn(z0.shape, generator=generator, dtype=DTYPE)
        assert inner(unpool(p, s), z) == pytest.approx(inner(p, gather(z, s)), rel=1e-12, abs=1e-12)


def test_pool_rejects_bad_inputs():
    z = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        pool(torch.zeros(2, 4, 4), (1, 2, 2))
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        pool(torch.zeros(1, 1, 2, 4, 4), (1, 2, 2))
    for region in [(0, 2, 2), (1, 0, 2), (1, 2, 0), (2, 2), (-1, 2, 2)]:
        with pytest.raises(ValueError, match="pooling region"):
            pool(z, region)
    _, s = pool(z, (2, 2, 2))
    with pytest.raises(ValueError, match="do not match"):
        unpool(torch.zeros(1, 1, 2, 3), s)
    with pytest.raises(ValueError, match="do not match"):
        gather(torch.zeros(1, 2, 4, 5), s)


# ------------------------------------------------------------------------------- reconstruction
def test_reconstruct_two_layers_matches_explicit_convolutions():
    filters, switches, image, maps = random_model(2, seed=4)
    generator = torch.Generator().manual_seed(5)
    p2 = torch.randn(switches[-1].pooled_shape, generator=generator, dtype=DTYPE)
    # the winners from explicit pooling of the maps the switches came from
    _, winners1 = np_pool(maps[0], switches[0].region)
    _, winners2 = np_pool(maps[1], switches[1].region)
    z2 = np_unpool(p2.numpy(), winners2, switches[1].shape)
    p1 = np_synthesise(z2, filters[1].numpy())
    z1 = np_unpool(p1, winners1, switches[0].shape)
    expected = np_synthesise(z1, filters[0].numpy())
    got = reconstruct(p2, filters, switches)
    assert got.shape == image
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    # one layer: the pooled maps of layer 1 unpooled and convolved
    q = torch.randn(switches[0].pooled_shape, generator=generator, dtype=DTYPE)
    expected1 = np_synthesise(np_unpool(q.numpy(), winners1, switches[0].shape), filters[0].numpy())
    np.testing.assert_allclose(reconstruct(q, filters[:1], switches[:1]).numpy(), expected1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_adjoint_is_the_adjoint_of_reconstruct(layers):
    filters, switches, image, _ = random_model(layers, seed=10 + layers)
    generator = torch.Generator().manual_seed(6)
    for _ in range(3):
        p = torch.randn(switches[-1].pooled_shape, generator=generator, dtype=DTYPE)
        y = torch.randn(image, generator=generator, dtype=DTYPE)
        lhs, rhs = inner(reconstruct(p, filters, switches), y), inner(p, adjoint(y, filters, switches))
        assert lhs == pytest.approx(rhs, rel=1e-11, abs=1e-11)
    # and R^T as a matrix is the transpose of R
    matrix = operator_matrix(filters, switches)
    y = torch.randn(image, generator=generator, dtype=DTYPE)
    np.testing.assert_allclose(
        adjoint(y, filters, switches).flatten().numpy(), matrix.T @ y.flatten().numpy(), rtol=1e-11, atol=1e-11
    )


def test_reconstruct_rejects_mismatched_switches():
    filters, switches, _, _ = random_model(2)
    p = torch.zeros(switches[-1].pooled_shape, dtype=DTYPE)
    with pytest.raises(ValueError):
        reconstruct(p, filters, switches[:1])
    with pytest.raises(ValueError):
        reconstruct(p, [filters[0], filters[1][:, :, :2]], switches)  # an even filter size


@pytest.mark.parametrize("layers", [1, 2])
def test_operator_norm_squared_is_the_largest_eigenvalue(layers):
    filters, switches, _, _ = random_model(layers, seed=20 + layers, n=1)
    matrix = operator_matrix(filters, switches)
    eigenvalues = np.linalg.eigvalsh(matrix.T @ matrix)
    top = eigenvalues[-1]
    assert eigenvalues[-2] < 0.95 * top  # a gap: power iteration converges in the iterations below
    estimate = operator_norm_squared(filters, switches, iterations=500)
    assert estimate == pytest.approx(top, rel=1e-6)
    # one step gives the Rayleigh quotient of the start vector, drawn from a private generator
    v = torch.randn(switches[-1].pooled_shape, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    v = v.flatten().numpy() / np.linalg.norm(v.numpy())
    rayleigh = float(np.sum((matrix @ v) ** 2))
    assert operator_norm_squared(filters, switches, iterations=1, seed=4) == pytest.approx(rayleigh, rel=1e-12)
    # a Rayleigh quotient: from below, at any number of iterations
    for iterations in [1, 3, 10]:
        assert operator_norm_squared(filters, switches, iterations=iterations) <= top * (1 + 1e-12)
    assert lipschitz(filters, switches, lam=2.5, iterations=500) == pytest.approx(2.5 * top, rel=1e-6)


def test_operator_norm_squared_is_deterministic_and_leaves_the_global_rng_alone():
    filters, switches, _, _ = random_model(2, seed=7)
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    a = operator_norm_squared(filters, switches, iterations=7, seed=3)
    b = operator_norm_squared(filters, switches, iterations=7, seed=3)
    assert a == b
    assert torch.equal(torch.random.get_rng_state(), state)
    lipschitz(filters, switches, lam=1.0, iterations=3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)


# ------------------------------------------------------------------------------- inference
def lasso_problem(layers: int, seed: int) -> tuple[list[torch.Tensor], list[Switches], torch.Tensor, float]:
    """A tiny model, images, and a lambda that leaves some but not all of the minimiser at zero."""
    filters, switches, image, _ = random_model(layers, seed=seed)
    y = torch.randn(image, generator=torch.Generator().manual_seed(seed + 100), dtype=DTYPE)
    lam = 3.0 / float(adjoint(y, filters, switches).abs().max())
    return filters, switches, y, lam


@pytest.mark.parametrize("layers", [1, 2])
def test_ista_lowers_the_cost_at_every_step_and_reaches_the_lasso_minimiser(layers):
    filters, switches, y, lam = lasso_problem(layers, seed=30 + layers)
    beta = 0.9 / lipschitz(filters, switches, lam)
    p0 = torch.zeros(switches[-1].pooled_shape, dtype=DTYPE)
    p, history = ista(p0, y, filters, switches, lam, beta, steps=50)
    assert len(history) == 51
    assert torch.equal(p0, torch.zeros_like(p0))  # not modified
    assert history[0] == pytest.approx(0.5 * lam * float(y.pow(2).sum()), rel=1e-12)
    scale = history[0]
    assert all(b - a <= 1e-9 * scale for a, b in itertools.pairwise(history))
    assert history[-1] < history[0]
    assert history[-1] == pytest.approx(float(cost(p, y, filters, switches, lam)), rel=1e-12)

    # a long run reaches the minimiser: lam R^T (R p - y) is -sign(p) on the support, in [-1, 1] off it
    q, long_history = ista(p, y, filters, switches, lam, beta, steps=400)
    assert all(b - a <= 1e-9 * scale for a, b in itertools.pairwise(long_history))
    assert long_history[-1] <= history[-1]
    gradient = lam * adjoint(reconstruct(q, filters, switches) - y, filters, switches)
    support = q != 0
    assert 0 < int(support.sum()) < q.numel()  # both cases are exercised
    np.testing.assert_allclose(gradient[support].numpy(), -torch.sign(q[support]).numpy(), atol=1e-6)
    assert float(gradient[~support].abs().max()) <= 1 + 1e-6
    # and nothing nearby does better
    generator = torch.Generator().manual_seed(8)
    best = float(cost(q, y, filters, switches, lam))
    for _ in range(20):
        nearby = q + 1e-3 * torch.randn(q.shape, generator=generator, dtype=DTYPE)
        assert float(cost(nearby, y, filters, switches, lam)) >= best - 1e-12 * scale


def test_update_switches_with_no_step_keeps_the_maps():
    filters, switches, image, _ = random_model(2, seed=40)
    generator = torch.Generator().manual_seed(9)
    p = torch.randn(switches[-1].pooled_shape, generator=generator, dtype=DTYPE)
    y = torch.randn(image, generator=generator, dtype=DTYPE)
    q, s = update_switches(p, y, filters, switches, lam=1.0, beta=0.0)
    assert torch.equal(q, p)
    assert torch.equal(s.index, switches[-1].index)
    assert (s.shape, s.region) == (switches[-1].shape, switches[-1].region)
    # a zero pooled value keeps its value; its switch goes to its region's first element
    p[0, 0, 0, 0] = 0.0
    q, s = update_switches(p, y, filters, switches, lam=1.0, beta=0.0)
    assert torch.equal(q, p)
    assert s.index[0, 0, 0, 0].item() == 0
    moved = s.index != switches[-1].index
    assert moved.sum().item() == (switches[-1].index[0, 0, 0, 0].item() != 0)


def test_update_switches_moves_a_switch_to_where_the_image_needs_it():
    # one layer, one map, a 1x1 filter of weight 1: R p = unpool(p), so z follows the image
    filters = [torch.ones(1, 1, 1, 1, dtype=DTYPE)]
    _, s = pool(torch.zeros(1, 1, 2, 2, dtype=DTYPE), (1, 2, 2))
    assert s.index.item() == 0
    p = torch.full((1, 1, 1, 1), 0.25, dtype=DTYPE)
    y = torch.zeros(1, 1, 2, 2, dtype=DTYPE)
    y[0, 0, 1, 1] = 10.0
    q, moved = update_switches(p, y, filters, [s], lam=2.0, beta=0.25)
    # z = shrink(z - 0.25 * 2 (z - y), 0.25): 0.125 - 0.25 -> 0 at (0, 0); 5 - 0.25 = 4.75 at (1, 1)
    assert moved.index.item() == 3
    assert q.item() == 4.75


def test_update_switches_matches_an_explicit_step_on_two_layers():
    filters, switches, image, maps = random_model(2, seed=41)
    generator = torch.Generator().manual_seed(10)
    p = torch.randn(switches[-1].pooled_shape, generator=generator, dtype=DTYPE)
    y = torch.randn(image, generator=generator, dtype=DTYPE)
    lam = 1.7
    beta = 0.9 / lipschitz(filters, switches, lam)
    q, s = update_switches(p, y, filters, switches, lam=lam, beta=beta)
    # the step on layer 2's unpooled maps with G = F_1 U_1 F_2 as an explicit matrix
    _, winners1 = np_pool(maps[0], switches[0].region)
    _, winners2 = np_pool(maps[1], switches[1].region)
    z = np_unpool(p.numpy(), winners2, switches[1].shape)

    def g(maps2: np.ndarray) -> np.ndarray:
        below = np_unpool(np_synthesise(maps2, filters[1].numpy()), winners1, switches[0].shape)
        return np_synthesise(below, filters[0].numpy())

    columns = []
    for j in range(z.size):
        e = np.zeros(z.size)
        e[j] = 1.0
        columns.append(g(e.reshape(z.shape)).ravel())
    matrix = np.stack(columns, axis=1)
    step = z.ravel() - beta * lam * matrix.T @ (matrix @ z.ravel() - y.numpy().ravel())
    z_new = (np.sign(step) * np.maximum(np.abs(step) - beta, 0)).reshape(z.shape)
    values, winners = np_pool(z_new, switches[1].region)
    np.testing.assert_allclose(q.numpy(), values, rtol=1e-10, atol=1e-12)
    assert np.array_equal(decode(s), winners)
    assert (s.shape, s.region) == (switches[-1].shape, switches[-1].region)
    assert bool((s.index != switches[-1].index).any())  # some switch moved


# ------------------------------------------------------------------------------- learning
def filter_problem(layers: int, seed: int):
    """Filter banks (the top one, 2 maps of 3x3 filters on 1 channel, is the unknown), switches,
    the top layer's pooled maps and 2 images; with 2 layers the lower bank (2 maps, pooled over
    groups of 2 into 1 channel) is fixed."""
    generator = torch.Generator().manual_seed(seed)
    n, filters, switches, size = 2, [], [], 6
    if layers == 2:
        filters.append(torch.randn(2, 1, 3, 3, generator=generator, dtype=DTYPE))
        switches.append(pool(torch.randn(n, 2, 8, 8, generator=generator, dtype=DTYPE), (2, 2, 2))[1])
        size = 4
    switches.append(pool(torch.randn(n, 2, size, size, generator=generator, dtype=DTYPE), (1, 2, 2))[1])
    filters.append(torch.randn(2, 1, 3, 3, generator=generator, dtype=DTYPE))
    p = torch.randn(switches[-1].pooled_shape, generator=generator, dtype=DTYPE)
    y = torch.randn(reconstruct(p, filters, switches).shape, generator=generator, dtype=DTYPE)
    return filters, switches, p, y


def design_matrix(p, filters, switches) -> np.ndarray:
    """A with column j the reconstruction from ``p`` with the top filter weight j set to 1."""
    top = filters[-1]
    columns = []
    for j in range(top.numel()):
        e = torch.zeros(top.numel(), dtype=DTYPE)
        e[j] = 1.0
        columns.append(reconstruct(p, [*filters[:-1], e.view(top.shape)], switches).flatten().numpy())
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("layers", [1, 2])
def test_cg_filters_solves_the_least_squares_problem(layers):
    filters, switches, p, y = filter_problem(layers, seed=50 + layers)
    a = design_matrix(p, filters, switches)
    assert np.linalg.matrix_rank(a) == a.shape[1]  # a unique minimiser
    solution = np.linalg.lstsq(a, y.flatten().numpy(), rcond=None)[0]
    lower = [f.clone() for f in filters[:-1]]
    start = filters[-1].clone()
    x, history = cg_filters(p, y, filters, switches, iterations=40, tol=1e-14, normalise=False)
    assert x.shape == filters[-1].shape
    np.testing.assert_allclose(x.flatten().numpy(), solution, rtol=0, atol=1e-6 * np.abs(solution).max())
    assert all(torch.equal(f, g) for f, g in zip(filters[:-1], lower)) and torch.equal(filters[-1], start)
    # the normal-equation residual history starts at ||A^T (y - A F_0)|| and falls to ~0
    r0 = a.T @ (y.flatten().numpy() - a @ start.flatten().numpy())
    assert history[0] == pytest.approx(np.linalg.norm(r0), rel=1e-10)
    assert history[-1] <= 1e-8 * history[0]
    # CGLS: the least-squares residual ||y - A F_k|| never rises from one step to the next
    residuals = []
    for k in range(0, 19, 6):
        xk, hk = cg_filters(p, y, filters, switches, iterations=k, tol=0.0, normalise=False)
        assert len(hk) == k + 1
        residuals.append(np.linalg.norm(y.flatten().numpy() - a @ xk.flatten().numpy()))
    assert all(b <= a_ * (1 + 1e-12) for a_, b in itertools.pairwise(residuals))
    assert residuals[-1] < residuals[0]
    # normalise=True: the same solution, each map's filter at unit norm
    xn, _ = cg_filters(p, y, filters, switches, iterations=40, tol=1e-14)
    np.testing.assert_allclose(xn.numpy(), normalise_filters(x).numpy(), atol=1e-6)


def test_cg_filters_batched_sums_over_batches():
    filters, switches, p, y = filter_problem(2, seed=55)
    z = unpool(p, switches[-1])
    one = (z, y, list(switches[:-1]))
    # the same data split image by image: the lower switches split with it
    below = switches[0]
    halves = []
    for i in range(2):
        part = Switches(index=below.index[i : i + 1], shape=below.shape, region=below.region)
        halves.append((z[i : i + 1], y[i : i + 1], [part]))
    whole, history = cg_filters_batched(lambda: [one], filters, iterations=12, tol=0.0, normalise=False)
    split, split_history = cg_filters_batched(lambda: halves, filters, iterations=12, tol=0.0, normalise=False)
    np.testing.assert_allclose(split.numpy(), whole.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(split_history, history, rtol=1e-9)
    reference, _ = cg_filters(p, y, filters, switches, iterations=12, tol=0.0, normalise=False)
    np.testing.assert_allclose(whole.numpy(), reference.numpy(), rtol=1e-12, atol=1e-14)


def test_cg_filters_rejects_mismatched_switches():
    filters, switches, p, y = filter_problem(2, seed=60)
    with pytest.raises(ValueError):
        cg_filters(p, y, filters, switches[1:])


def test_normalise_filters():
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(4, 3, 5, 5, generator=generator, dtype=DTYPE)
    weight[2] = 0.0
    out = normalise_filters(weight)
    norms = out.flatten(1).norm(dim=1)
    np.testing.assert_allclose(norms[[0, 1, 3]].numpy(), 1.0, rtol=1e-12)
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    assert not torch.isnan(out).any()
    # each map's filter keeps its direction (its channels' balance)
    for k in [0, 1, 3]:
        np.testing.assert_allclose(out[k].numpy() * float(weight[k].norm()), weight[k].numpy(), rtol=1e-12)
