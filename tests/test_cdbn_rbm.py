"""The mathematics of the CDBN plugin's convolutional RBM (plugins/cdbn/rbm.py, whitening.py), each
checked against an independent computation: brute-force enumeration of every valid (v, h)
configuration through the energy, hand arithmetic on a 3x3 image, the exact log-likelihood
gradient (and its autograd), the exact expectation of CD-k through the Gibbs chain's transition
matrix, explicit loops for the combined bottom-up / top-down inference, and a synthesized 1/f
image for the whitening. Tiny sizes, float64 throughout."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from vizkit_plugins.cdbn import (
    CdStep,
    Crbm,
    Gradients,
    contrastive_divergence,
    feed_forward_pass,
    mean_field,
    update,
    whiten,
    whitening_filter,
)
from vizkit_plugins.cdbn.whitening import greyscale, prepare

DTYPE = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: a second intra-op thread only adds synchronisation. Restored
    afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- references
def random_rbm(
    filters: int, channels: int, kernel: int, *, gaussian: bool, sigma: float = 1.0, seed: int = 0, scale: float = 1.0
) -> Crbm:
    """A CRBM with N(0, scale^2) filters and N(0, 0.5^2) biases (probabilities well inside (0, 1))."""
    generator = torch.Generator().manual_seed(seed)
    return Crbm(
        weight=scale * torch.randn(filters, channels, kernel, kernel, generator=generator, dtype=DTYPE),
        hidden_bias=0.5 * torch.randn(filters, generator=generator, dtype=DTYPE),
        visible_bias=0.5 * torch.randn(channels, generator=generator, dtype=DTYPE),
        pool=2,
        gaussian=gaussian,
        sigma=sigma,
    )


def valid_maps(rows: int, cols: int, pool: int) -> Tensor:
    """Every binary ``rows x cols`` detection map with at most one unit on in each whole
    ``pool x pool`` cell (units past the last whole cell are free): ``[M, rows, cols]``."""
    maps = []
    for bits in itertools.product((0.0, 1.0), repeat=rows * cols):
        h = torch.tensor(bits, dtype=DTYPE).view(rows, cols)
        cells = [
            h[r * pool : (r + 1) * pool, c * pool : (c + 1) * pool].sum()
            for r in range(rows // pool)
            for c in range(cols // pool)
        ]
        if all(total <= 1 for total in cells):
            maps.append(h)
    return torch.stack(maps)


def hidden_states(filters: int, rows: int, cols: int, pool: int = 2) -> Tensor:
    """Every valid hidden configuration of ``filters`` groups: ``[S, filters, rows, cols]``."""
    one = valid_maps(rows, cols, pool)
    return torch.stack([one[list(combo)] for combo in itertools.product(range(len(one)), repeat=filters)])


def binary_images(channels: int, rows: int, cols: int) -> Tensor:
    """All 2^(channels rows cols) binary images ``[2^n, channels, rows, cols]``."""
    n = channels * rows * cols
    bits = (torch.arange(2**n).unsqueeze(1) >> torch.arange(n)) & 1
    return bits.to(DTYPE).view(-1, channels, rows, cols)


def flat(g: Gradients) -> Tensor:
    """A gradient as one vector: the weight, the hidden biases, the visible biases."""
    return torch.cat([g.weight.flatten(), g.hidden_bias.flatten(), g.visible_bias.flatten()])


def cell_states(h: Tensor, pool: int = 2) -> Tensor:
    """Per cell of sampled detection maps ``[N, K, H, W]``: 0 when all units are off, 1 + the
    position (row-major within the cell) of the unit that is on. ``[N, K, H // pool, W // pool]``."""
    n, k, height, width = h.shape
    rows, cols = height // pool, width // pool
    cells = h[..., : rows * pool, : cols * pool].reshape(n, k, rows, pool, cols, pool).permute(0, 1, 2, 4, 3, 5)
    cells = cells.reshape(n, k, rows, cols, pool * pool)
    assert bool((cells.sum(-1) <= 1).all()), "more than one unit on in a cell"
    positions = (cells * torch.arange(1, pool * pool + 1, dtype=h.dtype)).sum(-1)
    return positions.long()


# ------------------------------------------------------------------------------- 1. P(h | v)
@pytest.mark.parametrize(
    "filters, size, gaussian",
    [(1, 3, True), (2, 3, True), (2, 3, False), (1, 4, True), (2, 4, False)],
    ids=["1x2x2-gauss", "2x2x2-gauss", "2x2x2-binary", "1x3x3-outside-cells", "2x3x3-binary-outside-cells"],
)
def test_pooled_conditionals_equal_enumeration_through_the_energy(filters, size, gaussian):
    """``hidden_probabilities`` (probabilistic max-pooling: a softmax over each cell's n + 1
    states) equals P(h | v) from exp(-E(v, h)) over every valid hidden configuration, for a fixed
    v: detection units, pooling units (P(p = 1) = P(some unit of the cell on)), and, with a 4x4
    visible (3x3 hidden), the units past the last whole cell (independent, sigmoid of I)."""
    rbm = random_rbm(filters, 1, 2, gaussian=gaussian, sigma=0.7, seed=size * 10 + filters)
    generator = torch.Generator().manual_seed(1)
    if gaussian:
        v = torch.randn(1, 1, size, size, generator=generator, dtype=DTYPE)
    else:
        v = (torch.rand(1, 1, size, size, generator=generator, dtype=DTYPE) < 0.5).to(DTYPE)
    states = hidden_states(filters, size - 1, size - 1)  # [S, K, h, w]
    energies = rbm.energy(v.expand(len(states), -1, -1, -1), states)
    posterior = torch.softmax(-energies, dim=0)  # P(h = state | v)
    expected_detection = torch.einsum("s,skij->kij", posterior, states)
    cell_on = states[..., :2, :2].sum(dim=(-2, -1)).clamp(max=1)  # [S, K]: the one whole cell
    expected_pooled = torch.einsum("s,sk->k", posterior, cell_on)

    detection, pooled = rbm.hidden_probabilities(v)
    assert detection.shape == (1, filters, size - 1, size - 1) and pooled.shape == (1, filters, 1, 1)
    assert torch.allclose(detection[0], expected_detection, rtol=1e-10, atol=1e-13)
    assert torch.allclose(pooled[0, :, 0, 0], expected_pooled, rtol=1e-10, atol=1e-13)
    if size == 4:  # the units outside the cell: sigmoid(I), independent of the cell
        inputs = rbm.hidden_input(v)
        assert torch.allclose(detection[0, :, 2, :], torch.sigmoid(inputs[0, :, 2, :]), rtol=1e-12)
        assert torch.allclose(detection[0, :, :2, 2], torch.sigmoid(inputs[0, :, :2, 2]), rtol=1e-12)


def test_energy_of_a_configuration_by_hand():
    """E(v, h) = (sum v^2 / 2 - sum h (W * v + b) - c sum v) / sigma^2 on a 2x2 example;
    binary visible units: no quadratic term, sigma ignored."""
    v = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]], dtype=DTYPE)
    weight = torch.tensor([[[[0.2]]]], dtype=DTYPE)  # 1x1 filter: I = 0.2 v + b
    h = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], dtype=DTYPE)
    rbm = Crbm(weight, torch.tensor([0.3], dtype=DTYPE), torch.tensor([-0.1], dtype=DTYPE), sigma=0.5)
    quadratic = (1.0 + 4.0 + 0.25 + 9.0) / 2
    hidden = 1.0 * (0.2 * 1.0 + 0.3)
    visible = -0.1 * (1.0 - 2.0 + 0.5 + 3.0)
    assert float(rbm.energy(v, h)) == pytest.approx((quadratic - hidden - visible) / 0.25, rel=1e-12)
    rbm.gaussian = False
    assert float(rbm.energy(v, h)) == pytest.approx(-hidden - visible, rel=1e-12)


