"""The in-memory data set every evaluator trains on, and the small helpers the loaders share."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nas.data.transforms import Augmentation


@dataclass
class Dataset:
    """Train and validation images, normalised per channel with the train split's statistics.

    ``train_x``/``val_x`` are ``(N, C, H, W)`` float32, ``train_y``/``val_y`` ``(N,)`` int64 class indices.
    ``augment`` is the train-time augmentation that suits the data (``None``: none); ``train_model`` applies
    it to each batch, and ``dataclasses.replace(data, augment=None)`` turns it off. ``mean`` and ``std`` are
    what was subtracted and divided, so a user can normalise new images the same way.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    channels: int
    resolution: int
    classes: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    augment: Augmentation | None = None

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: {len(self.train_y)} train / {len(self.val_y)} val, "
                f"{self.num_classes} classes, {self.channels}x{self.resolution}x{self.resolution})")


def build_dataset(name: str, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
                  val_y: torch.Tensor, classes: list[str], augment: Augmentation | None) -> Dataset:
    """Normalise images in [0, 1] (or any float scale) with the train split's per-channel mean and std."""
    train_x, val_x = train_x.float(), val_x.float()
    mean, std = channel_statistics(train_x)
    shape = (1, -1, 1, 1)
    return Dataset(
        name=name,
        train_x=((train_x - mean.view(shape)) / std.view(shape)).contiguous(),
        train_y=train_y.long(),
        val_x=((val_x - mean.view(shape)) / std.view(shape)).contiguous(),
        val_y=val_y.long(),
        num_classes=len(classes),
        channels=train_x.shape[1],
        resolution=train_x.shape[-1],
        classes=list(classes),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        augment=augment,
    )


def channel_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation (floored at 1e-6) of ``(N, C, H, W)`` images: what
    ``build_dataset`` normalises with."""
    return images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3)).clamp_min(1e-6)


def seeded_permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def split_indices(n: int, seed: int, val_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded train/val split of ``n`` examples: the same seed, the same split."""
    order = seeded_permutation(n, seed)
    n_val = max(1, round(n * val_fraction))
    return order[n_val:], order[:n_val]


def capped(indices: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    """At most ``limit`` of ``indices``, a seeded random subset so that every class keeps its share."""
    if limit is None or len(indices) <= limit:
        return indices
    return indices[seeded_permutation(len(indices), seed)[:limit]]
