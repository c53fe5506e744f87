"""Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): the loss over a whole batch, with memory for one chunk of encoder activations.

1. Embed queries and passages chunk by chunk without a graph, remembering each chunk's RNG state.
2. Compute the loss on those embeddings as leaves and backpropagate to get d loss / d embedding.
3. Re-embed each chunk with a graph (same RNG state, so the same dropout) and backpropagate
   `embedding . cached_gradient`, which sends exactly the uncached gradient into the parameters.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from accelerate import Accelerator


def _chunks(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def grad_cache_backward(model: torch.nn.Module, objective, accelerator: Accelerator, queries: Sequence[str],
                        passages: Sequence[str], chunk: int, scale: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Backward of `scale * loss(queries, passages)` in chunks; returns (loss, logs) like the objective."""
    plan = [("queries", c) for c in _chunks(queries, chunk)] + [("passages", c) for c in _chunks(passages, chunk)]
    states, embs = [], {"queries": [], "passages": []}
    with torch.no_grad():
        for kind, texts in plan:
            states.append(_rng_state())
            embs[kind].append(model(**{kind: texts}))
    q = torch.cat(embs["queries"]).requires_grad_()
    p = torch.cat(embs["passages"]).requires_grad_()
    loss, logs = objective.loss_from_embeddings(q, p)
    (loss * scale).backward()
    grads = {"queries": q.grad.split([len(c) for k, c in plan if k == "queries"]),
             "passages": p.grad.split([len(c) for k, c in plan if k == "passages"])}
    index = {"queries": 0, "passages": 0}
    for i, ((kind, texts), state) in enumerate(zip(plan, states)):
        last = i == len(plan) - 1
        _set_rng_state(state)
        with nullcontext() if last else accelerator.no_sync(model):
            emb = model(**{kind: texts})
            accelerator.backward((emb * grads[kind][index[kind]]).sum())
        index[kind] += 1
    return loss.detach(), logs


def _rng_state() -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def plain_step(model: torch.nn.Module, objective, accelerator: Accelerator, inputs: dict,
               grad_accum: int) -> tuple[torch.Tensor, dict]:
    """The objective's loss on `inputs` through the (DDP-wrapped) `model`, backpropagated / grad_accum."""
    loss, logs = model(**inputs)
    accelerator.backward(loss / grad_accum)
    return loss, logs


class GradCache:
    """Steps an objective that exposes `embed` and `loss_from_embeddings` in chunks of `chunk` texts; the
    same call as `plain_step`."""

    def __init__(self, chunk: int) -> None:
        if chunk <= 0:
            raise ValueError(f"GradCache needs chunk > 0, got {chunk}")
        self.chunk = chunk

    def __call__(self, model: torch.nn.Module, objective, accelerator: Accelerator, inputs: dict,
                 grad_accum: int) -> tuple[torch.Tensor, dict]:
        if not (hasattr(objective, "embed") and hasattr(objective, "loss_from_embeddings")):
            raise TypeError(f"{type(objective).__name__} has no embed / loss_from_embeddings: GradCache cannot "
                            "step it (set trainer.grad_cache_chunk=0)")
        return grad_cache_backward(model, objective, accelerator, inputs["queries"], inputs["passages"], self.chunk,
                                   scale=1.0 / grad_accum)
