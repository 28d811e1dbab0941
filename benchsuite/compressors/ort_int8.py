"""int8 inference with ONNX Runtime: export to ONNX, quantize there, run an ``InferenceSession``.

``compress`` exports the fp32 model (:mod:`benchsuite.compressors.onnx_export`) and quantizes it
with ``onnxruntime.quantization``:

* ``mode="dynamic"``: ``quantize_dynamic``, int8 weights, activations quantized per batch at run
  time (``DynamicQuantizeLinear`` + ``MatMulInteger``); calibration data is not read.
* ``mode="static"``: ``quantize_static`` in the :data:`QUANT_FORMAT` format, uint8 activations
  and int8 weights, activation ranges calibrated on ``context.calibration_data`` with
  ``calibration_method``, one feature per run: unpadded for ``minmax``; padded to the longest
  feature (with the tokenizer's pad id, masked) for the histogram methods, whose collector
  needs every run's tensors to have one shape.

Static mode quantizes only the matrix products and embedding look-ups (:data:`STATIC_OP_TYPES`),
as dynamic mode does. ONNX Runtime's default list also quantizes ``Where``, ``Add`` and
``Softmax``, and so the additive attention mask: calibrated on unpadded features its range is
[0, 0], every mask value then rounds to 0, and padded positions are attended to (padded with
the dtype's minimum in calibration instead, its range would swamp the attention scores).

QOperator rather than QDQ: on this CPU (AVX-512 VNNI, 1 thread, all-MiniLM-L6-v2, batch
[32, 64], 10 interleaved rounds) static QOperator took 140 ms per batch (median) and QDQ 143 ms,
with the same accuracy; with ONNX Runtime's default op list they tied (139 ms). int8
activations instead of uint8 were 1.8x slower, and ``quant_pre_process`` changed nothing.
Dynamic mode (123 ms there) has no format choice: ``quantize_dynamic`` writes QOperator ops.

The result is an :class:`OrtInt8Model`: a ``torch.nn.Module`` with no torch parameters whose
``forward(**batch)`` returns the Hugging Face output fields as torch tensors. ``save`` writes
``model.onnx`` (the quantized graph, whose bytes are the disk size) and ``ort_int8.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers.utils import ModelOutput

from benchsuite.compressors.base import Compressor, CompressorConfig
from benchsuite.compressors.onnx_export import export_onnx
from benchsuite.engine import INPUT_KEYS, collate
from benchsuite.errors import UsageError

MODES = ("dynamic", "static")
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
OPSETS = range(13, 21)  # per-channel QDQ needs 13; the TorchScript exporter stops at 20
QUANT_FORMAT = "QOperator"  # static mode's format: see the module docstring for why not QDQ
# Static mode quantizes only these ops (see the module docstring for why not ONNX Runtime's default list).
STATIC_OP_TYPES = ("MatMul", "Gemm", "Gather")
MODEL_FILE = "model.onnx"
META_FILE = "ort_int8.json"
# Inputs a batch may leave out, and the value Hugging Face models assume for them.
INPUT_DEFAULTS = {"attention_mask": 1, "token_type_ids": 0}
# Initializer slots that hold quantization parameters (scales, zero points), per op type.
QPARAM_SLOTS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "MatMulInteger": (2, 3),
                "QLinearMatMul": (1, 2, 4, 5, 6, 7), "QGemm": (1, 2, 4, 5, 7, 8)}


def require_onnx() -> None:
    """Import check for the optional ``onnx`` extra, with the fix in the message."""
    try:
        import onnx  # noqa: F401, PLC0415
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError as exc:
        raise UsageError('the ort_int8 compressor needs the onnx extra: pip install -e ".[onnx]"') from exc


@dataclass(frozen=True)
class OrtInt8Config(CompressorConfig):
    mode: str = "dynamic"  # "dynamic" or "static"
    per_channel: bool = True  # one weight scale per output channel instead of per tensor
    calibration_method: str = "minmax"  # static mode only: how activation ranges are chosen
    opset: int = 17  # ONNX opset of the exported graph (17 has LayerNormalization as one op)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if not isinstance(self.per_channel, bool):
            raise ValueError(f"per_channel must be true or false, got {self.per_channel!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration_method must be one of {list(CALIBRATION_METHODS)}, "
                             f"got {self.calibration_method!r}")
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or self.opset not in OPSETS:
            raise ValueError(f"opset must be an int from {OPSETS.start} to {OPSETS.stop - 1}, got {self.opset!r}")


class OrtInt8Model(torch.nn.Module):
    """A quantized ONNX graph run by ONNX Runtime on the CPU, called like the Hugging Face model it came from.

    ``onnx_path`` is the graph file; ``owner``, when given, is the temporary folder holding it, kept
    alive (and removed) with this module.
    """

    def __init__(self, onnx_path: Path, *, owner: tempfile.TemporaryDirectory | None = None):
        super().__init__()
        import onnxruntime  # noqa: PLC0415

        self.onnx_path = Path(onnx_path)
        self._owner = owner
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Idle workers would otherwise spin after each run, taking CPU from whatever runs next (the
        # baseline, in interleaved speed measurements).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def forward(self, **batch: torch.Tensor) -> ModelOutput:
        unknown = set(batch) - set(INPUT_KEYS)
        if unknown:
            raise TypeError(f"unexpected model inputs {sorted(unknown)}; this model takes {list(self.input_names)}")
        ids = batch["input_ids"]
        feed = {}
        for name in self.input_names:
            value = batch.get(name)
            if value is None:  # as the Hugging Face model does: attend everywhere, one segment
                value = torch.full_like(ids, INPUT_DEFAULTS[name])
            feed[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
        outputs = self.session.run(list(self.output_names), feed)
        return ModelOutput(**{name: torch.from_numpy(o) for name, o in zip(self.output_names, outputs, strict=True)})

    def compressed_weights(self) -> list[torch.Tensor]:
        """The graph's weight initializers, in their stored dtype (int8 or uint8 for quantized weights).

        Counted: every initializer with at least one dimension that is not a quantization parameter.
        Left out: scales and zero points (initializers in the scale/zero-point slots of the ops in
        :data:`QPARAM_SLOTS`, and the weight scales that dynamic quantization multiplies with a
        ``DynamicQuantizeLinear`` scale), and 0-d scalars (constants folded in by the exporter). So
        each weight or bias counts once, as stored: an int8 model counts as many elements as its fp32
        source, unless the exporter stored byte-identical tensors once. A uint8 code of 0 (embedding
        tables have a zero point) is a non-zero element here, whatever value it stands for.
        """
        import onnx  # noqa: PLC0415
        from onnx import numpy_helper  # noqa: PLC0415

        graph = onnx.load(str(self.onnx_path)).graph
        skip = quantization_parameters(graph)
        weights = (numpy_helper.to_array(init) for init in graph.initializer if init.name not in skip)
        return [torch.from_numpy(np.array(array)) for array in weights if array.ndim > 0]


def quantization_parameters(graph) -> set[str]:
    """Names of the initializers that are scales or zero points of quantized tensors in ``graph``."""
    dynamic_scales = {node.output[1] for node in graph.node if node.op_type == "DynamicQuantizeLinear"}
    names = set()
    for node in graph.node:
        names.update(node.input[i] for i in QPARAM_SLOTS.get(node.op_type, ()) if i < len(node.input))
        if node.op_type == "Mul" and dynamic_scales.intersection(node.input):
            names.update(node.input)
    return names & {init.name for init in graph.initializer}


class OrtInt8(Compressor):
    """Export to ONNX and quantize to int8 with ONNX Runtime (dynamic or static), run by ONNX Runtime."""

    name = "ort_int8"
    config_class = OrtInt8Config
    NEEDS = frozenset({"calibration_data"})  # read in static mode only
    save_format = "onnx"
    compute = "int8"

    def __init__(self, config: OrtInt8Config | None = None):
        require_onnx()
        super().__init__(config)

    def compress(self, model, *, context):
        require_onnx()
        owner = tempfile.TemporaryDirectory(prefix="benchsuite-ort-int8-")
        folder = Path(owner.name)
        exported = export_onnx(model, folder / "model.fp32.onnx", opset=self.config.opset)
        calibration = context.calibration_data if self.config.mode == "static" else None
        pad_token_id = getattr(context.tokenizer, "pad_token_id", None) or 0
        quantize(exported.path, folder / MODEL_FILE, self.config, exported.input_names, calibration,
                 pad_token_id=pad_token_id)
        exported.path.unlink()
        return OrtInt8Model(folder / MODEL_FILE, owner=owner)

    def save(self, model, folder: Path) -> None:
        if not isinstance(model, OrtInt8Model):
            raise TypeError(f"ort_int8 saves an OrtInt8Model, got {type(model).__name__}")
        import onnxruntime  # noqa: PLC0415

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model.onnx_path, folder / MODEL_FILE)
        meta = {"config": self.config.to_json(), "input_names": list(model.input_names),
                "output_names": list(model.output_names), "onnxruntime_version": onnxruntime.__version__}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> OrtInt8Model:
        require_onnx()
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        model = OrtInt8Model(folder / MODEL_FILE)
        if list(model.output_names) != meta["output_names"]:
            raise ValueError(f"{folder / MODEL_FILE} has outputs {list(model.output_names)}, "
                             f"but {META_FILE} says {meta['output_names']}")
        return model.eval()


def quantize(source: Path, target: Path, config: OrtInt8Config, input_names: Sequence[str],
             calibration: Sequence[dict] | None, *, pad_token_id: int) -> None:
    """Quantize the fp32 graph at ``source`` into ``target`` as ``config`` says."""
    from onnxruntime import quantization  # noqa: PLC0415

    with _quiet():
        if config.mode == "dynamic":
            quantization.quantize_dynamic(source, target, per_channel=config.per_channel,
                                          weight_type=quantization.QuantType.QInt8)
            return
        if not calibration:
            raise ValueError("ort_int8 static mode needs calibration data, got none")
        feeds = calibration_feeds(calibration, input_names, pad_token_id=pad_token_id,
                                  same_shape=config.calibration_method != "minmax")
        quantization.quantize_static(
            source, target, _reader(feeds), quant_format=getattr(quantization.QuantFormat, QUANT_FORMAT),
            op_types_to_quantize=list(STATIC_OP_TYPES), per_channel=config.per_channel,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[config.calibration_method]))


def calibration_feeds(features: Sequence[dict], input_names: Sequence[str], *, pad_token_id: int,
                      same_shape: bool) -> Iterator[dict[str, np.ndarray]]:
    """Each feature as a session feed of one row: [1, its length], or with ``same_shape`` [1, longest]."""
    if same_shape:
        padded = collate(features, pad_token_id)  # [features, longest]
        batches = ({key: value[i : i + 1] for key, value in padded.items()} for i in range(len(features)))
    else:
        batches = (collate([feature], pad_token_id) for feature in features)
    for batch in batches:
        ids = batch["input_ids"]
        yield {name: (batch[name] if name in batch else torch.full_like(ids, INPUT_DEFAULTS[name])).numpy()
               for name in input_names}


def _reader(feeds: Iterator[dict[str, np.ndarray]]):
    """``feeds`` as the ``CalibrationDataReader`` that ``quantize_static`` takes."""
    from onnxruntime.quantization import CalibrationDataReader  # noqa: PLC0415

    class FeedReader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    return FeedReader()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer logs a warning through the root logger for every tensor it leaves alone,
    and its histogram calibrators print their progress."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)
