"""Recording: activations and max-pooling switches of any ``nn.Module``.

A :class:`Recorder` is a context manager. Inside it every forward records, for the requested
layers, the layer's output (copied only before an in-place op writes over it:
:mod:`vizkit.engine.kept`) and, for every max-pooling op, its switches (the argmax
indices). It works for models that are not Sequentials: pooling, ReLU and normalisation calls are
seen by a ``TorchFunctionMode`` whether a module or the model's own ``forward`` makes them, so
functional calls become layers too (:mod:`vizkit.engine.layers` says how layers are named). What a
forward records is its :class:`~vizkit.engine.settings.Settings`. Every hook and the mode are
removed on exit, also on error.

Non-finite values: the model's output (or the ``until`` layer's) and every activation read with
:meth:`Recorder.activation` are checked with one ``isfinite().all()`` each; when one holds NaN or
inf, the forward is run again checking every layer's output as it appears, and
:class:`~vizkit.engine.finite.NonFiniteActivation` names the first layer that produced them and
the image(s) (:mod:`vizkit.engine.finite`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from vizkit.engine import ops
from vizkit.engine.finite import FoundNonFinite, activation_error, all_finite, batch_size, input_error
from vizkit.engine.kept import KeptActivations
from vizkit.engine.layers import (
    LayerInfo,
    UnknownLayerError,
    functional_base,
    functional_layer,
    nth_call,
    unknown_layer_message,
)
from vizkit.engine.modes import exit_mode
from vizkit.engine.ops import PoolSwitches
from vizkit.engine.rules import ProjectionRule
from vizkit.engine.settings import KEEP, Settings
from vizkit.engine.tape import OpRecorder
from vizkit.errors import VizkitError


class _Stale(Exception):
    """A kept output held by reference was changed by an op the function mode did not see: the
    forward is run again copying every output (:mod:`vizkit.engine.kept`)."""


class _StopForward(BaseException):
    """Raised from a hook to end a forward pass once the layer of interest is computed. A
    BaseException (like KeyboardInterrupt), so that a model whose ``forward`` catches every
    ``Exception`` (a fallback path, a retry) does not swallow it and run on past the layer."""


@dataclass
class _Recording:
    """What one forward has recorded so far (replaced at the start of each forward)."""

    active: bool = False
    stack: list[tuple[str, nn.Module]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    infos: dict[str, LayerInfo] = field(default_factory=dict)
    kept: KeptActivations = field(default_factory=KeptActivations)
    records: dict[str, Any] = field(default_factory=dict)  # layer -> its op's forward record
    captured: dict[str, Tensor] = field(default_factory=dict)
    stop_at: str | None = None
    checked: set[str] = field(default_factory=set)  # activations found finite
    stopped: Tensor | None = None  # the ``until`` layer's output
    call: tuple[tuple, dict] = ((), {})  # the forward's other arguments (to run it again)

    @property
    def acts(self) -> dict[str, Tensor]:
        """Layer name -> kept output (read them with :meth:`KeptActivations.get`)."""
        return self.kept.values


class _Interceptor(TorchFunctionMode):
    """Routes the torch calls made during an instrumented forward to their handlers."""

    def __init__(self, owner: Recorder) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = self.owner
        rec = owner._rec
        if not rec.active:
            return func(*args, **kwargs)
        if rec.kept:  # outputs held by reference: copy those this call is about to overwrite
            rec.kept.before_write(func, args, kwargs)
        if owner._settings.rule is not None and not torch.is_grad_enabled():
            # the autograd projection's forward: a model that runs part of its forward under
            # torch.no_grad() (a frozen backbone under a trained head) would cut the layers
            # after it off from the input, and their projections would come back all zero
            with torch.enable_grad():
                return self.__torch_function__(func, types, args, kwargs)
        op = ops.op_of(func)
        settings = owner._settings
        if settings.tape is None and (op is None or (not op.layer and settings.rule is None)):
            # nothing to record: not a layer of its own (mul, view, silu, ...), no tape, no rule
            return func(*args, **kwargs)
        return owner._handle(func, op, args, kwargs)


class Recorder:
    """A model whose forwards record activations and switches: call it like the model.

    :class:`vizkit.Instrumented` adds projections to it; create one with
    :func:`vizkit.instrument` and use it as a context manager. What a forward records
    is its :attr:`settings`; change them for a block with :meth:`configured`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Iterable[str] | None = "all",
        switches: bool = True,
        check_finite: bool = True,
    ) -> None:
        self.model = model
        # the aliases of the model's vizkit_info (vizkit.models.ModelInfo, a layer above: read by
        # name), else its class's vizkit_aliases: the rule of vizkit.models.model_info
        stored = getattr(getattr(model, "vizkit_info", None), "aliases", None)
        self.aliases: dict[str, str] = dict(stored or getattr(model, "vizkit_aliases", None) or {})
        self._settings = Settings(
            layers=self._layer_set(layers), switches=bool(switches), check_finite=bool(check_finite)
        )
        self._names = {module: name for name, module in model.named_modules()}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._mode: _Interceptor | None = None
        self._rec = _Recording()
        self.input: Tensor | None = None
        self.output: Any = None
        # names an input row in NonFiniteActivation messages (vizkit.run matches image files)
        self.name_input: Callable[[Tensor], str | None] | None = None

    # ------------------------------------------------------------------ context management
    def __enter__(self) -> Recorder:
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
            exit_mode(mode)
        self._rec.active = False
        self._rec.stack.clear()

    # ------------------------------------------------------------------ configuration
    @property
    def settings(self) -> Settings:
        """What forwards record now (a frozen value: compare it, never mutate it)."""
        return self._settings

    @property
    def record_switches(self) -> bool:
        """Whether forwards record the max-pools' switches now (see :meth:`configured`)."""
        return self._settings.switches

    @contextmanager
    def configured(
        self,
        layers: str | Iterable[str] | None = KEEP,
        switches: bool = KEEP,
        rule: ProjectionRule | None = KEEP,
        tape: OpRecorder | None = KEEP,
        capture: str | None = KEEP,
        check_finite: bool = KEEP,
    ) -> Iterator[Recorder]:
        """Record differently inside a ``with`` block; the previous settings return on exit,
        also on error. ``layers``: "all", None (none) or names whose activations to keep;
        ``switches``: record max-pooling switches; ``check_finite``: refuse NaN/inf outputs and
        activations (:class:`NonFiniteActivation`). (``rule``, ``tape`` and ``capture`` are the
        projection engine's.)"""
        changes: dict[str, Any] = {}
        if layers is not KEEP:
            changes["layers"] = self._layer_set(layers)
        if switches is not KEEP:
            changes["switches"] = bool(switches)
        if rule is not KEEP:
            changes["rule"] = rule
        if tape is not KEEP:
            changes["tape"] = tape
        if capture is not KEEP:
            changes["capture"] = None if capture is None else self.resolve_alias(capture)
        if check_finite is not KEEP:
            changes["check_finite"] = bool(check_finite)
        with self._settings_changed(**changes):
            yield self

    @contextmanager
    def _settings_changed(self, **changes: Any) -> Iterator[None]:
        """The recording settings with ``changes`` inside the block, the previous ones after it
        (also on error): the one place settings are switched."""
        saved = self._settings
        self._settings = replace(saved, **changes)
        try:
            yield
        finally:
            self._settings = saved

    @contextmanager
    def _keeping_last_forward(self) -> Iterator[None]:
        """Forwards inside the block leave the user's last recorded forward (activations,
        switches, input and output) as it was."""
        saved = (self._rec, self.input, self.output)
        try:
            yield
        finally:
            self._rec, self.input, self.output = saved
            self._rec.active = False

    def _layer_set(self, layers: str | Iterable[str] | None) -> frozenset[str] | None:
        if layers == "all":
            return None
        if layers is None:
            return frozenset()
        if isinstance(layers, str):
            return frozenset({self.resolve_alias(layers)})
        return frozenset(self.resolve_alias(name) for name in layers)

    def resolve_alias(self, name: str) -> str:
        """The layer that alias ``name`` stands for (a name that is no alias, unchanged)."""
        return self.aliases.get(name, name)

    # ------------------------------------------------------------------ running
    def __call__(self, x: Tensor, *args: Any, until: str | None = None, **kwargs: Any) -> Any:
        """Run the model on ``x`` and record. With ``until``, stop once that layer is computed
        (the return value is then that layer's activation)."""
        if not self._handles:
            raise RuntimeError("use the instrumented model inside its `with` block")
        self.input = x.detach()
        stop = self.resolve_alias(until) if until is not None else None  # "" is a (bad) layer name
        try:
            self.output = self._forward(x, stop, *args, **kwargs)
        except _StopForward:
            self.output = None
            stopped = self._rec.stopped
            if self._settings.check_finite and stopped is not None and not all_finite(stopped):
                raise self.non_finite_error() from None
            return self._rec.kept.get(stop) if stop and stop in self._rec.acts else None
        if stop is not None:
            self._require(stop)
        if self._settings.check_finite and not all_finite(self.output):
            raise self.non_finite_error()
        return self.output

    def cast_input(self, x: Any) -> Any:
        """``x`` in the dtype the model computes in (that of its first floating parameter or
        buffer) when it is a floating tensor of another dtype: images are loaded, and analyses
        build occluded or transformed copies, in float32, and a float64, float16 or bfloat16
        model takes them all. The cast is differentiable (gradients reach ``x`` in its own dtype);
        anything else is returned unchanged."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            return x
        dtype = floating_dtype(self.model)
        return x if dtype is None or x.dtype == dtype else x.to(dtype)

    def non_finite_error(self, x: Tensor | None = None, what: str = "", name_from: Tensor | None = None) -> VizkitError:
        """The error for a forward of ``x`` (default: the last input, with its ``until``) whose
        output or one of whose activations is not finite: the forward is run again checking
        every layer's output as it appears, and the first non-finite one is named, with the
        images affected (named by :attr:`name_input` from ``name_from``'s rows, default
        ``x``'s). ``what`` says how ``x`` was made from them (e.g. "occluded at (8, 16)").
        An input that is itself not finite gives :class:`NonFiniteInput` instead."""
        args, kwargs = self._rec.call if x is None else ((), {})
        stop = self._rec.stop_at if x is None else None
        x = self.input if x is None else x
        if x is None:
            raise VizkitError("run a forward pass first")
        bad_input = input_error(x, partial(self._name_row, x))
        if bad_input is not None:
            return bad_input
        found: FoundNonFinite | None = None
        with (
            self._keeping_last_forward(),
            self.configured(layers=None, switches=False, rule=None, tape=None, capture=None),
            self._settings_changed(locate=True, check_finite=False),
            torch.no_grad(),
        ):
            try:
                output = self._forward(x, stop, *args, **kwargs)
            except _StopForward:
                output = None
            except FoundNonFinite as error:
                found, output = error, None
            types = {name: info.type for name, info in self._rec.infos.items()}
        source = x if name_from is None else name_from
        return activation_error(found, output, batch_size(x), types, partial(self._name_row, source), what)

    def _name_row(self, x: Tensor, row: int) -> str | None:
        if self.name_input is None or x.dim() != 4 or row >= x.shape[0]:
            return None
        try:
            return self.name_input(x[row])
        except Exception:  # naming is a courtesy: never hide the error behind another one
            return None

    def _forward(self, x: Tensor, stop: str | None, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._run_model(x, stop, args, kwargs)
        except _Stale:  # an output kept by reference was overwritten unseen: copy them all
            with self._settings_changed(copy_kept=True):
                return self._run_model(x, stop, args, kwargs)

    def _run_model(self, x: Tensor, stop: str | None, args: tuple, kwargs: dict) -> Any:
        self._stop_next = stop  # read by the root pre-hook, which starts the recording
        self._call_next = (args, kwargs)
        try:
            output = self.model(self.cast_input(x), *args, **kwargs)
        except _StopForward:
            if self._rec.kept.stale:
                raise _Stale from None
            raise
        finally:
            self._stop_next = None
            self._rec.active = False
        if self._rec.kept.stale:
            raise _Stale
        return output

    def run_capturing(
        self,
        x: Tensor,
        layer: str,
        rule: ProjectionRule | None = None,
        tape: OpRecorder | None = None,
    ) -> Tensor:
        """Forward ``x`` up to ``layer`` and return that layer's output *with* its autograd graph.

        With a ``rule`` the ReLUs and normalisation layers behave as the rule says going down,
        so that back-propagation from the layer is that rule's projection (None: plain
        autograd). With ``tape`` every op is recorded for an explicit reverse pass. Nothing is
        recorded as an activation, and the activations of the last ordinary forward are kept.
        """
        _output, captured = self._isolated_forward(x, layer, rule, tape, stop=True)
        return captured

    def run_with_rule(self, x: Tensor, rule: ProjectionRule) -> Any:
        """The model's whole forward of ``x`` *with* its autograd graph, the ReLUs and
        normalisation layers behaving as ``rule`` says going down: back-propagating a seed from
        the output is that rule's projection of the output units (the class scores). Nothing is
        recorded, and the activations of the last ordinary forward are kept."""
        with self._keeping_last_forward(), self.configured(layers=None, switches=False, rule=rule):
            return self._forward(x, None)

    def trace(self, x: Tensor, tape: OpRecorder, layer: str) -> tuple[Any, Tensor]:
        """A whole forward of ``x`` recording every op on ``tape``; returns the model output and
        ``layer``'s output (both the live tensors the tape knows). ``layer``'s entry on the tape
        is ``tape.captured_index``: an in-place op after the layer may have taken over its
        tensor (``tape.index`` of it then names that op)."""
        return self._isolated_forward(x, layer, None, tape, stop=False)

    def _isolated_forward(
        self, x: Tensor, layer: str, rule: ProjectionRule | None, tape: OpRecorder | None, stop: bool
    ) -> tuple[Any, Tensor]:
        layer = self.resolve_alias(layer)
        switches = tape is not None and stop  # the explicit deconvnet unpools with them
        with (
            self._keeping_last_forward(),
            self.configured(layers=None, switches=switches, rule=rule, tape=tape, capture=layer),
        ):
            output = None
            with suppress(_StopForward):
                output = self._forward(x, layer if stop else None)
            if layer not in self._rec.captured:
                self._require(layer)
                raise VizkitError(f"layer '{layer}' does not output a tensor")
            return output, self._rec.captured[layer]

    # ------------------------------------------------------------------ reading results
    @property
    def layers(self) -> list[str]:
        """Names of the layers seen in the last forward, in the order their outputs appeared."""
        return list(self._rec.infos)

    def layer_infos(self) -> list[LayerInfo]:
        """What the last forward saw of each layer, in the order of :attr:`layers`."""
        return list(self._rec.infos.values())

    @property
    def pools(self) -> list[str]:
        """Names of the max-pooling layers whose switches the last forward recorded."""
        return [name for name, record in self._rec.records.items() if isinstance(record, PoolSwitches)]

    def info(self, layer: str) -> LayerInfo:
        """What the last forward saw of ``layer`` (an alias allowed); an unknown layer is an error
        listing the valid ones."""
        return self._rec.infos[self._require(layer)]

    def activation(self, layer: str) -> Tensor:
        """The recorded output of ``layer`` in the last forward, detached: the layer's own
        output tensor, copied only if the forward wrote over it (:mod:`vizkit.engine.kept`), so
        clone it before changing it; one changed in place after the forward is refused.

        With ``check_finite`` (the default) an activation holding NaN or inf raises
        :class:`NonFiniteActivation` naming the first layer that produced them."""
        name = self._require(layer)
        rec = self._rec
        if name not in rec.acts:
            raise VizkitError(f"layer '{name}' was not recorded; pass it to instrument(..., layers=[...])")
        act = rec.kept.get(name)
        if self._settings.check_finite and name not in rec.checked:
            if not all_finite(act):
                raise self.non_finite_error()
            rec.checked.add(name)
        return act

    def current_module(self) -> str:
        """The module whose forward is running now ("" for the model's own, or outside a
        forward): what a tape notes as the maker of each call."""
        stack = self._rec.stack
        return stack[-1][0] if self._rec.active and stack else ""

    def switches(self, layer: str) -> Tensor:
        """The argmax indices of the max-pool ``layer`` in the last forward."""
        return self.pool_switches(layer).indices

    def pool_switches(self, layer: str) -> PoolSwitches:
        """The switches the max-pool ``layer`` recorded in the last forward, with what unpooling
        with them needs (input shape, window)."""
        name = self._require(layer)
        switches = self._rec.records.get(name)
        if not isinstance(switches, PoolSwitches):
            pools = ", ".join(self.pools) or "none"
            raise VizkitError(f"layer '{name}' is not a max-pool with switches (pools: {pools})")
        return switches

    def _require(self, layer: str) -> str:
        name = self.resolve_alias(layer)
        if name in self._rec.infos:
            return name
        if not self._rec.infos:
            raise VizkitError("run a forward pass first: the layers are known after one")
        raise UnknownLayerError(unknown_layer_message(name, list(self._rec.infos) + list(self.aliases)))

    def convolutions(self, x: Tensor, until: str | None = None) -> list[tuple[str, nn.Conv2d]]:
        """The ``nn.Conv2d`` modules a forward of ``x`` runs (up to ``until``), in order.

        The first one is the model's first layer, the one Fig. 6 and Fig. 2's layer-1 panels
        draw as filters. The activations recorded by the last ordinary forward are kept.
        """
        with (
            self._keeping_last_forward(),
            self.configured(layers=None, switches=False, check_finite=False),  # a probe, not the user's data
            torch.no_grad(),
        ):
            self(x[:1], until=until)
            ran = list(self._rec.infos)
        modules = dict(self.model.named_modules())
        return [(name, modules[name]) for name in ran if isinstance(modules.get(name), nn.Conv2d)]

    # ------------------------------------------------------------------ hooks
    _stop_next: str | None = None
    _call_next: tuple[tuple, dict] = ((), {})

    def _root_pre(self, module: nn.Module, args: Any) -> None:
        x = args[0] if args and isinstance(args[0], Tensor) else None
        self._rec = _Recording(
            active=True,
            stack=[("", module)],
            stop_at=self._stop_next,
            call=self._call_next,
            kept=KeptActivations(copy_all=self._settings.copy_kept, protected=x),
        )
        tape = self._settings.tape
        if tape is not None and x is not None:
            tape.input(x)

    def _root_post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._rec.active = False
        self._rec.kept.seal(output)

    def _make_pre(self, name: str) -> Callable:
        def pre(module: nn.Module, args: Any) -> None:
            rec = self._rec
            if not rec.active:
                return
            rec.stack.append((nth_call(rec.calls, name), module))

        return pre

    def _make_post(self, name: str) -> Callable:
        def post(module: nn.Module, args: Any, output: Any) -> None:
            rec = self._rec
            if not rec.active or len(rec.stack) < 2:
                return
            layer, _ = rec.stack.pop()
            self._record(layer, type(module).__name__, False, output)

        return post

    def _record(self, layer: str, type_name: str, functional: bool, output: Any) -> None:
        rec, settings = self._rec, self._settings
        is_tensor = isinstance(output, Tensor)
        rec.infos[layer] = LayerInfo(
            name=layer,
            type=type_name,
            functional=functional,
            shape=tuple(output.shape) if is_tensor else None,
            has_switches=isinstance(rec.records.get(layer), PoolSwitches),
        )
        if is_tensor:
            if settings.locate and output.is_floating_point() and not bool(torch.isfinite(output).all()):
                raise FoundNonFinite(layer, output.detach())
            if settings.layers is None or layer in settings.layers:
                # the forward ends at ``until``, so nothing can change that output: no copy needed
                rec.kept.keep(layer, output, copy=layer != rec.stop_at)
            if layer == settings.capture:
                rec.captured[layer] = output
                if settings.tape is not None:
                    settings.tape.captured_index = settings.tape.index(output)
        if layer == rec.stop_at:
            rec.stopped = output if is_tensor else None
            raise _StopForward

    # ------------------------------------------------------------------ intercepted calls
    def _handle(self, func: Callable, op: ops.Op | None, args: tuple, kwargs: dict) -> Any:
        rec, settings = self._rec, self._settings
        top_name, top_module = rec.stack[-1]
        # a functional pool/ReLU/norm called from a composite module's forward is a layer itself
        functional = functional_layer(op, top_module)
        layer = top_name if functional is None else nth_call(rec.calls, functional_base(top_name, functional))
        if op is None:
            output, record = func(*args, **kwargs), None
        else:
            wanted = settings.switches and (settings.tape is not None or not op.tape_only_record)
            output, record = op.forward(func, args, kwargs, settings.rule, wanted)
        if record is not None:
            rec.records[layer] = record
        if settings.tape is not None:
            settings.tape.record(func, op, args, kwargs, output, record)
        if functional is not None:
            self._record(layer, f"F.{functional.name}", True, output)
        return output


def floating_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first floating parameter (else buffer); None: it has neither."""
    for tensors in (model.parameters(), model.buffers()):
        for tensor in tensors:
            if tensor.is_floating_point():
                return tensor.dtype
    return None
