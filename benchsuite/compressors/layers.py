"""Reaching into a BERT-like encoder: its stack of layers, and renumbering it after surgery."""

from __future__ import annotations

import torch


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder's layer stack (``base_model.encoder.layer`` in BERT, RoBERTa, ELECTRA...)."""
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no base_model.encoder.layer stack: this compressor "
                         "handles BERT-like encoders")
    return layers


def set_layers(model: torch.nn.Module, layers: list[torch.nn.Module]) -> None:
    """Replace the encoder's stack by ``layers`` and make the config and layer indices agree."""
    model.base_model.encoder.layer = torch.nn.ModuleList(layers)
    model.config.num_hidden_layers = len(layers)
    for index, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
