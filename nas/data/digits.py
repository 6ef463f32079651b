"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), upsampled."""
from __future__ import annotations

import torch

from nas.data.dataset import capped, split_indices
from nas.data.transforms import resize_center_crop


def load_digits(resolution: int, seed: int, limit: int | None):
    """One grey channel in [0, 1], upsampled bilinearly; an 80/20 split fixed by ``seed``."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).float()[:, None] / 16
    labels = torch.from_numpy(bunch.target).long()
    train_idx, val_idx = split_indices(len(labels), seed)
    train_idx, val_idx = capped(train_idx, limit, seed), capped(val_idx, limit, seed + 1)
    return (resize_center_crop(images[train_idx], resolution), labels[train_idx],
            resize_center_crop(images[val_idx], resolution), labels[val_idx], [str(d) for d in range(10)])
