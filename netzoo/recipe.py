"""How a network is trained: the Recipe dataclass, its hash, and its TOML form.

The default is the study's recipe: Adam (lr 0.002, amsgrad), batch 25, 4 epochs, seed 42, NLL loss on
the networks' log-probabilities. The resolved recipe and its hash are stored with every result row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from netzoo.errors import RecipeError

OPTIMIZERS = ("sgd", "sgd-momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step")
INITS = ("default", "xavier-normal", "xavier-uniform", "kaiming-normal", "kaiming-uniform", "randn")


@dataclass(frozen=True)
class Recipe:
    """A resolved training recipe. Every field is part of the hash except ``name``."""

    name: str = "default"            # a label for tables and charts; not hashed
    optimizer: str = "adam"          # one of OPTIMIZERS (torch.optim's own)
    lr: float = 0.002                # learning rate
    amsgrad: bool = True             # Adam/AdamW only
    momentum: float = 0.0            # SGD/RMSProp momentum (sgd-momentum and nesterov default to 0.9 if 0)
    weight_decay: float = 0.0        # L2 penalty (AdamW: decoupled)
    batch_size: int = 25             # training batch size, in samples
    eval_batch_size: int = 1000      # test evaluation batch size, in samples (no effect on results)
    epochs: int = 4                  # epochs to train
    schedule: str = "none"           # lr schedule: none, cosine (to 0 over all epochs) or step
    step_size: int = 1               # step schedule: epochs between decays
    gamma: float = 0.1               # step schedule: decay factor
    init: str = "default"            # weight initialisation: one of INITS ("default" = PyTorch's own)
    dropout: float = 0.0             # dropout probability (a template option: needs a zoo generated with it)
    batch_norm: bool = False         # batch norm (a template option: needs a zoo generated with it)
    early_stopping_patience: int = 0  # epochs without test-loss improvement before stopping; 0 = never
    early_stopping_min_delta: float = 0.0  # improvement in test loss that counts
    allow_tf32: bool = True          # CUDA only: TF32 matrix multiplies (recorded in the hash)

    def __post_init__(self) -> None:
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}")
        if self.init not in INITS:
            problems.append(f"init {self.init!r} is unknown; allowed: {', '.join(INITS)}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            problems.append(f"batch sizes must be >= 1, got {self.batch_size}/{self.eval_batch_size}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.weight_decay < 0 or self.momentum < 0:
            problems.append("weight_decay and momentum must be >= 0")
        if self.early_stopping_patience < 0:
            problems.append(f"early_stopping_patience must be >= 0, got {self.early_stopping_patience}")
        if problems:
            raise RecipeError(f"recipe {self.name!r}: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (for JSON and TOML)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON of all fields, sorted keys: stored in the networks table."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def hash(self) -> str:
        """First 16 hex digits of sha256 over the canonical JSON of every field but ``name`` and
        ``eval_batch_size`` (neither changes the results)."""
        payload = {k: v for k, v in self.to_dict().items() if k not in ("name", "eval_batch_size")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with some fields changed (validated again)."""
        return from_dict({**self.to_dict(), **changes})


def from_dict(values: dict[str, Any], where: str = "recipe") -> Recipe:
    """A Recipe from a dict (e.g. a TOML table); unknown keys are refused with the allowed ones named."""
    allowed = {f.name for f in fields(Recipe)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.")
    try:
        return Recipe(**values)
    except TypeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


STUDY = Recipe()  # the study's recipe: Adam lr 0.002 amsgrad, batch 25, 4 epochs
