"""Feature visualisation by optimisation: the image that drives a unit most.

:func:`optimize` builds an image parametrisation per unit (K images each with ``diversity=K``),
and for ``steps`` steps transforms the [0, 1] images (transformation robustness), normalises them
as the model expects, forwards them up to ``layer`` (``im.run_capturing``: the layer's output with
its autograd graph, nothing else recorded) and takes an Adam step on the parameters towards a
higher objective minus the regularisers. The caller's model is left as it was: weights, the
train/eval mode of every module, ``requires_grad`` of every parameter (all are frozen during the
run), and no hooks, also when the run fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vizkit
from vizkit_plugins.featvis import objectives as objectives_
from vizkit_plugins.featvis import transforms as transforms_
from vizkit_plugins.featvis.parametrization import ColorDecorrelation, Normalize, make_image


class Optimized(NamedTuple):
    """What :func:`optimize` returns. Row b = unit ``b // K``'s image ``b % K``."""

    images: Tensor  # [len(units) * K, 3, S, S] in [0, 1]
    objective: Tensor  # [steps, len(units) * K]: the objective at each step (on the transformed image)
    reached: Tensor  # [len(units) * K]: the objective of the final, untransformed image


REDIRECT_STEPS = 32  # steps with redirected ReLU gradients (redirect=True), enough to wake a unit


