"""Classifier heads: global average pooling, a norm, then a linear or MLP classifier; and MobileNetV2's head,
a 1x1 conv to a wide feature before pooling."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from blocks.activations import Act, act_params, create_act
from blocks.base import BlockConfig, HeadModule, Shape, create, register
from blocks.layers import conv_bn, nchw, scaled_width
from blocks.norm import LayerNormConfig

if TYPE_CHECKING:  # role unions: blocks/__init__.py binds them here once every type is registered
    from blocks import Norm


def norm_vector(x, norm):
    """Apply a feature-map norm to (B, C) vectors through a (B, 1, 1, C) view."""
    return norm(x[:, None, None, :]).flatten(1)


def pool_features(x, norm, norm_tokens):
    """Average-pool a channels-last map, normalising every token first (ViT, Swin) or the pooled vector
    (ConvNeXt)."""
    if norm_tokens:
        return norm(x).mean((1, 2))
    return norm_vector(x.mean((1, 2)), norm)


class LinearHead(HeadModule):
    """Global average pool, optional norm, linear classifier."""

    def __init__(self, in_chs, num_classes, norm=None, norm_tokens=False, dropout=0.0, bias=True):
        super().__init__()
        self.norm = create("norm", norm, dim=in_chs) if norm else nn.Identity()
        self.norm_tokens = norm_tokens
        self.drop = nn.Dropout(dropout)
        self.in_chs, self.bias = in_chs, bias
        self.reset(num_classes)

    def reset(self, num_classes):
        self.fc = nn.Linear(self.in_chs, num_classes, bias=self.bias) if num_classes else nn.Identity()

    def forward(self, x, pre_logits=False):
        x = self.drop(pool_features(x, self.norm, self.norm_tokens))
        return x if pre_logits else self.fc(x)


class MlpHead(HeadModule):
    """Pooled features through a two-layer MLP classifier (MetaFormer's MlpHead)."""

    def __init__(self, in_chs, num_classes, ratio=4.0, act="squared_relu", norm=None, norm_tokens=False,
                 hidden_norm=None, dropout=0.0, bias=True):
        super().__init__()
        self.norm = create("norm", norm, dim=in_chs) if norm else nn.Identity()
        self.norm_tokens = norm_tokens
        self.in_chs, self.hidden = in_chs, scaled_width(in_chs, ratio)
        self.act_name, self.hidden_norm_cfg, self.dropout, self.bias = act, hidden_norm, dropout, bias
        self.reset(num_classes)

    def reset(self, num_classes):
        """The whole MLP is the classifier: zero classes removes it, leaving pooled features."""
        self.fc1 = self.act = self.hidden_norm = self.drop = self.fc2 = None
        if num_classes:
            self.fc1 = nn.Linear(self.in_chs, self.hidden, bias=self.bias)
            self.act = create_act(self.act_name)
            norm = self.hidden_norm_cfg
            self.hidden_norm = create("norm", norm, dim=self.hidden) if norm else nn.Identity()
            self.drop = nn.Dropout(self.dropout)
            self.fc2 = nn.Linear(self.hidden, num_classes, bias=self.bias)

    def forward(self, x, pre_logits=False):
        x = pool_features(x, self.norm, self.norm_tokens)
        if pre_logits or self.fc2 is None:
            return x
        x = self.drop(norm_vector(self.act(self.fc1(x)), self.hidden_norm))
        return self.fc2(x)


class _HeadConfig(BlockConfig):
    norm: Norm | None = Field(default_factory=LayerNormConfig, description="applied to the pooled features")
    norm_tokens: bool = Field(False, description="normalise every token before pooling (ViT, Swin) instead of "
                                                 "the pooled features (ConvNeXt)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = True

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, 1, 1)

    def check(self, shape: Shape, out: int) -> None:
        super().check(shape if self.norm_tokens else (shape[0], 1, 1), out)

    def _norm_cost(self, shape: Shape, flops: bool) -> int:
        if self.norm is None:
            return 0
        site = shape if self.norm_tokens else (shape[0], 1, 1)
        return self.norm.flops(site, shape[0]) if flops else self.norm.params(site, shape[0])

    def _fc_params(self, dim: int, out: int) -> int:
        return (dim * out + out * self.bias) if out else 0


@register("head", module=LinearHead)
class LinearHeadConfig(_HeadConfig):
    type: Literal["linear"] = "linear"
    examples = (
        {},
        {'norm': None, 'bias': False},
        {'norm_tokens': True, 'dropout': 0.1},
    )

    def params(self, shape: Shape, out: int) -> int:
        return self._norm_cost(shape, False) + self._fc_params(shape[0], out)

    def flops(self, shape: Shape, out: int) -> int:
        return self._norm_cost(shape, True) + shape[0] * out


@register("head", module=MlpHead)
class MlpHeadConfig(_HeadConfig):
    type: Literal["mlp_head"] = "mlp_head"
    examples = (
        {},
        {'hidden_norm': None, 'act': 'gelu'},
        {'norm_tokens': True, 'norm': 'batchnorm'},
    )
    ratio: PositiveFloat = 4.0
    act: Act = "squared_relu"
    hidden_norm: Norm | None = Field(default_factory=lambda: LayerNormConfig(eps=1e-5))

    def params(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        if not out:
            return self._norm_cost(shape, False)
        hidden = scaled_width(dim, self.ratio)
        n = self._norm_cost(shape, False) + dim * hidden + hidden * self.bias + act_params(self.act)
        n += self.hidden_norm.params((hidden, 1, 1), hidden) if self.hidden_norm else 0
        return n + self._fc_params(hidden, out)

    def flops(self, shape: Shape, out: int) -> int:
        dim = shape[0]
        if not out:
            return self._norm_cost(shape, True)
        hidden = scaled_width(dim, self.ratio)
        n = self._norm_cost(shape, True) + dim * hidden + hidden * out
        return n + (self.hidden_norm.flops((hidden, 1, 1), hidden) if self.hidden_norm else 0)


class ConvHead(HeadModule):
    """MobileNetV2's head: 1x1 conv to a wide feature -> BN -> act, global average pool, dropout, linear.
    The conv belongs to the classifier: with zero classes the head returns the pooled input features."""

    def __init__(self, in_chs, num_classes, width=1280, act="relu6", dropout=0.0, bias=True):
        super().__init__()
        self.in_chs, self.width, self.act, self.dropout, self.bias = in_chs, width, act, dropout, bias
        self.reset(num_classes)

    def reset(self, num_classes):
        self.conv = self.drop = self.fc = None
        if num_classes:
            self.conv = conv_bn(self.in_chs, self.width, act=self.act)
            self.drop = nn.Dropout(self.dropout)
            self.fc = nn.Linear(self.width, num_classes, bias=self.bias)

    def forward(self, x, pre_logits=False):
        if self.conv is None:
            return x.mean((1, 2))
        x = self.drop(self.conv(nchw(x)).mean((2, 3)))
        return x if pre_logits else self.fc(x)


@register("head", module=ConvHead)
class ConvHeadConfig(BlockConfig):
    type: Literal["conv_head"] = "conv_head"
    examples = (
        {'width': 48, 'act': 'silu', 'dropout': 0.2},
    )
    width: PositiveInt = 1280
    act: Act = "relu6"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = True

    def out_shape(self, shape: Shape, out: int) -> Shape:
        return (out, 1, 1)

    def check(self, shape: Shape, out: int) -> None:
        pass

    def params(self, shape: Shape, out: int) -> int:
        if not out:
            return 0
        return shape[0] * self.width + 2 * self.width + self.width * out + out * self.bias

    def flops(self, shape: Shape, out: int) -> int:
        if not out:
            return 0
        _, h, w = shape
        return (shape[0] + 2) * self.width * h * w + self.width * out

    def workspace(self, shape: Shape, out: int) -> int:
        return self.width * shape[1] * shape[2]
