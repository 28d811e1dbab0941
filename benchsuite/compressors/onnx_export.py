"""Export a fine-tuned transformers encoder to an fp32 ONNX graph with dynamic batch and sequence axes.

Uses the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``): in torch 2.13 it still
exists (deprecated), exports a BERT in well under a second where the dynamo exporter takes
seconds, and needs only the ``onnx`` package, not ``onnxscript``. The graph's inputs are the
model inputs its ``forward`` accepts, in :data:`benchsuite.engine.INPUT_KEYS` order, and its
outputs are named as the Hugging Face output fields (``logits``, or ``start_logits`` and
``end_logits``), so a wrapper can hand them back under the same attribute names.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from benchsuite.engine import INPUT_KEYS

# The example batch the graph is traced on: 2 rows of 13 tokens, the second padded after 8, so the
# attention-mask path is traced with real padding. 13 is an odd length, so a dimension of that size in
# an output is the sequence axis (a label count of exactly 13 would also be named "sequence", harmlessly).
EXAMPLE_ROWS, EXAMPLE_TOKENS, EXAMPLE_REAL_TOKENS = 2, 13, 8


@dataclass(frozen=True)
class ExportedGraph:
    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int


class _Positional(torch.nn.Module):
    """The model called with positional inputs, returning its named outputs as a tuple (what tracing needs)."""

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_names = output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        return tuple(getattr(result, name) for name in self.output_names)


def accepted_inputs(model: torch.nn.Module) -> tuple[str, ...]:
    """The model inputs (of ``input_ids``, ``attention_mask``, ``token_type_ids``) its ``forward`` takes."""
    parameters = inspect.signature(model.forward).parameters
    names = tuple(key for key in INPUT_KEYS if key in parameters)
    if "input_ids" not in names:
        raise ValueError(f"{type(model).__name__}.forward takes no input_ids; cannot export it to ONNX")
    return names


def example_inputs(model: torch.nn.Module, input_names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A fixed int64 batch [EXAMPLE_ROWS, EXAMPLE_TOKENS] (a seeded generator: global RNG untouched)."""
    vocab = int(getattr(model.config, "vocab_size", 100))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (EXAMPLE_ROWS, EXAMPLE_TOKENS), generator=generator, dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, EXAMPLE_REAL_TOKENS:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {name: batch[name] for name in input_names}


def export_onnx(model: torch.nn.Module, path: Path, *, opset: int) -> ExportedGraph:
    """Write ``model`` (fp32, put in eval mode) as an ONNX graph at ``path``; dims 0 and 1 of every input are
    dynamic (``batch``, ``sequence``), as are the matching dims of every output."""
    model.eval()
    input_names = accepted_inputs(model)
    batch = example_inputs(model, input_names)
    with torch.inference_mode():
        result = model(**batch)
    output_names = tuple(name for name, value in result.items() if isinstance(value, torch.Tensor))
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    for name in output_names:
        shape = getattr(result, name).shape
        dynamic_axes[name] = {0: "batch", **({1: "sequence"} if len(shape) > 1 and shape[1] == EXAMPLE_TOKENS else {})}
    with warnings.catch_warnings():
        # The exporter's deprecation notice and the tracer's notes on Python branches it baked in (none of
        # which depend on batch or sequence size for these encoders: the tests check other shapes).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        # The wrapper is put in eval mode too: the exporter traces in the mode of the module it is given.
        torch.onnx.export(_Positional(model, input_names, output_names).eval(), tuple(batch.values()), str(path),
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    return ExportedGraph(path=path, input_names=input_names, output_names=output_names, opset=opset)
