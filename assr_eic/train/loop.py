"""What every training entry point shares: device and distributed set-up, checkpoints, a time budget.

Runs on one CPU as it is; under ``torchrun --nproc-per-node N`` (or ``accelerate launch``, which sets
the same environment variables) each process trains on its own shard of batches and gradients are
averaged with DistributedDataParallel, with no code change.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class Run:
    """Process-level facts: device, rank, world size."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup() -> Run:
    """Initialise torch.distributed when launched by torchrun/accelerate; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Run(device, rank, world)


def wrap(module: nn.Module, run: Run) -> nn.Module:
    """DistributedDataParallel when there is more than one process, else the module itself."""
    if run.world > 1:
        ids = [run.device] if run.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)
    return module


@dataclass
class State:
    """What a checkpoint holds besides the weights."""

    step: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)


def save_checkpoint(path: Path, modules: dict[str, nn.Module], optimizers: dict, state: State) -> None:
    """Atomic checkpoint (temporary file then rename): an interrupted run never leaves a broken one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "state": state.__dict__,
        "rng": torch.get_rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, modules: dict[str, nn.Module], optimizers: dict) -> State:
    """Resume from ``path`` if it exists (weights, optimizer moments, step, elapsed time, RNG)."""
    if not path.is_file():
        return State()
    blob = torch.load(path, map_location="cpu", weights_only=False)
    for k, m in modules.items():
        m.load_state_dict(blob["modules"][k])
    for k, o in optimizers.items():
        if k in blob["optimizers"]:  # a weights-only checkpoint resumes with fresh optimizer moments
            o.load_state_dict(blob["optimizers"][k])
    torch.set_rng_state(blob["rng"])
    return State(**blob["state"])


def cosine_lr(step: int, total: int, base: float, warmup: int = 200, floor: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


class Budget:
    """Stops after ``minutes`` of training (counting time from earlier runs) or ``steps``."""

    def __init__(self, state: State, minutes: float | None, steps: int | None) -> None:
        self.state, self.minutes, self.steps = state, minutes, steps
        self.t0 = time.perf_counter()
        self.base = state.seconds

    def elapsed(self) -> float:
        return self.base + time.perf_counter() - self.t0

    def done(self) -> bool:
        self.state.seconds = self.elapsed()
        if self.steps is not None and self.state.step >= self.steps:
            return True
        return self.minutes is not None and self.state.seconds >= self.minutes * 60

    def fraction(self) -> float:
        parts = []
        if self.steps:
            parts.append(self.state.step / self.steps)
        if self.minutes:
            parts.append(self.elapsed() / (self.minutes * 60))
        return min(1.0, max(parts) if parts else 0.0)


def log(run: Run, logfile: Path | None, record: dict) -> None:
    if not run.main:
        return
    line = json.dumps(record)
    print(line, flush=True)
    if logfile is not None:
        with open(logfile, "a") as f:
            f.write(line + "\n")
