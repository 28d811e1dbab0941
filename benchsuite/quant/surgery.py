"""Finding and replacing submodules of a transformers encoder."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def linear_names(model: nn.Module) -> list[str]:
    """Qualified names of every ``nn.Linear`` (encoder, pooler and task head)."""
    return [name for name, module in model.named_modules() if type(module) is nn.Linear]


def word_embedding_name(model: nn.Module) -> str:
    """Qualified name of the word-embedding table (``get_input_embeddings``)."""
    table = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is table:
            return name
    raise ValueError(f"{type(model).__name__} has no input embedding among its modules")


def embedding_table_name(model: nn.Module) -> str:
    """Qualified name of the ``nn.Embedding`` that holds the word-embedding rows: the input embedding itself,
    or the one table inside it (a factorised embedding's V x E ``table``)."""
    name = word_embedding_name(model)
    module = model.get_submodule(name)
    if isinstance(module, nn.Embedding):
        return name
    tables = [f"{name}.{child}" for child, sub in module.named_modules() if isinstance(sub, nn.Embedding)]
    if not tables:
        raise ValueError(f"the input embedding {name} is a {type(module).__name__}, not an nn.Embedding table: an "
                         f"earlier stage quantised it already (embedding_int8?); quantise the table once, e.g. "
                         f"with embeddings=false on this stage")
    if len(tables) != 1:
        raise ValueError(f"the input embedding {name} ({type(module).__name__}) holds {len(tables)} nn.Embedding "
                         "tables; expected one")
    return tables[0]


def replace_modules(model: nn.Module, names: list[str], build: Callable[[nn.Module], nn.Module]) -> None:
    """Replace each named submodule by ``build(old)``, in place."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, build(getattr(parent, child)))
