"""The compiled network: stem, stages of blocks, head, built from a canonical genome dict.

Plain torch on purpose: ``nas compile`` inlines this file's classes into standalone ``model.py`` files.
"""
from __future__ import annotations

import torch
from torch import nn

from blocks.base import create, stage_blocks


class Stage(nn.Module):
    """A downsample, then blocks. With ``class_token`` (the stage's width), a learned token joins the map after
    the downsample and every block passes it on (CvT's last stage)."""

    def __init__(self, downsample, blocks, class_token=None):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.class_token = None
        if class_token:
            self.class_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, 1, class_token), std=0.02))

    def forward(self, x):
        """The (B, H, W, C) map, and the (B, 1, 1, C) class token or None."""
        x = self.downsample(x)
        if self.class_token is None:
            return self.blocks(x), None
        token = self.class_token.expand(x.shape[0], -1, -1, -1)
        for block in self.blocks:
            x, token = block(x, token)
        return x, token


def init_weights(module):
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Network(nn.Module):
    """A backbone with timm's habits: ``forward_features``, ``forward_head``, ``reset_classifier``,
    ``forward_intermediates`` and ``features_only``. Inputs and stage outputs are NCHW. A genome with a
    ``neck`` also gives ``forward_pyramid``; built ``features_only``, it returns that pyramid."""

    def __init__(self, genome, features_only=False):
        super().__init__()
        resolution = genome["input"]["resolution"]
        size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        stages = genome["stages"]
        self.num_classes = genome["num_classes"]
        self.features_only = features_only
        chs = stages[0]["width"]
        self.stem = create("stem", genome["stem"], in_chs=genome["input"]["channels"], out_chs=chs, size=size)
        chs = genome["stem"].get("width") or chs  # a stem may be narrower than the first stage (ResNet)
        input_size, size = size, self.stem.out_size(size)
        depths = [s["depth"] for s in stages]
        rate = genome.get("drop_path_rate", 0.0)
        drop_path = [rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        self.stages = nn.ModuleList()
        self.feature_info = []
        for i, spec in enumerate(stages):
            width, downsample = spec["width"], None
            if spec.get("downsample"):
                downsample = create("downsample", spec["downsample"], in_chs=chs, out_chs=width, size=size)
                size, chs = downsample.out_size(size), width
            blocks = []
            for cfg in stage_blocks(spec):
                block = create("block", cfg, dim=chs, in_chs=chs, out_chs=width, size=size,
                               drop_path=drop_path[len(blocks) + sum(depths[:i])])
                blocks.append(block)
                # Resampling blocks (a stage's first, for ResNet-like stages) change width and size.
                size, chs = block.out_size(size), width
            self.stages.append(Stage(downsample, blocks, width if spec.get("class_token") else None))
            self.feature_info.append({"num_chs": chs, "reduction": input_size[0] // size[0], "module": f"stages.{i}"})
        self.num_features = chs
        self.head = None if features_only else create("head", genome["head"], in_chs=chs,
                                                      num_classes=self.num_classes)
        neck = genome.get("neck")
        self.neck_stages = neck["in_stages"] if neck else None
        self.neck = create("neck", neck, in_chs=[self.feature_info[i]["num_chs"] for i in neck["in_stages"]]
                           ) if neck else None
        self.apply(init_weights)

    def forward_features(self, x):
        """The last stage's map, or its class token as a (B, C, 1, 1) map where it has one: what the head
        reads."""
        x = self.stem(x.permute(0, 2, 3, 1))
        for stage in self.stages:
            x, token = stage(x)
        return (x if token is None else token).permute(0, 3, 1, 2)

    def forward_head(self, x, pre_logits=False):
        return self.head(x.permute(0, 2, 3, 1), pre_logits=pre_logits)

    def forward_intermediates(self, x, indices=None, stop_early=False, intermediates_only=False):
        """Stage outputs (NCHW) for ``indices`` (default: all), with the final features unless
        ``intermediates_only``."""
        indices = list(range(len(self.stages))) if indices is None else [i % len(self.stages) for i in indices]
        features, token = [], None
        x = self.stem(x.permute(0, 2, 3, 1))
        for i, stage in enumerate(self.stages):
            if stop_early and i > max(indices):
                break
            x, token = stage(x)
            if i in indices:
                features.append(x.permute(0, 3, 1, 2))
        if intermediates_only:
            return features
        return (x if token is None else token).permute(0, 3, 1, 2), features

    def forward_pyramid(self, x):
        """The neck's pyramid (NCHW maps, finest first) over the stage outputs it reads."""
        return self.neck(self.forward_intermediates(x, self.neck_stages, stop_early=True, intermediates_only=True))

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def forward(self, x):
        if self.features_only:  # the pyramid when the genome has a neck, else every stage's output
            if self.neck is not None:
                return self.forward_pyramid(x)
            return self.forward_intermediates(x, intermediates_only=True)
        return self.forward_head(self.forward_features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
