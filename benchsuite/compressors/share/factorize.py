"""Factorisation: a weight matrix stored as the product of two thinner ones, from its truncated SVD.

``factorized_embedding`` is ALBERT's factorised embedding: the V x H word-embedding table becomes
a V x E table followed by an E x H projection (no bias), E < H, so it stores E (V + H) weights
instead of V H. ``low_rank`` replaces each chosen ``nn.Linear(in, out)`` by ``Linear(in, r,
bias=False) -> Linear(r, out)``, r (in + out) weights instead of in x out, with r fixed or chosen
per layer by the energy of its singular values. A layer whose factorisation would not be smaller
is left whole and listed in the layout's ``skipped``.

Both start from the best approximation of their rank (Eckart-Young: the truncated SVD of the
fine-tuned weight, computed in float64) and then recover with the distillation loss of
:mod:`benchsuite.distillation.recovery`. ``low_rank`` also cuts compute (r (in + out)
multiply-adds per token); the factorised embedding adds an E x H product per token: it saves
storage, not time. On all-MiniLM-L6-v2 the encoder's linear layers keep 80% of their weights at
energy 0.9, 59% at 0.8 (the default), 44% at 0.7; its word embedding keeps 66% of its energy at
E = 128.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.compressors.layers import encoder_layers
from benchsuite.compressors.retrain import ReshapeAndRecover
from benchsuite.distillation.recovery import RecoveryConfig
from benchsuite.quant.surgery import linear_names, replace_modules, word_embedding_name

DEFAULT_ENERGY = 0.8
INCLUDE = ("encoder", "attention", "ffn", "all")


def svd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U, S, Vh`` with ``weight = U diag(S) Vh``, singular values descending, in float64."""
    return torch.linalg.svd(weight.detach().double(), full_matrices=False)


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest r whose r largest singular values hold ``energy`` of the sum of their squares
    (the squared Frobenius norm): the rank-r truncation then loses at most ``1 - energy`` of it."""
    squared = singular_values.double() ** 2
    kept = squared.cumsum(0) / squared.sum()
    # the tolerance: a fraction met exactly counts, though float32 weights only hold it to about 1e-7
    return min(int((kept < energy - 1e-6).sum()) + 1, len(squared))


class FactorizedEmbedding(nn.Module):
    """A V x H embedding stored as a V x E ``table`` and an E x H ``project``: ids (...) -> (..., H)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None):
        super().__init__()
        self.table = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx)  # V x E
        self.project = nn.Linear(rank, embedding_dim, bias=False)  # weight: H x E

    num_embeddings = property(lambda self: self.table.num_embeddings)
    embedding_dim = property(lambda self: self.project.out_features)
    padding_idx = property(lambda self: self.table.padding_idx)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.table(input_ids))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, rank: int) -> FactorizedEmbedding:
        """The rank-``rank`` truncated SVD of ``embedding.weight`` W ~ (U_E S_E) V_E^T: projection V_E, table
        U_E S_E, computed as W V_E (equal, and a zero row, such as the padding token's, stays exactly zero)."""
        vocab, width = embedding.weight.shape
        if not 1 <= rank <= min(vocab, width):
            raise ValueError(f"rank must be in 1..{min(vocab, width)} for a {vocab} x {width} embedding, got {rank}")
        _, _, vh = svd(embedding.weight)
        module = cls(vocab, width, rank, padding_idx=embedding.padding_idx).to(embedding.weight.dtype)
        with torch.no_grad():
            module.table.weight.copy_(embedding.weight.detach().double() @ vh[:rank].T)
            module.project.weight.copy_(vh[:rank].T)
        return module


class LowRankLinear(nn.Module):
    """``nn.Linear(in, out)`` as ``up(down(x))``: in -> ``rank`` (no bias) -> out (with the original bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    in_features = property(lambda self: self.down.in_features)
    out_features = property(lambda self: self.up.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int,
                    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> LowRankLinear:
        """The rank-``rank`` truncated SVD of ``linear.weight`` (out x in) = U S Vh, split evenly as
        up = U_r S_r^1/2 and down = S_r^1/2 Vh_r (balanced factors train better than S on one side).
        ``factors``: the weight's :func:`svd`, where the caller already has it."""
        u, s, vh = factors if factors is not None else svd(linear.weight)
        if not 1 <= rank <= len(s):
            raise ValueError(f"rank must be in 1..{len(s)} for a {linear.out_features} x {linear.in_features} "
                             f"weight, got {rank}")
        module = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        module = module.to(linear.weight.dtype)
        root = s[:rank].sqrt()
        with torch.no_grad():
            module.down.weight.copy_(root[:, None] * vh[:rank])
            module.up.weight.copy_(u[:, :rank] * root)
            if linear.bias is not None:
                module.up.bias.copy_(linear.bias)
        return module


# --- factorized_embedding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactorizedEmbeddingConfig(RecoveryConfig):
    rank: int | None = None  # E; None: a third of the hidden size (128 on MiniLM's 384, ALBERT's E)

    def validate(self) -> None:
        super().validate()
        check_embedding_rank("rank", self.rank)


