"""Cutting a transformer to its first layers: a smaller student tower that starts from the teacher's own
weights (the layer-dropping initialisation of DistilBERT-style students, here for a query tower)."""
from __future__ import annotations

from torch import nn

# where each architecture family keeps its layer list, and the config key that counts them
_LAYER_LISTS = (("encoder.layer", "num_hidden_layers"), ("transformer.layer", "n_layers"),
                ("layers", "num_hidden_layers"))


def keep_first_layers(model: nn.Module, n: int) -> nn.Module:
    """Keep the first `n` layers of `model` (BERT / RoBERTa / XLM-R: encoder.layer; DistilBERT:
    transformer.layer; LLaMA / Mistral / Qwen: layers), in place, and record it in its config so that
    `save_pretrained` and `from_pretrained` agree; returns `model`."""
    for path, key in _LAYER_LISTS:
        *owners, attr = path.split(".")
        parent = model
        for name in owners:
            parent = getattr(parent, name, None)
        layers = getattr(parent, attr, None)
        if isinstance(layers, nn.ModuleList):
            if not 0 < n <= len(layers):
                raise ValueError(f"cannot keep {n} of the model's {len(layers)} layers")
            setattr(parent, attr, nn.ModuleList(list(layers)[:n]))
            setattr(model.config, key, n)
            if getattr(model.config, "layer_types", None) is not None:  # per-layer attention kinds (newer models)
                model.config.layer_types = list(model.config.layer_types)[:n]
            return model
    raise ValueError(f"{type(model).__name__}: no layer list found to cut (supported: encoder.layer, "
                     "transformer.layer, layers)")
