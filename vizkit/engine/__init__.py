"""``vizkit.engine``: recording forwards and projecting what they saw.

The engine instruments any torch model (hooks and op interception, always removed on exit),
records activations and max-pooling switches, reverses the recorded forward op by op (the paper's
deconvnet) or by autograd, and steps occlusion through a network incrementally. It imports
nothing else of vizkit but ``vizkit.errors``.

Public names:

* recording: :func:`instrument`, :class:`Instrumented`, :class:`Settings` (scoped settings),
  :class:`LayerInfo`, :func:`hook_counts` (hooks left on a model: 0 when clean),
  :class:`UnknownLayerError`, :class:`NonFiniteActivation`;
* projecting: :func:`project`, :class:`Projection`, :func:`to_image`, :func:`receptive_boxes`,
  :func:`support_box`, and the rules a projection crosses a ReLU with: :class:`ProjectionRule`
  (subclass it for your own), :class:`DeconvnetRule` (the paper's), :class:`GuidedRule`,
  :class:`GradientRule`;
* occlusion: :class:`IncrementalOcclusion` (re-runs only the part of the network a patch
  reaches), :class:`OcclusionCost`;
* canonical copies: :class:`CanonicalModel`, :func:`hook_free_copy` (a private copy of a model
  whose every ReLU call goes through a module of its own, for attribution libraries).

Modules inside (``recorder``, ``deconv``, ``ops``, ...) are internal: their names may change.
"""

from vizkit._lazy import attach

_LAZY = {
    "instrument": ("vizkit.engine.instrumented", "instrument"),
    "Instrumented": ("vizkit.engine.instrumented", "Instrumented"),
    "hook_counts": ("vizkit.engine.instrumented", "hook_counts"),
    "Settings": ("vizkit.engine.recorder", "Settings"),
    "LayerInfo": ("vizkit.engine.recorder", "LayerInfo"),
    "UnknownLayerError": ("vizkit.engine.recorder", "UnknownLayerError"),
    "NonFiniteActivation": ("vizkit.engine.recorder", "NonFiniteActivation"),
    "project": ("vizkit.engine.deconv", "project"),
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
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = attach(__name__, _LAZY, globals())
