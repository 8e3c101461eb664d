"""The captum attribution methods the analysis runs, each one object: how to build captum's
explainer on the canonical copy of the model, its keyword arguments, and how its output becomes
an [N, C, H, W] map; :class:`NoiseTunnel` wraps any of them (``nt-<method>``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import vizkit
from vizkit.engine import CanonicalModel

NT_PREFIX = "nt-"
NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
DECONVNET = "deconvnet"  # the column of vizkit's own projection, beside the methods' columns


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


DESCRIPTIONS = {  # what `vizkit list` and `sanity --help` say of each method as a map method
    "saliency": "captum Saliency: |gradient| of the class score",
    "inputxgradient": "captum InputXGradient: input times gradient",
    "integratedgradients": "captum IntegratedGradients from the --baseline image (--steps)",
    "guidedbackprop": "captum GuidedBackprop: gradient with negative signals stopped at every ReLU",
    "deconvolution": "captum Deconvolution: the deconvnet rule from the class score",
    "guidedgradcam": "captum GuidedGradCam at the layer: guided backprop times Grad-CAM",
    "layergradcam": "captum LayerGradCam at the layer, upsampled (bilinear)",
    "occlusion": "captum Occlusion: the score's drop under a --window square of --baseline colour",
}


def captum_map(name: str, request: vizkit.MapRequest) -> Tensor:
    """Method ``name``'s [N, H, W] maps (channels summed) of ``request``, on captum's canonical
    copy of the request's model (the model itself is not hooked)."""
    method = make_method(name, request.seed)
    layer = request.layer if method.needs_layer else None
    canonical = CanonicalModel.build(request.model, request.x, layer=layer)
    if layer is not None and canonical.layer_calls != 1:
        raise vizkit.UsageError(
            f"--layer '{layer}' runs {canonical.layer_calls} times in one forward; {name} needs a module that runs once"
        )
    module = canonical.layer(layer) if layer is not None else canonical  # unused without a layer
    settings = MethodSettings(
        steps=int(request.options.get("steps", 50)),
        baseline=request.baseline,
        window=int(request.options.get("window", 32)),
        stride=int(request.options.get("stride", 16)),
        batch_size=request.batch_size,
    )
    values = method.attribute(canonical, module, request.x, request.targets, settings)
    return values.float().sum(dim=1)
