"""load_data on real small data: the project's synthetic task, sklearn's digits, image folders and .npz files."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nas.data import Augmentation, load_data
from nas.data.transforms import random_crop, resize_center_crop
from nas.errors import InputError
from nas.evaluate.train import train_model


def assert_normalised(data):
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert data.train_x.shape[1:] == data.val_x.shape[1:] == (data.channels, data.resolution, data.resolution)
    assert torch.allclose(data.train_x.mean(dim=(0, 2, 3)), torch.zeros(data.channels), atol=1e-4)
    assert torch.allclose(data.train_x.std(dim=(0, 2, 3)), torch.ones(data.channels), atol=1e-3)
    assert set(data.train_y.tolist()) <= set(range(data.num_classes))


def test_synthetic_is_balanced_normalised_and_reproducible():
    data = load_data("synthetic", resolution=24, seed=3, limit=400)
    assert (len(data.train_y), len(data.val_y)) == (400, 400)
    assert data.classes == ["left", "right", "above", "below"] and data.channels == 3
    assert torch.bincount(data.train_y).tolist() == [100] * 4
    assert_normalised(data)
    again = load_data("synthetic", resolution=24, seed=3, limit=400)
    assert torch.equal(data.train_x, again.train_x) and torch.equal(data.val_y, again.val_y)
    other = load_data("synthetic", resolution=24, seed=4, limit=400)
    assert not torch.equal(data.train_x, other.train_x)
    assert not torch.equal(data.train_x, data.val_x)
    assert data.augment is None  # flips would swap left and right
    full = load_data("synthetic")
    assert (len(full.train_y), len(full.val_y), full.resolution) == (2000, 500, 32)


def colour_histograms(images: torch.Tensor, bins: int = 16) -> np.ndarray:
    return np.stack([np.concatenate([np.histogram(channel, bins=bins, range=(-3, 3))[0] for channel in image])
                     for image in images.numpy()]) / images[0, 0].numel()


def test_synthetic_needs_spatial_reasoning_not_colour_statistics():
    """Colour histograms carry no label information; a small conv net learns the task in a few epochs."""
    from sklearn.linear_model import LogisticRegression

    data = load_data("synthetic", resolution=16, limit=500)
    probe = LogisticRegression(max_iter=2000).fit(colour_histograms(data.train_x), data.train_y.numpy())
    histogram_accuracy = probe.score(colour_histograms(data.val_x), data.val_y.numpy())

    torch.manual_seed(0)
    convnet = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 4))
    convnet_accuracy = train_model(convnet, data, epochs=4, lr=5e-3).accuracy

    assert histogram_accuracy < 0.4  # chance is 0.25
    assert convnet_accuracy > 0.55, (histogram_accuracy, convnet_accuracy)


def test_patterns_has_ten_balanced_classes_of_texture_and_layout_and_is_reproducible():
    data = load_data("patterns", resolution=24, seed=2, limit=300)
    assert (len(data.train_y), len(data.val_y), data.num_classes, data.channels) == (300, 300, 10, 3)
    assert data.classes[:2] == ["vertical/stripes-left", "vertical/stripes-right"]
    assert torch.bincount(data.train_y).tolist() == [30] * 10
    assert_normalised(data)
    assert torch.equal(data.train_x, load_data("patterns", resolution=24, seed=2, limit=300).train_x)
    assert not torch.equal(data.train_x, load_data("patterns", resolution=24, seed=3, limit=300).train_x)
    assert data.augment is None  # flips would swap the sides that hold the stripes
    full = load_data("patterns")
    assert (len(full.train_y), len(full.val_y), full.resolution) == (1500, 1000, 32)


def test_patterns_needs_texture_and_layout_not_colour_statistics():
    """Colour histograms say nothing of the label, nor do the four quadrants' mean colours (layout without
    texture); a small conv net that sees both learns it."""
    from sklearn.linear_model import LogisticRegression

    data = load_data("patterns", resolution=16, limit=1000)

    def quadrant_means(x: torch.Tensor) -> np.ndarray:
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1).numpy()

    probes = {}
    for name, features in (("histogram", colour_histograms), ("quadrants", quadrant_means)):
        probe = LogisticRegression(max_iter=2000).fit(features(data.train_x), data.train_y.numpy())
        probes[name] = probe.score(features(data.val_x), data.val_y.numpy())
    torch.manual_seed(0)
    convnet = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 16, 10))
    convnet_accuracy = train_model(convnet, data, epochs=6, lr=3e-3).accuracy
    assert max(probes.values()) < 0.2, probes  # chance is 0.1
    assert convnet_accuracy > 0.3, (probes, convnet_accuracy)


def test_digits_are_one_grey_channel_upsampled_with_a_fixed_split():
    data = load_data("digits")
    assert (len(data.train_y), len(data.val_y)) == (1438, 359)  # all 1797 images, 80/20
    assert (data.num_classes, data.channels, data.resolution) == (10, 1, 32)
    assert_normalised(data)
    assert torch.equal(load_data("digits").val_x, data.val_x)
    small = load_data("digits", resolution=16, limit=100, seed=1)
    assert small.train_x.shape == (100, 1, 16, 16) and len(small.val_y) == 100


def write_image(path, size, colour, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_image_folder_decodes_resizes_and_splits(tmp_path):
    for i in range(10):  # mixed sizes, formats and modes, as a user's folder has
        write_image(tmp_path / "red" / f"{i}.png", (40 + i, 30), (250, 10, 10))
        write_image(tmp_path / "blue" / f"{i}.jpg", (30, 50), (10, 10, 250))
    write_image(tmp_path / "grey" / "a.png", (20, 20), 128, mode="L")
    write_image(tmp_path / "grey" / "b.bmp", (20, 20), 100, mode="L")
    (tmp_path / "red" / "notes.txt").write_text("not an image, ignored")
    data = load_data(str(tmp_path), resolution=12)
    assert data.classes == ["blue", "grey", "red"] and data.channels == 3
    assert (len(data.train_y), len(data.val_y)) == (18, 4)  # 22 images, 20% held out by seed
    assert_normalised(data)
    assert data.augment == Augmentation(crop_padding=1, flip=True)
    # Each class is one flat colour, so its normalised red channel is one value per class.
    red = data.train_x[:, 0].flatten(1)
    assert torch.all(red.std(dim=1) < 1e-3)
    assert red[data.train_y == 2, 0].min() > red[data.train_y == 0, 0].max()
    assert not torch.equal(load_data(str(tmp_path), resolution=12, seed=1).val_y, data.val_y)


def test_image_folder_uses_train_and_val_folders(tmp_path):
    for split, count in (("train", 6), ("val", 2)):
        for name in ("cat", "dog"):
            for i in range(count):
                write_image(tmp_path / split / name / f"{i}.png", (16, 16), (i * 20, 0, 0))
    data = load_data(str(tmp_path), resolution=8)
    assert data.classes == ["cat", "dog"]
    assert (len(data.train_y), len(data.val_y)) == (12, 4)
    assert data.val_y.tolist() == [0, 0, 1, 1]


def test_image_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="empty"):
        load_data(str(tmp_path))
    write_image(tmp_path / "only" / "a.png", (8, 8), (0, 0, 0))
    with pytest.raises(InputError, match="only one class folder"):
        load_data(str(tmp_path))
    (tmp_path / "second").mkdir()
    with pytest.raises(InputError, match="second: no images"):
        load_data(str(tmp_path))
    (tmp_path / "second" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match=r"broken\.png: cannot be read as an image"):
        load_data(str(tmp_path))


def test_npz_layouts_labels_and_validation_split(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = tmp_path / "nhwc.npz"
    np.savez(nhwc, x=rng.integers(0, 256, (50, 10, 10, 3), dtype=np.uint8), y=rng.integers(0, 5, 50))
    data = load_data(str(nhwc))
    assert (data.channels, data.resolution, len(data.train_y), len(data.val_y)) == (3, 10, 40, 10)
    assert data.augment == Augmentation(crop_padding=1, flip=False)
    assert_normalised(data)

    nchw = tmp_path / "nchw.npz"
    labels = np.array(["ant", "bee"] * 10)
    np.savez(nchw, x=rng.random((20, 1, 12, 16), dtype=np.float32), y=labels,
             x_val=rng.random((6, 1, 12, 16), dtype=np.float32), y_val=np.array(["bee"] * 6))
    data = load_data(str(nchw), resolution=8)
    assert data.classes == ["ant", "bee"] and data.train_x.shape == (20, 1, 8, 8)
    assert data.val_y.tolist() == [1] * 6

    grey = tmp_path / "grey.npz"
    np.savez(grey, x=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), y=np.arange(30) % 3)
    assert load_data(str(grey), limit=5).train_x.shape == (5, 1, 8, 8)


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((4, 8, 8)), "y": np.zeros(4)}, r"missing 'x'; found \['images', 'y'\]"),
    ({"x": np.zeros((4, 8, 8)), "y": np.arange(3)}, "'x' has 4 images but 'y' has 3 labels"),
    ({"x": np.zeros((4, 8)), "y": np.arange(4)}, r"'x' has shape \(4, 8\)"),
    ({"x": np.zeros((4, 8, 8)), "y": np.zeros(4)}, "single class"),
    ({"x": np.zeros((4, 8, 8)), "y": np.arange(4), "x_val": np.zeros((2, 8, 8))}, "come together"),
])
def test_npz_errors_say_what_is_wrong(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=message):
        load_data(str(path))


def test_unknown_specs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="expected 'synthetic', 'patterns', 'digits'"):
        load_data("cifar10")
    with pytest.raises(InputError, match="no such file"):
        load_data(str(tmp_path / "missing.npz"))
    (tmp_path / "garbage.npz").write_text("not a zip")
    with pytest.raises(InputError, match="cannot be read as an .npz"):
        load_data(str(tmp_path / "garbage.npz"))


def test_resize_keeps_the_centre_square():
    # A wide image in three bands: only the middle band survives the centre crop.
    image = torch.zeros(1, 1, 10, 30)
    image[..., 10:20] = 1.0
    out = resize_center_crop(image, 5)
    assert out.shape == (1, 1, 5, 5) and out.min() > 0.8  # antialiasing softens the edges a little


def test_augmentation_shifts_and_flips_each_image_on_its_own():
    images = torch.zeros(64, 1, 9, 9)
    images[:, 0, 4, 4] = 1.0  # one bright pixel in the centre
    torch.manual_seed(0)
    shifted = random_crop(images, padding=2)
    where = shifted[:, 0].flatten(1).argmax(dim=1)
    rows, cols = where // 9, where % 9
    assert shifted.sum() == 64  # nothing falls off: the shift is within the padding
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10

    ramp = torch.arange(8.0).expand(32, 1, 8, 8)
    flipped = Augmentation(crop_padding=0, flip=True)(ramp)
    is_flipped = flipped[:, 0, 0, 0] == 7
    assert 0 < is_flipped.sum() < 32 and torch.equal(flipped[is_flipped], ramp[is_flipped].flip(-1))
    data = load_data("digits", resolution=8, limit=10)
    assert dataclasses.replace(data, augment=None).augment is None
