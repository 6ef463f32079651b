"""Training a supernet once for a whole space: ``nas supernet train``.

Each step follows the sandwich rule (BigNAS): the largest genome learns from the labels, then the smallest and
``random_per_step`` random genomes learn from the largest's predictions (in-place distillation), and one
optimizer step applies the summed gradients. Distillation starts only once the largest genome has something to
teach (``TEACHER_READY``); until then every genome learns from the labels. Every random draw of a step (batch
order, genomes, dropout) comes from the seed, the epoch and the step, so a run resumed from its checkpoint is the
run that was not stopped. The checkpoint (``RUN/supernet.pt``) is written atomically every epoch, every
``checkpoint_every_s`` seconds and on Ctrl-C or SIGTERM, which take effect between two steps (a second Ctrl-C
stops at once, unsaved).
"""
from __future__ import annotations

import csv
import math
import os
import random
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from nas.data import Dataset, load_data
from nas.errors import GenomeError, InputError, NasError, printable
from nas.evaluate.train import (
    autocast_for,
    evaluate_accuracy,
    on_device,
    param_groups,
    resolve_device,
    warmup_cosine,
)
from nas.flags import check_seed
from nas.genome import Genome
from nas.io import load_genome, read_yaml
from nas.memory import MOST_AUTO_BATCH, BatchSize, TrainingMemory, choose_batch, training_memory_estimate
from nas.network import Network
from nas.outputs import output_dir, replacing
from nas.space import fit_space_to_data, instantiate, random_picker, space_resolution
from nas.supernet.supernet import (
    CHECKPOINT,
    Supernet,
    SupernetCoverageError,
    recalibrate_norms,
)

OPTIONS_FILE, SPACE_FILE, HISTORY_FILE = "train.yaml", "space.yaml", "history.csv"


class SupernetTrainOptions(BaseModel):
    """What a supernet training run was started with (``RUN/train.yaml``); each field is also a flag of ``nas
    supernet train`` (``nas.flags``)."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field("tiny", description="a shipped space or a space YAML file")
    data: str = Field("synthetic", description="an image folder, an .npz, synthetic, patterns or digits")
    data_limit: int | None = Field(None, description="use at most this many images per split (a seeded subset)")
    epochs: int = Field(10, description="epochs in all; on resume, may be raised")
    batch_size: BatchSize = Field(64, description="images per step, or auto: the largest power of two up to "
                                  f"{MOST_AUTO_BATCH} whose training memory fits the device's free memory")
    lr: float = Field(2e-3, description="AdamW peak learning rate")
    weight_decay: float = Field(0.05, description="AdamW weight decay, on weights but not on norms and biases")
    warmup_epochs: int = Field(1, description="epochs of linear learning-rate warm-up before the cosine decay")
    random_per_step: int = Field(2, description="random genomes per step besides the largest and the smallest")
    distill: bool = Field(True, description="in-place distillation: once the largest genome beats chance, the "
                          "smaller genomes learn from its predictions, not the labels")
    calibration_batches: int = Field(8, description="training batches that re-estimate BatchNorm statistics "
                                     "before a genome is scored")
    coverage_samples: int = Field(48, description="random genomes, beyond every option at both ends, that size "
                                  "the supernet")
    device: str = Field("auto", description="auto (CUDA when present, with autocast), cpu or cuda[:N]")
    seed: int = Field(0, description="seed of the weights, the batch order and the genomes of each step")
    threads: int | None = Field(None, description="torch CPU threads (default: torch's own)")
    checkpoint_every_s: float = Field(60.0, description="seconds between checkpoints within an epoch; one is also "
                                      "written after every epoch and on Ctrl-C")

    def check(self) -> SupernetTrainOptions:
        """Refuse values no run can use, before anything is loaded or written (bad input, exit 2)."""
        for name in ("epochs", "batch_size", "calibration_batches", "data_limit", "threads"):
            value = getattr(self, name)
            if value is not None and value != "auto" and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name in ("random_per_step", "warmup_epochs", "coverage_samples"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        # float flags take "nan" and "inf", which pass any comparison a NaN is in: test finiteness first
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr must be a finite positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"--weight-decay must be a finite number, not negative, got {self.weight_decay}")
        if not self.checkpoint_every_s > 0:  # inf is allowed: a checkpoint every epoch only
            raise InputError(f"--checkpoint-every-s must be positive, got {self.checkpoint_every_s}")
        # torch's own message (RuntimeError: Expected one of cpu, cuda, ipu, ...) was an internal error
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise InputError(f"--device {printable(self.device)}: expected auto, cpu or cuda[:N]")
        check_seed(self.seed)
        return self


# In-place distillation starts after the first epoch at whose end the largest genome's validation accuracy is a
# quarter of the way from chance to 1. Before that, its predictions are near uniform, and the others copying them
# pull the shared weights towards uniform outputs: on `patterns`, whose genomes stay at chance for 3-10 epochs
# when trained alone, a supernet distilling from the first step was still at chance after 15 epochs, and one
# training every genome on the labels left chance at epoch 4 (benchmarks/BENCHMARKS.md, "Supernet").
TEACHER_READY = 0.25


def teacher_ready(history: list[dict[str, float]], num_classes: int) -> bool:
    """Whether the largest genome has beaten chance by ``TEACHER_READY`` of the way to 1 at an epoch's end."""
    chance = 1.0 / num_classes
    return any(row["largest_accuracy"] >= chance + TEACHER_READY * (1.0 - chance) for row in history)


