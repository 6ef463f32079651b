"""Every option of a search, defined once: the field is the ``nas search`` flag (its description the help, its
default appended to it; ``nas.flags``), the keyword of ``nas.search(...)``, and the key in ``run.yaml``, which is
stored so that ``nas search --resume runs/NAME`` needs nothing else. Budgets are kept as the person wrote them
and parsed once here."""
from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from nas.cost.budget import parse_flops, parse_latency_ms, parse_params
from nas.errors import InputError
from nas.flags import Flag, check_seed
from nas.memory import MOST_AUTO_BATCH, BatchSize

DEFAULT_SPACE = "metaformer_hybrid"
# Measured on the 2-core CPU the default must fit in 10 minutes (benchmarks/BENCHMARKS.md, "Search").
DEFAULT_TRIALS = 40
DEFAULT_TRAIN_TRIALS = 20
# The cascade's data-free screen per trial: 250 genomes cost about a second, a fifth of what a trial of the
# default space costs (benchmarks/BENCHMARKS.md, "Search").
SCREEN_PER_TRIAL = 250
# ... and at most this many: past a pool of thousands within budget, more draws mostly add time (a search of
# 400 trials would screen for several minutes)
MOST_SCREENED = 10_000
# The zero-cost stage of a training cascade keeps this many genomes scored ahead of the trainings: each costs a
# fraction of a second on the tiny space, a tenth of a pruned training or less.
DEFAULT_SHORTLIST = 50
# ... and this many more per first-stage training, so that each training is picked among more: a zero-cost score
# costs about a twentieth of a first stage on the tiny space, and on the corpus's replay (100 seeds) the trainings
# to a top-5% genome fell from 1/3.47 and 1/3.39 of random's to 1/6.50 and 1/4.31, digits / patterns, scores paid
# for 1/5.35 and 1/3.66 (benchmarks/BENCHMARKS.md, "Replay", 2026-12-05 13:45).
DEFAULT_SHORTLIST_GROWTH = 5
# --references auto: at most this many, and one per this many trials (a reference costs about a trial)
MOST_REFERENCES, TRIALS_PER_REFERENCE = 4, 4
# The zero-cost scores are of one small batch (8 by default), run forward and backward at once, and NASWOT's
# kernel is batch x batch: thousands of images is a mistake, not a setting.
MOST_PROXY_BATCH = 1024
# Local --workers per core: each process computes on one thread and holds torch (~0.25 GB before any model), so
# past a few per core they only take turns.
WORKERS_PER_CORE = 4
# --heartbeat seconds: a dead worker's trial waits 4 beats to be retried, so beats a day apart would leave it for
# days (0 turns them off); past ~292 years Python's waits overflow. Beats under a second apart would only load the
# storage (each is a write to it, from every worker); Optuna's own heartbeat_interval is a whole number of seconds.
LEAST_HEARTBEAT, MOST_HEARTBEAT = 1.0, 86400.0

Objective = Literal["proxy", "train", "supernet", "custom"]
Second = Literal["latency", "params", "flops", "none"]
SamplerName = Literal["cascade", "tpe", "nsga2", "random", "evolution"]  # the one list of samplers (samplers.SAMPLERS)
LatencyMode = Literal["measure", "lut", "predict"]
Runtime = Literal["eager", "compile", "onnxruntime"]  # nas.cost.latency.Runtime, spelled here for the CLI flags
PrunerName = Literal["median", "hyperband", "none"]
RunnerName = Literal["local", "ray"]


