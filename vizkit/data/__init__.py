"""Images in, tensors out: preprocessing, image decoding, datasets with skip accounting, labels.

Preprocessing (:mod:`vizkit.data.preprocess`):

* :class:`Preprocess`: resize the shorter side, centre-crop, scale to [0, 1] and normalise per
  channel; also maps stored-image pixels to input pixels and back to displayable RGB.
* :func:`preprocess_for`: the preprocessing a model expects (its own, else the ImageNet default).
* :func:`parse_fill`: an occluder's colour (``mean``, ``zero`` or ``R,G,B``) in the model's
  normalised input space.

Image decoding (:mod:`vizkit.data.images`):

* :func:`load_image`: a file as upright 8-bit RGB (EXIF orientation, 16-bit and float images,
  transparency over white: :func:`to_rgb`).
* :func:`load_images`: several files as one preprocessed batch.
* :class:`UnreadableImage`: a file that cannot be read (a UsageError naming it and saying why).

Datasets with skip accounting (:mod:`vizkit.data.datasets`):

* :class:`ImageList`, :func:`image_list`: the ordered image files of a folder, an ImageFolder
  tree or a text file of paths.
* :func:`read_batches`, :func:`image_loader`: batches that leave unreadable files out;
  :func:`first_readable`: the first item that can be read; :func:`images_per_class`: a
  seeded, even draw of training images from each class folder.
* :class:`SkippedImages`: what one run skipped and why (warnings, ``inputs.skipped_images`` in
  result.json, ``--strict``); :class:`BadImage`: one unreadable item.
* :func:`workers_ignore_stop_signals`: a DataLoader ``worker_init_fn`` leaving Ctrl-C to the
  main process.

Labels (:mod:`vizkit.data.labels`):

* :func:`read_labels`: class names from a file (``name``, ``wnid<TAB>name`` or Caffe's
  ``synset_words.txt``), as :class:`Labels` (a list that may carry the WordNet ids).
* :func:`check_labels`, :func:`label_name`, :func:`resolve_target`, :func:`resolve_targets`: labels against the model's
  outputs, a class's name in figures, ``--target`` as an index.

Devices (:mod:`vizkit.data.devices`):

* :func:`ensure_device`: a ``--device`` value as a torch device, refused when absent.
* :func:`model_dtype`: the dtype a model computes in (its inputs are cast to it,
  :func:`to_model_dtype`); :func:`accumulation_dtype`: the one its sums and statistics are taken in.
"""

from vizkit.data.datasets import (
    BadImage,
    ImageList,
    SkippedImages,
    first_readable,
    image_list,
    image_loader,
    images_per_class,
    read_batches,
    workers_ignore_stop_signals,
)
from vizkit.data.devices import accumulation_dtype, dtype_name, ensure_device, model_dtype, to_model_dtype
from vizkit.data.images import UnreadableImage, greyscale, load_image, load_images, to_rgb
from vizkit.data.labels import Labels, check_labels, label_name, read_labels, resolve_target, resolve_targets
from vizkit.data.preprocess import Preprocess, parse_fill, preprocess_for

__all__ = [
    "BadImage",
    "ImageList",
    "Labels",
    "Preprocess",
    "SkippedImages",
    "UnreadableImage",
    "accumulation_dtype",
    "check_labels",
    "dtype_name",
    "ensure_device",
    "first_readable",
    "greyscale",
    "image_list",
    "image_loader",
    "images_per_class",
    "label_name",
    "load_image",
    "load_images",
    "model_dtype",
    "parse_fill",
    "preprocess_for",
    "read_batches",
    "read_labels",
    "resolve_target",
    "resolve_targets",
    "to_model_dtype",
    "to_rgb",
    "workers_ignore_stop_signals",
]
