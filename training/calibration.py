"""Temperature scaling (Guo et al. 2017), one temperature per hierarchy level.

Fitted on validation logits only: the temperature minimises the negative log-likelihood of
``softmax(logits / T)``; it leaves the argmax, hence accuracy, unchanged.

``calibrate_levels`` fits only on enough validation images (``min_samples``) and keeps a
temperature only when it helps on data it was not fitted on: fitted on one half of the
validation images (alternate rows), it must lower the other half's NLL without raising its
ECE; then the temperature is refitted on all of them. Otherwise T = 1, with the reason recorded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.metrics import calibration_bins, expected_calibration_error


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


def ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    return expected_calibration_error(calibration_bins(probs, labels))


def _held_out_check(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict]:
    """Fit on even rows, measure on odd rows: (temperature, figures before/after)."""
    fit_x, fit_y, chk_x, chk_y = logits[0::2], labels[0::2], logits[1::2], labels[1::2]
    t = fit_temperature(fit_x, fit_y)
    return t, {"nll_before": nll(chk_x, chk_y), "nll_after": nll(chk_x, chk_y, t),
               "ece_before": ece(chk_x, chk_y), "ece_after": ece(chk_x, chk_y, t)}


def calibrate_level(logits: torch.Tensor, labels: torch.Tensor, min_samples: int) -> dict:
    """One level: ``{"temperature", "fitted", "reason", "n", figures on the held-out half}``."""
    n = len(labels)
    if n < min_samples:
        return {"temperature": 1.0, "fitted": False, "n": n,
                "reason": f"{n} validation images, fewer than the {min_samples} needed"}
    logits, labels = logits.detach().double().cpu(), labels.cpu()
    _, figures = _held_out_check(logits, labels)
    figures = {k: round(v, 5) for k, v in figures.items()}
    if figures["nll_after"] >= figures["nll_before"]:
        reason = "temperature did not lower held-out validation NLL"
    elif figures["ece_after"] > figures["ece_before"]:
        reason = "temperature raised held-out validation ECE"
    else:
        return {"temperature": fit_temperature(logits, labels), "fitted": True, "n": n,
                "reason": "lowers held-out validation NLL and ECE", **figures}
    return {"temperature": 1.0, "fitted": False, "n": n, "reason": reason, **figures}


def calibrate_levels(logits: list[torch.Tensor], labels: torch.Tensor,
                     min_samples: int) -> tuple[list[float], list[dict]]:
    """Temperatures and one report per level (``labels`` is (N, levels))."""
    reports = [calibrate_level(x, labels[:, k], min_samples) for k, x in enumerate(logits)]
    return [r["temperature"] for r in reports], reports
