import numpy as np
import torch

from benchsuite.engine import collate, forward_all, length_sorted_batches
from benchsuite.measure.footprint import disk_size, footprint
from benchsuite.measure.speed import Timing


def test_forward_batch_of_32(benchmark, minilm, sst2_features):
    features, pad = sst2_features
    batch = collate(features[:32], pad)

    @torch.inference_mode()
    def forward():
        return minilm(**batch)

    benchmark.pedantic(forward, rounds=10, warmup_rounds=2)


def test_engine_forward_all(benchmark, minilm, sst2_features):
    """The evaluation engine over 256 sentences; compare with test_bare_forward_loop (same batches)."""
    benchmark.group = "engine vs bare loop (256 SST-2 sentences, batch 64)"
    features, pad = sst2_features
    benchmark.pedantic(lambda: forward_all(minilm, features, output_names=["logits"], batch_size=64,
                                           pad_token_id=pad, per_token=False),
                       rounds=8, warmup_rounds=1)


def test_bare_forward_loop(benchmark, minilm, sst2_features):
    """The floor: the same length-sorted batches, collated beforehand, fed to the model and nothing else."""
    benchmark.group = "engine vs bare loop (256 SST-2 sentences, batch 64)"
    features, pad = sst2_features
    batches = [collate([features[i] for i in b], pad)
               for b in length_sorted_batches([len(f["input_ids"]) for f in features], 64)]

    @torch.inference_mode()
    def loop():
        for batch in batches:
            minilm(**batch)

    benchmark.pedantic(loop, rounds=8, warmup_rounds=1)


def test_footprint(benchmark, minilm):
    benchmark(footprint, minilm)


def test_disk_size(benchmark, minilm):
    benchmark.pedantic(disk_size, args=(minilm,), rounds=3)


def test_timing_summary(benchmark):
    values = np.random.default_rng(0).lognormal(-4, 0.2, size=1000).tolist()
    benchmark(Timing.from_seconds, values)