def parse_duration(text: str | float | None) -> float | None:
    """Seconds from ``2h``, ``30m``, ``90s``, ``1.5h`` or a bare number of seconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)):  # Python's timeout=90: bound as the flag's text is
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h|hr|d)?\s*", str(text))
        if not match:
            raise InputError(f"cannot read {text!r} as a duration; write it like 2h, 30m or 90s")
        scale = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}[match[2]]
        value = float(match[1]) * scale
    if value <= 0:
        raise InputError(f"a timeout must be positive, got {text!r}")
    if not math.isfinite(value):  # nan never ends a search, nor does inf (400 digits); no timeout is None
        raise InputError(f"a timeout must be finite (for no timeout, leave it out), got {value:g}")
    return value


def _comma_list(value: Any) -> Any:
    """``references=["zoo:convnext_t", Path("mine.yaml")]`` in Python is the flag's comma list."""
    if isinstance(value, (list, tuple)):
        return ",".join(os.fspath(item) if isinstance(item, os.PathLike) else str(item) for item in value)
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class SearchOptions(BaseModel):
    """The options of a search. ``trials`` and ``second`` default by the objective: ``None`` until validated,
    then always set; their descriptions say how."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field(DEFAULT_SPACE, description="a shipped space (metaformer_hybrid, mobile, isotropic, tiny) or "
                       "a space YAML file; with --objective supernet, the supernet's own space unless given")
    budget: str | None = Field("4GFLOPs", description="FLOPs budget, checked before a genome is built, e.g. "
                               "600MFLOPs; 'none' for no budget")
    latency: str | None = Field(None, description="latency budget on --device, e.g. 15ms")
    params: str | None = Field(None, description="parameter budget, e.g. 30M")
    device: str = Field("auto", description="auto (CUDA when present), cpu or cuda[:N]")
    objective: Annotated[Objective, Flag(python_only=("custom",))] = Field(
        "proxy", description="proxy: training-free scores; train: short training on --data; supernet: validation "
        "accuracy with a trained supernet's weights; custom (Python only): the score of an evaluate= callable")
    supernet: Annotated[str | None, Flag(metavar="RUN")] = Field(
        None, description="a run of nas supernet train (or its supernet.pt); its space (unless --space) and data "
        "(unless --data) are the search's. With --objective supernet it scores the genomes; with --objective train "
        "the zero-cost stage also scores each genome's inherited accuracy with it, a feature of the surrogate")
    finetune_epochs: int = Field(0, description="with --objective supernet: train the extracted winner this many "
                                 "more epochs before saving best_weights.pt")
    data: str | None = Field(None, description="an image folder, an .npz, synthetic, patterns or digits (train "
                             "objective; with proxy, the batch the scores see)")
    data_limit: int | None = Field(None, description="use at most this many images per split (a seeded subset)")
    trials: int | None = Field(None, description=f"trials to run (default: {DEFAULT_TRIALS}, or {DEFAULT_TRAIN_TRIALS} "
                        "with --objective train; on resume, the run's own count)")
    timeout: Annotated[float | None, BeforeValidator(parse_duration), Flag(text=True)] = Field(
        None, description="stop starting trials after this long, e.g. 2h, 30m or 90s (a number: seconds)")
    sampler: SamplerName = Field("cascade", description="cascade: screen --screen genomes data-free, then pick each "
                                 "trial from them by a surrogate fitted on the trials so far; tpe: Optuna's TPE; "
                                 "nsga2: NSGA-II; random; evolution: regularized evolution, mutating one choice of a "
                                 "tournament winner")
    screen: int | None = Field(None, description="with --sampler cascade: genomes drawn and costed analytically "
                               "(a few ms each) before any is built; the trials are picked from those within "
                               f"budget (default: {SCREEN_PER_TRIAL} per trial, at most {MOST_SCREENED:,}, so "
                               f"{SCREEN_PER_TRIAL * DEFAULT_TRIALS:,} for the default {DEFAULT_TRIALS} trials)")
    seed: int = Field(0, description="seed of the sampler, the proxy batch and model weights; a run in its own "
                      "directory is reproducible from it (0 to 2**32 - 1)")
    second: Second | None = Field(None, description="second objective, minimised (default: latency, or none with "
                           "--objective train, so the pruner can stop poor trials)")
    latency_mode: LatencyMode = Field("measure", description="measure: time each network end to end; lut: sum of "
                                      "cached per-block times; predict: that sum corrected by the device's "
                                      "calibration (nas latency calibrate), budgets checked with its margin")
    latency_repeats: int = Field(5, description="timed runs per latency measurement")
    runtime: Runtime = Field("eager", description="what latency is timed under: eager PyTorch, compile "
                             "(torch.compile) or onnxruntime (the ONNX export under ONNX Runtime)")
    proxy_batch: int = Field(8, description=f"images the zero-cost scores see (2 to {MOST_PROXY_BATCH})")
    epochs: int = Field(3, description="training epochs per trial with --objective train (with the cascade's "
                        "promotions, and in nas score: the first epochs of a --long-epochs schedule)")
    batch_size: BatchSize = Field(64, description="images per training step with --objective train (and "
                                  "--finetune-epochs), or auto: the largest power of two up to "
                                  f"{MOST_AUTO_BATCH} whose training memory, for the largest genome sampled "
                                  "within budget, fits the device's free memory shared by the worker processes")
    long_epochs: int | None = Field(None, description="with --objective train and the cascade sampler: each "
                                    "genome trains the first --epochs of a schedule this long, and one whose "
                                    "result ranks in the top fifth so far (--reduction-factor) trains on to its end "
                                    "(successive halving; the winner is the best result at either length; default: "
                                    "4 x --epochs; 0: no promotions, each genome trains a whole --epochs schedule)")
    rungs: Annotated[str, BeforeValidator(_comma_list), Flag(metavar="LIST")] = Field(
        "none", description="with promotions: the epochs between --epochs and --long-epochs at which a promoted "
        "genome stops to be ranked again among those there, the top fifth (--reduction-factor) training on "
        "(successive halving's middle rungs): none promotes straight to --long-epochs (on the corpus a middle rung "
        "made no difference beyond the replay's noise: benchmarks/BENCHMARKS.md, \"Replay\"), auto doubles --epochs "
        "while below --long-epochs (3, 6, 12), or a comma list of epochs")
    reduction_factor: int = Field(5, description="with promotions: a genome trains on from a rung when it ranks "
                                  "in the top 1 / this of those there so far (successive halving's reduction "
                                  "factor, as in Optuna's and Ray Tune's schedulers; at least 2). On the corpus's "
                                  "replay the top fifth cost fewer trainings than the top third on digits and no "
                                  "more on patterns (benchmarks/BENCHMARKS.md, \"Replay\")")
    shortlist: int = Field(DEFAULT_SHORTLIST, description="with --objective train and the cascade sampler: "
                           "screened genomes (at most --trials) kept scored zero-cost on a batch of the data and "
                           "not yet trained (the zero-cost stage, which picks them by a surrogate of the data-free "
                           "features); each training is picked among them, with their scores as features; 0: no "
                           "zero-cost stage, trainings picked from the screen directly")
    shortlist_growth: int = Field(DEFAULT_SHORTLIST_GROWTH, description="with a zero-cost stage: the genomes kept "
                                  "scored grow by this many per first-stage training, so that each training is "
                                  "picked among more of them (each costs a zero-cost score, about a twentieth of "
                                  "a first stage on the tiny space); 0: --shortlist stays fixed")
    pruner: PrunerName | None = Field(None, description="stops poor training trials, with a single objective only "
                                      "(default: none when the cascade promotes, whose successive halving ranks "
                                      "the first stages once they end; median otherwise)")
    references: Annotated[str, BeforeValidator(_comma_list), Flag(metavar="LIST")] = Field(
        "auto", description="published architectures scored as the trials are and shown beside the winner: auto "
        "(zoo genomes that fit the budget at the run's input, nearest the FLOPs its genomes reach; at most "
        f"{MOST_REFERENCES}, and one per {TRIALS_PER_REFERENCE} trials, as each costs about a trial), none, or a "
        "comma list of zoo:NAME, genome YAML files and auto; a resumed run may change it")
    threads: int | None = Field(None, description="torch CPU threads for the whole search (default: 1 on CPU: "
                                "steadier latency, and far faster on a CPU other jobs share)")
    storage: str | None = Field(None, description="an Optuna storage shared by workers: sqlite:///PATH, "
                                "postgresql://..., or journal:PATH (default: RUN/study.db). A process given the "
                                "storage and --study of a search under way joins it as a worker")
    study: str = Field("search", description="the study name in the storage")
    runner: RunnerName = Field("local", description="local: trials in this process and --workers processes; ray: "
                               "Ray Tune trials")
    workers: int | None = Field(None, description="local: processes sharing the storage (default: one per CPU core, "
                                "at most 4, for a CPU search of genomes over 200 MFLOPs; else 1; at most "
                                f"{WORKERS_PER_CORE} per core); ray: trials at once (default: as many as the "
                                "cluster's CPUs hold)")
    address: str | None = Field(None, description="Ray cluster to run on: auto or HOST:PORT (default: a local Ray "
                                "instance started and stopped with the command); one that does not answer within "
                                "30 s is refused")
    cpus_per_trial: float = Field(1.0, description="Ray resources per trial: CPUs")
    gpus_per_trial: float = Field(0.0, description="Ray resources per trial: GPUs, e.g. 0.5 to share one")
    heartbeat: float = Field(20.0, description="seconds between a worker's heartbeats to an SQL storage; a trial "
                             "whose worker misses 4 is failed and retried; 0 turns them off; at least "
                             f"{LEAST_HEARTBEAT:g}, at most {MOST_HEARTBEAT:g} (a day)")
    evaluate: Annotated[str | None, Flag(cli=False)] = Field(
        None, description="the custom evaluate callable's name, for the record (objective custom)")

    @field_validator("budget", "latency", "params", mode="before")
    @classmethod
    def _none_is_no_budget(cls, value: Any) -> Any:
        return None if str(value).lower() == "none" else value

    @field_validator("supernet", "data", "storage", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _defaults_by_objective(self) -> SearchOptions:
        """Pruning needs one objective, so a training search defaults to accuracy alone, and to fewer trials.
        Filled in without counting as given (``model_fields_set``): a resumed run compares only what was."""
        if self.second is None:
            self.__dict__["second"] = "none" if self.objective == "train" else "latency"
        if self.long_epochs is None:
            self.__dict__["long_epochs"] = 4 * self.epochs
        if self.pruner is None:
            # On the corpus a first stage's accuracy at epoch 1 ranks the long result with Kendall tau +0.29
            # (digits) and -0.01 (patterns): a median pruner there stops the best genomes before the cascade
            # can promote them (benchmarks/BENCHMARKS.md, "Replay", cascade-shortlist-pruned).
            self.__dict__["pruner"] = "none" if self.promotes else "median"
        if self.trials is None:
            self.__dict__["trials"] = DEFAULT_TRAIN_TRIALS if self.objective == "train" else DEFAULT_TRIALS
        return self

    @property
    def flops_budget(self) -> int | None:
        return parse_flops(self.budget) if self.budget else None

    @property
    def params_budget(self) -> int | None:
        return parse_params(self.params) if self.params else None

    @property
    def latency_budget_ms(self) -> float | None:
        return parse_latency_ms(self.latency) if self.latency else None

    @property
    def screen_size(self) -> int:
        return self.screen or min(SCREEN_PER_TRIAL * self.trials, MOST_SCREENED)

    @property
    def multi_objective(self) -> bool:
        return self.second != "none"

    @property
    def promotes(self) -> bool:
        """Whether the cascade promotes trained genomes to ``long_epochs`` (successive halving over epochs)."""
        return self.sampler == "cascade" and self.objective == "train" and bool(self.long_epochs)

    @property
    def zero_cost_stage(self) -> bool:
        """Whether the cascade scores genomes zero-cost ahead of training them (``shortlist``)."""
        return self.sampler == "cascade" and self.objective == "train" and self.shortlist > 0

    @property
    def scores_with_fit(self) -> bool:
        """Whether trials compute the fitted training-free objective (``objective_fit``): a proxy search's score,
        or the feature ``score`` of a training cascade's zero-cost stage."""
        return self.objective == "proxy" or self.zero_cost_stage

    @property
    def objective_fit(self) -> str:
        """Which shipped fit of the training-free objective scores this search's genomes
        (``nas.evaluate.proxy.objective_name``): its space's, and with ``--data`` (the scores then see the task's
        images, ``nas.search.scoring.search_inputs``) its twin fitted on scores of real images."""
        from nas.evaluate.proxy import objective_name

        return objective_name(self.space, data=bool(self.data))

    @property
    def first_schedule_epochs(self) -> int | None:
        """The schedule a first-stage training (and a reference or ``nas score``, measured as one) runs the first
        ``epochs`` of: the promotions' ``long_epochs``, which a promotion then trains on to; None: a whole
        ``epochs`` schedule."""
        return self.long_epochs if self.promotes else None

    @property
    def promotion_rungs(self) -> tuple[int, ...]:
        """The epochs of the long schedule each promotion trains to, the last ``long_epochs``: ``rungs`` resolved
        (empty without promotions)."""
        if not self.promotes:
            return ()
        given = self.rungs.strip().lower()
        if given == "auto":
            middle, epochs = [], 2 * self.epochs
            while epochs < self.long_epochs:
                middle, epochs = [*middle, epochs], 2 * epochs
        elif given == "none":
            middle = []
        else:
            try:
                middle = [int(part) for part in self.rungs.split(",")]
            except ValueError:
                raise InputError(f"--rungs takes auto, none or a comma list of epochs, got {self.rungs!r}") from None
            if middle != sorted(set(middle)) or not all(self.epochs < e < self.long_epochs for e in middle):
                raise InputError(f"--rungs must rise strictly between --epochs ({self.epochs}) and --long-epochs "
                                 f"({self.long_epochs}), got {self.rungs!r}")
        return (*middle, self.long_epochs)

    def check(self) -> SearchOptions:
        """Refuse contradictions before any work: they are bad input (exit 2)."""
        _ = self.flops_budget, self.params_budget, self.latency_budget_ms
        if self.trials < 1:
            raise InputError(f"--trials must be at least 1, got {self.trials}")
        if self.runtime != "eager":
            from nas.cost.latency import runtime_version

            runtime_version(self.runtime)  # a runtime that cannot run here is refused now, not in every trial
        if self.objective == "train" and not self.data:
            raise InputError("--objective train needs --data (a folder, an .npz, 'synthetic', 'patterns' or 'digits')")
        if self.objective == "supernet" and not self.supernet:
            raise InputError("--objective supernet needs --supernet RUN (a run of nas supernet train, or its "
                             "supernet.pt)")
        if self.supernet and self.objective not in ("supernet", "train"):
            raise InputError("--supernet scores genomes with a trained supernet: add --objective supernet (or "
                             "--objective train, where the cascade reads the inherited accuracy as a feature)")
        if self.supernet and self.objective == "train" and not self.zero_cost_stage:
            raise InputError("--supernet with --objective train is read by the cascade's zero-cost stage: it needs "
                             "--sampler cascade and --shortlist above 0")
        if self.supernet:  # a bad file is bad input now, not a failure in every trial
            from nas.supernet.supernet import read_checkpoint

            read_checkpoint(self.supernet, mmap=True)  # mmap: the header and shapes, not gigabytes of weights
        if self.finetune_epochs < 0:
            raise InputError(f"--finetune-epochs must not be negative, got {self.finetune_epochs}")
        if self.proxy_batch < 2:
            raise InputError(f"--proxy-batch needs at least 2 images, got {self.proxy_batch}")
        if self.proxy_batch > MOST_PROXY_BATCH:
            raise InputError(f"--proxy-batch must be at most {MOST_PROXY_BATCH:,} images, got {self.proxy_batch:,}")
        for flag, value in (("--latency-repeats", self.latency_repeats), ("--epochs", self.epochs),
                            ("--batch-size", None if self.batch_size == "auto" else self.batch_size),
                            ("--screen", self.screen),
                            ("--threads", self.threads), ("--workers", self.workers),
                            ("--data-limit", self.data_limit)):
            if value is not None and value < 1:
                raise InputError(f"{flag} must be at least 1, got {value}")
        if self.shortlist < 0:
            raise InputError(f"--shortlist must not be negative (0: no zero-cost stage), got {self.shortlist}")
        if self.shortlist_growth < 0:
            raise InputError(f"--shortlist-growth must not be negative (0: a fixed short-list), got "
                             f"{self.shortlist_growth}")
        if self.long_epochs < 0:
            raise InputError(f"--long-epochs must not be negative (0: no promotions), got {self.long_epochs}")
        if self.promotes and self.long_epochs <= self.epochs:
            raise InputError(f"--long-epochs ({self.long_epochs}) must be above --epochs ({self.epochs}) to promote "
                             "to it (0: no promotions)")
        _ = self.promotion_rungs
        if self.reduction_factor < 2:
            raise InputError(f"--reduction-factor must be at least 2 (the top half), got {self.reduction_factor}")
        if self.heartbeat < 0:
            raise InputError(f"--heartbeat must not be negative (0 turns heartbeats off), got {self.heartbeat:g}")
        if 0 < self.heartbeat < LEAST_HEARTBEAT:  # a beat every microsecond is a write storm on the storage
            raise InputError(f"--heartbeat must be at least {LEAST_HEARTBEAT:g} second (0 turns heartbeats off), "
                             f"got {self.heartbeat:g}")
        if not self.heartbeat <= MOST_HEARTBEAT:  # nan too: it would turn dead-worker recovery off without a word
            raise InputError(f"--heartbeat must be at most {MOST_HEARTBEAT:g} seconds (a day), got {self.heartbeat:g}")
        check_seed(self.seed)
        most_workers = WORKERS_PER_CORE * len(os.sched_getaffinity(0))
        if self.runner == "local" and (self.workers or 1) > most_workers:  # Ray runs as many as its CPUs hold
            raise InputError(f"--workers must be at most {most_workers} on the local runner ({WORKERS_PER_CORE} per "
                             f"core), got {self.workers:,}")
        if self.runner == "local" and self.address:
            raise InputError("--address names a Ray cluster: add --runner ray")
        if self.runner == "ray" and self.device.startswith("cuda") and self.gpus_per_trial == 0:
            raise InputError("--device cuda with --runner ray needs --gpus-per-trial (1, or 0.5 to share a GPU): "
                             "Ray hides GPUs from trials that do not ask for one")
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise InputError(f"--cpus-per-trial must be a positive number, got {self.cpus_per_trial:g}")
        if not (math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise InputError(f"--gpus-per-trial must be a number not negative, got {self.gpus_per_trial:g}")
        if self.runner == "local" and (self.workers or 1) > 1 and self.evaluate:
            raise InputError("--workers N on the local runner starts `nas search` processes, which cannot "
                             "receive a custom evaluate; run the workers yourself or use --runner ray")
        return self
