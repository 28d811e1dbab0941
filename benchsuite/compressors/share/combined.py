"""``albert``: ALBERT's two savings in one config, cross-layer sharing and a factorised embedding.

The encoder's layers are shared as :mod:`~benchsuite.compressors.share.cross_layer` does
(``groups``, ``init``, ``norms``), the word embedding factorised as
:mod:`~benchsuite.compressors.share.factorize` does (``embedding_rank``), and the model then
recovers once. On all-MiniLM-L6-v2 (22.7M parameters: word embedding 11.7M, encoder 10.6M) the
defaults (one shared layer, E = 128) leave about 6.1M: word embedding 3.96M, one layer 1.77M,
positions and pooler 0.35M, about 3.7x fewer; ``embedding_rank=64`` gives about 5.5x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from benchsuite.compressors.layers import encoder_layers
from benchsuite.compressors.retrain import ReshapeAndRecover
from benchsuite.compressors.share.cross_layer import (
    check_sharing,
    layer_groups,
    share_now_or_later,
    sharing_layout,
    tie_layers,
    tying_during_recovery,
)
from benchsuite.compressors.share.factorize import (
    check_embedding_rank,
    factorize_embedding,
    factorized_embedding_skeleton,
)
from benchsuite.compressors.share.tying import check_tying
from benchsuite.distillation.recovery import RecoveryConfig


@dataclass(frozen=True)
class AlbertConfig(RecoveryConfig):
    groups: int = 1  # as cross_layer's: runs of consecutive layers sharing one layer each
    init: str = "first"  # as cross_layer's: "first", "middle", "last" or "average"
    embedding_rank: int | None = None  # E of the word embedding; None: a third of the hidden size
    norms: str = "shared"  # as cross_layer's: "own" keeps each depth's LayerNorms, sharing only the Linears
    tie: str = "now"  # as cross_layer's: "gradual" pulls the layers together during recovery, tied at tie_at
    tie_at: float = 0.5  # as cross_layer's

    LATE_OPTIONS: ClassVar[tuple[str, ...]] = ("norms", "tie", "tie_at")
    FORMER_DEFAULTS: ClassVar[dict[str, Any]] = {"init": "average"}  # as cross_layer's

    def validate(self) -> None:
        super().validate()
        check_sharing(self.groups, self.init, self.norms)
        check_tying(self.tie, self.tie_at, self.epochs)
        check_embedding_rank("embedding_rank", self.embedding_rank)


class Albert(ReshapeAndRecover):
    family = "sharing"
    name = "albert"
    config_class = AlbertConfig
    search_space = {"groups": (1, 3)}  # as cross_layer's: one shared layer or three

    def reshape(self, model: nn.Module, *, context) -> dict:
        groups = layer_groups(len(encoder_layers(model)), self.config.groups)
        rank = factorize_embedding(model, self.config.embedding_rank, field="embedding_rank")
        share_now_or_later(model, groups, self.config)
        return sharing_layout(groups, self.config.norms) | {"embedding_rank": rank}

    def during_recovery(self, model: nn.Module, layout: dict):
        return tying_during_recovery(model, layout, self.config)

    def recovery_description(self, layout: dict) -> str:
        return f"recovering {len(layout['groups'])} shared layer(s) and a rank-{layout['embedding_rank']} embedding"

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        tie_layers(model, layout["groups"], layout.get("norms", "shared"))
        factorized_embedding_skeleton(model, layout["embedding_rank"])
        return model.eval()
