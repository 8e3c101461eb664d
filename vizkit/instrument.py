"""Instrumentation: record activations and max-pooling switches of any ``nn.Module``.

``instrument(model)`` is a context manager. Inside it every forward records, for the requested
layers, a clone of the layer's output and, for every max-pooling op, its switches (the argmax
indices). It works for models that are not Sequentials: pooling, ReLU and normalisation calls are
seen by a ``TorchFunctionMode`` whether a module or the model's own ``forward`` makes them, so
functional calls (``F.max_pool2d`` in torchvision's Inception) become layers named
``<module>.<op>``. A module (or functional op) called more than once per forward gets one layer
per call: ``relu``, ``relu#1``, ... . Every hook and the mode are removed on exit, also on error.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from vizkit import ops
from vizkit.errors import UsageError, VizkitError


class UnknownLayerError(UsageError, KeyError):
    """A layer name that the model does not have."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once the layer of interest is computed."""


@dataclass(frozen=True)
class LayerInfo:
    """One layer as seen in the last forward: a module call or a functional op call."""

    name: str
    type: str  # module class name, or "F.<op>" for a functional call
    functional: bool
    shape: tuple[int, ...] | None  # output shape, None for non-tensor outputs
    has_switches: bool


@dataclass(frozen=True)
class PoolSwitches:
    """The switches of one max-pooling call and the parameters needed to unpool with them."""

    indices: Tensor  # [B, C, h, w], flat index into each input plane (H*W)
    input_shape: tuple[int, ...]
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool


class _Interceptor(TorchFunctionMode):
    """Routes the torch calls made during an instrumented forward to their handlers."""

    def __init__(self, owner: "Instrumented") -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = self.owner
        if not owner._active:
            return func(*args, **kwargs)
        op = ops.op_of(func)
        if op is None and owner._tape is None:
            return func(*args, **kwargs)
        return owner._handle(func, op, args, kwargs)


