"""Data for the ``train`` objective: ``load_data(spec)`` gives a normalised in-memory ``Dataset``.

``spec`` is one of
- ``synthetic``: a procedural task that needs spatial reasoning (see ``nas.data.synthetic``), 2000 train and
  500 validation images, the same for the same seed;
- ``patterns``: ten classes of texture and layout (which of stripes and checks lies where; see
  ``nas.data.patterns``), 1500 train and 1000 validation images, the same for the same seed;
- ``digits``: scikit-learn's bundled 8x8 digits, one grey channel, upsampled;
- a directory in ImageFolder layout: ``DIR/<class>/*.png`` (split 80/20 by seed), or ``DIR/train/<class>`` and
  ``DIR/val/<class>``; decoded with Pillow as RGB, resized on the shorter side and centre-cropped;
- an ``.npz`` with images ``x`` ((N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or float) and labels ``y``, and
  optionally ``x_val`` and ``y_val``; without them, split 80/20 by seed.

``resolution`` defaults to 32, or to an ``.npz``'s own size. ``limit`` caps each split's size (a seeded subset).

Train-time augmentation (``Dataset.augment``): random shifts and horizontal flips for image folders (photos),
shifts only for ``.npz`` (flips would corrupt digits or text), none for ``synthetic`` and ``patterns``
(their shapes are already placed at random, and flips would swap their left/right labels) and ``digits``
(shifts cost a small conv net 13 to 14 points of validation accuracy in the 4- and 5-epoch runs a search uses).
``dataclasses.replace(data, augment=...)`` changes it.
"""
from __future__ import annotations

from pathlib import Path

from nas.data.dataset import Dataset, build_dataset
from nas.data.transforms import Augmentation, default_augmentation
from nas.errors import InputError

__all__ = ["Augmentation", "Dataset", "load_data", "DEFAULT_RESOLUTION"]

DEFAULT_RESOLUTION = 32


def load_data(spec: str, resolution: int | None = None, seed: int = 0, limit: int | None = None) -> Dataset:
    """The data set ``spec`` names, at ``resolution`` x ``resolution``; bad specs raise ``InputError``."""
    if resolution is not None and resolution < 1:
        raise InputError(f"resolution must be a positive number of pixels, got {resolution}")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    spec = str(spec)
    path = Path(spec).expanduser()
    if spec == "synthetic":
        from nas.data.synthetic import CLASSES, TRAIN_SIZE, VAL_SIZE, make_synthetic

        size = resolution or DEFAULT_RESOLUTION
        train_x, train_y = make_synthetic(min(TRAIN_SIZE, limit or TRAIN_SIZE), size, seed=2 * seed)
        val_x, val_y = make_synthetic(min(VAL_SIZE, limit or VAL_SIZE), size, seed=2 * seed + 1)
        splits, name, augment = (train_x, train_y, val_x, val_y, CLASSES), "synthetic", None
    elif spec == "patterns":
        from nas.data.patterns import CLASSES, TRAIN_SIZE, VAL_SIZE, make_patterns

        size = resolution or DEFAULT_RESOLUTION
        train_x, train_y = make_patterns(min(TRAIN_SIZE, limit or TRAIN_SIZE), size, seed=2 * seed)
        val_x, val_y = make_patterns(min(VAL_SIZE, limit or VAL_SIZE), size, seed=2 * seed + 1)
        splits, name, augment = (train_x, train_y, val_x, val_y, CLASSES), "patterns", None
    elif spec == "digits":
        from nas.data.digits import load_digits

        splits, name, augment = load_digits(resolution or DEFAULT_RESOLUTION, seed, limit), "digits", None
    elif path.is_dir():
        from nas.data.files import load_image_folder

        splits, name = load_image_folder(path, resolution or DEFAULT_RESOLUTION, seed, limit), path.name
        augment = default_augmentation(splits[0].shape[-1], flip=True)
    elif path.suffix.lower() == ".npz" and path.is_file():
        from nas.data.files import load_npz

        splits, name = load_npz(path, resolution, seed, limit), path.stem
        augment = default_augmentation(splits[0].shape[-1], flip=False)
    elif path.suffix.lower() == ".npz":
        raise InputError(f"{spec}: no such file")
    else:
        raise InputError(f"data {spec!r}: expected 'synthetic', 'patterns', 'digits', an image folder (one "
                         "sub-folder per class) or an .npz file with 'x' and 'y'"
                         + ("" if path.exists() else "; no such path"))
    train_x, train_y, val_x, val_y, classes = splits
    if len(train_y) == 0 or len(val_y) == 0:
        raise InputError(f"{spec}: too few images for a train and a validation split "
                         f"({len(train_y)} train, {len(val_y)} val)")
    return build_dataset(name, train_x, train_y, val_x, val_y, list(classes), augment)
