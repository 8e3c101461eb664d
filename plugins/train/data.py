"""The training and validation loaders: each sample's augmentation and each epoch's order drawn
from the seed, so what a batch holds does not depend on workers or interruptions."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import vizkit
from vizkit import Preprocess, UsageError

from .config import TrainConfig


def _mix(*numbers: int) -> int:
    """One 63-bit seed from several integers (distinct tuples give unrelated seeds)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, dtype=np.uint64)[0] >> 1)


class EpochOrder(Sampler):
    """The training order of one epoch, drawn from (seed, epoch); yields (epoch, index) pairs from
    position ``start`` on, so a resumed epoch continues exactly where it stopped."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch, self.start = size, seed, 1, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch)))
        for index in order[self.start :].tolist():
            yield self.epoch, index

    def __len__(self) -> int:
        return self.size - self.start


LABEL_STREAM = 0x1ABE1  # mixed with --seed for the label permutation: unrelated to --limit's subset and the order


def shuffled_labels(labels: Sequence[int], seed: int) -> list[int]:
    """Label randomization (Adebayo et al. 2018, Zhang et al. 2017): ``labels`` (the label of each
    training image, in dataset order) permuted by one permutation drawn from ``seed``, so image i
    gets ``labels[perm[i]]``. Each class keeps its number of images; the same seed gives the same
    labels, in every epoch and on resume."""
    generator = torch.Generator().manual_seed(_mix(seed, LABEL_STREAM))
    permutation = torch.randperm(len(labels), generator=generator).tolist()
    return [int(labels[j]) for j in permutation]


def sample_labels(samples: Dataset) -> list[int]:
    """The label of each of ``samples`` (an ImageFolder, or a Subset of one), without loading images."""
    if isinstance(samples, torch.utils.data.Subset):
        inner = sample_labels(samples.dataset)
        return [inner[i] for i in samples.indices]
    return [int(label) for label in samples.targets]  # type: ignore[attr-defined]


class AugmentedSamples(Dataset):
    """Training samples whose random augmentation is seeded by (seed, epoch, index): a sample gets
    the same crop and flip whichever worker loads it and whenever the run was interrupted.
    ``labels``, when given, replaces the samples' own labels (``--shuffle-labels``)."""

    def __init__(self, samples: Dataset, transform: Callable, seed: int, labels: list[int] | None = None) -> None:
        self.samples, self.transform, self.seed, self.labels = samples, transform, seed, labels

    def __len__(self) -> int:
        return len(self.samples)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        image, label = self.samples[index]
        if self.labels is not None:
            label = self.labels[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, epoch, index))
            return self.transform(image), label


def loaders(config: TrainConfig, preprocess: Preprocess) -> tuple[DataLoader, DataLoader, list[str]]:
    from torchvision import datasets, transforms  # here, not at the top: torchvision costs seconds at start-up

    root = Path(config.data)
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise UsageError(f"--data {root} must hold train/ and val/ ImageFolder trees")
    normalise = transforms.Normalize(preprocess.mean, preprocess.std)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(config.crop, scale=(config.min_crop_scale, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalise,
        ]
    )
    val_tf = replace(preprocess, resize=config.resize, crop=config.crop).transform()
    if not config.augment:  # --no-augment: every epoch sees each image's centre crop, as validation does
        train_tf = val_tf
    train_set = datasets.ImageFolder(train_dir, loader=vizkit.load_image)  # EXIF, 16-bit, alpha
    val_set = datasets.ImageFolder(val_dir, val_tf, loader=vizkit.load_image)
    if train_set.classes != val_set.classes:
        raise UsageError("train/ and val/ have different class folders")
    if config.limit:
        generator = torch.Generator().manual_seed(config.seed)
        train_set = torch.utils.data.Subset(
            train_set, torch.randperm(len(train_set), generator=generator)[: config.limit].tolist()
        )
    labels = None
    if config.shuffle_labels:
        true_labels = sample_labels(train_set)
        if len(set(true_labels)) < 2:
            raise UsageError("--shuffle-labels: the training images are all of one class, so shuffling changes nothing")
        labels = shuffled_labels(true_labels, config.seed)
    samples = AugmentedSamples(train_set, train_tf, config.seed, labels)
    train = DataLoader(
        samples,
        batch_size=config.batch_size,
        sampler=EpochOrder(len(samples), config.seed),
        num_workers=config.workers,
        generator=torch.Generator().manual_seed(config.seed),  # not the global one, which dropout uses
        drop_last=False,
        persistent_workers=config.workers > 0,
        worker_init_fn=vizkit.data.workers_ignore_stop_signals,  # Ctrl-C reaches them too: the main process saves
    )
    val = DataLoader(
        val_set,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.workers,
        generator=torch.Generator().manual_seed(config.seed),
        persistent_workers=config.workers > 0,
        worker_init_fn=vizkit.data.workers_ignore_stop_signals,
    )
    return train, val, val_set.classes
