"""What a pruning method decided to remove, as a small replayable record."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PrunePlan:
    """Structures to remove, indexed by block position in the model the plan was made for.

    Attributes:
        ffn_keep: block index -> sorted intermediate neurons to keep.
        attention: blocks whose attention submodule is removed.
        mlp: blocks whose MLP submodule is removed.
        blocks: blocks removed whole.
        info: method-specific facts worth recording (scores, stage sizes, ...).
        replayable: whether applying the plan to the base model rebuilds the pruned model
            (False for methods that also rewrite weights, such as SliceGPT's rotations).
    """

    ffn_keep: dict[int, list[int]] = field(default_factory=dict)
    attention: list[int] = field(default_factory=list)
    mlp: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    replayable: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=float)

    @classmethod
    def from_json(cls, text: str) -> PrunePlan:
        raw = json.loads(text)
        raw["ffn_keep"] = {int(k): v for k, v in raw.get("ffn_keep", {}).items()}
        return cls(**raw)

    def save(self, path: str | Path) -> None:
        from twossp.io import atomic_write_text

        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> PrunePlan:
        return cls.from_json(Path(path).read_text())
