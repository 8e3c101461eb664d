"""The op table: everything vizkit knows about each torch operation, one class per op kind.

Adding an op
------------
One class plus a test. Subclass :class:`Op` (or the built-in op it resembles) in
:mod:`~vizkit.engine.ops.builtin` and add it to the registration at its bottom (a plugin or a
test calls :func:`register_op`); fill in what applies, nothing else in the engine names an op:

* ``name`` (the layer type ``F.<name>`` of a functional call) and ``calls``, the ``__name__``\\ s
  of the torch calls that perform it (a ``TorchFunctionMode`` sees every route to an op,
  ``nn.ReLU``, ``F.relu``, ``x.relu_()``, as a call with one of those names);
* ``signature`` (:func:`parse_signature`) to :meth:`Op.bind` arguments by name;
* ``layer`` (a functional call is a layer of its own) and ``owner`` (the module class whose own
  call it is), ``pointwise``, ``normalisation``, ``inference_only``;
* :meth:`Op.window`: its sliding window (:class:`~vizkit.engine.geometry.Window`);
* :meth:`Op.forward`: the call during an instrumented forward and what it records (a max-pool
  its switches: the "forward record" the recorder keeps per layer and the tape gets);
* :meth:`Op.reverse`: the explicit deconvnet's step down through it (given the tape's rule);
  :meth:`Op.reverse_pieces` for a call returning several tensors (chunk, split);
* :meth:`Op.step`: how incremental occlusion steps through it (point-wise in space, sliding
  window, union of windows, a layout change of the window, a global pool; None: recompute the
  whole tensor), and ``whole_reason``, what the cost report says when it recomputes the whole
  tensor (``product``: it multiplies its inputs, as an SE block's gate is applied).

A stochastic pool, say, subclasses :class:`MaxPool2d`, overrides ``name``, ``calls``, ``owner``
and :meth:`Op.forward` (sample the switches instead of taking the maxima) and keeps the
max-pool's unpooling (tests/test_ops.py registers one).

Layout: :mod:`~vizkit.engine.ops.base` holds the machinery (:class:`Op`, :class:`Node`, the
max-pool's forward record :class:`PoolSwitches`, the registry), :mod:`~vizkit.engine.ops.builtin`
the ops of the paper's convnets, :mod:`~vizkit.engine.ops.probabilistic` the convolutional DBN's
probabilistic max-pooling (switches that are a distribution), :mod:`~vizkit.engine.ops.modern` those of later ones (smooth
rectifiers, gates and products, layer / group normalisation, permutes, slicing, chunk / split). The recorder, the explicit deconvnet, receptive boxes, incremental occlusion, the
projection rules and the canonical copy all dispatch through this table.
"""

from vizkit.engine.ops.base import (
    OPS,
    Node,
    Op,
    PoolSwitches,
    SlidingOp,
    UnsupportedOpError,
    first_input,
    op_of,
    op_of_module,
    parse_signature,
    register_op,
    unregister_op,
)
from vizkit.engine.ops.builtin import (
    RELU,
    AdaptiveAvgPool2d,
    Add,
    AvgPool2d,
    BatchNorm,
    Cat,
    Conv2d,
    Dropout,
    FractionalMaxPool,
    Identity,
    Linear,
    LocalResponseNorm,
    MaxPool2d,
    Normalisation,
    ReLU,
    Reshape,
)
from vizkit.engine.ops.modern import (
    Activation,
    ChannelShuffle,
    ForwardInput,
    Gate,
    GroupNorm,
    LayerNorm,
    Mean,
    Mul,
    Permute,
    Rectifier,
    Slice,
    Split,
    Transpose,
)
from vizkit.engine.ops.probabilistic import PROB_MAX_POOL, ProbabilisticMaxPool, ProbPoolSwitches
from vizkit.engine.ops.probpool import cell_states, draw_states, pool_cells, unpool_cells

__all__ = [
    "OPS",
    "PROB_MAX_POOL",
    "RELU",
    "Activation",
    "AdaptiveAvgPool2d",
    "Add",
    "AvgPool2d",
    "BatchNorm",
    "Cat",
    "ChannelShuffle",
    "Conv2d",
    "Dropout",
    "ForwardInput",
    "FractionalMaxPool",
    "Gate",
    "GroupNorm",
    "Identity",
    "LayerNorm",
    "Linear",
    "LocalResponseNorm",
    "MaxPool2d",
    "Mean",
    "Mul",
    "Node",
    "Normalisation",
    "Op",
    "Permute",
    "PoolSwitches",
    "ProbPoolSwitches",
    "ProbabilisticMaxPool",
    "ReLU",
    "Rectifier",
    "Reshape",
    "Slice",
    "SlidingOp",
    "Split",
    "Transpose",
    "UnsupportedOpError",
    "cell_states",
    "draw_states",
    "first_input",
    "op_of",
    "op_of_module",
    "parse_signature",
    "pool_cells",
    "register_op",
    "unpool_cells",
    "unregister_op",
]
