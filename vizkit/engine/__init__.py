"""``vizkit.engine``: recording forwards and projecting what they saw.

The engine instruments any torch model (hooks and op interception, always removed on exit),
records activations and max-pooling switches, reverses the recorded forward op by op (the paper's
deconvnet) or by autograd, and steps occlusion through a network incrementally. It imports
nothing else of vizkit but ``vizkit.errors``.

Public names:

* recording: :func:`instrument`, :class:`Instrumented`, :class:`Settings` (scoped settings),
  :class:`LayerInfo`, :func:`hook_counts` (hooks left on a model: 0 when clean),
  :class:`UnknownLayerError`, :class:`NonFiniteActivation`;
* projecting: :func:`project`, :func:`project_class` (a class score down to the pixels),
  :class:`Projection`, :func:`project_units` (many single units at once, each on its
  receptive-field cut: top9's winners) with :class:`UnitProjections`, :func:`to_image`,
  :func:`receptive_boxes`, :func:`support_box`, and the
  rules a projection crosses a ReLU with: :class:`ProjectionRule` (subclass it for your own),
  :class:`DeconvnetRule` (the paper's), :class:`GuidedRule`, :class:`GradientRule`;
* occlusion: :class:`IncrementalOcclusion` (re-runs only the part of the network a patch
  reaches), :class:`OcclusionCost`;
* canonical copies: :class:`CanonicalModel`, :func:`hook_free_copy` (a private copy of a model
  whose every ReLU call goes through a module of its own, for attribution libraries);
* the op table: :class:`Op` (one kind of torch call and all vizkit does with it),
  :func:`register_op`, :func:`unregister_op`, :func:`op_of`, and :mod:`ops`
  (``vizkit.engine.ops``: the built-in ops to subclass, e.g. ``ops.MaxPool2d``, and
  ``ops.PoolSwitches``); its docstring says how to add an op;
* probabilistic max-pooling (Lee et al., ICML 2009): :func:`prob_max_pool2d`,
  :class:`ProbMaxPool2d`, :func:`prob_max_pool_probabilities`, and :func:`switch_mode`, the
  scoped choice of the switches a projection crosses them by (``argmax``, ``expected``,
  ``sampled``) with its :class:`SwitchMode`.

Other modules inside (``recorder``, ``deconv``, ...) are internal: their names may change.
"""

from typing import TYPE_CHECKING

from vizkit._lazy import attach

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from vizkit.engine import ops
    from vizkit.engine.batched import UnitProjections, project_units
    from vizkit.engine.canonical import CanonicalModel, hook_free_copy
    from vizkit.engine.deconv import Projection, project, project_class, receptive_boxes, support_box, to_image
    from vizkit.engine.finite import NonFiniteActivation
    from vizkit.engine.geometry import Window
    from vizkit.engine.incremental import IncrementalOcclusion, OcclusionCost
    from vizkit.engine.instrumented import Instrumented, hook_counts, instrument
    from vizkit.engine.layers import LayerInfo, UnknownLayerError
    from vizkit.engine.ops import Op, op_of, register_op, unregister_op
    from vizkit.engine.ops.probpool import (
        ProbMaxPool2d,
        SwitchMode,
        prob_max_pool2d,
        prob_max_pool_probabilities,
        switch_mode,
    )
    from vizkit.engine.rules import DeconvnetRule, GradientRule, GuidedRule, ProjectionRule
    from vizkit.engine.settings import Settings


_LAZY = {
    "instrument": ("vizkit.engine.instrumented", "instrument"),
    "Instrumented": ("vizkit.engine.instrumented", "Instrumented"),
    "hook_counts": ("vizkit.engine.instrumented", "hook_counts"),
    "Settings": ("vizkit.engine.settings", "Settings"),
    "LayerInfo": ("vizkit.engine.layers", "LayerInfo"),
    "UnknownLayerError": ("vizkit.engine.layers", "UnknownLayerError"),
    "NonFiniteActivation": ("vizkit.engine.finite", "NonFiniteActivation"),
    "project": ("vizkit.engine.deconv", "project"),
    "project_class": ("vizkit.engine.deconv", "project_class"),
    "project_units": ("vizkit.engine.batched", "project_units"),
    "UnitProjections": ("vizkit.engine.batched", "UnitProjections"),
    "Projection": ("vizkit.engine.deconv", "Projection"),
    "to_image": ("vizkit.engine.deconv", "to_image"),
    "receptive_boxes": ("vizkit.engine.deconv", "receptive_boxes"),
    "support_box": ("vizkit.engine.deconv", "support_box"),
    "ProjectionRule": ("vizkit.engine.rules", "ProjectionRule"),
    "DeconvnetRule": ("vizkit.engine.rules", "DeconvnetRule"),
    "GuidedRule": ("vizkit.engine.rules", "GuidedRule"),
    "GradientRule": ("vizkit.engine.rules", "GradientRule"),
    "IncrementalOcclusion": ("vizkit.engine.incremental", "IncrementalOcclusion"),
    "OcclusionCost": ("vizkit.engine.incremental", "OcclusionCost"),
    "CanonicalModel": ("vizkit.engine.canonical", "CanonicalModel"),
    "hook_free_copy": ("vizkit.engine.canonical", "hook_free_copy"),
    "ops": ("vizkit.engine.ops", None),
    "Window": ("vizkit.engine.geometry", "Window"),
    "Op": ("vizkit.engine.ops", "Op"),
    "register_op": ("vizkit.engine.ops", "register_op"),
    "unregister_op": ("vizkit.engine.ops", "unregister_op"),
    "op_of": ("vizkit.engine.ops", "op_of"),
    "prob_max_pool2d": ("vizkit.engine.ops.probpool", "prob_max_pool2d"),
    "prob_max_pool_probabilities": ("vizkit.engine.ops.probpool", "prob_max_pool_probabilities"),
    "ProbMaxPool2d": ("vizkit.engine.ops.probpool", "ProbMaxPool2d"),
    "switch_mode": ("vizkit.engine.ops.probpool", "switch_mode"),
    "SwitchMode": ("vizkit.engine.ops.probpool", "SwitchMode"),
}
__all__ = [
    "CanonicalModel",
    "DeconvnetRule",
    "GradientRule",
    "GuidedRule",
    "IncrementalOcclusion",
    "Instrumented",
    "LayerInfo",
    "NonFiniteActivation",
    "OcclusionCost",
    "Op",
    "ProbMaxPool2d",
    "Projection",
    "ProjectionRule",
    "Settings",
    "SwitchMode",
    "UnitProjections",
    "UnknownLayerError",
    "Window",
    "hook_counts",
    "hook_free_copy",
    "instrument",
    "op_of",
    "ops",
    "prob_max_pool2d",
    "prob_max_pool_probabilities",
    "project",
    "project_class",
    "project_units",
    "receptive_boxes",
    "register_op",
    "support_box",
    "switch_mode",
    "to_image",
    "unregister_op",
]
__getattr__, __dir__ = attach(__name__, _LAZY, globals())
