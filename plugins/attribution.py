"""The ``attribution`` analysis: captum's attribution methods beside the deconvnet, compared.

Every method in :data:`METHODS` (Saliency, InputXGradient, IntegratedGradients, GuidedBackprop,
Deconvolution, GuidedGradCam, LayerGradCam, Occlusion, and NoiseTunnel around any of them as
``nt-<method>``) runs on the loaded model, its preprocessing, labels and target, and explains the
target's logit (``--score probability``: its softmax probability). Beside them, vizkit's own
deconvnet projection of the layer unit that contributes most to the target (activation times
gradient) is drawn the same way, and every map is compared: pairwise Spearman rank correlation
of the pixels' |attribution|, and a deletion curve (the target's probability as the most
attributed pixels are set to ``--baseline``; a lower area under it means the map found what the
model depends on).

captum runs on a private copy of the model (the parameters are shared, nothing of the caller's
model is hooked): every nn.ReLU module is replaced, and every ReLU call of a forward (module or
functional: ``F.relu``, ``torch.relu``, ``x.relu_()``) goes to a fresh non-in-place ``nn.ReLU``
of its own, so captum's ReLU hooks (GuidedBackprop, Deconvolution, GuidedGradCam) see each call
once. Without it captum treats functional ReLUs as plain ones (GoogLeNet, Inception) and gives
wrong maps without a word.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

import vizkit
from vizkit import new_figure, resolve_target


# ------------------------------------------------------------------------ the model captum sees
class _PlainReLU(nn.Module):
    """Stands in for the copy's nn.ReLU modules (not an nn.ReLU, so captum leaves it alone);
    its ReLU call is routed like every other one."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)


