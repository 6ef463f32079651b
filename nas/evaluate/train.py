"""Short, reproducible training of a candidate network: the ``train`` objective of ``nas search``."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nas.data import Dataset


@dataclass
class TrainResult:
    accuracy: float  # validation top-1 after the last epoch, in [0, 1]
    history: list[float] = field(default_factory=list)  # validation top-1 after each epoch
    seconds: float = 0.0


def train_model(model: nn.Module, data: Dataset, *, epochs: int = 5, batch_size: int = 64, lr: float = 2e-3,
                weight_decay: float = 0.05, warmup_epochs: int = 1, device: str | torch.device = "cpu",
                seed: int = 0, on_epoch: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` in place and return its validation accuracy per epoch.

    AdamW (no weight decay on biases and norm scales), a per-step linear warm-up over ``warmup_epochs`` then
    cosine decay to zero, and ``data.augment`` on each training batch. On CUDA: channels_last and autocast
    (bfloat16 where supported, else float16 with a GradScaler). Shuffling, augmentation and dropout draw from
    torch's generators seeded with ``seed`` inside a forked RNG state, so the same model, data and seed give
    the same result and the caller's RNG is left as it was.

    ``on_epoch(epoch, accuracy)`` runs after each epoch (counted from 1); whatever it raises propagates, which is
    how a search prunes a trial. A non-finite loss raises ``FloatingPointError`` naming the epoch and step.
    The model is left on ``device`` in eval mode.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    device = resolve_device(device)
    cuda = device.type == "cuda"
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(seed)
        model.to(device, memory_format=torch.channels_last if cuda else torch.preserve_format)
        history = _fit(model, data, epochs, batch_size, lr, weight_decay, warmup_epochs, device, cuda, on_epoch)
    return TrainResult(accuracy=history[-1], history=history, seconds=time.perf_counter() - start)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` means CUDA when present; a CUDA request without CUDA falls back to the CPU."""
    if str(device) == "auto":
        device = "cuda"
    device = torch.device(device)
    return device if device.type != "cuda" or torch.cuda.is_available() else torch.device("cpu")


def on_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole split on the GPU when it fits in 2 GiB (no copy per batch), else batches are copied over."""
    return tensor.to(device) if tensor.numel() * tensor.element_size() <= 2**31 else tensor


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only, as timm and the MetaFormer recipes do."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up to 1, then a cosine down to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def autocast_for(cuda: bool) -> tuple[Callable[[], object], torch.dtype | None]:
    if not cuda:
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype


def _fit(model, data, epochs, batch_size, lr, weight_decay, warmup_epochs, device, cuda, on_epoch) -> list[float]:
    n = len(data.train_y)
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size  # drop the ragged last batch: a batch of one breaks batch norm
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, min(total, warmup_epochs * steps_per_epoch)))
    autocast, dtype = autocast_for(cuda)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    train_x, train_y = on_device(data.train_x, device), on_device(data.train_y, device)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = train_x[idx.to(train_x.device)].to(device, non_blocking=True)
            y = train_y[idx.to(train_y.device)].to(device, non_blocking=True)
            if data.augment is not None:
                x = data.augment(x)
            x = x.contiguous(memory_format=memory_format)
            with autocast():
                loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
        accuracy = evaluate_accuracy(model, data, device=device, batch_size=max(256, batch_size))
        history.append(accuracy)
        if on_epoch is not None:
            on_epoch(epoch, accuracy)
    return history


def evaluate_accuracy(model: nn.Module, data: Dataset, *, device: str | torch.device = "cpu",
                      batch_size: int = 256) -> float:
    """Validation top-1 of ``model`` (put in eval mode) on ``data``, in [0, 1]."""
    device = resolve_device(device)
    cuda = device.type == "cuda"
    autocast, _ = autocast_for(cuda)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model.eval()
    val_x, val_y = on_device(data.val_x, device), on_device(data.val_y, device)
    correct = 0
    with torch.inference_mode(), autocast():
        for start in range(0, len(data.val_y), batch_size):
            x = val_x[start:start + batch_size].to(device, non_blocking=True)
            y = val_y[start:start + batch_size].to(device, non_blocking=True)
            correct += (model(x.contiguous(memory_format=memory_format)).argmax(dim=1) == y).sum().item()
    return correct / len(data.val_y)
