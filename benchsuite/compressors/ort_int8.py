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

QOperator rather than QDQ: on an AVX-512 VNNI CPU (1 thread, all-MiniLM-L6-v2, batch
[32, 64], 10 interleaved rounds) static QOperator took 140 ms per batch (median) and QDQ 143 ms,
with the same accuracy; with ONNX Runtime's default op list they tied (139 ms). int8
activations instead of uint8 were 1.8x slower, and ``quant_pre_process`` changed nothing.
Dynamic mode (123 ms there) has no format choice: ``quantize_dynamic`` writes QOperator ops.

Weight range, chosen from the CPU's flags (:func:`weight_range`, recorded as the compressor's
``layout`` and in ``ort_int8.json``; not a config field, so config hashes do not depend on the
CPU). ONNX Runtime runs uint8 x int8 products (u8s8) on x86. With VNNI (``avx512_vnni``,
``avx_vnni``; AMX-INT8 CPUs have it too) its kernels sum them in int32, and weights use the full
int8 range (``reduce_range=False``: the behaviour and speeds measured above, unchanged). Without
VNNI (AVX2, or AVX-512 alone) its kernels (``vpmaddubsw``) add pairs of products in int16, which
saturates for 8-bit weights (2 * 255 * 127 > 32767): on an AVX2-only CPU the tiny test models'
outputs then differed from fp32 by up to 0.35 against a largest logit of 1.43 (dynamic,
classification), 0.24 to 0.36 of the largest output across tasks and modes. There weights are
quantized to 7 bits (``reduce_range=True``, codes in [-64, 64]: 2 * 255 * 64 fits int16), as ONNX
Runtime's quantization guide advises for CPUs without VNNI; the same models' error fell to at
most 0.063 of the largest output in dynamic mode and 0.27 in static mode. The same u8s8 kernel
runs the same shapes, so the speed should not change (rough timings on a loaded 2-core AVX2
machine could not show more). uint8 weights (the u8u8 kernel, which does not saturate) were a
little more accurate there (dynamic 0.042) but about 1.2x slower than 7-bit int8 weights on a
MiniLM-shaped model (dynamic, batch [32, 64], 1 thread). Per-tensor weights (``per_channel=False``)
showed no clear saturation there (0.076 with 8 bits, 0.073 with 7), but can saturate, so they get 7
bits too, as does a CPU whose flags name no VNNI because they cannot be read or it is not x86 (7
bits are accurate on every kernel). ``compress`` and ``load`` refuse with a ``ValueError`` a graph whose
int8 weights exceed 7 bits on a CPU without VNNI (saved on a VNNI machine, or made by a quantizer
that ignored ``reduce_range``): it would score wrong.

The result is an :class:`OrtInt8Model`: a ``torch.nn.Module`` with no torch parameters whose
``forward(**batch)`` returns the Hugging Face output fields as torch tensors. ``save`` writes
``model.onnx`` (the quantized graph, whose bytes are the disk size) and ``ort_int8.json`` (the
config, the input and output names, the ONNX Runtime version and the weight-range ``layout``).
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

from benchsuite import machine
from benchsuite.compressors.base import CompressionResult, Compressor, CompressorConfig
from benchsuite.compressors.onnx_export import export_onnx
from benchsuite.engine import INPUT_KEYS, collate
from benchsuite.errors import UsageError

MODES = ("dynamic", "static")
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
OPSETS = range(13, 21)  # per-channel QDQ needs 13; the TorchScript exporter stops at 20
QUANT_FORMAT = "QOperator"  # static mode's format: see the module docstring for why not QDQ
# Static mode quantizes only these ops (see the module docstring for why not ONNX Runtime's default list).
STATIC_OP_TYPES = ("MatMul", "Gemm", "Gather")
CALIBRATION_EXAMPLES = 256  # static mode: training inputs whose activation ranges are observed
MODEL_FILE = "model.onnx"
INSTALL_HINT = 'pip install -e ".[onnx]"'
META_FILE = "ort_int8.json"
# Inputs a batch may leave out, and the value Hugging Face models assume for them.
INPUT_DEFAULTS = {"attention_mask": 1, "token_type_ids": 0}
# Initializer slots that hold quantization parameters (scales, zero points), per op type.
QPARAM_SLOTS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "MatMulInteger": (2, 3),
                "QLinearMatMul": (1, 2, 4, 5, 6, 7), "QGemm": (1, 2, 4, 5, 7, 8)}
