"""int8 quantisation with torch.ao kernels: dynamic (``dynamic_int8``) and static (``static_int8``).

``dynamic_int8`` stores every ``nn.Linear`` (encoder, pooler, task head) as int8 weights
(per output channel or per tensor) and quantises each Linear's input on the fly from its
range in the batch; ``static_int8`` fixes each Linear input's scale in advance from
observers run over calibration examples (``QuantWrapper`` around each Linear: quantise,
int8 GEMM with a requantised int8 output, dequantise). Everything else (attention
products, softmax, GELU, LayerNorm) stays fp32.

Options that decide accuracy (measured on MiniLM, see the tox env ``quantization``):

* ``reduce_range``: torch quantises activations to 7 bits by default, because without
  VNNI its x86 kernels saturate on 8-bit ones; ``False`` uses 8 bits and is allowed only
  on a CPU with VNNI.
* ``outlier_channels``: LLM.int8()-style decomposition (``benchsuite.quant.outliers``).
  In each Linear whose largest calibrated input channel is ``outlier_ratio`` times its
  median one, the ``k`` largest channels are multiplied in fp32 and the rest in int8.
* ``embeddings`` (default on): the word-embedding table, over half of MiniLM's
  parameters, is stored as uint8 rows with a per-row scale and offset
  (``float_qparams_weight_only``); a lookup dequantises the rows it reads.

``engine`` picks the kernel library (``torch.backends.quantized.engine``): ``fbgemm`` (the
default), ``x86`` (which dispatches to fbgemm or onednn), ``onednn`` or ``qnnpack``. The
backend is torch.ao's eager mode, chosen by measurement (``benchmarks/quant_backends.py``,
MiniLM on real SST-2 batches, AVX-512 VNNI CPU, 2 threads): fbgemm ran 3.86x fp32 at batch 32
and 2.19x at batch 1, x86 3.40x / 2.20x, onednn 3.02x / 1.59x, torchao's
``Int8DynamicActivationInt8WeightConfig`` 1.27x / 0.66x (slower than fp32 at batch 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.ao import quantization as tq

from benchsuite.compressors.base import CompressionResult, CompressorConfig
from benchsuite.compressors.rebuild import RebuiltCompressor
from benchsuite.engine import collate
from benchsuite.machine import cpu_vector_flags
from benchsuite.quant import outliers
from benchsuite.quant.calibrate import input_absmax
from benchsuite.quant.surgery import embedding_table_name, linear_names, replace_modules
from benchsuite.quant.torch_ao import (
    ENGINES,
    INT16_ACCUMULATING_ENGINES,
    check_full_range,
    dynamic_mapping,
    quiet,
    set_engine,
)

OBSERVERS = ("histogram", "minmax")
CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class Int8Config(CompressorConfig):
    engine: str = "fbgemm"  # kernel library (torch.backends.quantized.engine): "x86", "fbgemm", "onednn", "qnnpack"
    per_channel: bool = True  # one weight scale per output row; False: one per tensor
    embeddings: bool = True  # also store the word embeddings as uint8 rows
    reduce_range: bool = True  # 7-bit activations, torch's default; False: 8 bits, needs VNNI on x86/fbgemm
    outlier_channels: int = 0  # input channels per Linear kept in fp32 (LLM.int8() decomposition); 0: none
    outlier_ratio: float = 6.0  # split only Linears whose largest input channel is this many times the median
    calibration_examples: int = 256  # training examples whose activations calibrate (outliers, observers)

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.outlier_channels < 0:
            raise ValueError(f"outlier_channels must be >= 0, got {self.outlier_channels}")
        if self.outlier_ratio < 1:
            raise ValueError(f"outlier_ratio must be >= 1, got {self.outlier_ratio}")
        if self.calibration_examples < 1:
            raise ValueError(f"calibration_examples must be >= 1, got {self.calibration_examples}")


class _Int8(RebuiltCompressor):
    family = "quantisation"
    NEEDS = frozenset({"calibration_data"})  # read only when splitting outliers or observing
    state_format = "torch"
    compute = "int8"
    trainable_output = False

    def refusal(self) -> str | None:
        try:
            if not self.config.reduce_range:
                check_full_range(self.config.engine, cpu_vector_flags())
        except ValueError as exc:
            return str(exc)
        return None

    def _set_engine(self) -> None:
        set_engine(self.config.engine)
        if not self.config.reduce_range:
            check_full_range(self.config.engine, cpu_vector_flags())

    def _calibration_batches(self, context) -> list[dict]:
        examples = context.calibration_examples(self.config.calibration_examples, option="calibration_examples")
        pad = context.tokenizer.pad_token_id
        return [collate(examples[i : i + CALIBRATION_BATCH], pad) for i in range(0, len(examples), CALIBRATION_BATCH)]

    def _split_outliers(self, model: nn.Module, batches: Callable[[], list[dict]]) -> tuple[list[str], dict]:
        """Choose and split the outlier Linears from calibration data; returns the Linears to quantise and the
        layout (which Linears were split)."""
        names = linear_names(model)
        if not self.config.outlier_channels:
            return names, {}
        absmax = input_absmax(model, names, batches())
        layout = {"outlier_split": outliers.select(absmax, ratio=self.config.outlier_ratio)}
        return self._wrap_outliers(model, layout, absmax), layout

    def _wrap_outliers(self, model: nn.Module, layout: dict, absmax: dict | None = None) -> list[str]:
        names, split = linear_names(model), layout.get("outlier_split", [])
        inner = outliers.wrap(model, split, k=self.config.outlier_channels)
        if absmax is not None:
            outliers.split(model, split, absmax)
        return [n for n in names if n not in split] + inner


class DynamicInt8(_Int8):
    name = "dynamic_int8"
    config_class = Int8Config
    search_space = {"reduce_range": (True, False), "outlier_channels": (0, 4)}  # 7 vs 8-bit activations; outlier split

    def compress(self, model, *, context):
        names, layout = self._split_outliers(model.eval(), lambda: self._calibration_batches(context))
        return CompressionResult(self._quantize(model, names), layout=layout)

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        return self._quantize(model, self._wrap_outliers(model, layout))

    def _quantize(self, model: nn.Module, names: list[str]) -> nn.Module:
        self._set_engine()
        weight = tq.per_channel_dynamic_qconfig if self.config.per_channel else tq.default_dynamic_qconfig
        spec: dict = dict.fromkeys(names, weight)
        if self.config.embeddings:
            spec[embedding_table_name(model)] = tq.float_qparams_weight_only_qconfig
        with quiet():
            return tq.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True,
                                       mapping=dynamic_mapping(reduce_range=self.config.reduce_range)).eval()


@dataclass(frozen=True)
class StaticInt8Config(Int8Config):
    observer: str = "histogram"  # activation observer: histogram (minimises quantisation error) or minmax

    def validate(self) -> None:
        super().validate()
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {', '.join(OBSERVERS)}, got {self.observer!r}")


class StaticInt8(_Int8):
    name = "static_int8"
    config_class = StaticInt8Config
    observes_activations = True  # each wrapped Linear's observer sees its own inputs (shared_modules refuses ties)
    search_space = {"reduce_range": (True, False), "outlier_channels": (0, 4)}  # 7 vs 8-bit activations; outlier split

    def compress(self, model, *, context):
        batches = self._calibration_batches(context)  # for the outlier split and the observers alike
        names, layout = self._split_outliers(model.eval(), lambda: batches)
        self._prepare(model, names)
        with torch.inference_mode(), quiet():
            for batch in batches:
                model(**batch)
        return CompressionResult(self._convert(model), layout=layout)

    def restructure(self, model: nn.Module, layout: dict) -> nn.Module:
        # Uncalibrated observers give placeholder scales; the saved state replaces them.
        return self._convert(self._prepare(model, self._wrap_outliers(model, layout)))

    def _qconfig(self) -> tq.QConfig:
        reduce_range = self.config.reduce_range and self.config.engine in INT16_ACCUMULATING_ENGINES
        observer = tq.HistogramObserver if self.config.observer == "histogram" else tq.MinMaxObserver
        weight = (tq.default_per_channel_weight_observer if self.config.per_channel else tq.default_weight_observer)
        return tq.QConfig(activation=observer.with_args(reduce_range=reduce_range), weight=weight)

    def _prepare(self, model: nn.Module, names: list[str]) -> nn.Module:
        self._set_engine()
        qconfig = self._qconfig()

        def wrap(linear: nn.Module) -> nn.Module:
            wrapper = tq.QuantWrapper(linear)
            wrapper.qconfig = qconfig
            return wrapper

        replace_modules(model, names, wrap)
        if self.config.embeddings:
            model.get_submodule(embedding_table_name(model)).qconfig = tq.float_qparams_weight_only_qconfig
        with quiet():
            return tq.prepare(model.eval(), inplace=True)

    def _convert(self, model: nn.Module) -> nn.Module:
        with quiet():
            return tq.convert(model, inplace=True).eval()