class _ReluRouter(TorchFunctionMode):
    """During one forward of a :class:`CanonicalModel`: the k-th ReLU call, whatever makes it,
    runs as the model's k-th fresh ``nn.ReLU`` module (not in place)."""

    def __init__(self, owner: CanonicalModel) -> None:
        super().__init__()
        self.owner = owner
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") not in ("relu", "relu_"):
            return func(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        index, self.calls = self.calls, self.calls + 1
        relus = self.owner.relus
        if self.owner.counting:
            relus.append(nn.ReLU())
        elif index >= len(relus):
            raise vizkit.VizkitError(
                f"the model made more ReLU calls in one forward than the {len(relus)} of its first forward; "
                "captum's ReLU rules need a fixed graph"
            )
        return relus[index](x)  # this mode is off inside its handler: the module's own relu runs plainly


class CanonicalModel(nn.Module):
    """A hook-free copy of ``model`` (sharing its parameters) whose ReLU calls are each a
    distinct, non-in-place ``nn.ReLU`` module, outputting the logits or, with ``probability``,
    their softmax. Build it with :meth:`build`."""

    def __init__(self, model: nn.Module, probability: bool) -> None:
        super().__init__()
        self.model = model
        self.relus = nn.ModuleList()
        self.probability = probability
        self.counting = False
        self.layer_calls = 0  # how often the layer given to build() ran in its probe forward
        self.probe_output: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        with _ReluRouter(self):
            logits = self.model(x)
        return logits.softmax(1) if self.probability else logits

    @classmethod
    def build(cls, model: nn.Module, x: Tensor, probability: bool = False, layer: str | None = None) -> CanonicalModel:
        """The copy for ``model``. One probe forward of ``x[:1]`` counts its ReLU calls and the
        calls of module ``layer`` (a UsageError when the copy has no such module)."""
        duplicate = hook_free_copy(model).eval()
        for name, module in list(duplicate.named_modules(remove_duplicate=False)):
            if isinstance(module, nn.ReLU):  # every occurrence of a reused one, too
                parent, _, child = name.rpartition(".")
                setattr(duplicate.get_submodule(parent), child, _PlainReLU())
        canonical = cls(duplicate, probability)
        handle = None
        if layer is not None:

            def count(*_: Any) -> None:
                canonical.layer_calls += 1

            handle = canonical.layer(layer).register_forward_hook(count)
        canonical.counting = True
        try:
            with torch.no_grad():
                output = canonical(x[:1])
        finally:
            canonical.counting = False
            if handle is not None:
                handle.remove()
        canonical.probe_output = output
        return canonical.to(x.device)

    def layer(self, name: str) -> nn.Module:
        """The copy's module ``name`` (a UsageError when it has none)."""
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            raise vizkit.UsageError(
                f"--layer '{name}' is not a module of the model (a functional call or a repeated one); captum's "
                "layer methods and the deconvnet column hook a module: pick one from `vizkit layers MODEL`"
            ) from None


_HOOK_KINDS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_FLAGS = ("_forward_hooks_always_called", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


def _is_vizkit_hook(hook: Any) -> bool:
    return str(getattr(hook, "__module__", "") or "").startswith("vizkit.")


def hook_free_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` sharing its parameters and buffers, without the hooks vizkit's
    instrumentation put on it (the user's own hooks are copied); the model is not touched."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    for module in model.modules():
        kept: set[int] = set()
        for kind in _HOOK_KINDS:
            hooks = getattr(module, kind, None)
            if hooks:
                memo[id(hooks)] = OrderedDict((k, v) for k, v in hooks.items() if not _is_vizkit_hook(v))
                kept.update(memo[id(hooks)])
        for kind in _HOOK_FLAGS:  # per-hook flags, keyed like the hooks
            flags = getattr(module, kind, None)
            if flags:
                memo[id(flags)] = OrderedDict((k, v) for k, v in flags.items() if k in kept)
    try:
        return copy.deepcopy(model, memo)
    except Exception as error:  # an attribute deepcopy cannot handle
        raise vizkit.VizkitError(f"cannot copy the model for captum ({type(error).__name__}: {error})") from None


# ------------------------------------------------------------------------------------ methods
@dataclass(frozen=True)
class MethodSettings:
    """What the methods' captum options come from (the analysis's options, checked)."""

    steps: int = 50  # IntegratedGradients n_steps
    baseline: Tensor | None = None  # [3], the normalised colour of "removed" pixels (None: zero)
    window: int = 32  # Occlusion sliding window side
    stride: int = 16  # Occlusion stride
    samples: int = 10  # NoiseTunnel nt_samples
    nt_type: str = "smoothgrad"
    stdev: float = 0.15  # NoiseTunnel noise, a fraction of the input's range
    batch_size: int = 32

    def baseline_image(self, x: Tensor) -> Tensor:
        colour = torch.zeros(3) if self.baseline is None else self.baseline
        return colour.to(x.device, x.dtype).reshape(1, 3, 1, 1).expand_as(x).contiguous()


class Method:
    """One captum attribution method: ``build`` the captum object, the keyword arguments of its
    ``attribute``, and ``finish`` its output into [N, C, H, W] (C = 3, or 1 for maps of a layer)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # captum's class name
    needs_layer: ClassVar[bool] = False
    relu_rule: ClassVar[bool] = False  # hooks ReLU modules (needs the routed copy)

    @property
    def label(self) -> str:
        """How figures and result.json name the captum method."""
        return self.title

    def build(self, model: CanonicalModel, layer: nn.Module) -> Any:
        raise NotImplementedError

    def options(self, x: Tensor, settings: MethodSettings) -> dict[str, Any]:
        return {}

    def finish(self, attribution: Tensor, x: Tensor) -> Tensor:
        return attribution

    def attribute(
        self, model: CanonicalModel, layer: nn.Module, x: Tensor, target: Tensor, settings: MethodSettings
    ) -> Tensor:
        explainer = self.build(model, layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # captum's notes on hooks and requires_grad
            attribution = explainer.attribute(x.clone(), target=target, **self.options(x, settings))
        return self.finish(attribution.detach(), x)


class Saliency(Method):
    name, title = "saliency", "Saliency"

    def build(self, model, layer):
        from captum.attr import Saliency as Captum

        return Captum(model)


class InputXGradient(Method):
    name, title = "inputxgradient", "InputXGradient"

    def build(self, model, layer):
        from captum.attr import InputXGradient as Captum

        return Captum(model)


class IntegratedGradients(Method):
    name, title = "integratedgradients", "IntegratedGradients"

    def build(self, model, layer):
        from captum.attr import IntegratedGradients as Captum

        return Captum(model)

    def options(self, x, settings):
        return {
            "baselines": settings.baseline_image(x),
            "n_steps": settings.steps,
            "internal_batch_size": max(settings.batch_size, x.shape[0]),
        }


class GuidedBackprop(Method):
    name, title, relu_rule = "guidedbackprop", "GuidedBackprop", True

    def build(self, model, layer):
        from captum.attr import GuidedBackprop as Captum

        return Captum(model)


class Deconvolution(Method):
    name, title, relu_rule = "deconvolution", "Deconvolution", True

    def build(self, model, layer):
        from captum.attr import Deconvolution as Captum

        return Captum(model)


class GuidedGradCam(Method):
    name, title, needs_layer, relu_rule = "guidedgradcam", "GuidedGradCam", True, True

    def build(self, model, layer):
        from captum.attr import GuidedGradCam as Captum

        return Captum(model, layer)


class LayerGradCam(Method):
    """Grad-CAM at ``--layer`` with the paper's ReLU, upsampled (bilinear) to the input."""

    name, title, needs_layer = "layergradcam", "LayerGradCam", True

    def build(self, model, layer):
        from captum.attr import LayerGradCam as Captum

        return Captum(model, layer)

    def options(self, x, settings):
        return {"relu_attributions": True}

    def finish(self, attribution, x):
        from captum.attr import LayerAttribution

        return LayerAttribution.interpolate(attribution, tuple(x.shape[-2:]), interpolate_mode="bilinear")


class Occlusion(Method):
    """A ``--window`` square of ``--baseline`` colour, ``--stride`` apart (all channels at once)."""

    name, title = "occlusion", "Occlusion"

    def build(self, model, layer):
        from captum.attr import Occlusion as Captum

        return Captum(model)

    def options(self, x, settings):
        return {
            "sliding_window_shapes": (3, settings.window, settings.window),
            "strides": (3, settings.stride, settings.stride),
            "baselines": settings.baseline_image(x),
            "perturbations_per_eval": max(1, settings.batch_size // x.shape[0]),
        }


class NoiseTunnel(Method):
    """captum's NoiseTunnel around another method (``nt-<method>``): ``--samples`` noisy copies,
    Gaussian noise of ``--stdev`` times the input's range, combined as ``--nt-type`` says. The
    noise comes from the run's seed; the global generator is left as it was."""

    title = "NoiseTunnel"

    def __init__(self, inner: Method, seed: int = 0) -> None:
        self.inner = inner
        self.name = f"nt-{inner.name}"  # type: ignore[misc]
        self.needs_layer = inner.needs_layer  # type: ignore[misc]
        self.relu_rule = inner.relu_rule  # type: ignore[misc]
        self.seed = seed

    @property
    def label(self) -> str:
        return f"NoiseTunnel({self.inner.title})"

    def build(self, model, layer):
        from captum.attr import NoiseTunnel as Captum

        return Captum(self.inner.build(model, layer))

    def options(self, x, settings):
        spread = float(x.max() - x.min()) or 1.0
        return {
            **self.inner.options(x, settings),
            "nt_type": settings.nt_type,
            "nt_samples": settings.samples,
            "nt_samples_batch_size": max(1, settings.batch_size // x.shape[0]),
            "stdevs": settings.stdev * spread,
        }

    def finish(self, attribution, x):
        return self.inner.finish(attribution, x)

    def attribute(self, model, layer, x, target, settings):
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return super().attribute(model, layer, x, target, settings)


METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        Saliency,
        InputXGradient,
        IntegratedGradients,
        GuidedBackprop,
        Deconvolution,
        GuidedGradCam,
        LayerGradCam,
        Occlusion,
    )
}
NT_PREFIX = "nt-"
NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
SIGNS = ("absolute_value", "all", "positive", "negative")
OVERLAYS = ("blended_heat_map", "heat_map", "masked_image", "alpha_scaling")
SCORES = ("logit", "probability")
DECONVNET = "deconvnet"  # the column of vizkit's own projection
RANDOM_DRAWS = 3  # random deletion orders averaged into the reference curve


def parse_methods(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """``saliency,nt-occlusion,...`` (or ``all``: the eight plain methods) as a list of names."""
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    names: list[str] = []
    for part in (str(p).strip().lower() for p in parts):
        if not part:
            continue
        expanded = list(METHODS) if part == "all" else [part]
        for name in expanded:
            base = name.removeprefix(NT_PREFIX)
            if base not in METHODS:
                raise vizkit.UsageError(
                    f"unknown attribution method '{name}' in --method; use {', '.join(METHODS)}, all, or {NT_PREFIX}<method> "
                    "(NoiseTunnel around it)"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise vizkit.UsageError("--method needs at least one method, e.g. saliency,integratedgradients")
    return names


def make_method(name: str, seed: int = 0) -> Method:
    """The :class:`Method` for a name :func:`parse_methods` accepts."""
    if name.startswith(NT_PREFIX):
        return NoiseTunnel(METHODS[name.removeprefix(NT_PREFIX)](), seed)
    return METHODS[name]()


def _choice(flag: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = str(value).strip().lower()
        if value not in allowed:
            raise vizkit.UsageError(f"{flag} must be one of {', '.join(allowed)}, not '{value}'")
        return value

    return parse


# --------------------------------------------------------------------------------- comparisons
def to_2d(attribution: Tensor | np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, H, W]: the sum over channels, sign kept (as captum's figures do)."""
    values = attribution.detach().cpu().numpy() if isinstance(attribution, Tensor) else np.asarray(attribution)
    return values.astype(np.float64).sum(axis=1)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties sharing their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman_matrix(maps: np.ndarray) -> np.ndarray:
    """[K, H, W] -> [K, K] Spearman rank correlation of the pixels' |map| (NaN where a map is
    constant)."""
    ranks = np.stack([average_ranks(np.abs(m).ravel()) for m in maps])
    ranks -= ranks.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ranks, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = (ranks @ ranks.T) / np.outer(norms, norms)
    return np.clip(matrix, -1.0, 1.0)


def deletion_order(
    map_2d: np.ndarray | None, rng: np.random.Generator, patch: int = 1, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Flat pixel indices in the order a deletion curve removes them: ``patch`` x ``patch``
    squares (those at the right and bottom may be cut by the border), the one with the largest
    mean |attribution| first, ties in random order (``map_2d`` None: the squares of a ``shape``
    image in random order); inside a square, row by row."""
    height, width = map_2d.shape if map_2d is not None else shape  # type: ignore[misc]
    rows, cols = np.divmod(np.arange(height * width), width)
    square = (rows // patch) * -(-width // patch) + cols // patch
    count = int(square.max()) + 1
    score = np.zeros(count)
    if map_2d is not None:
        score = np.bincount(square, weights=np.abs(map_2d).ravel(), minlength=count) / np.bincount(square)
    rank = np.empty(count, dtype=np.int64)
    rank[np.lexsort((rng.permutation(count), -score))] = np.arange(count)
    return np.lexsort((np.arange(height * width), rank[square]))


def deletion_curve(
    im: vizkit.Instrumented,
    image: Tensor,
    order: np.ndarray,
    target: int,
    fractions: np.ndarray,
    baseline: Tensor,
    batch_size: int,
) -> np.ndarray:
    """P(target) as the first ``fractions`` of ``order`` (pixels of [3, H, W] ``image``) are set
    to ``baseline``, through the instrumented model (recording nothing)."""
    height, width = image.shape[-2:]
    counts = np.round(fractions * height * width).astype(np.int64)
    order_t = torch.as_tensor(order, device=image.device)
    colour = baseline.to(image.device, image.dtype).reshape(3, 1)
    probabilities = []
    with im.configured(layers=None, switches=False), torch.no_grad():
        for start in range(0, len(counts), batch_size):
            batch = image.unsqueeze(0).repeat(len(counts[start : start + batch_size]), 1, 1, 1)
            flat = batch.view(batch.shape[0], 3, -1)
            for row, count in enumerate(counts[start : start + batch_size]):
                flat[row][:, order_t[: int(count)]] = colour
            probabilities.append(im(batch).float().softmax(1)[:, target].cpu())
    return torch.cat(probabilities).numpy()


def _mean_of_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _best(columns: list[str], auc: np.ndarray, maps: np.ndarray) -> str | None:
    """The column with the lowest deletion AUC among the maps that rank pixels (not constant:
    an all-zero or uniform map is deleted in random order); None when none does, or when
    several share the lowest AUC (identical curves name no winner)."""
    scored = [(float(auc[k]), column) for k, column in enumerate(columns) if _ranks_pixels(maps[k])]
    if not scored:
        return None
    lowest = min(score for score, _ in scored)
    winners = [column for score, column in scored if score == lowest]
    return winners[0] if len(winners) == 1 else None


def _ranks_pixels(map_2d: np.ndarray) -> bool:
    """Whether |map| orders the pixels at all (it is not the same everywhere)."""
    magnitude = np.abs(map_2d)
    return bool(magnitude.size) and bool(magnitude.max() > magnitude.min())


def _significant(value: float, digits: int = 5) -> float:
    """``value`` rounded to ``digits`` significant digits (rounding to decimal places turned a
    probability of 3e-16 into 0)."""
    return float(f"{value:.{digits}g}")


def area_under(fractions: np.ndarray, curve: np.ndarray) -> float:
    """Trapezoidal area under a deletion curve over the removed fraction (0 to 1)."""
    return float(np.sum((curve[1:] + curve[:-1]) * np.diff(fractions)) / 2.0)


# ----------------------------------------------------------------------------------- analysis
def resolve_targets(text: str, labels: list[str] | None, logits: Tensor) -> Tensor:
    """``--target``: auto (each image's top-1), an index or a label name, for every image, or
    one per image separated by commas (``259,car wheel``)."""
    n, num_classes = logits.shape
    try:
        given = [resolve_target(text, labels, num_classes)]
    except vizkit.UsageError:
        if "," not in str(text):
            raise
        given = [resolve_target(part.strip(), labels, num_classes) for part in str(text).split(",")]
    if len(given) not in (1, n):
        raise vizkit.UsageError(f"give one --target for all images or one per image ({n}), not {len(given)}")
    given = given * n if len(given) == 1 else given
    top = logits.argmax(1).tolist()
    return torch.tensor([top[i] if t is None else t for i, t in enumerate(given)], device=logits.device)


def default_layer(model: nn.Module, im: vizkit.Instrumented, num_classes: int) -> str:
    """The model's declared default (``vizkit_default_layer``), else its last module with
    spatial maps before the classifier that runs once per forward (captum hooks modules)."""
    declared = getattr(model, "vizkit_default_layer", None)
    if declared:
        return im.resolve_alias(declared)
    names = set(im.layers)
    candidates = [
        info.name
        for info in im.layer_infos()
        if not info.functional
        and "#" not in info.name
        and f"{info.name}#1" not in names
        and info.shape is not None
        and len(info.shape) == 4
        and info.shape[2] > 1
        and info.shape[1] != num_classes
        and info.type not in ("Dropout", "Dropout2d", "Identity", "Sequential", "ModuleList")
    ]
    if not candidates:
        raise vizkit.UsageError("no module with spatial feature maps found; pass --layer")
    return candidates[-1]


def _check_canonical(canonical: CanonicalModel, layer: str, logits: Tensor) -> nn.Module:
    """The copy's ``layer`` module, refused unless it runs once per forward; and the copy's
    output on the first image must be the model's (a ReLU whose in-place effect the model
    relies on, without using its result, would change it)."""
    if canonical.layer_calls != 1:
        raise vizkit.UsageError(
            f"--layer '{layer}' runs {canonical.layer_calls} times in one forward; captum's layer methods need a "
            "module that runs once: pick its block or another layer"
        )
    expected = logits[:1].softmax(1) if canonical.probability else logits[:1]
    got = canonical.probe_output
    scale = float(expected.abs().max()) or 1.0
    if got is None or got.shape != expected.shape or float((got - expected).abs().max()) > 1e-3 * scale:
        raise vizkit.VizkitError(
            "captum's copy of the model (each ReLU call a separate, not in-place module) computes other outputs "
            "than the model: does it rely on an in-place ReLU whose result it does not use?"
        )
    return canonical.layer(layer)


def _deconvnet_column(
    ctx: vizkit.RunContext,
    canonical: CanonicalModel,
    module: nn.Module,
    x: Tensor,
    layer: str,
    targets: Tensor,
    rule: str,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """vizkit's projection of the unit of ``layer`` that contributes most to each image's target
    (activation x gradient, captum's LayerGradientXActivation on the copy)."""
    from captum.attr import LayerGradientXActivation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        contribution = LayerGradientXActivation(canonical, module).attribute(x.clone(), target=targets).detach()
    if contribution.dim() != 4:
        raise vizkit.UsageError(f"layer '{layer}' has no spatial feature maps (shape {tuple(contribution.shape)})")
    n, _channels, rows, cols = contribution.shape
    best = contribution.flatten(1).argmax(1)
    channel, rest = best // (rows * cols), best % (rows * cols)
    position = torch.stack([rest // cols, rest % cols], dim=1)
    projection = vizkit.project(
        ctx.instrumented,
        x,
        layer,
        channel.reshape(n, 1),
        position=position.reshape(n, 1, 2),
        rule=ctx.rule(rule),
        chunk=ctx.batch_size,
    )
    units = [
        {
            "channel": int(channel[i]),
            "position": position[i].tolist(),
            "activation": float(projection.values[i, 0]),
            "contribution": float(contribution.flatten(1)[i, best[i]]),
        }
        for i in range(n)
    ]
    return projection.images[:, 0].detach(), units


def run(
    ctx: vizkit.RunContext,
    method: list[str],
    target: str,
    layer: str | None,
    score: str,
    steps: int,
    baseline: str,
    window: int,
    stride: int,
    samples: int,
    nt_type: str,
    stdev: float,
    deletion_steps: int,
    deletion_patch: int,
    sign: str,
    outlier_perc: float,
    overlay: str,
    rule: str,
) -> vizkit.Result:
    import captum

    x = ctx.images()
    im = ctx.instrumented
    height, width = x.shape[-2:]
    for flag, value in (("--steps", steps), ("--samples", samples), ("--deletion-steps", deletion_steps)):
        if value < 1:
            raise vizkit.UsageError(f"{flag} must be at least 1, not {value}")
    if deletion_patch < 1:
        raise vizkit.UsageError(f"--deletion-patch must be at least 1, not {deletion_patch}")
    deletion_patch = min(deletion_patch, height, width)
    occluding = any(name.removeprefix(NT_PREFIX) == "occlusion" for name in method)
    if occluding and not 1 <= window <= min(height, width):
        raise vizkit.UsageError(f"--window must be between 1 and {min(height, width)}, not {window}")
    if stride < 1:
        raise vizkit.UsageError(f"--stride must be at least 1, not {stride}")
    if occluding and stride > window:  # captum's Occlusion asserts it
        raise vizkit.UsageError(f"--stride {stride} must be at most --window {window} (the windows would skip pixels)")
    if not stdev > 0:
        raise vizkit.UsageError(f"--stdev must be above 0, not {stdev}")
    if not 0 <= outlier_perc < 100:
        raise vizkit.UsageError(f"--outlier-perc must be in [0, 100), not {outlier_perc}")
    if overlay == "alpha_scaling" and sign == "all":
        raise vizkit.UsageError("--overlay alpha_scaling cannot show both signs: choose another --sign")
    try:
        baseline_colour = vizkit.parse_fill(baseline, ctx.preprocess)
    except vizkit.UsageError:
        raise vizkit.UsageError(
            f"--baseline expects mean, zero, or R,G,B with values 0-255; not '{baseline}'"
        ) from None

    with im.configured(layers=[layer] if layer else "all", switches=False), torch.no_grad():
        logits = im(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise vizkit.UsageError("attribution needs a classifier: the model must output [N, classes] logits")
    num_classes = logits.shape[1]
    vizkit.check_labels(ctx.labels, num_classes)
    layer = im.resolve_alias(layer) if layer else default_layer(ctx.model, im, num_classes)
    activation = im.activation(layer)  # unknown layer -> an error listing the valid ones
    if activation.dim() != 4:
        raise vizkit.UsageError(f"layer '{layer}' has no spatial feature maps (shape {tuple(activation.shape)})")
    targets = resolve_targets(target, ctx.labels, logits)
    probability = logits.float().softmax(1)[torch.arange(x.shape[0]), targets].tolist()

    canonical = CanonicalModel.build(ctx.model, x, probability=score == "probability", layer=layer)
    module = _check_canonical(canonical, layer, logits)
    settings = MethodSettings(
        steps=steps,
        baseline=baseline_colour,
        window=window,
        stride=stride,
        samples=samples,
        nt_type=nt_type,
        stdev=stdev,
        batch_size=ctx.batch_size,
    )
    seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
    attributions: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    bar = vizkit.progress_bar(total=len(method) + 2, desc="attribution", enabled=ctx.progress)
    for name in method:
        started = time.perf_counter()
        values = make_method(name, seed).attribute(canonical, module, x, targets, settings)
        seconds[name] = round(time.perf_counter() - started, 3)
        if not torch.isfinite(values).all():
            raise vizkit.VizkitError(f"{name} gave non-finite attributions")
        attributions[name] = values.float().cpu()
        bar.update(1)

    started = time.perf_counter()
    projection, units = _deconvnet_column(ctx, canonical, module, x, layer, targets, rule)
    seconds_deconvnet = round(time.perf_counter() - started, 3)
    seconds_shown = {**seconds, DECONVNET: seconds_deconvnet}
    bar.update(1)

    columns = [*method, DECONVNET]
    maps = np.stack([to_2d(attributions[name]) for name in method] + [to_2d(projection)])  # [K, N, H, W]
    correlation = np.stack([spearman_matrix(maps[:, i]) for i in range(x.shape[0])])  # [N, K, K]
    fractions = np.linspace(0.0, 1.0, deletion_steps + 1)
    started = time.perf_counter()
    curves = np.zeros((len(columns) + 1, x.shape[0], len(fractions)), dtype=np.float32)
    for i in range(x.shape[0]):
        orders = [deletion_order(maps[k, i], ctx.rng, deletion_patch) for k in range(len(columns))]
        for k, order in enumerate(orders):
            curves[k, i] = deletion_curve(im, x[i], order, int(targets[i]), fractions, baseline_colour, ctx.batch_size)
        curves[-1, i] = np.mean(  # the reference: squares in random order, averaged over a few draws
            [
                deletion_curve(
                    im,
                    x[i],
                    deletion_order(None, ctx.rng, deletion_patch, (height, width)),
                    int(targets[i]),
                    fractions,
                    baseline_colour,
                    ctx.batch_size,
                )
                for _ in range(RANDOM_DRAWS)
            ],
            axis=0,
        )
    auc = np.array([[area_under(fractions, curve) for curve in rows] for rows in curves])  # [K + 1, N]
    relative = auc / np.maximum(curves[:, :, 0], 1e-12)  # the area as a fraction of the unaltered probability
    seconds_deletion = round(time.perf_counter() - started, 3)
    bar.update(1)
    bar.close()

    names = ctx.image_names()
    labels = [*columns, "random"]
    result = vizkit.Result(
        summary={
            "methods": method,
            "columns": columns,
            "captum": {name: make_method(name).label for name in method},
            "captum_version": captum.__version__,
            "target": targets.tolist(),
            "target_name": [ctx.label(int(t)) for t in targets.tolist()],
            "probability": [_significant(p) for p in probability],
            "layer": layer,
            "score": score,
            "baseline": [round(float(v), 5) for v in baseline_colour],
            "deconvnet_unit": units,
            "relu_calls_routed": len(canonical.relus),
            "seconds_per_method": seconds,
            "seconds_deconvnet": seconds_deconvnet,
            "seconds_deletion": seconds_deletion,
            "rank_correlation": {
                image: {
                    a: {b: float(correlation[i, p, q]) for q, b in enumerate(columns)} for p, a in enumerate(columns)
                }
                for i, image in enumerate(names)
            },
            "rank_correlation_mean": {
                a: {b: _mean_of_finite(correlation[:, p, q]) for q, b in enumerate(columns)}
                for p, a in enumerate(columns)
            },
            "deletion_fractions": fractions.tolist(),
            "deletion_patch": deletion_patch,
            "deletion_auc": {name: [_significant(v) for v in auc[k]] for k, name in enumerate(labels)},
            "deletion_auc_relative": {name: [_significant(v, 4) for v in relative[k]] for k, name in enumerate(labels)},
            "all_zero": {  # such a map ranks nothing: its deletion order is random, its correlations NaN
                image: [column for k, column in enumerate(columns) if not np.any(maps[k, i])]
                for i, image in enumerate(names)
            },
            "constant": {  # the same: a uniform map that is not zero (e.g. an occlusion window as large as the image)
                image: [
                    column for k, column in enumerate(columns) if np.any(maps[k, i]) and not _ranks_pixels(maps[k, i])
                ]
                for i, image in enumerate(names)
            },
            "deletion_best": [_best(columns, auc[:, i], maps[:, i]) for i in range(x.shape[0])],
            "images": names,
        },
        arrays={
            **{name: values.numpy().astype(np.float32) for name, values in attributions.items()},
            DECONVNET: projection.cpu().numpy().astype(np.float32),
            "maps": maps.astype(np.float32),
            "rank_correlation": correlation.astype(np.float32),
            "deletion_fractions": fractions.astype(np.float32),
            "deletion_probability": curves,
            "deletion_auc": auc.astype(np.float32),
        },
    )
    shown = {"sign": sign, "outlier_perc": outlier_perc, "overlay": overlay}
    result.figures["attribution"] = _maps_figure(
        ctx, x, columns, maps, targets, probability, seconds_shown, layer, units, shown, score
    )
    result.figures["attribution_comparison"] = _comparison_figure(
        ctx, columns, maps, correlation, fractions, curves, auc, targets
    )
    return result


# ------------------------------------------------------------------------------------ figures
def draw_map(ax, map_2d: np.ndarray, image: np.ndarray, sign: str, outlier_perc: float, overlay: str) -> None:
    """One map as captum's ``visualize_image_attr`` draws it (sign, percentile clipping, overlay)."""
    from captum.attr import visualization

    selected = {
        "all": map_2d,
        "positive": np.maximum(map_2d, 0),
        "negative": np.minimum(map_2d, 0),
        "absolute_value": np.abs(map_2d),
    }[sign]
    # captum cannot scale an empty map, and draws a uniform one fully saturated: say what it is instead
    if not np.any(selected) or selected.max() == selected.min():
        if not np.any(map_2d):
            text = "all zero"
        elif not np.any(selected):
            text = f"no {sign} values"
        else:
            text = f"constant\n({float(selected.flat[0]):.3g} everywhere)"
        ax.imshow(image.mean(axis=2), cmap="gray", vmin=0, vmax=1, alpha=0.5)
        ax.text(
            0.5,
            0.5,
            text,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=10,
            color="darkred",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
        ax.set_xticks([]), ax.set_yticks([])
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "normalize by value approximately 0": tiny gradients are fine
        visualization.visualize_image_attr(
            map_2d[..., None],
            image,
            method=overlay,
            sign=sign,
            outlier_perc=outlier_perc,
            plt_fig_axis=(ax.figure, ax),
            use_pyplot=False,
        )


def _maps_figure(ctx, x, columns, maps, targets, probability, seconds, layer, units, shown, score):
    names = ctx.image_names()
    n, k = x.shape[0], len(columns)
    figure = new_figure(2.4 * (k + 1), 2.75 * n + 0.5)
    grid = figure.add_gridspec(n, k + 1, wspace=0.05, hspace=0.3)
    for i in range(n):
        image = vizkit.hwc(ctx.preprocess.denormalize(x[i].cpu()))
        ax = figure.add_subplot(grid[i, 0])
        vizkit.show(
            ax,
            image,
            f"{names[i]}\ntarget {ctx.label(int(targets[i]))} (p={probability[i]:.3g})",
            fontsize=7,
        )
        for j, column in enumerate(columns):
            ax = figure.add_subplot(grid[i, j + 1])
            draw_map(ax, maps[j, i], image, **shown)
            if i == 0:
                if column == DECONVNET:
                    title = f"vizkit deconvnet ({seconds[DECONVNET]:.2f} s)\n{layer} map {units[i]['channel']}"
                else:
                    title = f"{column}\n{make_method(column).label}\n{seconds[column]:.2f} s"
                ax.set_title(title, fontsize=8)
            elif column == DECONVNET:
                ax.set_title(f"map {units[i]['channel']}", fontsize=7)
    figure.suptitle(
        f"Attributions of the target's {score}, drawn as captum's visualize_image_attr ({shown['overlay']}, sign {shown['sign']}, outlier_perc {shown['outlier_perc']:g}); "
        "last column: vizkit's deconvnet projection of the layer unit contributing most to the target",
        fontsize=8,
    )
    return figure


def _comparison_figure(ctx, columns, maps, correlation, fractions, curves, auc, targets):
    from matplotlib import colormaps

    names = ctx.image_names()
    n, k = correlation.shape[0], len(columns)
    row_height = 3.4 + 0.15 * k
    figure = new_figure(4.0 + 0.3 * k + 7.5, row_height * n)
    made = figure.subfigures(n, 1, hspace=0.02)
    rows = list(np.ravel(made)) if isinstance(made, np.ndarray) else [made]
    # the method colours, without the greys of the random reference's dashed line
    base = colormaps["tab10"] if k <= 9 else colormaps["tab20"]
    grey = (7,) if base.N == 10 else (14, 15)
    colours = [base(c) for c in range(base.N) if c not in grey]
    for i, row in enumerate(rows):
        # one heading per image; the panels' own titles stay short, so nothing collides
        best = _best(columns, auc[:, i], maps[:, i])
        target = ctx.label(int(targets[i]))
        row.suptitle(f"{names[i]}  —  target {target}", fontsize=9, fontweight="bold", x=0.01, ha="left")
        grid = row.add_gridspec(
            1, 2, width_ratios=[1.0, 1.15], wspace=0.28, left=0.09, right=0.80, bottom=0.2, top=0.86
        )
        ax = row.add_subplot(grid[0, 0])
        shown = ax.imshow(correlation[i], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(k), columns, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(k), columns, fontsize=6)
        for p in range(k):
            for q in range(k):
                value = correlation[i, p, q]
                text = "—" if not np.isfinite(value) else f"{value:.2f}"
                ax.text(
                    q, p, text, ha="center", va="center", fontsize=5, color="white" if abs(value) > 0.6 else "black"
                )
        ax.set_title("Spearman rank correlation of |map|", fontsize=8)
        row.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)

        ax = row.add_subplot(grid[0, 1])
        for j in np.argsort(auc[:, i], kind="stable"):  # the legend lists the best first
            column = [*columns, "random"][j]
            style: dict[str, Any] = {"color": colours[j % len(colours)], "linestyle": "-"}
            if column == "random":
                style = {"color": "grey", "linestyle": "--"}
            elif column == DECONVNET:
                style = {"color": "black", "linestyle": ":"}
            note = ""
            if column != "random" and not _ranks_pixels(maps[j, i]):
                note = ", all zero: random order" if not np.any(maps[j, i]) else ", constant: random order"
            ax.plot(fractions, curves[j, i], label=f"{column} ({auc[j, i]:.3g}{note})", linewidth=1.2, **style)
        ax.set_xlabel("fraction of pixels removed, most |attributed| first", fontsize=7)
        ax.set_ylabel(f"p({target})", fontsize=7)
        ax.set_xlim(0, 1), ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=6,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0,
            title="map (AUC)",
            title_fontsize=6,
        )
        verdict = f"best: {best}" if best is not None else "no single best: tied or uniform maps"
        ax.set_title(f"deletion curves: lower AUC = the model depends on it ({verdict})", fontsize=8)
    return figure


@vizkit.hookimpl
def register_analyses(register) -> None:
    register(
        vizkit.Analysis(
            name="attribution",
            description="captum's attribution methods side by side with the deconvnet: maps, rank correlation, deletion curves",
            run=run,
            inputs="images",
            options=[
                vizkit.Option(
                    "method",
                    str,
                    "all",
                    help=f"comma-separated: {', '.join(METHODS)}, all (those eight), or nt-<method> for NoiseTunnel around it",
                    parse=parse_methods,
                ),
                vizkit.Option(
                    "target",
                    str,
                    "auto",
                    help="class to explain: auto (the model's top-1), an index or a label name; or one per image, comma-separated",
                ),
                vizkit.Option(
                    "layer",
                    str,
                    None,
                    help="module for layergradcam, guidedgradcam and the deconvnet column (default: the model's own, else its last module with spatial maps)",
                ),
                vizkit.Option(
                    "score",
                    str,
                    "logit",
                    help="what the methods explain: logit or probability (softmax)",
                    parse=_choice("--score", SCORES),
                ),
                vizkit.Option(
                    "steps",
                    int,
                    50,
                    help="integratedgradients: steps along the path (n_steps)",
                    minimum=1,
                    maximum=10_000,
                ),
                vizkit.Option(
                    "baseline",
                    str,
                    "mean",
                    help="colour of removed pixels (integratedgradients, occlusion, deletion): mean (zero after normalisation), zero (black) or R,G,B",
                ),
                vizkit.Option(
                    "window",
                    int,
                    32,
                    help="occlusion: side of the square window, in input pixels",
                    minimum=1,
                    maximum=4096,
                ),
                vizkit.Option(
                    "stride", int, 16, help="occlusion: step between windows, in input pixels", minimum=1, maximum=4096
                ),
                vizkit.Option(
                    "samples",
                    int,
                    10,
                    help="nt-<method>: noisy samples per image (nt_samples)",
                    minimum=1,
                    maximum=10_000,
                ),
                vizkit.Option(
                    "nt_type",
                    str,
                    "smoothgrad",
                    help=f"nt-<method>: how samples combine: {', '.join(NT_TYPES)}",
                    parse=_choice("--nt-type", NT_TYPES),
                ),
                vizkit.Option(
                    "stdev",
                    float,
                    0.15,
                    help="nt-<method>: noise std as a fraction of the input's range",
                    minimum=0,
                    exclusive_minimum=True,
                ),
                vizkit.Option(
                    "deletion_steps",
                    int,
                    20,
                    help="deletion curve: steps from 0 to 100% of the pixels removed",
                    minimum=1,
                    maximum=10_000,
                ),
                vizkit.Option(
                    "deletion_patch",
                    int,
                    16,
                    help="deletion curve: pixels go in squares of this side, by mean |attribution| (1: pixel by pixel)",
                    minimum=1,
                ),
                vizkit.Option(
                    "sign",
                    str,
                    "absolute_value",
                    help=f"figure: which values to show, as captum's visualize_image_attr: {', '.join(SIGNS)}",
                    parse=_choice("--sign", SIGNS),
                ),
                vizkit.Option(
                    "outlier_perc",
                    float,
                    2.0,
                    help="figure: the largest values, holding this percent of the total, are drawn saturated (captum's outlier_perc)",
                    minimum=0,
                    maximum=100,
                    exclusive_maximum=True,
                ),
                vizkit.Option(
                    "overlay",
                    str,
                    "blended_heat_map",
                    help=f"figure: captum's drawing method: {', '.join(OVERLAYS)}",
                    parse=_choice("--overlay", OVERLAYS),
                ),
                vizkit.Option(
                    "rule",
                    str,
                    "deconvnet",
                    registry="rules",
                    help="the comparison column's projection rule (the paper's deconvnet by default)",
                ),
            ],
            demo={
                "method": "saliency,integratedgradients,guidedbackprop,layergradcam",
                "steps": 16,
                "deletion_steps": 10,
            },
            demo_quick={"method": "saliency,layergradcam", "deletion_steps": 5},
        )
    )
