"""User data: an ImageFolder directory (class sub-folders, decoded with Pillow) or an ``.npz`` with ``x`` and ``y``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nas.data.dataset import capped, split_indices
from nas.data.transforms import resize_center_crop
from nas.errors import InputError, printable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]


def _at(where: object) -> str:
    """A path (or a reader's error, which may quote one) as it goes into a one-line error: its repr when it holds a
    newline or another unprintable character."""
    return printable(str(where))


def _visible_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _labelled_files(root: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Every image under ``root/<class>/``, labelled by the index of its class folder.

    Given ``classes`` (a validation folder read with the training classes), a class may have no images here.
    """
    folders = _visible_dirs(root)
    known = classes is not None
    if classes is None:
        classes = [f.name for f in folders]
        if not classes:
            raise InputError(f"{_at(root)}: no class sub-folders; an image folder holds one sub-folder of images "
                             f"per class (e.g. {_at(root / 'cat' / '1.png')}, {_at(root / 'dog' / '2.png')})")
        if len(classes) < 2:
            raise InputError(f"{_at(root)}: only one class folder ({classes[0]!r}); classification needs at least two")
    unknown = [f.name for f in folders if f.name not in classes]
    if unknown:
        raise InputError(f"{_at(root)}: class folders {unknown} are not among the training classes {classes}")
    files, labels = [], []
    for label, name in enumerate(classes):
        images = _images_in(root / name) if (root / name).is_dir() else []
        if not images and not known:
            raise InputError(f"{_at(root / name)}: no images (expected files ending in "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        files += images
        labels += [label] * len(images)
    return files, labels, classes


def _decode(files: list[Path], resolution: int) -> torch.Tensor:
    """RGB images resized (shorter side) and centre-cropped to ``resolution``, in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    out = torch.empty(len(files), 3, resolution, resolution)
    for i, path in enumerate(files):
        # DecompressionBombError: a header of billions of pixels, which Pillow refuses before decoding; it is no
        # OSError, and was an internal error
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
            raise InputError(f"{_at(path)}: cannot be read as an image ({_at(err)})") from None
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
        out[i] = resize_center_crop(pixels, resolution)[0]
    return out


def load_image_folder(root: Path, resolution: int, seed: int, limit: int | None) -> Splits:
    """``root/train/<class>`` and ``root/val/<class>`` when both exist, else ``root/<class>`` split 80/20 by seed."""
    if not any(root.iterdir()):
        raise InputError(f"{_at(root)}: the folder is empty; put one sub-folder of images per class in it")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_files, train_labels, classes = _labelled_files(root / "train")
        val_files, val_labels, _ = _labelled_files(root / "val", classes)
        if not val_files:
            raise InputError(f"{_at(root / 'val')}: no images")
        train_idx, val_idx = torch.arange(len(train_files)), torch.arange(len(val_files))
    else:
        train_files, train_labels, classes = _labelled_files(root)
        val_files, val_labels = train_files, train_labels
        train_idx, val_idx = split_indices(len(train_files), seed)
    train_idx, val_idx = capped(train_idx, limit, seed), capped(val_idx, limit, seed + 1)
    return (_decode([train_files[i] for i in train_idx], resolution), torch.tensor(train_labels)[train_idx],
            _decode([val_files[i] for i in val_idx], resolution), torch.tensor(val_labels)[val_idx], classes)


def _images_from_array(x: np.ndarray, path: Path, key: str) -> torch.Tensor:
    """``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with 1 to 4 channels, as float NCHW (uint8 to [0, 1])."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in range(1, 5) and x.shape[3] in range(1, 5):
        x = x.transpose(0, 3, 1, 2)
    elif not (x.ndim == 4 and x.shape[1] in range(1, 5)):
        raise InputError(f"{_at(path)}: {key!r} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or "
                         "(N, C, H, W) with 1 to 4 channels")
    if 0 in x.shape[2:]:  # images of no pixels: their resize divided by zero (an internal error)
        raise InputError(f"{_at(path)}: {key!r} has shape {x.shape}; its images have no pixels")
    # complex: torch dropped the imaginary part
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise InputError(f"{_at(path)}: {key!r} has dtype {x.dtype}; expected uint8 or float pixels")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():  # a NaN pixel trains to NaN, silently
        raise InputError(f"{_at(path)}: {key!r} holds NaN or infinite pixels")
    images = torch.from_numpy(np.ascontiguousarray(x))
    return images.float() / 255 if x.dtype == np.uint8 else images.float()


def load_npz(path: Path, resolution: int | None, seed: int, limit: int | None) -> Splits:
    """``x`` and ``y`` (split 80/20 by seed), or also ``x_val`` and ``y_val`` as the validation split.

    Labels may be any values (ints, strings); they are numbered in sorted order.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{_at(path)}: cannot be read as an .npz archive ({_at(err)})") from None
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise InputError(f"{_at(path)}: missing {' and '.join(map(repr, missing))}; found "
                         f"{sorted(arrays) or 'nothing'} "
                         "(expected images 'x' and labels 'y')")
    has_val = "x_val" in arrays or "y_val" in arrays
    if has_val and not ("x_val" in arrays and "y_val" in arrays):
        raise InputError(f"{_at(path)}: 'x_val' and 'y_val' come together; found only one of them")
    pairs = [("x", "y")] + ([("x_val", "y_val")] if has_val else [])
    for xk, yk in pairs:
        if arrays[yk].ndim != 1:
            raise InputError(f"{_at(path)}: {yk!r} has shape {arrays[yk].shape}; expected one label per image (N,)")
        if np.issubdtype(arrays[yk].dtype, np.floating) and np.isnan(arrays[yk]).any():  # else a class named nan
            raise InputError(f"{_at(path)}: {yk!r} holds NaN labels")
        if len(arrays[xk]) != len(arrays[yk]):
            raise InputError(f"{_at(path)}: {xk!r} has {len(arrays[xk])} images but {yk!r} has "
                             f"{len(arrays[yk])} labels")
    all_labels = np.concatenate([arrays[yk] for _, yk in pairs])
    names, codes = np.unique(all_labels, return_inverse=True)
    if len(names) < 2:
        raise InputError(f"{_at(path)}: 'y' holds a single class ({names[0]!r}); classification needs at least two")
    labels = torch.from_numpy(codes.reshape(-1)).long()
    images = [_images_from_array(arrays[xk], path, xk) for xk, _ in pairs]
    if has_val:
        if images[0].shape[1:] != images[1].shape[1:]:
            raise InputError(f"{_at(path)}: 'x' images are {tuple(images[0].shape[1:])} but 'x_val' images are "
                             f"{tuple(images[1].shape[1:])}")
        n = len(images[0])
        train_x, train_y, val_x, val_y = images[0], labels[:n], images[1], labels[n:]
        train_idx, val_idx = torch.arange(len(train_y)), torch.arange(len(val_y))
    else:
        train_x, train_y, val_x, val_y = images[0], labels, images[0], labels
        train_idx, val_idx = split_indices(len(labels), seed)
    train_idx, val_idx = capped(train_idx, limit, seed), capped(val_idx, limit, seed + 1)
    resolution = resolution or min(train_x.shape[-2:])
    return (resize_center_crop(train_x[train_idx], resolution), train_y[train_idx],
            resize_center_crop(val_x[val_idx], resolution), val_y[val_idx], [str(n) for n in names])