def check_embedding_rank(field: str, rank: int | None) -> None:
    if rank is not None and rank < 1:
        raise ValueError(f"{field} must be >= 1 (or None: a third of the hidden size), got {rank}")


def factorize_embedding(model: nn.Module, rank: int | None, *, field: str = "rank") -> int:
    """Replace the word embedding by its rank-E :class:`FactorizedEmbedding`, in place; returns E.
    Refuses an E that would not store fewer weights, naming ``field``."""
    table = model.get_input_embeddings()
    if not isinstance(table, nn.Embedding):
        raise ValueError(f"the word embedding is a {type(table).__name__}, not an nn.Embedding: it cannot be "
                         "factorised (again)")
    vocab, width = table.weight.shape
    rank = rank if rank is not None else max(1, width // 3)
    if rank * (vocab + width) >= vocab * width:
        raise ValueError(f"{field}={rank} saves nothing on the {vocab} x {width} word embedding (E (V + H) = "
                         f"{rank * (vocab + width)} >= V H = {vocab * width} weights): choose "
                         f"{field} <= {(vocab * width - 1) // (vocab + width)}")
    replace_modules(model, [word_embedding_name(model)], lambda old: FactorizedEmbedding.from_embedding(old, rank))
    return rank


def factorized_embedding_skeleton(model: nn.Module, rank: int) -> None:
    """The architecture of :func:`factorize_embedding` (empty weights, for loading)."""
    replace_modules(model, [word_embedding_name(model)],
                    lambda old: FactorizedEmbedding(old.num_embeddings, old.embedding_dim, rank,
                                                    padding_idx=old.padding_idx))


class FactorizedEmbeddingCompressor(ReshapeAndRecover):
    family = "sharing"
    name = "factorized_embedding"
    config_class = FactorizedEmbeddingConfig
    search_space = {"rank": (128, 192)}  # a third and a half of MiniLM's 384 hidden size

    def reshape(self, model: nn.Module, *, context) -> dict:
        return {"embedding_rank": factorize_embedding(model, self.config.rank)}

    def recovery_description(self, layout: dict) -> str:
        return f"recovering a rank-{layout['embedding_rank']} factorised embedding"

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        factorized_embedding_skeleton(model, layout["embedding_rank"])
        return model.eval()


# --- low_rank --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LowRankConfig(RecoveryConfig):
    """Set exactly one of ``rank`` and ``energy``; with neither, ``energy`` is 0.8."""

    rank: int | None = None  # one rank for every layer (capped at the layer's smaller side)
    energy: float | None = None  # per layer, the smallest rank keeping this fraction of the squared singular values
    include: str = "encoder"  # the encoder layers' linears; "attention" or "ffn": one block's; "all": every Linear

    def __post_init__(self) -> None:
        if self.rank is None and self.energy is None:  # normalised here, so the default hashes like energy=0.8
            object.__setattr__(self, "energy", DEFAULT_ENERGY)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if self.rank is not None and self.energy is not None:
            raise ValueError(f"set one of rank ({self.rank}) and energy ({self.energy}), not both")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if self.include not in INCLUDE:
            raise ValueError(f"include must be one of {', '.join(INCLUDE)}, got {self.include!r}")


def target_linears(model: nn.Module, include: str) -> list[str]:
    """Names of the ``nn.Linear`` layers that ``include`` selects (BERT-like naming: ``...attention...``)."""
    names = linear_names(model)
    if include == "all":
        return names
    inside = {id(module) for module in encoder_layers(model).modules()}
    names = [name for name in names if id(model.get_submodule(name)) in inside]
    if include == "attention":
        return [name for name in names if ".attention." in name]
    if include == "ffn":
        return [name for name in names if ".attention." not in name]
    return names


class LowRank(ReshapeAndRecover):
    family = "sharing"
    name = "low_rank"
    config_class = LowRankConfig
    search_space = {"energy": (0.8, 0.9)}  # the kept spectrum sets each layer's rank; below 0.8 accuracy drops

    def reshape(self, model: nn.Module, *, context) -> dict:
        ranks: dict[str, int] = {}
        skipped: dict[str, int] = {}  # layer -> the rank it would have needed
        for name in target_linears(model, self.config.include):
            linear = model.get_submodule(name)
            factors = svd(linear.weight)
            singular = factors[1]
            rank = (min(self.config.rank, len(singular)) if self.config.rank is not None
                    else rank_for_energy(singular, self.config.energy))
            if rank * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
                skipped[name] = rank
                continue
            ranks[name] = rank
            replace_modules(model, [name], lambda old, r=rank, f=factors: LowRankLinear.from_linear(old, r, f))
        return {"ranks": ranks, "skipped": skipped}

    def recovery_description(self, layout: dict) -> str:
        return f"recovering {len(layout['ranks'])} low-rank layers"

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        for name, rank in layout["ranks"].items():
            replace_modules(model, [name], lambda old, r=rank: LowRankLinear(old.in_features, old.out_features, r,
                                                                              bias=old.bias is not None))
        return model.eval()
