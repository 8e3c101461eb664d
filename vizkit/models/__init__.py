"""``vizkit.models``: what a model is, how it is built, and its weights.

A spec names a model: a registered name (``zfnet-compact``, the trained compact ZF model that
ships with weights; ``zfnet``, the paper's layout, untrained), or a form some :class:`ModelSource`
understands: ``torchvision:<builder>``, ``path/to/file.py:factory``, ``package.module:factory``
(vizkit's own sources), or whatever a plugin adds (e.g. ``timm:<name>``). Which names and
sources exist is the plugin registry's business (:func:`vizkit.load_model` consults it); this
package holds the pieces.

Public names:

* what plugins register: :class:`ModelEntry` (a named model: its factory, default weights,
  labels and preprocessing) and :class:`ModelSource` (a form of spec and how to build it);
* a model's metadata: :class:`ModelInfo` (spec, weights and their SHA-256, labels,
  preprocessing, default layer, layer aliases; ``load_model`` stores one on the model as
  ``model.vizkit_info``), :func:`model_info` (the one way to read it, falling back on what the
  model's class declares), :func:`describe` (what result.json records about a model);
* weights files: :func:`read_state_dict` (``torch.load(weights_only=True)`` unless trusted,
  unwrapping checkpoints; a ``.safetensors`` file through ``safetensors``), :func:`apply_state_dict`
  (loads only weights that fit exactly),
  :func:`sha256_file` (the hash results name their weights by);
* training the ZF models: :func:`clip_feature_scale` (the paper's feature-scale clipping).

Modules inside (``entries``, ``sources``, ``weight_files``, ``info``, ``zfnet``, ...) are
internal: their names may change.
"""

from vizkit.models.entries import ModelEntry, ModelSource
from vizkit.models.info import ModelInfo, describe, model_info
from vizkit.models.weight_files import apply_state_dict, read_state_dict, sha256_file
from vizkit.models.zfnet import clip_feature_scale

__all__ = [
    "ModelEntry",
    "ModelInfo",
    "ModelSource",
    "apply_state_dict",
    "clip_feature_scale",
    "describe",
    "model_info",
    "read_state_dict",
    "sha256_file",
]
