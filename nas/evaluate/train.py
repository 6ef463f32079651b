"""Short, reproducible training of a candidate network: the ``train`` objective of ``nas search``."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.data import Dataset
from nas.outputs import replacing


@dataclass
class TrainResult:
    accuracy: float  # validation top-1 after the last epoch, in [0, 1]
    history: list[float] = field(default_factory=list)  # validation top-1 after each epoch
    seconds: float = 0.0
    # mean training loss of each epoch (what augmented batches scored during the epoch, before its update); the
    # sum over the first epochs is Ru et al.'s training-speed estimate (NeurIPS 2021)
    losses: list[float] = field(default_factory=list)


def train_model(model: nn.Module, data: Dataset, *, epochs: int = 5, batch_size: int = 64, lr: float = 2e-3,
                weight_decay: float = 0.05, warmup_epochs: int = 1, device: str | torch.device = "cpu",
                seed: int = 0, on_epoch: Callable[[int, float], None] | None = None,
                schedule_epochs: int | None = None, checkpoint: str | Path | None = None) -> TrainResult:
    """Train ``model`` on ``data`` in place and return its validation accuracy per epoch.

    AdamW (no weight decay on biases and norm scales), a per-step linear warm-up over ``warmup_epochs`` then
    cosine decay to zero at the end of ``schedule_epochs`` (default ``epochs``), and ``data.augment`` on each
    training batch. Training stops after ``epochs``: a run cut short of its schedule is the first stage of
    successive halving, whose ranking of genomes tracks the whole schedule's far better than a whole short
    schedule's does (benchmarks/BENCHMARKS.md, "Replay").

    ``checkpoint``: a file. A run that stops before the end of its schedule saves its state there (weights,
    optimiser, schedule, random generators); a later call with the same checkpoint, schedule, data size, batch,
    learning rate and seed resumes from it instead of starting over, with exactly the result of an
    uninterrupted run. Any other file there is ignored and replaced; a run that ends its schedule deletes it.
    ``model`` must be built as the first call's was (its weights are overwritten from the file).

    On CUDA: channels_last and autocast (bfloat16 where supported, else float16 with a GradScaler). Shuffling,
    augmentation and dropout draw from torch's generators seeded with ``seed`` inside a forked RNG state, so the
    same model, data and seed give the same result and the caller's RNG is left as it was.

    ``on_epoch(epoch, accuracy)`` runs after each epoch (counted from 1; a resumed run reports the epochs it
    restored first); whatever it raises propagates, which is
    how a search prunes a trial. A non-finite loss raises ``FloatingPointError`` naming the epoch and step.
    The model is left on ``device`` in eval mode.
    """
    schedule_epochs = epochs if schedule_epochs is None else schedule_epochs
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if schedule_epochs < epochs:
        raise ValueError(f"schedule_epochs ({schedule_epochs}) must be at least epochs ({epochs})")
    device = resolve_device(device)
    cuda = device.type == "cuda"
    start = time.perf_counter()
    n = len(data.train_y)
    batch_size = min(batch_size, n)
    plan = Plan(schedule_epochs, n // batch_size, batch_size, lr, weight_decay, warmup_epochs, seed)
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(seed)
        model.to(device, memory_format=torch.channels_last if cuda else torch.preserve_format)
        history, losses = _fit(model, data, epochs, plan, device, cuda, on_epoch,
                               Path(checkpoint) if checkpoint is not None else None)
    return TrainResult(accuracy=history[-1], history=history, seconds=time.perf_counter() - start, losses=losses)


@dataclass(frozen=True)
class Plan:
    """What a checkpoint must share with a run to be resumed by it."""

    schedule_epochs: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    seed: int


def _load_checkpoint(path: Path | None, plan: Plan, device: torch.device) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - a file cut by a kill, or not ours: start over and replace it
        return None
    return state if state.get("plan") == plan.__dict__ else None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:  # a kill leaves the old file or the new one, never half of one
        torch.save(state, tmp)


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


def _fit(model, data, epochs: int, plan: Plan, device, cuda, on_epoch, checkpoint: Path | None
         ) -> tuple[list[float], list[float]]:
    """Validation accuracy and mean training loss, per epoch."""
    n = len(data.train_y)
    batch_size = plan.batch_size
    steps_per_epoch = plan.steps_per_epoch  # drop the ragged last batch: a batch of one breaks batch norm
    total = plan.schedule_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(param_groups(model, plan.weight_decay), lr=plan.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, min(total, plan.warmup_epochs * steps_per_epoch)))
    autocast, dtype = autocast_for(cuda)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    train_x, train_y = on_device(data.train_x, device), on_device(data.train_y, device)
    history: list[float] = []
    losses: list[float] = []
    state = _load_checkpoint(checkpoint, plan, device)
    if state is not None and len(state["history"]) <= epochs:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"].cpu())
        if cuda and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        history = [float(a) for a in state["history"]]
        losses = [float(v) for v in state.get("losses", [])]  # a checkpoint written before losses were kept: none
        for epoch, accuracy in enumerate(history, start=1):  # what was done, reported as if just done
            if on_epoch is not None:
                on_epoch(epoch, accuracy)
    for epoch in range(len(history) + 1, epochs + 1):
        model.train()
        order = torch.randperm(n)
        loss_sum = torch.zeros((), device=device)
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
            loss_sum += loss.detach().float()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
        accuracy = evaluate_accuracy(model, data, device=device, batch_size=max(256, batch_size))
        history.append(accuracy)
        losses.append(float(loss_sum) / steps_per_epoch)
        if on_epoch is not None:
            on_epoch(epoch, accuracy)
    if checkpoint is not None:
        if epochs < plan.schedule_epochs:
            state = {"plan": plan.__dict__, "history": history, "losses": losses, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "scaler": scaler.state_dict(), "rng": torch.get_rng_state()}
            if cuda:
                state["cuda_rng"] = torch.cuda.get_rng_state(device)
            _save_checkpoint(checkpoint, state)
        else:
            checkpoint.unlink(missing_ok=True)
    return history, losses


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