# CPU flags under which ONNX Runtime's u8s8 kernels accumulate in int32 (AMX-INT8 CPUs also have AVX-512 VNNI).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Largest |int8 weight code| that cannot saturate the int16 pair sums of the kernels without VNNI:
# 2 * 255 * 64 = 32640 <= 32767. reduce_range=True quantizes weights to [-64, 64].
UNSATURATED_WEIGHT_MAX = 64
# The weight input of each quantized matrix op that runs on the u8s8 kernels.
WEIGHT_SLOTS = {"MatMulInteger": 1, "QLinearMatMul": 3, "QGemm": 3, "ConvInteger": 1, "QLinearConv": 3}


def require_onnx() -> None:
    """Import check for the optional ``onnx`` extra, with the fix in the message."""
    try:
        import onnx  # noqa: F401, PLC0415
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError as exc:
        raise UsageError(f"the ort_int8 compressor needs the onnx extra: {INSTALL_HINT}") from exc


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
    alive (and removed) with this module; ``layout`` is the weight-range choice it was quantized with
    (:func:`weight_range`; ``None`` for an unquantized graph or an old save that did not record it).
    """

    def __init__(self, onnx_path: Path, *, owner: tempfile.TemporaryDirectory | None = None,
                 layout: dict | None = None):
        super().__init__()
        import onnxruntime  # noqa: PLC0415

        self.onnx_path = Path(onnx_path)
        self._owner = owner
        self.layout = layout
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


def weight_range(cpu_flags: Sequence[str]) -> dict:
    """The weight range to quantize to on a CPU with ``cpu_flags``: ``{"reduce_range": bool, "why": str}``.

    8-bit weights where ONNX Runtime's u8s8 kernels sum in int32 (VNNI); 7-bit ones elsewhere, where
    they sum pairs of products in int16 and 8-bit weights saturate (see the module docstring).
    """
    vnni = sorted(VNNI_FLAGS.intersection(cpu_flags))
    if vnni:
        return {"reduce_range": False,
                "why": f"CPU has {', '.join(vnni)}: ONNX Runtime's u8s8 kernels accumulate in int32, so int8 "
                       "weights use all 8 bits"}
    return {"reduce_range": True,
            "why": "CPU has no VNNI (avx512_vnni, avx_vnni): ONNX Runtime's u8s8 kernels add pairs of uint8 x int8 "
                   "products in int16, which saturates with 8-bit weights; 7-bit weights ([-64, 64]) cannot"}


def saturating_weights(graph) -> list[str]:
    """Names of the u8s8 matrix ops in ``graph`` whose int8 weight codes exceed 7 bits (|code| > 64)."""
    from onnx import TensorProto, numpy_helper  # noqa: PLC0415

    initializers = {init.name: init for init in graph.initializer}
    found = []
    for node in graph.node:
        slot = WEIGHT_SLOTS.get(node.op_type)
        weight = initializers.get(node.input[slot]) if slot is not None and slot < len(node.input) else None
        if weight is None or weight.data_type != TensorProto.INT8:
            continue
        codes = numpy_helper.to_array(weight)
        if codes.size and np.abs(codes.astype(np.int16)).max() > UNSATURATED_WEIGHT_MAX:
            found.append(node.name or node.output[0])
    return found


def check_accurate_here(onnx_path: Path, cpu_flags: Sequence[str]) -> None:
    """Refuse a quantized graph that ONNX Runtime would run with saturating int16 sums on this CPU."""
    if not weight_range(cpu_flags)["reduce_range"]:
        return  # VNNI: int32 sums, any int8 weight is exact
    import onnx  # noqa: PLC0415

    found = saturating_weights(onnx.load(str(onnx_path)).graph)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ValueError(
            f"ort_int8: {onnx_path} has 8-bit int8 weights in {len(found)} matrix products ({shown}), but this CPU "
            f"has no VNNI (its vector flags: {' '.join(cpu_flags) or 'none found'}): ONNX Runtime's u8s8 kernels "
            "would saturate their int16 sums and the outputs would be wrong. Quantize on this machine (ort_int8 then "
            "uses 7-bit weights, reduce_range=True) or run on a CPU with avx512_vnni or avx_vnni")


class OrtInt8(Compressor):
    """Export to ONNX and quantize to int8 with ONNX Runtime (dynamic or static), run by ONNX Runtime."""
    family = "quantisation"

    name = "ort_int8"
    config_class = OrtInt8Config
    search_space = {"mode": ("dynamic", "static")}  # the one choice that changes the graph's kernels
    NEEDS = frozenset({"calibration_data"})  # read in static mode only

    @staticmethod
    def _calibration(context) -> list[dict]:
        """The first :data:`CALIBRATION_EXAMPLES` training inputs, exactly (fewer is refused)."""
        examples = context.calibration_data
        if len(examples) < CALIBRATION_EXAMPLES:
            raise ValueError(f"ort_int8 static mode calibrates on {CALIBRATION_EXAMPLES} training examples, but the "
                             f"task's training data gives only {len(examples)} under this preset; use more training "
                             f"data, or mode=dynamic")
        return examples[:CALIBRATION_EXAMPLES]
    save_format = "onnx"
    compute = "int8"

    requires = ("onnx", "onnxruntime")
    install_hint = INSTALL_HINT
    trainable_output = False  # an ONNX Runtime session

    def __init__(self, config: OrtInt8Config | None = None):
        require_onnx()
        super().__init__(config)

    def compress(self, model, *, context):
        require_onnx()
        flags = machine.cpu_vector_flags()
        layout = weight_range(flags)  # not a config field: the choice follows the CPU, and is recorded
        owner = tempfile.TemporaryDirectory(prefix="benchsuite-ort-int8-")
        folder = Path(owner.name)
        exported = export_onnx(model, folder / "model.fp32.onnx", opset=self.config.opset)
        calibration = self._calibration(context) if self.config.mode == "static" else None
        pad_token_id = getattr(context.tokenizer, "pad_token_id", None) or 0
        quantize(exported.path, folder / MODEL_FILE, self.config, exported.input_names, calibration,
                 pad_token_id=pad_token_id, reduce_range=layout["reduce_range"])
        exported.path.unlink()
        try:
            check_accurate_here(folder / MODEL_FILE, flags)
        except ValueError:
            owner.cleanup()
            raise
        return CompressionResult(OrtInt8Model(folder / MODEL_FILE, owner=owner, layout=layout), layout=layout)

    def save(self, result: CompressionResult, folder: Path) -> None:
        model = result.model
        if not isinstance(model, OrtInt8Model):
            raise TypeError(f"ort_int8 saves an OrtInt8Model, got {type(model).__name__}")
        import onnxruntime  # noqa: PLC0415

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model.onnx_path, folder / MODEL_FILE)
        meta = {"config": self.config.to_json(), "input_names": list(model.input_names),
                "output_names": list(model.output_names), "onnxruntime_version": onnxruntime.__version__,
                "layout": model.layout}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> OrtInt8Model:
        require_onnx()
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        check_accurate_here(folder / MODEL_FILE, machine.cpu_vector_flags())
        model = OrtInt8Model(folder / MODEL_FILE, layout=meta.get("layout"))
        if list(model.output_names) != meta["output_names"]:
            raise ValueError(f"{folder / MODEL_FILE} has outputs {list(model.output_names)}, "
                             f"but {META_FILE} says {meta['output_names']}")
        return model.eval()


def quantize(source: Path, target: Path, config: OrtInt8Config, input_names: Sequence[str],
             calibration: Sequence[dict] | None, *, pad_token_id: int, reduce_range: bool) -> None:
    """Quantize the fp32 graph at ``source`` into ``target`` as ``config`` says (7-bit weights if ``reduce_range``)."""
    from onnxruntime import quantization  # noqa: PLC0415

    with _quiet():
        if config.mode == "dynamic":
            quantization.quantize_dynamic(source, target, per_channel=config.per_channel, reduce_range=reduce_range,
                                          weight_type=quantization.QuantType.QInt8)
            return
        if not calibration:
            raise ValueError("ort_int8 static mode needs calibration data, got none")
        feeds = calibration_feeds(calibration, input_names, pad_token_id=pad_token_id,
                                  same_shape=config.calibration_method != "minmax")
        quantization.quantize_static(
            source, target, _reader(feeds), quant_format=getattr(quantization.QuantFormat, QUANT_FORMAT),
            op_types_to_quantize=list(STATIC_OP_TYPES), per_channel=config.per_channel, reduce_range=reduce_range,
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