class _DeconvReLU(torch.autograd.Function):
    """ReLU going up, ReLU of the incoming signal going down (the deconvnet's rectification)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D401
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward keeps only positive signal at units that were active going up."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D401
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


RELU_RULES = {"deconvnet": _DeconvReLU, "guided": _GuidedReLU}


class Instrumented:
    """An instrumented model: call it like the model; read activations, switches, projections.

    Create it with :func:`instrument` and use it as a context manager.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Iterable[str] | None = "all",
        switches: bool = True,
    ) -> None:
        self.model = model
        self.aliases: dict[str, str] = dict(getattr(model, "vizkit_aliases", {}) or {})
        self.record_switches = switches
        self._wanted: set[str] | None = None
        self.set_layers(layers)
        self._names = {module: name for name, module in model.named_modules()}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mode: _Interceptor | None = None
        # per-forward state
        self._active = False
        self._stack: list[tuple[str, nn.Module]] = []
        self._calls: Counter[str] = Counter()
        self._infos: dict[str, LayerInfo] = {}
        self._acts: dict[str, Tensor] = {}
        self._switches: dict[str, PoolSwitches] = {}
        self._stop_at: str | None = None
        self._capture: dict[str, Tensor] = {}
        self._capture_layer: str | None = None
        self._rule: str | None = None
        self._tape: Any = None
        self.input: Tensor | None = None
        self.output: Any = None

    # ------------------------------------------------------------------ context management
    def __enter__(self) -> "Instrumented":
        if self._handles:
            raise RuntimeError("this Instrumented is already active")
        try:
            root = self.model
            self._handles.append(root.register_forward_pre_hook(self._root_pre))
            self._handles.append(root.register_forward_hook(self._root_post, always_call=True))
            for name, module in root.named_modules():
                if module is root:
                    continue
                self._handles.append(module.register_forward_pre_hook(self._make_pre(name)))
                self._handles.append(module.register_forward_hook(self._make_post(name)))
            self._mode = _Interceptor(self)
            self._mode.__enter__()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)
        self._active = False
        self._stack.clear()

    # ------------------------------------------------------------------ configuration
    def set_layers(self, layers: str | Iterable[str] | None) -> None:
        """Choose the layers whose activations are recorded: "all", None (none) or names."""
        if layers == "all":
            self._wanted = None
        elif layers is None:
            self._wanted = set()
        elif isinstance(layers, str):
            self._wanted = {self.resolve_alias(layers)}
        else:
            self._wanted = {self.resolve_alias(name) for name in layers}

    def resolve_alias(self, name: str) -> str:
        return self.aliases.get(name, name)

    # ------------------------------------------------------------------ running
    def __call__(self, x: Tensor, *args: Any, until: str | None = None, **kwargs: Any) -> Any:
        """Run the model on ``x`` and record. With ``until``, stop once that layer is computed
        (the return value is then that layer's activation)."""
        if not self._handles:
            raise RuntimeError("use the instrumented model inside its `with` block")
        self.input = x.detach()
        stop = self.resolve_alias(until) if until else None
        self._stop_at = stop
        try:
            self.output = self.model(x, *args, **kwargs)
        except _StopForward:
            self.output = None
            return self._acts.get(stop)
        finally:
            self._stop_at = None
            self._active = False
        if stop is not None:
            self._require(stop)
        return self.output

    def run_capturing(
        self,
        x: Tensor,
        layer: str,
        rule: str | None = None,
        tape: Any = None,
    ) -> Tensor:
        """Forward ``x`` up to ``layer`` and return that layer's output *with* its autograd graph.

        With ``rule="deconvnet"`` the ReLUs rectify the signal going down and normalisation is
        bypassed, so that back-propagation from the layer is the deconvnet projection
        (``"guided"``: guided back-propagation; None or ``"gradient"``: plain autograd). With
        ``tape`` every op is recorded for an explicit reverse pass. Nothing is recorded as an
        activation, and the activations of the last ordinary forward are kept.
        """
        output, captured = self._isolated_forward(x, layer, rule, tape, stop=True)
        return captured

    def trace(self, x: Tensor, tape: Any, layer: str) -> tuple[Any, Tensor]:
        """A whole forward of ``x`` recording every op on ``tape``; returns the model output and
        ``layer``'s output (both the live tensors the tape knows)."""
        return self._isolated_forward(x, layer, None, tape, stop=False)

    def _isolated_forward(self, x: Tensor, layer: str, rule: str | None, tape: Any, stop: bool) -> tuple[Any, Tensor]:
        layer = self.resolve_alias(layer)
        saved = (self._wanted, self.record_switches)
        recorded = (self._infos, self._acts, self._switches)  # the user's last forward stays
        self._wanted, self.record_switches = set(), tape is not None and stop
        self._capture = {}
        self._rule, self._tape = rule, tape
        self._stop_at = layer if stop else None
        self._capture_layer = layer
        output = None
        try:
            try:
                output = self.model(x)
            except _StopForward:
                pass
            if layer not in self._capture:
                self._require(layer)
                raise VizkitError(f"layer '{layer}' does not output a tensor")
            return output, self._capture[layer]
        finally:
            self._wanted, self.record_switches = saved
            self._infos, self._acts, self._switches = recorded
            self._rule, self._tape, self._stop_at = None, None, None
            self._capture, self._capture_layer = {}, None
            self._active = False

    # ------------------------------------------------------------------ reading results
    @property
    def layers(self) -> list[str]:
        """Names of the layers seen in the last forward, in the order their outputs appeared."""
        return list(self._infos)

    def layer_infos(self) -> list[LayerInfo]:
        return list(self._infos.values())

    @property
    def pools(self) -> list[str]:
        """Names of the max-pooling layers whose switches the last forward recorded."""
        return list(self._switches)

    def info(self, layer: str) -> LayerInfo:
        return self._infos[self._require(layer)]

    def activation(self, layer: str) -> Tensor:
        """The recorded output of ``layer`` in the last forward (a clone, detached)."""
        name = self._require(layer)
        if name not in self._acts:
            raise VizkitError(
                f"layer '{name}' was not recorded; pass it to instrument(..., layers=[...])"
            )
        return self._acts[name]

    def switches(self, layer: str) -> Tensor:
        """The argmax indices of the max-pool ``layer`` in the last forward."""
        return self.pool_switches(layer).indices

    def pool_switches(self, layer: str) -> PoolSwitches:
        name = self._require(layer)
        if name not in self._switches:
            pools = ", ".join(self._switches) or "none"
            raise VizkitError(f"layer '{name}' is not a max-pool with switches (pools: {pools})")
        return self._switches[name]

    def _require(self, layer: str) -> str:
        name = self.resolve_alias(layer)
        if name in self._infos:
            return name
        if not self._infos:
            raise VizkitError("run a forward pass first: the layers are known after one")
        raise UnknownLayerError(unknown_layer_message(name, list(self._infos) + list(self.aliases)))

    def convolutions(self, x: Tensor, until: str | None = None) -> list[tuple[str, nn.Conv2d]]:
        """The ``nn.Conv2d`` modules a forward of ``x`` runs (up to ``until``), in order.

        The first one is the model's first layer, the one Fig. 6 and Fig. 2's layer-1 panels
        draw as filters. The activations recorded by the last ordinary forward are kept.
        """
        saved = (self._wanted, self._infos, self._acts, self._switches, self.input, self.output)
        self._wanted = set()
        try:
            with torch.no_grad():
                self(x[:1], until=until)
            ran = list(self._infos)
        finally:
            self._wanted, self._infos, self._acts, self._switches, self.input, self.output = saved
        modules = dict(self.model.named_modules())
        return [(name, modules[name]) for name in ran if isinstance(modules.get(name), nn.Conv2d)]

    def project(self, layer: str, channel: int | Sequence[int], **options: Any) -> Tensor:
        """Deconvnet projection of the last input's ``layer``/``channel`` to pixel space.

        ``channel`` an int gives [B,3,H,W]; a list gives [B,k,3,H,W]. Options are those of
        :func:`vizkit.deconv.project` (``position``, ``target``, ``method``).
        """
        from vizkit.deconv import project

        if self.input is None:
            raise VizkitError("run a forward pass first: project() projects the last input")
        single = isinstance(channel, int)
        channels = [channel] if single else list(channel)
        result = project(self, self.input, layer, channels, **options)
        return result.images[:, 0] if single else result.images

    # ------------------------------------------------------------------ hooks
    def _root_pre(self, module: nn.Module, args: Any) -> None:
        self._active = True
        self._stack = [("", module)]
        self._calls = Counter()
        self._infos = {}
        self._acts = {}
        self._switches = {}
        if self._tape is not None and args and isinstance(args[0], Tensor):
            self._tape.input(args[0])

    def _root_post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._active = False

    def _make_pre(self, name: str) -> Callable:
        def pre(module: nn.Module, args: Any) -> None:
            if not self._active:
                return
            count = self._calls[name]
            self._calls[name] += 1
            self._stack.append((name if count == 0 else f"{name}#{count}", module))

        return pre

    def _make_post(self, name: str) -> Callable:
        def post(module: nn.Module, args: Any, output: Any) -> None:
            if not self._active or len(self._stack) < 2:
                return
            layer, _ = self._stack.pop()
            self._record(layer, type(module).__name__, False, output)

        return post

    def _record(self, layer: str, type_name: str, functional: bool, output: Any) -> None:
        is_tensor = isinstance(output, Tensor)
        self._infos[layer] = LayerInfo(
            name=layer,
            type=type_name,
            functional=functional,
            shape=tuple(output.shape) if is_tensor else None,
            has_switches=layer in self._switches,
        )
        if is_tensor:
            if self._wanted is None or layer in self._wanted:
                # the forward ends at ``until``, so nothing can change that output: no copy needed
                self._acts[layer] = output.detach() if layer == self._stop_at else output.detach().clone()
            if layer == self._capture_layer:
                self._capture[layer] = output
        if layer == self._stop_at:
            raise _StopForward

    # ------------------------------------------------------------------ intercepted calls
    def _handle(self, func: Callable, op: str | None, args: tuple, kwargs: dict) -> Any:
        top_name, top_module = self._stack[-1]
        owner = ops.OWNER_TYPES.get(op) if op else None
        own_call = owner is not None and isinstance(top_module, owner)
        if own_call or op not in ops.LAYER_OPS:
            layer = top_name
        else:  # a functional pool/ReLU/norm called from a composite module's forward
            base = f"{top_name}.{op}" if top_name else op
            count = self._calls[base]
            self._calls[base] += 1
            layer = base if count == 0 else f"{base}#{count}"

        if op == "max_pool2d" and self.record_switches:
            output = self._max_pool(layer, args, kwargs)
        elif op == "relu" and self._rule in RELU_RULES:
            output = RELU_RULES[self._rule].apply(args[0] if args else kwargs["input"])
        elif op in ops.NORMALISATION_OPS and self._rule in RELU_RULES:
            x = args[0] if args else kwargs["input"]
            with torch.no_grad():
                normalised = func(*args, **kwargs)
            output = x + (normalised - x).detach()  # identity going down
        else:
            output = func(*args, **kwargs)

        if self._tape is not None:
            self._tape.record(func, op, args, kwargs, output, self._switches.get(layer))
        if op in ops.LAYER_OPS and not own_call:
            self._record(layer, f"F.{op}", True, output)
        return output

    def _max_pool(self, layer: str, args: tuple, kwargs: dict) -> Any:
        p = ops.bind("max_pool2d", args, kwargs)
        x = p["input"]
        stride = p["stride"] if p["stride"] not in (None, [], ()) else p["kernel_size"]
        out, idx = F.max_pool2d_with_indices(
            x, p["kernel_size"], stride, p["padding"], p["dilation"],
            ceil_mode=p["ceil_mode"], return_indices=True,
        )
        self._switches[layer] = PoolSwitches(
            indices=idx,
            input_shape=tuple(x.shape),
            kernel_size=ops.pair(p["kernel_size"]),
            stride=ops.pair(stride),
            padding=ops.pair(p["padding"]),
            dilation=ops.pair(p["dilation"]),
            ceil_mode=bool(p["ceil_mode"]),
        )
        return (out, idx) if p["return_indices"] else out


def unknown_layer_message(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown layer '{name}'{hint}; valid layers: {', '.join(valid)}"


def instrument(
    model: nn.Module,
    layers: str | Iterable[str] | None = "all",
    switches: bool = True,
) -> Instrumented:
    """Instrument ``model`` for the duration of a ``with`` block.

    ``layers``: "all" (default), None, or the names whose activations to record (clones).
    ``switches``: record the argmax indices of every max-pool (needed by the explicit deconvnet).
    """
    return Instrumented(model, layers=layers, switches=switches)


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Number of hooks of each kind left on ``model`` and its submodules (0 when clean)."""
    kinds = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_always_called",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
    )
    counts = {kind: 0 for kind in kinds}
    for module in model.modules():
        for kind in kinds:
            counts[kind] += len(getattr(module, kind, {}) or {})
    return counts
