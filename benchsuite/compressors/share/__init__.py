"""Parameter sharing and factorisation: fewer stored weights for the same architecture's computation.

- ``cross_layer`` (:mod:`.cross_layer`): groups of consecutive encoder layers run one shared layer.
- ``factorized_embedding`` (:mod:`.factorize`): the word embedding as a V x E table times an E x H projection.
- ``low_rank`` (:mod:`.factorize`): linear layers as products of two thin matrices from their SVD.
- ``albert`` (:mod:`.combined`): cross-layer sharing plus a factorised embedding, in one config.

Each starts from weights derived from the fine-tuned model (an average, a truncated SVD) and then
recovers with the distillation loss. Shared tensors are stored and counted once.
"""
