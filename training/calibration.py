"""Temperature scaling (Guo et al. 2017), one temperature per hierarchy level.

Fitted on validation logits only: the temperature minimises the negative log-likelihood of
``softmax(logits / T)``; it leaves the argmax, hence accuracy, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature that minimises validation NLL (optimised in log space, so T > 0)."""
    if len(labels) == 0:
        return 1.0
    logits = logits.detach().double().cpu()
    labels = labels.cpu()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    # Never return something worse than no scaling (LBFGS can stall on degenerate inputs).
    return t if nll(logits, labels, t) <= nll(logits, labels, 1.0) else 1.0


def fit_temperatures(logits: list[torch.Tensor], labels: torch.Tensor) -> list[float]:
    """One temperature per level; ``labels`` is (N, levels)."""
    return [fit_temperature(x, labels[:, k]) for k, x in enumerate(logits)]
