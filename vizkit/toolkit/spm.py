"""Spatial Pyramid Matching (SPM) on learned feature maps: Caltech-101 classification as
Lazebnik, Schmid & Ponce (CVPR 2006) do it, with any model's maps as the local descriptors.

The protocol (Zeiler et al., ICCV 2011, and Lee et al., ICML 2009, use it to score learned
layer-1 maps: 67.8 ± 1.2 % and 65.4 %; SIFT itself gives 64.6 %):

1. :func:`caltech_splits`: per class, 30 random training images and up to 50 of the rest as test
   images, over the 101 object classes (``BACKGROUND_Google`` is not one).
2. :func:`dense_descriptors`: SIFT-like descriptors on a dense grid of the feature maps: per
   patch, the summed |maps| in each of cells x cells sub-cells, L2-normalised, clipped at 0.2
   and renormalised.
3. :func:`fit_codebook`: k-means on a random subset of the training descriptors (200 words).
4. :func:`quantise`: each descriptor becomes its nearest word.
5. :func:`pyramid_histograms`: histograms of words over 1x1, 2x2, 4x4 cells, weighted per level.
6. :func:`intersection_kernel` and :func:`classify`: an SVM on the histogram-intersection kernel;
   the score is the mean of the per-class accuracies (Caltech's convention).

:func:`evaluate` runs it all over several random splits, computing each image's descriptors once;
:func:`module_features` turns a torch module (e.g. a convnet's first layer) into the feature
function it takes. Everything runs on the CPU unless the feature function returns CUDA maps (the
descriptors are then computed there).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vizkit.data import Preprocess, load_images
from vizkit.data.images import is_image_file
from vizkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from vizkit.errors import UsageError
from vizkit.toolkit.linear import mean_class_accuracy
from vizkit.toolkit.progress import progress_bar

BACKGROUND = "BACKGROUND_Google"
"""Caltech-101's clutter folder: not one of the 101 object classes."""

CLIP = 0.2
"""SIFT's clipping threshold for the entries of a unit-norm descriptor (Lowe 2004)."""

KERNEL_BUDGET = 256 * 2**20
"""Bytes of float64 temporaries :func:`intersection_kernel` and :func:`quantise` allow themselves
per chunk (the result itself not counted)."""

FeatureFunction = Callable[[list[Path]], "Tensor | Iterable[Tensor]"]
"""What :func:`evaluate` takes: image paths in, their feature maps [N, K, H, W] out (one tensor,
or an iterable of tensors whose concatenation along dim 0 is the batch)."""


# ----------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class Split:
    """One random train / test split of an image-classification folder tree."""

    train_paths: tuple[Path, ...]
    train_labels: tuple[int, ...]
    test_paths: tuple[Path, ...]
    test_labels: tuple[int, ...]
    class_names: tuple[str, ...]  # label i is class_names[i]


