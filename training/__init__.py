"""geoscout training: plain PyTorch (no Dagster import but the optional Pipes hook).

Runnable on its own: ``torchrun -m training.train ...``.
"""
