"""The dense baseline on the dashboard: parameters per layer and per network at the start of fit.

Compression callbacks log the same names after they act, so a W&B panel on
``compress/g_params`` compares a dense run with its compressed variants.
"""

from __future__ import annotations

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from typing_extensions import override

from gan_lightning.core.lightning_private import logging_step
from gan_lightning.core.loggers import log_table

LAYER_COLUMNS = ["network", "layer", "type", "weight_shape", "parameters", "nonzero"]


def layer_rows(network_name: str, network: nn.Module) -> list[list]:
    """One row per module that owns parameters directly."""
    rows = []
    for name, module in network.named_modules():
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        weight = getattr(module, "weight", None)
        shape = "x".join(map(str, weight.shape)) if weight is not None else ""
        rows.append([
            network_name, name, type(module).__name__, shape,
            sum(p.numel() for p in params), sum(int(p.count_nonzero()) for p in params),
        ])
    return rows


class LayerTable(Callback):
    """Logs the ``model/layers`` table and ``compress/g_params`` / ``compress/d_params`` when fit starts."""

    @override
    @rank_zero_only
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = layer_rows("generator", pl_module.generator) + layer_rows("discriminator", pl_module.discriminator)
        log_table(trainer, "model/layers", LAYER_COLUMNS, rows)
        counts = {
            "compress/g_params": float(sum(p.numel() for p in pl_module.generator.parameters())),
            "compress/d_params": float(sum(p.numel() for p in pl_module.discriminator.parameters())),
        }
        for logger in trainer.loggers:
            logger.log_metrics(counts, step=logging_step(trainer))
