"""Image transforms written in torch (torchvision does not work with this torch build)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def resize_center_crop(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images so the shorter side is ``resolution``, then crop the centre square.

    Antialiased bilinear, as Pillow and torchvision resize, so shrinking a photo does not alias.
    """
    images = images.float()
    height, width = images.shape[-2:]
    if (height, width) != (resolution, resolution):
        scale = resolution / min(height, width)
        size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
        if size != (height, width):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                   antialias=size[0] < height)
        top, left = (images.shape[-2] - resolution) // 2, (images.shape[-1] - resolution) // 2
        images = images[..., top:top + resolution, left:left + resolution]
    return images.contiguous()


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation on a batch: random crop after zero padding, and optional horizontal flip.

    Zero is the channel mean once the data is normalised, so padding adds no new colour. Randomness comes from
    the global torch generator, which ``train_model`` seeds.
    """

    crop_padding: int = 4
    flip: bool = True

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop_padding > 0:
            images = random_crop(images, self.crop_padding)
        if self.flip:
            flipped = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(flipped.view(-1, 1, 1, 1), images.flip(-1), images)
        return images


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image shifted by its own random offset in ``[-padding, padding]`` pixels, zero-filled.

    One ``gather`` over the flattened padded batch: ten times faster on CPU than four-way fancy indexing.
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)).flatten(2)
    top = torch.randint(0, 2 * padding + 1, (batch, 1, 1), device=images.device)
    left = torch.randint(0, 2 * padding + 1, (batch, 1, 1), device=images.device)
    rows = top + torch.arange(height, device=images.device).view(1, height, 1)
    cols = left + torch.arange(width, device=images.device).view(1, 1, width)
    index = (rows * (width + 2 * padding) + cols).view(batch, 1, height * width)
    return padded.gather(2, index.expand(batch, channels, height * width)).view(batch, channels, height, width)


def default_augmentation(resolution: int, flip: bool) -> Augmentation:
    """CIFAR's recipe scaled to the resolution: pad by an eighth of the side (4 pixels at 32)."""
    return Augmentation(crop_padding=max(1, resolution // 8), flip=flip)
