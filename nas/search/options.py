"""Every option of a search, as stored in ``run.yaml`` so that ``nas search --resume runs/NAME`` needs nothing
else; budgets are kept as the person wrote them and parsed once here."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from nas.cost.budget import parse_flops, parse_latency_ms, parse_params
from nas.errors import InputError

DEFAULT_SPACE = "metaformer_hybrid"
# Measured on the 2-core CPU the default must fit in 10 minutes (benchmarks/BENCHMARKS.md, "Search").
DEFAULT_TRIALS = 40
DEFAULT_TRAIN_TRIALS = 20

Objective = Literal["proxy", "train", "supernet", "custom"]
Second = Literal["latency", "params", "flops", "none"]
SamplerName = Literal["tpe", "nsga2", "random", "evolution"]
LatencyMode = Literal["measure", "lut"]
PrunerName = Literal["median", "hyperband", "none"]
RunnerName = Literal["local", "ray"]


class SearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space: str = DEFAULT_SPACE  # what the user named; the run reads its copy, space.yaml
    budget: str | None = "4GFLOPs"
    latency: str | None = None
    params: str | None = None
    device: str = "auto"
    objective: Objective = "proxy"
    data: str | None = None
    data_limit: int | None = None  # cap on each split's images (a seeded subset), for quick training searches
    trials: int = DEFAULT_TRIALS
    timeout: float | None = None  # seconds
    sampler: SamplerName = "tpe"
    seed: int = 0
    second: Second = "latency"
    latency_mode: LatencyMode = "measure"
    latency_repeats: int = 5
    threads: int | None = None  # torch CPU threads for the whole search (None: 1 on CPU)
    proxy_batch: int = 8
    epochs: int = 3
    pruner: PrunerName = "median"
    storage: str | None = None
    study: str = "search"
    runner: RunnerName = "local"
    workers: int | None = None  # local: processes sharing the storage (default 1); ray: trials at once (default:
    # as many as the cluster's CPUs hold)
    address: str | None = None  # a Ray cluster (auto or HOST:PORT); none: a local Ray instance for the run
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    heartbeat: float = 20.0  # seconds between a worker's heartbeats (RDB storages); 0 turns them off
    evaluate: str | None = None  # the custom evaluate callable's name, for the record
    supernet: str | None = None  # a trained supernet's checkpoint (objective supernet)
    finetune_epochs: int = 0  # objective supernet: train the extracted winner this much more

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
    def multi_objective(self) -> bool:
        return self.second != "none"

    def check(self) -> SearchOptions:
        """Refuse contradictions before any work: they are bad input (exit 2)."""
        _ = self.flops_budget, self.params_budget, self.latency_budget_ms
        if self.trials < 1:
            raise InputError(f"--trials must be at least 1, got {self.trials}")
        if self.objective == "train" and not self.data:
            raise InputError("--objective train needs --data (a folder, an .npz, 'synthetic' or 'digits')")
        if self.objective == "supernet" and not self.supernet:
            raise InputError("--objective supernet needs --supernet RUN (a run of nas supernet train, or its "
                             "supernet.pt)")
        if self.supernet and self.objective != "supernet":
            raise InputError("--supernet scores genomes with a trained supernet: add --objective supernet")
        if self.supernet:  # a bad file is bad input now, not a failure in every trial
            from nas.supernet.supernet import read_checkpoint

            read_checkpoint(self.supernet, mmap=True)  # mmap: the header and shapes, not gigabytes of weights
        if self.finetune_epochs < 0:
            raise InputError(f"--finetune-epochs must not be negative, got {self.finetune_epochs}")
        if self.proxy_batch < 2:
            raise InputError(f"--proxy-batch needs at least 2 images, got {self.proxy_batch}")
        for flag, value in (("--latency-repeats", self.latency_repeats), ("--epochs", self.epochs),
                            ("--threads", self.threads), ("--workers", self.workers),
                            ("--data-limit", self.data_limit)):
            if value is not None and value < 1:
                raise InputError(f"{flag} must be at least 1, got {value}")
        if self.heartbeat < 0:
            raise InputError(f"--heartbeat must not be negative (0 turns heartbeats off), got {self.heartbeat:g}")
        if self.seed < 0:
            raise InputError(f"--seed must not be negative, got {self.seed}")
        if self.runner == "local" and self.address:
            raise InputError("--address names a Ray cluster: add --runner ray")
        if self.runner == "ray" and self.device.startswith("cuda") and self.gpus_per_trial == 0:
            raise InputError("--device cuda with --runner ray needs --gpus-per-trial (1, or 0.5 to share a GPU): "
                             "Ray hides GPUs from trials that do not ask for one")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise InputError("--cpus-per-trial must be positive and --gpus-per-trial not negative")
        if self.runner == "local" and (self.workers or 1) > 1 and self.evaluate:
            raise InputError("--workers N on the local runner starts `nas search` processes, which cannot "
                             "receive a custom evaluate; run the workers yourself or use --runner ray")
        return self


def parse_duration(text: str | float | None) -> float | None:
    """Seconds from ``2h``, ``30m``, ``90s``, ``1.5h`` or a bare number of seconds."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h|hr|d)?\s*", str(text))
    if not match:
        raise InputError(f"cannot read {text!r} as a duration; write it like 2h, 30m or 90s")
    scale = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}[match[2]]
    value = float(match[1]) * scale
    if value <= 0:
        raise InputError(f"a timeout must be positive, got {text!r}")
    return value
