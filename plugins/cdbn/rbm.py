"""One convolutional RBM with probabilistic max-pooling (Lee, Grosse, Ranganath & Ng, ICML 2009,
Sections 3.2-3.3): its energy, its conditionals, Gibbs sampling and contrastive divergence.

K groups of binary detection units ``h^k`` (the "hidden" maps, ``[N, K, H - k + 1, W - k + 1]``)
see the visible maps ``v`` ``[N, C, H, W]`` through filters ``W^k`` ``[C, k, k]``; in each
``pool x pool`` cell of a group at most one detection unit is on, and the cell's pooling unit is
on if one of them is. With I = (W * v + b) / sigma^2 (``*`` a valid cross-correlation):

* ``P(h_j = 1 | v) = exp(I_j) / (1 + sum_cell exp(I_l))``, ``P(p = 0 | v) = 1 / (1 + sum ...)``
  (the cell's 2^n configurations collapse into n + 1 states: :mod:`vizkit.engine`'s
  ``prob_max_pool_probabilities``);
* real-valued visible units (whitened images, layer 1): ``v | h ~ N(sum_k W^k (*) h^k + c,
  sigma^2)`` (``(*)`` the full convolution: ``conv_transpose2d``);
  binary visible units (the pooling units of the layer below): ``P(v = 1 | h) = sigmoid(sum_k
  W^k (*) h^k + c)``.

The energy (Gaussian visible units; sigma = 1 and no quadratic term for binary ones):
``E(v, h) = (sum v^2 / 2 - sum_k sum_ij h^k_ij ((W^k * v)_ij + b_k) - c sum v) / sigma^2``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_weight

from vizkit.engine import prob_max_pool_probabilities


@dataclass
class Crbm:
    """A convolutional RBM's parameters: ``weight`` ``[K, C, k, k]``, ``hidden_bias`` ``[K]``,
    ``visible_bias`` ``[C]``; ``pool`` the cell side; ``gaussian`` real-valued visible units of
    standard deviation ``sigma`` (else binary)."""

    weight: Tensor
    hidden_bias: Tensor
    visible_bias: Tensor
    pool: int = 2
    gaussian: bool = True
    sigma: float = 1.0

    @property
    def scale(self) -> float:
        """1 / sigma^2 for Gaussian visible units, 1 for binary ones."""
        return 1.0 / (self.sigma**2) if self.gaussian else 1.0

    def hidden_input(self, v: Tensor) -> Tensor:
        """``I = (W * v + b) / sigma^2``, the detection units' input ``[N, K, H', W']``."""
        return (F.conv2d(v, self.weight) + self.hidden_bias.view(1, -1, 1, 1)) * self.scale

    def hidden_probabilities(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``P(h = 1 | v)`` ``[N, K, H', W']`` and ``P(p = 1 | v)`` ``[N, K, H' // pool, W' // pool]``."""
        return prob_max_pool_probabilities(self.hidden_input(v), self.pool)

    def visible_input(self, h: Tensor) -> Tensor:
        """``sum_k W^k (*) h^k + c`` ``[N, C, H, W]``: the visible units' mean (Gaussian) or logit."""
        return F.conv_transpose2d(h, self.weight) + self.visible_bias.view(1, -1, 1, 1)

    def visible_mean(self, h: Tensor) -> Tensor:
        """``E[v | h]``: the Gaussian mean, or the binary units' probability."""
        a = self.visible_input(h)
        return a if self.gaussian else torch.sigmoid(a)

    def sample_hidden(self, v: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A draw of ``h`` and ``p`` given ``v``: one of each cell's n + 1 states (unit j on, or
        all off) by its probability; units outside every cell are Bernoulli(sigmoid(I))."""
        return sample_pooled(self.hidden_input(v), self.pool, generator)

    def sample_visible(self, h: Tensor, generator: torch.Generator) -> Tensor:
        """A draw of ``v`` given ``h``."""
        mean = self.visible_mean(h)
        if self.gaussian:
            return mean + self.sigma * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return (torch.rand(mean.shape, generator=generator, dtype=mean.dtype) < mean).to(mean.dtype)

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """``E(v, h)`` per image ``[N]`` (valid configurations only: at most one unit on per cell)."""
        linear = F.conv2d(v, self.weight) + self.hidden_bias.view(1, -1, 1, 1)
        e = -(h * linear).sum(dim=(1, 2, 3)) - (v * self.visible_bias.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
        if self.gaussian:
            e = e + 0.5 * v.pow(2).sum(dim=(1, 2, 3))
        return e * self.scale

    def statistics(self, v: Tensor, h: Tensor) -> Gradients:
        """``-dE/dtheta`` summed over the batch for visible ``v`` and (expected) hidden ``h``."""
        scale = self.scale
        return Gradients(
            weight=conv2d_weight(v, self.weight.shape, h) * scale,
            hidden_bias=h.sum(dim=(0, 2, 3)) * scale,
            visible_bias=v.sum(dim=(0, 2, 3)) * scale,
        )

    def clone(self) -> Crbm:
        """A copy with its own tensors."""
        return Crbm(
            self.weight.clone(),
            self.hidden_bias.clone(),
            self.visible_bias.clone(),
            self.pool,
            self.gaussian,
            self.sigma,
        )


@dataclass
class Gradients:
    """A gradient (or a statistic) for each of a :class:`Crbm`'s parameters."""

    weight: Tensor
    hidden_bias: Tensor
    visible_bias: Tensor

    def __sub__(self, other: Gradients) -> Gradients:
        return Gradients(
            self.weight - other.weight,
            self.hidden_bias - other.hidden_bias,
            self.visible_bias - other.visible_bias,
        )

    def scaled(self, factor: float) -> Gradients:
        """Every part times ``factor``."""
        return Gradients(self.weight * factor, self.hidden_bias * factor, self.visible_bias * factor)


@dataclass
class CdStep:
    """What one contrastive-divergence step measured on a batch: the gradient estimate
    (per image), the positive phase's hidden probabilities and the reconstruction."""

    gradients: Gradients
    positive_hidden: Tensor
    positive_pooled: Tensor
    reconstruction: Tensor
    extras: dict[str, float] = field(default_factory=dict)


def sample_pooled(inputs: Tensor, pool: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One draw from probabilistic max-pooling with detection inputs ``inputs``: detection
    units ``h`` (one-hot or all zero in each cell) and pooling units ``p``."""
    from vizkit.engine.ops import cell_states, draw_states, pool_cells, unpool_cells

    kernel = (pool, pool)
    states = cell_states(pool_cells(inputs, kernel))
    chosen = draw_states(states, torch.rand((*states.shape[:-1], 1), generator=generator, dtype=torch.float64))
    one_hot = F.one_hot(chosen, states.shape[-1]).to(inputs.dtype)
    alone = torch.rand(inputs.shape, generator=generator, dtype=torch.float64) < torch.sigmoid(inputs.double())
    h = unpool_cells(one_hot[..., :-1], kernel, inputs.shape, fill=alone.to(inputs.dtype))
    return h, 1.0 - one_hot[..., -1]


def contrastive_divergence(
    rbm: Crbm,
    v0: Tensor,
    generator: torch.Generator,
    steps: int = 1,
    sample_visible: bool = False,
) -> CdStep:
    """CD-``steps`` (Hinton 2002) on a batch: the gradient estimate of the mean log-likelihood
    per image, ``<-dE/dtheta>_data - <-dE/dtheta>_(steps of Gibbs sampling)``, with the
    hidden units' probabilities (not samples) in both statistics. The chain's hidden units are
    sampled; its visible units are sampled with ``sample_visible``, else their mean is used
    (the usual choice, and Lee et al.'s code's, for real-valued units).
    """
    h0, p0 = rbm.hidden_probabilities(v0)
    positive = rbm.statistics(v0, h0)
    h_sample, _ = rbm.sample_hidden(v0, generator)
    v = v0
    for step in range(steps):
        v = rbm.sample_visible(h_sample, generator) if sample_visible else rbm.visible_mean(h_sample)
        if step < steps - 1:
            h_sample, _ = rbm.sample_hidden(v, generator)
    h_neg, _ = rbm.hidden_probabilities(v)
    negative = rbm.statistics(v, h_neg)
    reconstruction = rbm.visible_mean(h_sample) if sample_visible else v
    return CdStep((positive - negative).scaled(1.0 / v0.shape[0]), h0, p0, reconstruction)


def update(
    rbm: Crbm,
    velocity: Gradients,
    step: CdStep,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    sparsity_target: float,
    sparsity_weight: float,
) -> None:
    """One parameter update from a CD step, in place (as Lee et al.'s code does it): the
    gradient per detection-unit position (times sigma^2), plus weight decay on the filters and the sparsity
    regulariser on the hidden biases, which pulls each group's mean activation
    ``mean P(h = 1 | v)`` toward ``sparsity_target``, with momentum."""
    # per position, and times sigma^2: the step Lee et al.'s code takes (the exact gradient's
    # 1 / sigma^2 would make the step 25-100x larger at their sigma of 0.2-0.1, and diverge)
    positions = step.positive_hidden.shape[-2] * step.positive_hidden.shape[-1] * rbm.scale
    visible_positions = step.reconstruction.shape[-2] * step.reconstruction.shape[-1] * rbm.scale
    mean_hidden = step.positive_hidden.mean(dim=(0, 2, 3))
    direction = Gradients(
        weight=step.gradients.weight / positions - weight_decay * rbm.weight,
        hidden_bias=step.gradients.hidden_bias / positions + sparsity_weight * (sparsity_target - mean_hidden),
        visible_bias=step.gradients.visible_bias / visible_positions,
    )
    for name in ("weight", "hidden_bias", "visible_bias"):
        v = getattr(velocity, name)
        v.mul_(momentum).add_(getattr(direction, name), alpha=learning_rate)
        getattr(rbm, name).add_(v)


def mean_field(
    layers: list[Crbm], v: Tensor, iterations: int = 10, feed_forward: Callable | None = None
) -> list[tuple[Tensor, Tensor]]:
    """The CDBN's combined bottom-up / top-down inference (Lee et al. 2009, Sec. 3.6), by mean
    field: each layer's detection units see the layer below's pooling units through their
    filters and, through their pooling units, the layer above's detection units (the pooling
    units of layer l are the visible units of layer l + 1):

    ``P(h^l_j = 1) = exp(I_j + T_a) / (1 + sum_cell exp(I_l + T_a))`` with
    ``T = sum_m W^(l+1)_m (*) E[h^(l+1)_m]`` on the cell ``a`` of unit j: the paper's ``I(p_a)``,
    the weights alone; layer l + 1's visible bias is left out, as the paper leaves it, since it
    models the pooling units' marginal sparsity that layer l's hidden bias already gives them.

    Starts from the feed-forward pass; returns each layer's (detection, pooling) probabilities.
    """
    from vizkit.engine.ops import cell_states, pool_cells, unpool_cells

    state = feed_forward_pass(layers, v)
    for _ in range(iterations):
        below = v
        for index, rbm in enumerate(layers):
            bottom_up = rbm.hidden_input(below)
            if index + 1 < len(layers):
                above = layers[index + 1]
                top_down = F.conv_transpose2d(state[index + 1][0], above.weight)  # on the pooling units
                kernel = (rbm.pool, rbm.pool)
                blocks = pool_cells(bottom_up, kernel) + top_down[
                    ..., : bottom_up.shape[-2] // rbm.pool, : bottom_up.shape[-1] // rbm.pool
                ].unsqueeze(-1)
                states = cell_states(blocks)
                detection = unpool_cells(states[..., :-1], kernel, bottom_up.shape, fill=torch.sigmoid(bottom_up))
                state[index] = (detection, states[..., :-1].sum(dim=-1))
            else:
                state[index] = prob_max_pool_probabilities(bottom_up, rbm.pool)
            below = state[index][1]
    return state


def feed_forward_pass(layers: list[Crbm], v: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The approximate inference the CDBN uses for features: each layer's (detection, pooling)
    probabilities given the pooling probabilities of the layer below."""
    state = []
    below = v
    for rbm in layers:
        state.append(rbm.hidden_probabilities(below))
        below = state[-1][1]
    return state