@dataclass
class SupernetTrainResult:
    run_dir: Path
    history: list[dict[str, float]]  # per epoch: the largest genome's training loss, the largest and smallest
    # genomes' validation accuracy
    seconds: float

    def summary(self) -> str:
        last = self.history[-1]
        return (f"supernet trained for {len(self.history)} epochs: largest genome {last['largest_accuracy']:.1%}, "
                f"smallest {last['smallest_accuracy']:.1%} validation accuracy; checkpoint "
                f"{self.run_dir / CHECKPOINT} (search it with nas search --objective supernet --supernet "
                f"{self.run_dir})")


def inherited_accuracy(net: Supernet, genome: Genome | dict[str, Any], data: Dataset, *,
                       calibration_batches: int = 8, batch_size: int = 64, device: str | torch.device = "cpu",
                       seed: int = 0) -> tuple[float, Network]:
    """A genome's validation accuracy with the supernet's weights: extracted, its BatchNorm statistics
    re-estimated on training images, then scored. Returns the accuracy and the standalone model."""
    device = resolve_device(device)
    model = net.extract(genome).to(device)
    return score_extracted(model, data, calibration_batches=calibration_batches, batch_size=batch_size,
                           device=device, seed=seed), model


def score_extracted(model: Network, data: Dataset, *, calibration_batches: int = 8, batch_size: int = 64,
                    device: str | torch.device = "cpu", seed: int = 0) -> float:
    """Validation accuracy of a model extracted from a supernet, after re-estimating its BatchNorm statistics."""
    device = resolve_device(device)
    recalibrate_norms(model, calibration_images(data, calibration_batches, batch_size, device, seed))
    return evaluate_accuracy(model, data, device=device)


