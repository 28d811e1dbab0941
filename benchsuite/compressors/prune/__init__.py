"""The pruning family: removing weights (``magnitude``) or whole structures (``heads``, ``ffn``).

* :mod:`.magnitude`: unstructured global magnitude pruning, one-shot or on Zhu & Gupta's gradual
  cubic schedule. Zeros are stored dense and multiplied by dense kernels: it shrinks the gzip size,
  not the file, the memory or the latency.
* :mod:`.structured`: attention heads and feed-forward neurons ranked by Michel et al.'s
  importance (:mod:`.importance`) and physically cut out (:mod:`.surgery`): smaller matmuls, a
  smaller file and a faster model.

Every method here then recovers with the distillation loss of
:mod:`benchsuite.distillation.recovery`. Movement pruning is not implemented.
"""