@pytest.mark.parametrize("gaussian", [True, False])
def test_statistics_are_minus_the_energys_gradient(gaussian):
    """``Crbm.statistics(v, h)`` = -dE/dtheta summed over the batch, by autograd of the energy
    (2 input channels, 3x3 filters; Gaussian units with sigma 0.6 scale every part by 1 / sigma^2)."""
    rbm = random_rbm(2, 2, 3, gaussian=gaussian, sigma=0.6, seed=4)
    generator = torch.Generator().manual_seed(6)
    v = torch.randn(3, 2, 6, 7, generator=generator, dtype=DTYPE)
    h, _ = rbm.hidden_probabilities(v)
    params = [t.clone().requires_grad_(True) for t in (rbm.weight, rbm.hidden_bias, rbm.visible_bias)]
    live = Crbm(*params, pool=rbm.pool, gaussian=gaussian, sigma=rbm.sigma)
    grads = torch.autograd.grad(-live.energy(v, h).sum(), params)
    assert torch.allclose(flat(rbm.statistics(v, h)), torch.cat([g.flatten() for g in grads]), rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------- 2. by hand
V = [[0.5, -1.0, 0.2], [0.3, 0.8, -0.4], [-0.6, 0.1, 0.9]]
W1 = [[0.4, -0.2], [0.1, 0.3]]
W2 = [[-0.3, 0.2], [0.5, -0.1]]
B1, B2, C, SIGMA = -0.1, 0.2, 0.05, 0.5


def hand_rbm(gaussian: bool = True) -> Crbm:
    return Crbm(
        weight=torch.tensor([[W1], [W2]], dtype=DTYPE),
        hidden_bias=torch.tensor([B1, B2], dtype=DTYPE),
        visible_bias=torch.tensor([C], dtype=DTYPE),
        pool=2,
        gaussian=gaussian,
        sigma=SIGMA,
    )


def hand_inputs() -> list[list[list[float]]]:
    """I^k_ij = (sum_ab W^k_ab v_(i+a)(j+b) + b_k) / sigma^2, written out."""
    s = 1 / SIGMA**2  # 4
    (v00, v01, v02), (v10, v11, v12), (v20, v21, v22) = V
    inputs = []
    for ((w00, w01), (w10, w11)), b in ((W1, B1), (W2, B2)):
        inputs.append(
            [
                [
                    (w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11 + b) * s,
                    (w00 * v01 + w01 * v02 + w10 * v11 + w11 * v12 + b) * s,
                ],
                [
                    (w00 * v10 + w01 * v11 + w10 * v20 + w11 * v21 + b) * s,
                    (w00 * v11 + w01 * v12 + w10 * v21 + w11 * v22 + b) * s,
                ],
            ]
        )
    return inputs


def test_hidden_conditionals_of_a_3x3_image_by_hand():
    """Filter 1's inputs are (0.57, -0.58; -0.17, 0.58) x 4 = (2.28, -2.32; -0.68, 2.32); each
    unit's P(h = 1 | v) = exp(I_j) / (1 + sum_cell exp(I_l)) and P(p = 1 | v) = sum exp(I) / (1 + sum exp(I))."""
    rbm = hand_rbm()
    v = torch.tensor([[V]], dtype=DTYPE)
    inputs = hand_inputs()
    assert inputs[0][0][0] == pytest.approx(2.28) and inputs[0][1][1] == pytest.approx(2.32)
    assert torch.allclose(rbm.hidden_input(v)[0], torch.tensor(inputs, dtype=DTYPE), rtol=1e-12)
    detection, pooled = rbm.hidden_probabilities(v)
    for k in range(2):
        e = [math.exp(inputs[k][i][j]) for i in range(2) for j in range(2)]
        z = 1 + sum(e)
        expected = [[e[0] / z, e[1] / z], [e[2] / z, e[3] / z]]
        assert torch.allclose(detection[0, k], torch.tensor(expected, dtype=DTYPE), rtol=1e-12)
        assert float(pooled[0, k, 0, 0]) == pytest.approx(sum(e) / z, rel=1e-12)
        assert float(1 - pooled[0, k, 0, 0]) == pytest.approx(1 / z, rel=1e-10)


def chosen_hidden() -> Tensor:
    """Filter 1's unit (0, 1) and filter 2's unit (1, 0) on."""
    h = torch.zeros(1, 2, 2, 2, dtype=DTYPE)
    h[0, 0, 0, 1] = 1.0
    h[0, 1, 1, 0] = 1.0
    return h


def hand_visible_input() -> list[list[float]]:
    """sum_k W^k (*) h^k + c for :func:`chosen_hidden`: W1 placed at (0, 1), W2 at (1, 0)."""
    return [
        [C, W1[0][0] + C, W1[0][1] + C],
        [W2[0][0] + C, W1[1][0] + W2[0][1] + C, W1[1][1] + C],
        [W2[1][0] + C, W2[1][1] + C, C],
    ]


def test_visible_conditionals_by_hand():
    """Gaussian units: E[v | h] = the full convolution + c; binary ones: its sigmoid."""
    expected = torch.tensor([hand_visible_input()], dtype=DTYPE)
    assert torch.allclose(hand_rbm(gaussian=True).visible_mean(chosen_hidden())[0], expected, rtol=1e-12)
    assert torch.allclose(
        hand_rbm(gaussian=False).visible_mean(chosen_hidden())[0], torch.sigmoid(expected), rtol=1e-12
    )


DRAWS = 20000


def within(frequency: Tensor, probability: Tensor, draws: int = DRAWS, sds: float = 5.0) -> bool:
    """Each frequency within ``sds`` binomial standard errors of its probability."""
    se = (probability * (1 - probability) / draws).sqrt()
    return bool(((frequency - probability).abs() <= sds * se + 1e-12).all())


def test_sampled_hidden_units_follow_their_conditionals():
    """20000 draws of ``sample_hidden``: each cell is in exactly one of its n + 1 states (never two
    units on), with the hand-computed frequencies; the pooling unit is on iff a unit of its cell is."""
    rbm = hand_rbm()
    v = torch.tensor([[V]], dtype=DTYPE).expand(DRAWS, -1, -1, -1)
    h, p = rbm.sample_hidden(v, torch.Generator().manual_seed(0))
    assert torch.equal(p, h.sum(dim=(-2, -1), keepdim=True))
    states = cell_states(h)[:, :, 0, 0]  # [draws, 2]
    inputs = hand_inputs()
    for k in range(2):
        e = [1.0] + [math.exp(inputs[k][i][j]) for i in range(2) for j in range(2)]  # off, then row-major
        probability = torch.tensor(e, dtype=DTYPE) / sum(e)
        frequency = torch.bincount(states[:, k], minlength=5).to(DTYPE) / DRAWS
        assert within(frequency, probability), (k, frequency, probability)


def test_sampled_units_outside_every_cell_are_bernoulli():
    """With a 4x3 visible (3x2 hidden), the last row of detection units belongs to no cell: each
    is on with probability sigmoid(I), whatever the cell above does."""
    rbm = random_rbm(2, 1, 2, gaussian=True, sigma=0.8, seed=3)
    v = torch.randn(1, 1, 4, 3, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    h, _ = rbm.sample_hidden(v.expand(DRAWS, -1, -1, -1), torch.Generator().manual_seed(5))
    probability = torch.sigmoid(rbm.hidden_input(v)[0, :, 2, :])
    assert within(h[:, :, 2, :].mean(0), probability)
    detection, _ = rbm.hidden_probabilities(v)
    assert within(h.mean(0), detection[0])  # the cell's units too


def test_sampled_visible_units_follow_their_conditionals():
    """Gaussian: mean the full convolution + c, standard deviation sigma (each within 5 standard
    errors over 20000 draws); binary: frequencies sigmoid(full convolution + c)."""
    h = chosen_hidden().expand(DRAWS, -1, -1, -1)
    mean = torch.tensor([hand_visible_input()], dtype=DTYPE)
    v = hand_rbm(gaussian=True).sample_visible(h, torch.Generator().manual_seed(1))
    assert bool(((v.mean(0) - mean).abs() <= 5 * SIGMA / math.sqrt(DRAWS)).all())
    assert bool(((v.std(0) - SIGMA).abs() <= 5 * SIGMA / math.sqrt(2 * DRAWS)).all())
    binary = hand_rbm(gaussian=False).sample_visible(h, torch.Generator().manual_seed(2))
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert within(binary.mean(0), torch.sigmoid(mean))


# ------------------------------------------------------------------------------- 3. CD vs exact
class Exact:
    """A binary-visible CRBM small enough to enumerate: 3x3 binary images (512 states), 2 filters
    of 2x2 with one 2x2 cell each (5 x 5 = 25 hidden states), and a dataset of four images.

    ``energies[v, h]``; the joint's conditionals ``P(h | v)``, ``P(v | h)`` by normalising
    exp(-E) over a row or a column; ``stats[v]`` = ``Crbm.statistics(v, E[h | v])``, which is
    E_(h | v)[-dE/dtheta(v, h)] since -dE/dtheta is linear in h; the Gibbs chain's transition
    ``M[v, v'] = sum_h P(h | v) P(v' | h)``."""

    def __init__(self) -> None:
        self.rbm = random_rbm(2, 1, 2, gaussian=False, seed=12, scale=3.0)
        self.visible = binary_images(1, 3, 3)  # [512, 1, 3, 3]
        self.hidden = hidden_states(2, 2, 2)  # [25, 2, 2, 2]
        nv, nh = len(self.visible), len(self.hidden)
        self.energies = self.joint_energies(self.rbm)
        self.p_h_given_v = torch.softmax(-self.energies, dim=1)  # [512, 25]
        self.p_v_given_h = torch.softmax(-self.energies.T, dim=1)  # [25, 512]
        self.p_v = torch.softmax(torch.logsumexp(-self.energies, dim=1), dim=0)  # [512]
        expected_h = (self.p_h_given_v @ self.hidden.flatten(1)).view(nv, *self.hidden.shape[1:])
        self.expected_h = expected_h
        self.stats = torch.stack(
            [flat(self.rbm.statistics(self.visible[i : i + 1], expected_h[i : i + 1])) for i in range(nv)]
        )  # [512, parameters]
        self.transition = self.p_h_given_v @ self.p_v_given_h  # [512, 512]
        self.data = torch.tensor([0b000000111, 0b111000000, 0b010010010, 0b100010001])  # image indices
        self.data_term = self.stats[self.data].mean(0)
        self.exact = self.data_term - self.p_v @ self.stats
        assert nh == 25

    def joint_energies(self, rbm: Crbm) -> Tensor:
        nv, nh = len(self.visible), len(self.hidden)
        v = self.visible.repeat_interleave(nh, dim=0)
        h = self.hidden.repeat(nv, 1, 1, 1)
        return rbm.energy(v, h).view(nv, nh)

    def cd_k(self, k: int) -> Tensor:
        """The exact expectation of CD-k with sampled visible units: the negative statistics at
        v_k ~ M^k(v_0, .)."""
        chain = torch.linalg.matrix_power(self.transition, k)[self.data]  # [4, 512]
        return self.data_term - (chain @ self.stats).mean(0)

    def cd_k_standard_error(self, k: int, replicas: int) -> Tensor:
        """The standard error of the mean CD-k estimate over ``replicas`` chains per data image."""
        chain = torch.linalg.matrix_power(self.transition, k)[self.data]
        variance = chain @ self.stats.pow(2) - (chain @ self.stats).pow(2)  # [4, parameters]
        return (variance.sum(0) / (len(self.data) ** 2 * replicas)).sqrt()


@pytest.fixture(scope="module")
def exact() -> Exact:
    return Exact()


def cosine(a: Tensor, b: Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_exact_gradient_is_autograd_of_the_log_likelihood(exact):
    """E_data[-dE/dtheta] - E_model[-dE/dtheta] (by enumeration, via ``Crbm.statistics``) is the
    gradient of the mean log-likelihood (1/N) sum_n log sum_h exp(-E(v_n, h)) - log Z, with
    log Z = log sum_(v, h) exp(-E(v, h)) over all 512 x 25 configurations, by autograd."""
    rbm = exact.rbm
    params = [t.clone().requires_grad_(True) for t in (rbm.weight, rbm.hidden_bias, rbm.visible_bias)]
    live = Crbm(*params, pool=rbm.pool, gaussian=False)
    energies = exact.joint_energies(live)
    log_likelihood = torch.logsumexp(-energies[exact.data], dim=1).mean() - torch.logsumexp(-energies.flatten(), dim=0)
    grads = torch.autograd.grad(log_likelihood, params)
    assert torch.allclose(torch.cat([g.flatten() for g in grads]), exact.exact, rtol=1e-10, atol=1e-13)
    assert float(exact.p_v.sum()) == pytest.approx(1.0, abs=1e-12)


def test_positive_phase_of_cd_is_the_exact_data_term(exact):
    """CD's positive statistics use P(h | v0) (not samples): they equal the exact data term.
    With mean visible units the reconstruction is the chain's last v, so the negative phase is
    statistics(v, P(h | v)) of it and the positive one is N x gradient + negative."""
    batch = exact.visible[exact.data]
    step = contrastive_divergence(exact.rbm, batch, torch.Generator().manual_seed(0), steps=1, sample_visible=False)
    assert torch.allclose(step.positive_hidden, exact.expected_h[exact.data], rtol=1e-12, atol=1e-15)
    hidden, _ = exact.rbm.hidden_probabilities(step.reconstruction)
    negative = flat(exact.rbm.statistics(step.reconstruction, hidden))
    positive = flat(step.gradients) * len(batch) + negative
    assert torch.allclose(positive / len(batch), exact.data_term, rtol=1e-12, atol=1e-14)
    assert not torch.equal(step.reconstruction, batch)  # a real chain step: means in (0, 1)


@pytest.mark.parametrize("steps", [1, 3])
def test_cd_k_is_unbiased_for_its_exact_expectation(exact, steps):
    """The mean of ``contrastive_divergence(steps=k, sample_visible=True)`` over 5000 chains per
    data image (one batch, each image's own draws) equals the exact expectation of CD-k computed
    through the chain (h0 ~ P(h | v0), v1 ~ P(v | h0), ..., statistics with P(h | v_k)) within
    5 standard errors, themselves computed exactly from the chain's distribution of v_k."""
    replicas = 5000
    batch = exact.visible[exact.data].repeat(replicas, 1, 1, 1)
    step = contrastive_divergence(
        exact.rbm, batch, torch.Generator().manual_seed(steps), steps=steps, sample_visible=True
    )
    expected = exact.cd_k(steps)
    se = exact.cd_k_standard_error(steps, replicas)
    assert bool(((flat(step.gradients) - expected).abs() <= 5 * se + 1e-12).all()), (flat(step.gradients), expected, se)
    assert bool((se < 0.02).all())
    if steps == 1:  # the test has teeth: CD-1's bias (see below) is many standard errors wide here
        assert float(((flat(step.gradients) - exact.exact).abs() / se).max()) > 10


def test_cd_k_approaches_the_exact_gradient_and_cd1_points_uphill(exact):
    """Why CD-1 is not the log-likelihood gradient: its negative statistics are taken at one
    Gibbs step from the data, v1 ~ M(v0, .), instead of at the model's equilibrium P(v). The two
    agree only where the data are already the chain's stationary distribution (the model fits
    the data); otherwise CD-1 follows KL(p_0 || p_inf) - KL(p_1 || p_inf) minus a term it drops
    (Hinton 2002), a biased but usually uphill direction. As k grows, M^k(v0, .) -> P(v) (every
    transition probability is positive: the chain is ergodic), so CD-k -> the exact gradient."""
    cd1 = exact.cd_k(1)
    assert float((cd1 - exact.exact).norm()) > 1e-3 * float(exact.exact.norm())  # biased
    assert cosine(cd1, exact.exact) > 0  # but uphill
    errors = [float((exact.cd_k(k) - exact.exact).norm()) for k in (1, 4, 16, 64, 1024)]
    assert errors[-1] < 1e-8 * float(exact.exact.norm()) and errors[-1] < errors[0]
    assert errors[3] < errors[0]
    stationary = torch.linalg.matrix_power(exact.transition, 1024)
    assert torch.allclose(stationary, exact.p_v.expand_as(stationary), atol=1e-10)  # rows -> P(v)
    assert torch.allclose(exact.p_v @ exact.transition, exact.p_v, atol=1e-14)  # P(v) is stationary


# ------------------------------------------------------------------------------- 4. update
@pytest.mark.parametrize("gaussian", [True, False])
def test_update_is_lees_step_with_decay_sparsity_and_momentum(gaussian):
    """velocity <- momentum velocity + lr (direction); theta <- theta + velocity, with
    direction_W = sigma^2 grad_W / (H' W') - decay W, direction_b = sigma^2 grad_b / (H' W') +
    sparsity_weight (target - mean P(h)) per group, direction_c = sigma^2 grad_c / (H W)
    (sigma^2 = 1 for binary visible units)."""
    generator = torch.Generator().manual_seed(9)
    rbm = random_rbm(3, 2, 3, gaussian=gaussian, sigma=0.4, seed=2)
    before = rbm.clone()
    sigma2 = 0.16 if gaussian else 1.0
    n, hp, wp, h, w = 2, 4, 6, 6, 8
    step = CdStep(
        gradients=Gradients(*(torch.randn(t.shape, generator=generator, dtype=DTYPE) for t in (rbm.weight, rbm.hidden_bias, rbm.visible_bias))),
        positive_hidden=torch.rand(n, 3, hp, wp, generator=generator, dtype=DTYPE),
        positive_pooled=torch.rand(n, 3, hp // 2, wp // 2, generator=generator, dtype=DTYPE),
        reconstruction=torch.randn(n, 2, h, w, generator=generator, dtype=DTYPE),
    )  # fmt: skip
    velocity = Gradients(*(torch.randn(t.shape, generator=generator, dtype=DTYPE) for t in (rbm.weight, rbm.hidden_bias, rbm.visible_bias)))  # fmt: skip
    old_velocity = Gradients(velocity.weight.clone(), velocity.hidden_bias.clone(), velocity.visible_bias.clone())
    lr, momentum, decay, target, sparsity_weight = 0.05, 0.9, 0.01, 0.02, 5.0
    update(rbm, velocity, step, lr, momentum, decay, target, sparsity_weight)

    mean_hidden = torch.tensor([float(step.positive_hidden[:, k].sum()) / (n * hp * wp) for k in range(3)], dtype=DTYPE)
    direction_w = step.gradients.weight * sigma2 / (hp * wp) - decay * before.weight
    direction_b = step.gradients.hidden_bias * sigma2 / (hp * wp) + sparsity_weight * (target - mean_hidden)
    direction_c = step.gradients.visible_bias * sigma2 / (h * w)
    for name, direction in (("weight", direction_w), ("hidden_bias", direction_b), ("visible_bias", direction_c)):
        new_velocity = momentum * getattr(old_velocity, name) + lr * direction
        assert torch.allclose(getattr(velocity, name), new_velocity, rtol=1e-12, atol=1e-15), name
        assert torch.allclose(getattr(rbm, name), getattr(before, name) + new_velocity, rtol=1e-12, atol=1e-15), name


# ------------------------------------------------------------------------------- 5. mean field
def two_layers(seed: int = 0) -> list[Crbm]:
    """Layer 1: Gaussian visible (sigma 0.6), 1 -> 3 groups of 3x3; layer 2: binary visible
    (layer 1's pooling units), 3 -> 2 groups of 2x2."""
    return [
        random_rbm(3, 1, 3, gaussian=True, sigma=0.6, seed=seed),
        random_rbm(2, 3, 2, gaussian=False, seed=seed + 1, scale=1.5),
    ]


def loop_layer(inputs: Tensor, top_down: Tensor | None, pool: int = 2) -> tuple[Tensor, Tensor]:
    """P(h_j = 1) = exp(I_j + T_a) / (1 + sum_(l in cell a) exp(I_l + T_a)) and P(p_a = 1), cell
    by cell with explicit loops; units past the last whole cell: sigmoid(I_j)."""
    detection = torch.sigmoid(inputs).clone()
    n, k, height, width = inputs.shape
    pooled = torch.zeros(n, k, height // pool, width // pool, dtype=inputs.dtype)
    for i, g, a, b in itertools.product(range(n), range(k), range(height // pool), range(width // pool)):
        t = 0.0 if top_down is None else float(top_down[i, g, a, b])
        cell = [(a * pool + y, b * pool + x) for y in range(pool) for x in range(pool)]
        e = [math.exp(float(inputs[i, g, y, x]) + t) for y, x in cell]
        z = 1 + sum(e)
        for (y, x), value in zip(cell, e):
            detection[i, g, y, x] = value / z
        pooled[i, g, a, b] = sum(e) / z
    return detection, pooled


def loop_sweep(layers: list[Crbm], v: Tensor, state: list[tuple[Tensor, Tensor]] | None) -> list[tuple[Tensor, Tensor]]:
    """One bottom-up sweep: layer l's inputs I from the (updated) pooling units below, its top-down
    T = sum_m W^(l+1)_m (*) E[h^(l+1)_m] from ``state`` (None: no top-down, feed-forward). T is the
    paper's I(p_a) (Sec. 3.6), the weights alone: its two-layer energy has no bias on the pooling
    units, so layer l + 1's visible bias is left out (as ``mean_field`` documents)."""
    new: list[tuple[Tensor, Tensor]] = []
    below = v
    for index, rbm in enumerate(layers):
        inputs = (F.conv2d(below, rbm.weight) + rbm.hidden_bias.view(1, -1, 1, 1)) * rbm.scale
        top_down = None
        if state is not None and index + 1 < len(layers):
            above = layers[index + 1]
            top_down = F.conv_transpose2d(state[index + 1][0], above.weight)
        new.append(loop_layer(inputs, top_down, rbm.pool))
        below = new[-1][1]
    return new


def test_mean_field_is_the_combined_conditional_by_loops():
    """Each iteration of ``mean_field`` equals a sweep of the combined conditional computed here
    by loops (layer 1's 7x7 detection maps leave a row and a column outside every cell: they get
    no top-down signal), starting from the feed-forward pass; and it differs from feed-forward."""
    layers = two_layers()
    v = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    state = loop_sweep(layers, v, None)
    for (d, p), (d_ref, p_ref) in zip(feed_forward_pass(layers, v), state):
        assert torch.allclose(d, d_ref, rtol=1e-12) and torch.allclose(p, p_ref, rtol=1e-12)
    for iterations in (1, 2, 3):
        state = loop_sweep(layers, v, state)
        got = mean_field(layers, v, iterations=iterations)
        for (d, p), (d_ref, p_ref) in zip(got, state):
            assert d.shape == d_ref.shape and p.shape == p_ref.shape
            assert torch.allclose(d, d_ref, rtol=1e-10, atol=1e-14)
            assert torch.allclose(p, p_ref, rtol=1e-10, atol=1e-14)
    combined, forward = mean_field(layers, v, iterations=3), feed_forward_pass(layers, v)
    assert float((combined[0][0] - forward[0][0]).abs().max()) > 1e-3  # the top-down signal matters


@pytest.mark.parametrize("visible_bias", [0.0, 0.7])
def test_mean_field_without_a_top_down_signal_is_feed_forward(visible_bias):
    """Zero layer-2 filters (and a zero or, since T leaves it out, any layer-2 visible bias):
    T = 0, and the combined inference is the feed-forward pass."""
    layers = two_layers(seed=5)
    layers[1].weight.zero_()
    layers[1].visible_bias.fill_(visible_bias)
    v = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    for (d, p), (d_ref, p_ref) in zip(mean_field(layers, v, iterations=4), feed_forward_pass(layers, v)):
        assert torch.allclose(d, d_ref, rtol=1e-13, atol=1e-15) and torch.allclose(p, p_ref, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------------- 6. whitening
def radial_amplitude(image: Tensor, bands: Tensor) -> Tensor:
    """Mean |FFT| of a square ``[H, W]`` image over rings of radial frequency (cycles per pixel)."""
    spectrum = torch.fft.fft2(image).abs()
    f = torch.fft.fftfreq(image.shape[0], dtype=DTYPE)
    radius = (f.view(-1, 1) ** 2 + f.view(1, -1) ** 2).sqrt()
    return torch.stack(
        [spectrum[(radius >= lo) & (radius < hi)].mean() for lo, hi in itertools.pairwise(bands.tolist())]
    )


def one_over_f_image(size: int = 128, seed: int = 0) -> Tensor:
    """Gaussian noise whose amplitude spectrum falls as 1/f (random phases), like natural images."""
    noise = torch.fft.fft2(torch.randn(size, size, generator=torch.Generator().manual_seed(seed), dtype=DTYPE))
    f = torch.fft.fftfreq(size, dtype=DTYPE)
    radius = (f.view(-1, 1) ** 2 + f.view(1, -1) ** 2).sqrt()
    radius[0, 0] = 1.0
    return torch.fft.ifft2(noise / radius).real


def test_whitening_filter_is_zero_at_dc_and_rolls_off():
    """R(f) = f exp(-(f / f0)^4), f0 = 0.4 Nyquist = 0.2 cycles per pixel: 0 at f = 0 (the whitened
    image has zero mean), about f at low frequencies, peaked below f0."""
    r = whitening_filter(32, 32)
    assert r.shape == (32, 17) and float(r[0, 0]) == 0.0
    f = torch.fft.rfftfreq(32, dtype=DTYPE)
    assert torch.allclose(r[0], f * torch.exp(-((f / 0.2) ** 4)), rtol=1e-12)
    assert float(r[0, 1]) == pytest.approx(1 / 32, rel=1e-3)  # exp(-(f / f0)^4) = 0.9994 there
    assert float(r[0].argmax()) / 32 < 0.2


def test_whitened_images_have_zero_mean_and_the_chosen_standard_deviation():
    images = torch.rand(3, 1, 40, 48, generator=torch.Generator().manual_seed(0), dtype=DTYPE) + 5.0
    white = whiten(images, scale=0.3)
    assert white.shape == images.shape and white.dtype == images.dtype
    assert torch.allclose(white.mean(dim=(1, 2, 3)), torch.zeros(3, dtype=DTYPE), atol=1e-12)
    assert torch.allclose(white.pow(2).mean(dim=(1, 2, 3)).sqrt(), torch.full((3,), 0.3, dtype=DTYPE), rtol=1e-10)
    assert torch.allclose(whiten(images * 7 + 2, scale=0.3), white, atol=1e-10)  # brightness and contrast gone
    assert torch.equal(whiten(torch.full((1, 1, 8, 8), 0.5, dtype=DTYPE)), torch.zeros(1, 1, 8, 8, dtype=DTYPE))


def test_whitening_flattens_a_one_over_f_spectrum():
    """A 1/f image's radial amplitude falls 8x from 0.015 to 0.12 cycles per pixel (log-log slope
    -1); whitened, it is flat within the filter's roll-off (slope about 0)."""
    image = one_over_f_image()
    white = whiten(image.view(1, 1, 128, 128))[0, 0]
    bands = torch.linspace(0.015, 0.12, 8, dtype=DTYPE)
    centres = (bands[1:] + bands[:-1]) / 2
    before, after = radial_amplitude(image, bands), radial_amplitude(white, bands)

    def slope(amplitude: Tensor) -> float:
        x, y = centres.log(), amplitude.log()
        return float(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).pow(2).sum())

    assert slope(before) < -0.85 and abs(slope(after)) < 0.2, (slope(before), slope(after))
    assert float(before.max() / before.min()) > 4 and float(after.max() / after.min()) < 1.5


def test_prepare_is_luma_then_whitening():
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    grey = greyscale(rgb)
    assert torch.allclose(grey[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2], rtol=1e-12)
    assert torch.allclose(prepare(rgb, 0.5), whiten(grey, 0.5), rtol=1e-12)
    with pytest.raises(ValueError, match="expected images"):
        greyscale(torch.rand(2, 2, 4, 4))