class RedirectedReLU(vizkit.engine.GradientRule):
    """Plain gradients, except at a ReLU whose gradient is zero for a whole image (its units all
    off: a unit that never fires gives the optimiser nothing): there the gradient is let through
    where it would raise the ReLU's input, so a dead unit can be woken (Lucid's redirected ReLU
    gradient). Once any gradient passes the ReLU for an image, that image gets the plain one."""

    name = "featvis-redirected-relu"
    title = "Redirected-ReLU gradients"
    description = "plain gradients; a ReLU that blocks all of an image's gradient lets the raising part through"

    def relu_down(self, signal: Tensor, forward_input: Tensor | None) -> Tensor:
        assert forward_input is not None
        on = forward_input > 0
        plain = signal * on
        blocked = ~plain.reshape(plain.shape[0], -1).any(dim=1)
        if not bool(blocked.any()):
            return plain
        # minimising: a negative signal raises the input, which is what wakes an off unit
        redirected = torch.where(on, signal, signal.clamp(max=0))
        return torch.where(blocked.view(-1, *([1] * (plain.dim() - 1))), redirected, plain)

    def autograd_relu(self, func: Callable[..., Tensor], args: tuple, kwargs: dict) -> Tensor:
        return vizkit.engine.ProjectionRule.autograd_relu(self, func, args, kwargs)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with every parameter's ``requires_grad`` False inside the block;
    each module's mode and each parameter's flag as they were after it, also on error."""
    modes = [(module, module.training) for module in model.modules()]
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        model.eval()
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def fast_layout(x: Tensor) -> Tensor:
    """``x`` in the channels-last memory format on the CPU, where torch's convolutions and
    pooling run faster so (SqueezeNet's max-pooling 25x, a forward and backward to features.7
    1.7x, one thread); the values are the same, only the layout in memory differs."""
    if x.device.type == "cpu" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def row_generator(seed: int, unit: int, copy: int) -> torch.Generator:
    """The generator of one image's initial noise: a function of the seed, the unit and which of
    its K images it is, so a unit's image is the same whichever units are optimised with it."""
    state = np.random.SeedSequence([seed, unit, copy]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _unit_targets(units: Sequence[int] | Tensor, objective: str, k: int, device: torch.device) -> Tensor:
    if objective == "direction":
        vectors = torch.as_tensor(units, dtype=torch.float32)
        if vectors.dim() != 2:
            raise vizkit.UsageError("the direction objective needs one vector per unit: units [U, channels]")
        return vectors.repeat_interleave(k, dim=0).to(device)
    indices = torch.as_tensor(list(units) if not isinstance(units, Tensor) else units, dtype=torch.long)
    if indices.dim() != 1 or len(indices) == 0:
        raise vizkit.UsageError("units must be a non-empty list of unit indices")
    return indices.repeat_interleave(k).to(device)


def optimize(
    im_or_model: vizkit.Instrumented | nn.Module,
    layer: str | None,
    units: Sequence[int] | Tensor,
    objective: str = "channel",
    steps: int = 512,
    param: str = "fourier",
    decorrelate: bool | ColorDecorrelation = True,
    transforms: str | Sequence[str] | Callable[[Tensor], Tensor] | None = "standard",
    regularize: str | Sequence[str | objectives_.Regularizer] | None = None,
    size: int = 128,
    diversity: int = 0,
    seed: int = 0,
    lr: float = 0.05,
    progress: bool = False,
    diversity_weight: float = 1.0,
    preprocess: vizkit.Preprocess | None = None,
    init: Tensor | None = None,
    stop: Callable[[], bool] | None = None,
    keys: Sequence[int] | None = None,
    redirect: bool = True,
) -> Optimized:
    """Optimise one image per unit (``diversity`` K > 1: K per unit, pushed apart by Lucid's
    diversity term weighted ``diversity_weight`` times the unit's mean activation over its K
    pictures), all in one batch.

    Args:
        im_or_model: the model, or an instrumented one (``vizkit.instrument(model)``) to reuse.
        layer: where the objective reads (a layer name or alias); for ``logit``, the model output
            is read and ``layer`` may be None.
        units: the channels (``channel``, ``neuron``), classes (``logit``) or, for ``direction``,
            vectors [U, C] in the layer's channel space.
        objective: ``channel``, ``neuron``, ``logit`` or ``direction`` (see ``objectives``).
        steps, lr: Adam steps and learning rate.
        param: ``fourier`` (Lucid's) or ``pixel``; ``decorrelate``: the ImageNet colour
            decorrelation (True), none (False) or a :class:`ColorDecorrelation` (e.g. from images).
        transforms: ``standard`` (Lucid's), names (``pad,jitter,scale,rotate``), a callable, or None.
        regularize: names (``l2``, ``tv``, ``blur``, ``clip``) or regulariser objects.
        size: the image side S in pixels.
        seed: the initial image and the transforms' draws.
        preprocess: the model's normalisation (default: ``vizkit.data.preprocess_for(model)``).
        init: start from these images [U*K, 3, S, S] in [0, 1] instead of noise.
        stop: asked after every step; True stops the run with KeyboardInterrupt (a SIGINT
            deferred by the caller).
        redirect: cross ReLUs with :class:`RedirectedReLU` for the first :data:`REDIRECT_STEPS`
            steps (then plain gradients: by then the units are awake, and the rule costs time).
        keys: one number per unit naming it for its initial noise (default: the unit index, or
            the direction's position): a unit's start is the same in any batch of units.

    Returns:
        :class:`Optimized`: images [U*K, 3, S, S] in [0, 1], objective per step [steps, U*K] and
        the objective the final images reach untransformed [U*K].
    """
    if steps < 1 or size < 1 or lr <= 0:
        raise vizkit.UsageError(f"steps and size must be >= 1 and lr > 0, not {steps}, {size}, {lr}")
    if objective != "logit" and layer is None:
        raise vizkit.UsageError(f"the {objective} objective needs a layer")
    score = objectives_.get(objective)
    k = max(1, int(diversity))
    model = im_or_model.model if isinstance(im_or_model, vizkit.Instrumented) else im_or_model
    device = _device(model)
    targets = _unit_targets(units, objective, k, device)
    batch = targets.shape[0]
    generator = torch.Generator().manual_seed(seed)  # the transforms' draws, one per step for the batch
    if keys is None:
        keys = range(len(targets) // k) if objective == "direction" else targets[::k].tolist()
    if len(keys) * k != len(targets):
        raise ValueError(f"{len(keys)} keys for {len(targets) // k} units")
    rows = [row_generator(seed, int(key), copy) for key in keys for copy in range(k)]
    image = make_image(param, batch, size, decorrelate=decorrelate, generator=rows, device=device)
    if init is not None:
        image.from_image(init)
    robust = transforms if callable(transforms) else transforms_.build(transforms, generator)

    def jitter(images: Tensor) -> Tensor:
        """The transformed batch; for the model's output, at the picture's size again (padding
        and scaling change it, and a classifier may take one input size only)."""
        moved = robust(images)
        if layer is not None or moved.shape[-2:] == images.shape[-2:]:
            return moved
        return F.interpolate(moved, size=images.shape[-2:], mode="bilinear", align_corners=False)

    regularizers = objectives_.build(regularize)
    penalties = [r for r in regularizers if isinstance(r, objectives_.L2 | objectives_.TotalVariation)]
    operations = [r for r in regularizers if isinstance(r, objectives_.Step)]
    normalize = Normalize.of(preprocess or vizkit.data.preprocess_for(model))

    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen(model))
        if isinstance(im_or_model, vizkit.Instrumented):
            im = im_or_model
        else:
            im = stack.enter_context(vizkit.instrument(model, layers=None, switches=False))
        stack.enter_context(im.configured(layers=None, switches=False))

        redirected = RedirectedReLU()

        def forward(images: Tensor, rule: vizkit.ProjectionRule | None = None) -> tuple[Tensor, Tensor]:
            x = fast_layout(normalize.forward(images))
            if layer is None:
                out = im.run_with_rule(x, rule) if rule is not None else im(x)
                return score(out, targets), out
            act = im.run_capturing(x, layer, rule=rule)
            return score(act, targets), act

        optimizer = torch.optim.Adam(image.params, lr=lr)
        history = torch.empty(steps, batch)
        bar = vizkit.toolkit.progress_bar(steps, desc=f"featvis {layer or 'logits'}", enabled=progress)
        try:
            for step in range(steps):
                optimizer.zero_grad(set_to_none=True)
                current = image.image()
                values, act = forward(jitter(current), redirected if redirect and step < REDIRECT_STEPS else None)
                total = values.clone()
                for penalty in penalties:
                    total = total - penalty.penalty(current)
                if k > 1:
                    # in the unit's own units: weight 1 makes a Gram cosine of 1 to each other
                    # picture cost as much as the unit's mean activation (scales differ by 1000x)
                    scale = values.detach().abs().view(-1, k).mean(dim=1).clamp(min=1e-6).repeat_interleave(k)
                    total = total + diversity_weight * scale / (k - 1) * objectives_.diversity(act, k)
                (-total.sum()).backward()
                optimizer.step()
                history[step] = values.detach().float().cpu()
                due = [operation for operation in operations if operation.due(step)]
                if due:
                    with torch.no_grad():
                        changed = image.image()
                        for operation in due:
                            changed = operation.apply(changed)
                        image.from_image(changed)
                bar.update(1)
                if stop is not None and stop():
                    raise KeyboardInterrupt("stop requested")
        finally:
            bar.close()
        with torch.no_grad():
            final = image.image().detach()
            reached = forward(final)[0].detach().float().cpu()
    return Optimized(final.cpu(), history, reached)