def calibration_images(data: Dataset, batches: int, batch_size: int, device: torch.device, seed: int = 0
                       ) -> list[torch.Tensor]:
    """The same training images for every genome: comparable statistics, and no genome luckier than another."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.train_y), generator=generator)[:batches * batch_size]
    return [data.train_x[idx].to(device) for idx in order.split(batch_size) if len(idx) > 1]


def sample_genome(space: dict[str, Any], rng: random.Random, tries: int = 50) -> Genome:
    """A random valid genome of ``space`` (invalid combinations are drawn again)."""
    for _ in range(tries):
        try:
            return load_genome(instantiate(space, random_picker(rng)))
        except GenomeError:
            continue
    raise NasError(f"no valid genome in {tries} random draws of the space")


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("supernet-%Y%m%d-%H%M%S")


def train_supernet(options: SupernetTrainOptions | None = None, *, out: str | Path | None = None,
                   resume: bool | str | Path = False, epochs: int | None = None, quiet: bool = False,
                   stream=None) -> SupernetTrainResult:
    """Train (or, with ``resume``, go on training) a supernet for ``options.space`` on ``options.data``.

    ``resume`` is a run directory (or ``True`` with ``out``); its options are the run's own, except
    ``epochs``, which may be raised. Ctrl-C saves the checkpoint before raising ``KeyboardInterrupt``.
    """
    stream = stream or sys.stderr
    if resume:
        run_dir = Path(resume if isinstance(resume, (str, Path)) else out or "")
        if out is not None and Path(out).resolve() != run_dir.resolve():  # was ignored: the run went on in RUN
            raise InputError(f"--resume {run_dir} continues that run in its own directory; drop --out {out}")
        if not (run_dir / CHECKPOINT).is_file():
            raise InputError(f"--resume {run_dir}: no {CHECKPOINT} there to resume")
        net, state = Supernet.load(run_dir / CHECKPOINT)
        options = _resumed_options(run_dir / CHECKPOINT, state)
        if epochs is not None:
            options = options.model_copy(update={"epochs": epochs})
        options.check()
    else:
        options = (options or SupernetTrainOptions()).check()
        run_dir = output_dir(Path(out) if out else default_run_dir(), "--out")
        if (run_dir / CHECKPOINT).exists():
            raise InputError(f"{run_dir} already holds a supernet; continue it with --resume {run_dir} or pick "
                             f"another --out")
        net, state = None, None

    device = resolve_device(options.device)
    if options.threads:
        torch.set_num_threads(options.threads)
    space, _, _ = read_yaml(options.space) if net is None else (net.space, "", "")
    data = load_data(options.data, resolution=space_resolution(space), seed=options.seed, limit=options.data_limit)
    if net is not None:
        return _train(net, options, data, device, run_dir, state, quiet, stream)
    space = fit_space_to_data(space, data)
    _say(quiet, stream, f"nas supernet train: sizing the supernet of {options.space} "
                        f"(every option at both ends, {options.coverage_samples} random genomes)")
    net = Supernet.from_space(space, samples=options.coverage_samples, seed=options.seed)
    if options.batch_size == "auto":  # the number chosen is the run's: train.yaml keeps it for --resume
        choice = choose_batch(lambda batch: training_memory(net, data, batch, device), str(device),
                              most=min(MOST_AUTO_BATCH, len(data.train_y)))
        options = options.model_copy(update={"batch_size": choice.batch})
        _say(quiet, stream, f"nas supernet train: {choice.describe()}")
    with _removed_unless_saved(run_dir):
        (run_dir / SPACE_FILE).write_text(yaml.safe_dump(space, sort_keys=False))
        (run_dir / OPTIONS_FILE).write_text(yaml.safe_dump(options.model_dump(), sort_keys=False))
        return _train(net, options, data, device, run_dir, None, quiet, stream)


def _train(net: Supernet, options: SupernetTrainOptions, data: Dataset, device: torch.device, run_dir: Path,
           state: dict[str, Any] | None, quiet: bool, stream) -> SupernetTrainResult:
    """Fit from ``state`` (a checkpoint's, or None for a new run) to the last epoch."""
    trainer = _Trainer(net, options, data, device, run_dir, state)
    memory = training_memory(net, data, trainer.batch_size, device)
    _say(quiet, stream, f"nas supernet train: {options.space} on {data.name} ({len(data.train_y)} train, "
                        f"{len(data.val_y)} val images), {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M "
                        f"shared params, device {device}; run directory {run_dir}"
                        + (f"; resuming at epoch {trainer.epoch + 1}, step {trainer.step}" if state else ""))
    _say(quiet, stream, f"  {memory.describe()}: the shared weights and the largest genome's activations")
    start = time.perf_counter()
    try:
        with _StopBetweenSteps() as stop:
            trainer.fit(quiet, stream, stop)
    except KeyboardInterrupt:
        if trainer.stopped:
            print(f"interrupted: checkpoint saved at epoch {trainer.epoch + 1}, step {trainer.step}; continue "
                  f"with nas supernet train --resume {run_dir}", file=stream)
        raise
    result = SupernetTrainResult(run_dir, trainer.history, time.perf_counter() - start)
    _say(quiet, stream, result.summary())
    return result


def training_memory(net: Supernet, data: Dataset, batch: int, device: torch.device) -> TrainingMemory:
    """What a step holds at its peak: every shared weight with its gradient and AdamW state, and the
    activations of the largest genome (the sandwich rule's genomes run one after another); then the
    validation of an epoch's end, at ``evaluate_accuracy``'s batch."""
    cuda = device.type == "cuda"
    return training_memory_estimate(load_genome(net.largest), batch, validation_batch=min(256, len(data.val_y)),
                                    device=device.type, dtype="bfloat16" if cuda else "float32",
                                    trained_params=sum(p.numel() for p in net.parameters()))


TRAINING_STATE = ("options", "optimizer", "schedule", "scaler", "epoch", "step", "history", "loss_sum",
                  "loss_steps")


def _resumed_options(path: Path, state: dict[str, Any]) -> SupernetTrainOptions:
    """The options of the run a checkpoint was saved by; a supernet checkpoint without its training state
    cannot be resumed (it can still be searched)."""
    missing = [key for key in TRAINING_STATE if key not in state]
    if missing:
        raise InputError(f"{path}: a supernet checkpoint without training state ({', '.join(missing)}); it "
                         f"cannot be resumed")
    try:
        return SupernetTrainOptions.model_validate(state["options"])
    except ValidationError:
        raise InputError(f"{path}: a supernet checkpoint whose training options are damaged") from None


@contextmanager
def _removed_unless_saved(run_dir: Path):
    """Make ``run_dir``; if the run fails before its first checkpoint, remove what this command made there and
    nothing else: its own files, and the folders it created once they are empty. A run with a checkpoint is
    kept for --resume."""
    made = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    ours = [run_dir / name for name in (SPACE_FILE, OPTIONS_FILE, HISTORY_FILE) if not (run_dir / name).exists()]
    ours.append(run_dir / f".{CHECKPOINT}.{os.getpid()}")  # a save cut short
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if not (run_dir / CHECKPOINT).exists():
            for path in ours:
                path.unlink(missing_ok=True)
            for folder in made:  # deepest first
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise


class _StopBetweenSteps:
    """SIGINT and SIGTERM set a flag the loop reads after each step, so no step is half applied when the
    checkpoint is written; a second signal interrupts at once."""

    def __enter__(self) -> threading.Event:
        self.event = threading.Event()
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self.event

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _say(quiet: bool, stream, text: str) -> None:
    if not quiet:
        print(text, file=stream, flush=True)


class _Trainer:
    """The optimisation state of one run, and its checkpoint."""

    def __init__(self, net: Supernet, options: SupernetTrainOptions, data: Dataset, device: torch.device,
                 run_dir: Path, state: dict[str, Any] | None):
        self.net, self.options, self.data, self.device, self.run_dir = net, options, data, device, run_dir
        self.cuda = device.type == "cuda"
        net.to(device)
        self.batch_size = min(options.batch_size, len(data.train_y))
        self.steps_per_epoch = len(data.train_y) // self.batch_size  # no ragged batch: a batch of one breaks BN
        total = options.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(param_groups(net, options.weight_decay), lr=options.lr)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, min(total, options.warmup_epochs * self.steps_per_epoch)))
        self.autocast, dtype = autocast_for(self.cuda)
        self.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        self.largest, self.smallest = load_genome(net.largest), load_genome(net.smallest)
        self.epoch, self.step, self.history = 0, 0, []
        self.loss_sum, self.loss_steps = 0.0, 0
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.scaler.load_state_dict(state["scaler"])
            self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
            self.loss_sum, self.loss_steps = state["loss_sum"], state["loss_steps"]
        self.train_x, self.train_y = on_device(data.train_x, device), on_device(data.train_y, device)
        self.saved_at = time.perf_counter()
        self.stopped = False

    def fit(self, quiet: bool, stream, stop: threading.Event) -> None:
        tty = getattr(stream, "isatty", lambda: False)()
        while self.epoch < self.options.epochs:  # in a log file, a bar line every 10 s of a long epoch only
            bar = tqdm(total=self.steps_per_epoch, initial=self.step, file=stream, disable=quiet, leave=False,
                       desc=f"epoch {self.epoch + 1}/{self.options.epochs}", unit="step",
                       mininterval=0.5 if tty else 10.0, delay=0 if tty else 10.0)
            order = torch.randperm(len(self.data.train_y),
                                   generator=torch.Generator().manual_seed(self.options.seed * 100003 + self.epoch))
            while self.step < self.steps_per_epoch:
                idx = order[self.step * self.batch_size:(self.step + 1) * self.batch_size]
                loss = self._step(idx)
                self.loss_sum, self.loss_steps, self.step = self.loss_sum + loss, self.loss_steps + 1, self.step + 1
                bar.update(1)
                bar.set_postfix(loss=f"{self.loss_sum / self.loss_steps:.3f}", refresh=False)
                if stop.is_set():
                    bar.close()
                    self.save()
                    self.stopped = True
                    raise KeyboardInterrupt
                if time.perf_counter() - self.saved_at >= self.options.checkpoint_every_s:
                    self.save()
            bar.close()
            self._end_epoch(quiet, stream)

    def _step(self, idx: torch.Tensor) -> float:
        options = self.options
        torch.manual_seed(options.seed * 100003 + self.epoch * 10007 + self.step)  # dropout, drop-path
        rng = random.Random(f"{options.seed}/{self.epoch}/{self.step}")
        x = self.train_x[idx.to(self.train_x.device)].to(self.device, non_blocking=True)
        y = self.train_y[idx.to(self.train_y.device)].to(self.device, non_blocking=True)
        if self.data.augment is not None:
            x = self.data.augment(x)
        genomes = [self.largest, self.smallest] + [self._covered(rng) for _ in range(options.random_per_step)]
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        teacher, supervised = None, 0.0
        distill = options.distill and teacher_ready(self.history, self.data.num_classes)
        for genome in genomes:
            self.net.set_active(genome)
            with self.autocast():
                logits = self.net(x)
                if teacher is None or not distill:
                    loss = F.cross_entropy(logits, y)
                else:
                    loss = F.kl_div(F.log_softmax(logits.float(), dim=1), F.softmax(teacher, dim=1),
                                    reduction="batchmean")
            if teacher is None:
                teacher, supervised = logits.detach().float(), loss.item()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"supernet loss is {loss.item()} at epoch {self.epoch + 1}, step "
                                         f"{self.step + 1} (genome {genome.content_hash()})")
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return supervised  # the largest genome's loss on the labels: what the progress shows

    def _covered(self, rng: random.Random) -> Genome:
        """A random genome the supernet holds weights for (sizing samples the space, so it can miss a rare
        structure; the search records such a genome as failed)."""
        for _ in range(20):
            genome = sample_genome(self.net.space, rng)
            try:
                self.net.set_active(genome)
                return genome
            except SupernetCoverageError:
                continue
        raise NasError("20 random genomes in a row need weights the supernet does not hold")

    def _end_epoch(self, quiet: bool, stream) -> None:
        tick = time.perf_counter()
        row = {"epoch": self.epoch + 1, "loss": self.loss_sum / max(self.loss_steps, 1)}
        for name, genome in (("largest", self.largest), ("smallest", self.smallest)):
            row[f"{name}_accuracy"], _ = inherited_accuracy(
                self.net, genome, self.data, calibration_batches=self.options.calibration_batches,
                batch_size=self.batch_size, device=self.device, seed=self.options.seed)
        row["eval_seconds"] = time.perf_counter() - tick
        self.history.append(row)
        self.epoch, self.step, self.loss_sum, self.loss_steps = self.epoch + 1, 0, 0.0, 0
        self.save()
        with open(self.run_dir / HISTORY_FILE, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(self.history)
        _say(quiet, stream, f"epoch {row['epoch']}/{self.options.epochs}: loss {row['loss']:.3f}, largest "
                            f"{row['largest_accuracy']:.1%}, smallest {row['smallest_accuracy']:.1%} validation "
                            f"accuracy")

    def save(self) -> None:
        state = {"supernet": self.net.header(), "weights": self.net.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                 "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                 "history": self.history, "loss_sum": self.loss_sum, "loss_steps": self.loss_steps,
                 "options": self.options.model_dump(),
                 "data": {"spec": self.options.data, "limit": self.options.data_limit, "seed": self.options.seed}}
        path = self.run_dir / CHECKPOINT
        with replacing(path) as tmp:
            torch.save(state, tmp)
        self.saved_at = time.perf_counter()