def _class_folders(root: Path) -> list[Path]:
    """The class folders of a Caltech-style tree: every non-hidden sub-folder but the background,
    sorted by name (Python's order: upper case first, so ``Faces`` < ``Faces_easy`` < ``accordion``)."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder (expected one sub-folder of images per class)")
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != BACKGROUND),
        key=lambda p: p.name,
    )


def caltech_splits(root: Path, train: int = 30, test: int = 50, seed: int = 0, classes: int | None = None) -> Split:
    """The Caltech-101 protocol's random split of ``root``: per class ``train`` training images
    and up to ``test`` of the others as test images.

    The classes are the sub-folders of ``root`` except ``BACKGROUND_Google``, in sorted order
    (``Faces`` and ``Faces_easy`` are two classes, as in the usual 101). One seeded numpy
    Generator draws a permutation of each class's sorted image files, class by class in that
    order, so the same seed gives the same split, and the first N classes get the same draws
    whatever ``classes`` is.

    Args:
        root: the folder tree, one sub-folder of images per class.
        train: training images per class.
        test: at most this many test images per class (fewer when the class has fewer left).
        seed: the split's random seed.
        classes: keep only the first this many classes (quick runs); None: all of them.

    Raises:
        UsageError: no class folder, bad counts, or a class with fewer than ``train + 1`` images.
    """
    root = Path(root)
    if train < 1 or test < 1:
        raise UsageError(f"train and test must be at least 1 image per class, not {train} and {test}")
    folders = _class_folders(root)
    if not folders:
        raise UsageError(f"no class folders in {root} (expected one sub-folder of images per class)")
    if classes is not None:
        if classes < 1:
            raise UsageError(f"classes must be at least 1, not {classes}")
        folders = folders[:classes]
    rng = np.random.default_rng(seed)
    train_paths: list[Path] = []
    train_labels: list[int] = []
    test_paths: list[Path] = []
    test_labels: list[int] = []
    short = []
    for label, folder in enumerate(folders):
        files = sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: p.name)
        if len(files) < train + 1:
            short.append(f"{folder.name} ({len(files)})")
            continue
        order = rng.permutation(len(files))
        train_paths += [files[i] for i in order[:train]]
        test_paths += [files[i] for i in order[train : train + test]]
        train_labels += [label] * train
        test_labels += [label] * len(order[train : train + test])
    if short:
        raise UsageError(
            f"{len(short)} class(es) of {root} have fewer than train + 1 = {train + 1} images: "
            + ", ".join(short[:10])
            + (" ..." if len(short) > 10 else "")
        )
    return Split(
        tuple(train_paths), tuple(train_labels), tuple(test_paths), tuple(test_labels), tuple(f.name for f in folders)
    )


# ----------------------------------------------------------------------------- descriptors
def _check_grid(maps: Tensor, patch: int, stride: int, cells: int) -> None:
    """UsageError unless ``maps`` is [N, K, H, W] with room for one patch, and the patch splits
    into cells x cells equal sub-cells."""
    if maps.dim() != 4:
        raise UsageError(f"feature maps must be [N, K, H, W], not {list(maps.shape)}")
    if cells < 1 or stride < 1 or patch < cells or patch % cells:
        raise UsageError(
            f"patch ({patch}) must be a positive multiple of cells ({cells}), and stride ({stride}) positive"
        )
    height, width = maps.shape[-2:]
    if height < patch or width < patch:
        raise UsageError(f"feature maps of {height}x{width} are smaller than one {patch}x{patch} patch")


def _cell_sums(maps: Tensor, patch: int, stride: int, cells: int) -> Tensor:
    """The unnormalised descriptors [N, P, K*cells*cells]: per patch (row-major over the grid),
    per map k and sub-cell (cy, cx), the sum of |maps| in that sub-cell, at index
    ``k*cells*cells + cy*cells + cx``.

    The sub-cell sums are one sum-pool (``avg_pool2d`` with ``divisor_override=1``) with stride
    g = gcd(stride, cell), so that every sub-cell of every patch starts on its grid; ``unfold``
    then gathers each patch's cells x cells of them (dilation cell / g, stride stride / g).
    """
    cell = patch // cells
    step = math.gcd(stride, cell)
    sums = F.avg_pool2d(maps.abs(), kernel_size=cell, stride=step, divisor_override=1)
    columns = F.unfold(sums, kernel_size=cells, dilation=cell // step, stride=stride // step)
    return columns.transpose(1, 2)


def _patch_centres(height: int, width: int, patch: int, stride: int, device: torch.device) -> Tensor:
    """[P, 2]: the (y, x) centre of each patch of the grid (row-major), as fractions of the map's
    height and width: (top + patch / 2) / height."""
    ys = (torch.arange((height - patch) // stride + 1, device=device) * stride + patch / 2) / height
    xs = (torch.arange((width - patch) // stride + 1, device=device) * stride + patch / 2) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_y.reshape(-1), grid_x.reshape(-1)], dim=1)


def sift_normalise(descriptors: Tensor, clip: float = CLIP) -> Tensor:
    """SIFT's normalisation along the last dim: to unit L2 norm, entries clipped at ``clip``
    (so no single large value dominates), then to unit norm again. Zero vectors stay zero."""

    def unit(v: Tensor) -> Tensor:
        norm = v.norm(dim=-1, keepdim=True)
        return torch.where(norm > 0, v / norm.clamp(min=torch.finfo(v.dtype).tiny), torch.zeros_like(v))

    return unit(unit(descriptors).clamp(max=clip))


def dense_descriptors(
    maps: Tensor, patch: int = 16, stride: int = 8, cells: int = 4, *, normalise: bool = True
) -> tuple[Tensor, Tensor]:
    """SIFT-like dense descriptors of feature maps, the local features of spatial pyramid matching.

    On a regular grid of ``patch`` x ``patch`` windows (every ``stride`` map pixels, starting at
    the top-left corner; a partial window at the right or bottom edge is dropped), each descriptor
    concatenates, over a ``cells`` x ``cells`` grid of sub-cells, the sum of |maps| of each map in
    that sub-cell (K*cells*cells dims: index ``k*cells*cells + cy*cells + cx``), as SIFT
    concatenates 4x4 cells of gradient-orientation histograms with the K maps as orientations.
    Then, as SIFT does: L2-normalised, clipped at 0.2, L2-normalised again (zero descriptors, from
    patches where every map is zero, stay zero).

    Vectorised: one sum-pool and one unfold, no loop over positions.

    Args:
        maps: [N, K, H, W] feature maps (any float dtype; computed in float32 at least).
        patch: window side, in map pixels; a multiple of ``cells``.
        stride: grid step, in map pixels.
        cells: sub-cells per window side.
        normalise: False: the raw sub-cell sums (for checks and other normalisations).

    Returns:
        descriptors [N, P, K*cells*cells] and the patch centres [P, 2] as (y, x) fractions of the
        map height and width, in [0, 1] (what :func:`pyramid_histograms` bins).

    Raises:
        UsageError: maps not 4-d, smaller than one patch, or a patch not divisible into cells.
    """
    _check_grid(maps, patch, stride, cells)
    if not maps.is_floating_point() or maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    raw = _cell_sums(maps, patch, stride, cells)
    centres = _patch_centres(maps.shape[-2], maps.shape[-1], patch, stride, maps.device)
    return (sift_normalise(raw) if normalise else raw), centres


# ----------------------------------------------------------------------------- codebook
def _sklearn() -> Any:
    """The sklearn package, or a UsageError saying how to install it."""
    try:
        import sklearn
    except ImportError:
        raise UsageError(
            "spatial pyramid matching needs scikit-learn: pip install 'vizkit[spm]' (or scikit-learn)"
        ) from None
    return sklearn


def fit_codebook(descriptors: np.ndarray, words: int = 200, seed: int = 0, sample: int = 100_000) -> np.ndarray:
    """The visual words: k-means centres of a random subset of ``descriptors``.

    scikit-learn's ``MiniBatchKMeans`` (k-means++ initialisation, 3 initialisations, batches of
    4096, seeded), on at most ``sample`` descriptors drawn without replacement: Lazebnik et al.
    also cluster a random subset. It runs on one thread (``threadpoolctl``): with torch loaded in
    the same process, scikit-learn's OpenMP threads fight torch's (two OpenMP runtimes spinning
    on 2 cores); measured on 4,096 x 1,536 descriptors, 200 words, a busy 2-core machine: 12 s on
    one thread, 44-96 s on two. 100,000 x 1,536 random descriptors took 33 s on one thread.

    Args:
        descriptors: [M, D] (any float dtype; or [..., D], flattened).
        words: the number of centres (the vocabulary size; 200 in the paper).
        seed: seeds both the subset and k-means.
        sample: the most descriptors clustered.

    Returns:
        the centres [words, D], float32.

    Raises:
        UsageError: fewer descriptors than words, or scikit-learn missing.
    """
    _sklearn()
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    data = np.asarray(descriptors).reshape(-1, np.asarray(descriptors).shape[-1])
    if words < 1 or len(data) < words:
        raise UsageError(f"{len(data)} descriptors cannot make {words} words (need at least as many)")
    rng = np.random.default_rng(seed)
    if len(data) > sample:
        data = data[np.sort(rng.choice(len(data), size=sample, replace=False))]
    data = np.ascontiguousarray(data, dtype=np.float32)
    kmeans = MiniBatchKMeans(n_clusters=words, n_init=3, batch_size=4096, random_state=seed)
    with threadpool_limits(1):
        kmeans.fit(data)
    return np.asarray(kmeans.cluster_centers_, dtype=np.float32)


def _rows_per_chunk(columns: int, width: int) -> int:
    """Rows per chunk so that rows x (columns + width) float64 values stay within
    :data:`KERNEL_BUDGET` bytes (read at each call, so tests can lower it)."""
    return max(1, KERNEL_BUDGET // (8 * (columns + width)))


def quantise(descriptors: Tensor, centres: Tensor | np.ndarray) -> Tensor:
    """The nearest centre (Euclidean) of each descriptor: its visual word.

    ``torch.cdist`` over chunks of descriptors (at most :data:`KERNEL_BUDGET` bytes of distances
    and converted rows at a time), in float32 (float64 when the descriptors are); ties go to the
    lower index.

    Args:
        descriptors: [..., D] (e.g. [N, P, D] or [M, D]); float16 is computed in float32.
        centres: [words, D] (from :func:`fit_codebook`).

    Returns:
        int64 word indices of shape ``descriptors.shape[:-1]``, on the descriptors' device.
    """
    dtype = torch.float64 if descriptors.dtype == torch.float64 else torch.float32
    centres = torch.as_tensor(centres).to(device=descriptors.device, dtype=dtype)
    if centres.dim() != 2 or centres.shape[1] != descriptors.shape[-1]:
        raise UsageError(f"centres {list(centres.shape)} do not match descriptors of {descriptors.shape[-1]} dims")
    flat = descriptors.reshape(-1, descriptors.shape[-1])
    out = torch.empty(len(flat), dtype=torch.long, device=descriptors.device)
    rows = _rows_per_chunk(len(centres), flat.shape[1])
    for start in range(0, len(flat), rows):
        chunk = flat[start : start + rows].to(dtype)
        out[start : start + rows] = torch.cdist(chunk, centres).argmin(dim=1)
    return out.reshape(descriptors.shape[:-1])


# ----------------------------------------------------------------------------- pyramid
def level_weights(levels: int) -> list[float]:
    """Lazebnik et al.'s weights of pyramid levels 0..levels-1: with top level L = levels - 1,
    1 / 2^L for level 0 and 1 / 2^(L - l + 1) for level l >= 1 (finer matches count more;
    levels=3: 1/4, 1/4, 1/2). They sum to 1."""
    top = levels - 1
    return [1.0 / 2**top] + [1.0 / 2 ** (top - level + 1) for level in range(1, levels)]


def pyramid_histograms(words: Tensor, centres_yx: Tensor, vocabulary: int, levels: int = 3) -> Tensor:
    """Each image's spatial pyramid: per level l = 0..levels-1, a histogram of words in each of
    the 2^l x 2^l cells, concatenated.

    Normalisation: each image's histograms are divided by its number of descriptors P (so every
    level's histogram sums to 1 over the image), then level l is multiplied by
    :func:`level_weights` (Lazebnik's 1/2^L, 1/2^(L-l+1)); the whole vector sums to 1. The
    intersection kernel of two such vectors is then the pyramid match kernel of the paper for
    images with the same number of descriptors.

    Layout: level 0 first; within a level, cell-major (cells row-major: cy * 2^l + cx), then word:
    index ``offset(l) + (cy * 2^l + cx) * vocabulary + word``, offset(l) = vocabulary * sum_{j<l} 4^j.
    A descriptor at fraction (y, x) is in cell (floor(y * 2^l), floor(x * 2^l)), the last cell
    taking y = 1 or x = 1.

    Args:
        words: [N, P] int word indices in [0, vocabulary).
        centres_yx: [P, 2] (or [N, P, 2]) descriptor positions as (y, x) fractions in [0, 1].
        vocabulary: the number of words.
        levels: pyramid levels (the paper's L = 2 is levels=3).

    Returns:
        [N, vocabulary * sum_l 4^l] float32.
    """
    if words.dim() != 2:
        raise UsageError(f"words must be [N, P], not {list(words.shape)}")
    if levels < 1:
        raise UsageError(f"levels must be at least 1, not {levels}")
    n, p = words.shape
    if p == 0:
        raise UsageError("no descriptors per image")
    centres = centres_yx.to(words.device).expand(n, p, 2) if centres_yx.dim() == 2 else centres_yx.to(words.device)
    words = words.long()
    image = torch.arange(n, device=words.device)[:, None]
    parts = []
    for level, weight in enumerate(level_weights(levels)):
        side = 2**level
        cell = (centres * side).floor().long().clamp(0, side - 1)
        index = (cell[..., 0] * side + cell[..., 1]) * vocabulary + words
        bins = side * side * vocabulary
        counts = torch.bincount((image * bins + index).reshape(-1), minlength=n * bins).reshape(n, bins)
        parts.append(counts.float() * (weight / p))
    return torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------- kernel and SVM
def intersection_kernel(a: Tensor, b: Tensor, chunk: int | None = None) -> Tensor:
    """The histogram-intersection kernel K[i, j] = sum_d min(a[i, d], b[j, d]), float64.

    Computed as K[i, j] = (sum(a_i) + sum(b_j) - ||a_i - b_j||_1) / 2, since
    min(x, y) = (x + y - |x - y|) / 2, with ``torch.cdist(p=1)`` in float64: 4-5x faster than
    broadcasting ``torch.minimum`` (measured on 600 x 600 x 4,200 histograms, 2 CPU cores), and
    exact to float64 rounding. Over chunks of ``chunk`` rows of ``a`` (None: as many as fit
    :data:`KERNEL_BUDGET` with their distances), so temporaries stay bounded; the result
    [len(a), len(b)] is not counted.

    Args:
        a: [n, D] histograms.
        b: [m, D] histograms.
        chunk: rows of ``a`` per chunk; None: from the budget.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise UsageError(f"histograms must be [n, D] and [m, D], not {list(a.shape)} and {list(b.shape)}")
    b64 = b.to(torch.float64)
    b_sums = b64.sum(dim=1)
    out = torch.empty(len(a), len(b), dtype=torch.float64, device=b.device)
    rows = chunk if chunk is not None else _rows_per_chunk(len(b), a.shape[1])
    if rows < 1:
        raise UsageError(f"chunk must be at least 1, not {rows}")
    for start in range(0, len(a), rows):
        a64 = a[start : start + rows].to(device=b.device, dtype=torch.float64)
        distances = torch.cdist(a64, b64, p=1)
        out[start : start + rows] = (a64.sum(dim=1)[:, None] + b_sums[None, :] - distances) / 2
    return out


def _as_labels(labels: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
    """Labels as a 1-d int64 numpy array."""
    if isinstance(labels, Tensor):
        labels = labels.cpu().numpy()
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def classify_kernels(
    train_kernel: Tensor | np.ndarray,
    train_labels: Sequence[int] | np.ndarray | Tensor,
    test_kernel: Tensor | np.ndarray,
    test_labels: Sequence[int] | np.ndarray | Tensor,
    C: float = 1.0,
) -> dict[str, Any]:
    """:func:`classify` on kernels already computed: ``train_kernel`` [n_train, n_train],
    ``test_kernel`` [n_test, n_train]. See :func:`classify` for what it returns."""
    _sklearn()
    from sklearn.metrics import confusion_matrix
    from sklearn.svm import SVC

    y_train, y_test = _as_labels(train_labels), _as_labels(test_labels)
    k_train = np.asarray(train_kernel.cpu() if isinstance(train_kernel, Tensor) else train_kernel, np.float64)
    k_test = np.asarray(test_kernel.cpu() if isinstance(test_kernel, Tensor) else test_kernel, np.float64)
    if k_train.shape != (len(y_train), len(y_train)) or k_test.shape != (len(y_test), len(y_train)):
        raise UsageError(
            f"kernels {k_train.shape} and {k_test.shape} do not match {len(y_train)} training "
            f"and {len(y_test)} test labels"
        )
    svm = SVC(kernel="precomputed", C=C)
    svm.fit(k_train, y_train)
    predicted = svm.predict(k_test)
    classes = np.unique(np.concatenate([y_train, y_test]))
    mean, per_class = mean_class_accuracy(predicted, y_test, classes.tolist())
    return {
        "mean_class_accuracy": mean,
        "accuracy": float(np.mean(predicted == y_test)) if len(y_test) else float("nan"),
        "classes": classes.tolist(),
        "per_class": per_class.tolist(),
        "confusion": confusion_matrix(y_test, predicted, labels=classes).tolist(),
        "predicted": predicted.tolist(),
    }


def classify(
    train_hist: Tensor,
    train_labels: Sequence[int] | np.ndarray | Tensor,
    test_hist: Tensor,
    test_labels: Sequence[int] | np.ndarray | Tensor,
    C: float = 1.0,
) -> dict[str, Any]:
    """An SVM on the histogram-intersection kernel, trained on ``train_hist`` and scored on
    ``test_hist``: scikit-learn's ``SVC(kernel="precomputed", C=C)`` (multi-class one-vs-one;
    Lazebnik et al. use one-vs-rest).

    Returns:
        ``mean_class_accuracy``: the mean over classes of the per-class recall (Caltech's score);
        ``accuracy``: the fraction of test images right; ``classes``: the labels, sorted;
        ``per_class``: each one's accuracy (NaN for a class without test images);
        ``confusion``: counts [true class][predicted class] in ``classes`` order;
        ``predicted``: the predicted label of each test image.
    """
    train_kernel = intersection_kernel(train_hist, train_hist)
    test_kernel = intersection_kernel(test_hist, train_hist)
    return classify_kernels(train_kernel, train_labels, test_kernel, test_labels, C)


# ----------------------------------------------------------------------------- the protocol
@dataclass
class SpmResult:
    """The SPM protocol's scores over several random splits.

    ``accuracies``: each split's mean per-class accuracy (fractions in [0, 1]); ``mean`` and
    ``std`` over them, ``std`` being the sample standard deviation (ddof=1; NaN with one split);
    ``overall``: each split's plain accuracy; ``settings``: what was run; ``timings``: seconds
    per stage, summed over splits; ``splits``: each split's :func:`classify` output (without
    predictions); ``class_names``.
    """

    accuracies: list[float]
    mean: float
    std: float
    overall: list[float]
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    splits: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``67.8 ± 1.2 % mean per-class accuracy (3 splits, 101 classes)``."""
        spread = f" ± {100 * self.std:.1f}" if len(self.accuracies) > 1 else ""
        count = len(self.accuracies)
        return (
            f"{100 * self.mean:.1f}{spread} % mean per-class accuracy "
            f"({count} split{'s' if count != 1 else ''}, {len(self.class_names)} classes)"
        )


@dataclass
class _Block:
    """The cached descriptors of one batch of images: float16 [n, P, D] and their centres [P, 2]."""

    descriptors: Tensor
    centres: Tensor


def _as_maps(output: Tensor | Iterable[Tensor]) -> Tensor:
    """A feature function's output as one [N, K, H, W] tensor."""
    if isinstance(output, Tensor):
        return output
    parts = list(output)
    if not parts:
        raise UsageError("the feature function returned no maps")
    return torch.cat(parts, dim=0)


def _describe_images(
    features: FeatureFunction,
    paths: list[Path],
    batch_size: int,
    patch: int,
    stride: int,
    cells: int,
    progress: bool,
) -> list[_Block]:
    """Every image's descriptors, a batch at a time (only one batch of maps in memory), cached as
    float16 blocks in ``paths`` order."""
    blocks = []
    bar = progress_bar(total=len(paths), desc="spm descriptors", enabled=progress, unit="images")
    try:
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            maps = _as_maps(features(list(batch)))
            if len(maps) != len(batch):
                raise UsageError(f"the feature function returned {len(maps)} maps for {len(batch)} images")
            descriptors, centres = dense_descriptors(maps, patch, stride, cells)
            blocks.append(_Block(descriptors.to("cpu", torch.float16), centres.cpu()))
            bar.update(len(batch))
    finally:
        bar.close()
    return blocks


def _codebook_sample(
    blocks: list[_Block], rows: np.ndarray, per_image: int, rng: np.random.Generator, sample: int | None = None
) -> np.ndarray:
    """Random descriptors of the images in ``rows`` (global image indices into the concatenated
    blocks) for k-means, float16 [M, D]: at most ``per_image`` of each image, and with ``sample``
    at most ceil(sample / images) of each, so that no more than about ``sample`` are copied
    (1.2 GB of float32 for the 194,000 of a Caltech split with SqueezeNet conv1 otherwise)."""
    if sample is not None:
        per_image = min(per_image, max(1, math.ceil(sample / max(1, len(rows)))))
    starts = np.cumsum([0] + [len(b.descriptors) for b in blocks])
    picked = []
    for row in rows:
        block = int(np.searchsorted(starts, row, side="right")) - 1
        descriptors = blocks[block].descriptors[row - starts[block]]
        if len(descriptors) > per_image:
            descriptors = descriptors[torch.from_numpy(np.sort(rng.choice(len(descriptors), per_image, replace=False)))]
        picked.append(descriptors.half().numpy())
    return np.concatenate(picked)


def _histograms(blocks: list[_Block], centres: np.ndarray | Tensor, words: int, levels: int) -> Tensor:
    """Every cached image's pyramid histogram [images, words * sum 4^l] under codebook ``centres``."""
    parts = [pyramid_histograms(quantise(block.descriptors, centres), block.centres, words, levels) for block in blocks]
    return torch.cat(parts)


def evaluate(
    features: FeatureFunction,
    root: Path,
    splits: int = 3,
    train: int = 30,
    test: int = 50,
    words: int = 200,
    levels: int = 3,
    seed: int = 0,
    progress: bool = True,
    classes: int | None = None,
    *,
    batch_size: int = 32,
    patch: int = 16,
    stride: int = 8,
    cells: int = 4,
    C: float = 1.0,
    per_image: int = 1000,
    sample: int = 100_000,
) -> SpmResult:
    """The whole SPM protocol on a Caltech-style folder tree, with ``features`` as the local
    feature extractor; split i uses seed ``seed + i`` (:func:`caltech_splits`), and each split gets
    its own codebook, fitted on its training images only.

    Each image's descriptors do not depend on the split, so they are computed once, ``batch_size``
    images at a time (only one batch of maps is held), and cached in memory as float16: an
    image with P descriptors of D dims takes 2·P·D bytes. For Caltech-101 (at most 80 images in
    each of 101 classes, 6,055 here; more with the full data set) with SqueezeNet's conv1 at
    150 x 150 (96 maps of 72 x 72, 64 patches of 1,536 dims) that is 197 KB an image, 1.2 GB in
    all; 15 maps of 150 x 150 (17 x 17 = 289 patches of 240 dims) 139 KB an image, 0.8 GB. The
    codebook of a split is fitted on random descriptors of its training images, at most
    ``per_image`` and at most ceil(``sample`` / training images) of each (so about ``sample`` in
    all, spread evenly over the images, and no more copied), of which :func:`fit_codebook` keeps
    at most ``sample``; every descriptor is quantised.

    Args:
        features: paths -> feature maps [N, K, H, W] (a tensor, or an iterable of tensors to
            concatenate), e.g. :func:`module_features`; called with ``batch_size`` paths at most.
        root: the folder tree (e.g. ``.../caltech101``).
        splits: random splits to average over.
        train: training images per class.
        test: at most this many test images per class.
        words: the codebook size.
        levels: pyramid levels (3 = the paper's L = 2).
        seed: the first split's seed.
        progress: show progress on stderr.
        classes: only the first this many classes (quick runs and tests).
        batch_size: images per call of ``features``.
        patch, stride, cells: the descriptor grid (:func:`dense_descriptors`), in map pixels:
            the defaults are Lazebnik's dense-SIFT geometry (16 x 16 px every 8 px) for maps at
            image resolution; for maps of stride s, patch 16 / s and stride 8 / s keep it in
            image pixels (SqueezeNet conv1, s = 2, 101 classes, split 0, C = 1: 37.0 % with
            8 / 4, 33.0 % with 16 / 8).
        C: the SVM's C.
        per_image: at most this many descriptors of each training image go to k-means.
        sample: at most this many descriptors in all go to k-means (about as many of each image).

    Returns:
        an :class:`SpmResult`; ``timings`` has ``descriptors``, and summed over splits
        ``codebook``, ``histograms``, ``kernel`` and ``svm`` (seconds). Measured on 2 busy CPU
        cores, SqueezeNet conv1 at 150 x 150, 101 classes (5,975 images), 3 splits, defaults:
        10 min in all; descriptors 199 s, then per split codebook 44 s, histograms 18 s,
        kernels 74 s, SVM 1 s.
    """
    if splits < 1:
        raise UsageError(f"splits must be at least 1, not {splits}")
    if batch_size < 1 or per_image < 1:
        raise UsageError(f"batch_size and per_image must be at least 1, not {batch_size} and {per_image}")
    drawn = [caltech_splits(Path(root), train, test, seed + i, classes) for i in range(splits)]
    paths = list(dict.fromkeys(p for split in drawn for p in (*split.train_paths, *split.test_paths)))
    row_of = {p: i for i, p in enumerate(paths)}
    timings = {"descriptors": 0.0, "codebook": 0.0, "histograms": 0.0, "kernel": 0.0, "svm": 0.0}

    started = time.perf_counter()
    blocks = _describe_images(features, paths, batch_size, patch, stride, cells, progress)
    timings["descriptors"] = time.perf_counter() - started

    scores = []
    bar = progress_bar(total=splits, desc="spm splits", enabled=progress, unit="splits")
    try:
        for index, split in enumerate(drawn):
            train_rows = np.array([row_of[p] for p in split.train_paths])
            test_rows = np.array([row_of[p] for p in split.test_paths])

            started = time.perf_counter()
            rng = np.random.default_rng(seed + index)
            training = _codebook_sample(blocks, train_rows, per_image, rng, sample)
            centres = fit_codebook(training, words, seed + index, sample)
            del training
            timings["codebook"] += time.perf_counter() - started

            started = time.perf_counter()
            histograms = _histograms(blocks, centres, words, levels)
            train_hist, test_hist = histograms[torch.from_numpy(train_rows)], histograms[torch.from_numpy(test_rows)]
            timings["histograms"] += time.perf_counter() - started

            started = time.perf_counter()
            train_kernel = intersection_kernel(train_hist, train_hist)
            test_kernel = intersection_kernel(test_hist, train_hist)
            timings["kernel"] += time.perf_counter() - started

            started = time.perf_counter()
            score = classify_kernels(train_kernel, split.train_labels, test_kernel, split.test_labels, C)
            timings["svm"] += time.perf_counter() - started
            score.pop("predicted")
            score["seed"] = seed + index
            scores.append(score)
            bar.update(1)
    finally:
        bar.close()

    accuracies = [s["mean_class_accuracy"] for s in scores]
    settings = {
        "root": str(root),
        "splits": splits,
        "train": train,
        "test": test,
        "words": words,
        "levels": levels,
        "seed": seed,
        "classes": len(drawn[0].class_names),
        "images": len(paths),
        "patch": patch,
        "stride": stride,
        "cells": cells,
        "C": C,
        "per_image": per_image,
        "sample": sample,
        "descriptor_dims": int(blocks[0].descriptors.shape[-1]),
        "descriptors_per_image": int(blocks[0].descriptors.shape[1]),
    }
    return SpmResult(
        accuracies=accuracies,
        mean=float(np.mean(accuracies)),
        std=float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else float("nan"),
        overall=[s["accuracy"] for s in scores],
        settings=settings,
        timings=timings,
        splits=scores,
        class_names=list(drawn[0].class_names),
    )


# ----------------------------------------------------------------------------- feature functions
def module_features(
    module: nn.Module,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[list[Path]], Tensor]:
    """A feature function for :func:`evaluate`: each image loaded as RGB (greyscale, palette and
    transparent images converted, see :func:`vizkit.data.load_image`), its shorter side resized to
    ``size``, centre-cropped to ``size`` x ``size``, normalised with ``mean`` / ``std``, and run
    through ``module`` under ``torch.no_grad`` on the device of its parameters.

    The module is used as it is: put it in eval mode first if it has dropout or batch norm
    (e.g. ``module_features(squeezenet.features[:2].eval(), 150)``: conv1 + ReLU).

    Returns:
        paths -> the module's output [N, K, H, W] as float32 on the CPU.
    """
    if len(mean) != 3 or len(std) != 3:
        raise UsageError(f"mean and std must have 3 values (R, G, B), not {len(mean)} and {len(std)}")
    preprocess = Preprocess(resize=size, crop=size, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")

    def features(paths: list[Path]) -> Tensor:
        x = load_images([os.fspath(p) for p in paths], preprocess).to(device)
        with torch.no_grad():
            return module(x).float().cpu()

    return features


# ----------------------------------------------------------------------------- a run, recorded
def evaluate_to_file(
    features: FeatureFunction,
    data: Path,
    out: Path,
    name: str,
    paper: tuple[float, float] | None = None,
    *,
    splits: int = 3,
    train: int = 30,
    test: int = 50,
    words: int = 200,
    classes: int | None = None,
    seed: int = 0,
    progress: bool = True,
    record: dict[str, Any] | None = None,
    **options: Any,
) -> str:
    """:func:`evaluate`, written to ``out`` as JSON (per split, mean, std, the paper's number
    beside ours, timings, settings, plus ``record``) atomically, and summed up in one line:
    what a plugin's ``caltech`` command prints. ``name`` says whose features they are
    (``"ADN layer 1"``); ``paper`` is the published ``(mean, std)`` in percent, if any;
    ``options`` go to :func:`evaluate` (``patch``, ``stride``, ``batch_size``, ...)."""
    import json

    from vizkit.framework import write_atomic

    if splits < 1 or train < 1 or test < 1 or words < 2:
        raise UsageError("--splits, --train and --test must be at least 1 and --words at least 2")
    started = time.perf_counter()
    result = evaluate(
        features,
        data,
        splits=splits,
        train=train,
        test=test,
        words=words,
        seed=seed,
        progress=progress,
        classes=classes,
        **options,
    )
    std = None if result.std != result.std else round(100 * result.std, 2)  # NaN: one split
    document = {
        "features": name,
        **(record or {}),
        "accuracies_percent": [round(100 * a, 2) for a in result.accuracies],
        "mean_percent": round(100 * result.mean, 2),
        "std_percent": std,
        "overall_percent": [round(100 * a, 2) for a in result.overall],
        "paper_percent": paper,
        "seconds": round(time.perf_counter() - started, 1),
        "timings": result.timings,
        "settings": result.settings,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (json.dumps(document, indent=2) + "\n").encode())
    beside = f" (paper: {paper[0]} ± {paper[1]} %)" if paper else ""
    return f"{name} on Caltech-101: {result.summary()}{beside}"
