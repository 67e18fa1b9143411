"""The model card: a JSON file beside every exported generator that says what it is, what it
costs and how good it was measured to be, so that a deployed file can be compared with its
dense original without the training run.

Costs are those of the generator as trained (:func:`~gan_lightning.compress.profiling.network_cost`,
per sample; an ``--inference_rewrite`` file computes the same function, its sub-pixel layer
with more, partly zero, MACs), against the generator as configured (built fresh from its
class path) for the reduction. The quality entry is the last measurement of the training run, with the feature
space, sample counts, real split and latent seed it was made with, and the step it was made at
(which may precede the checkpoint's step); it is ``null`` when the run measured nothing.
An int8 file's card also holds its quantization (:mod:`gan_lightning.deploy.quantize`): mode,
format, calibration latents and seed, and its agreement with the fp32 generator measured at
export time (``null`` for an fp32 file); its cost and quality entries are the fp32 generator's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from torch import nn

from gan_lightning.compress.profiling import network_cost
from gan_lightning.deploy.runtimes import latents
from gan_lightning.files import write_atomically

FORMAT = "gan-lightning/model-card"
VERSION = 1


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(out: str | Path) -> Path:
    """``g.onnx`` -> ``g.onnx.card.json``: one card per file, also when formats share a stem."""
    out = Path(out)
    return out.with_name(out.name + ".card.json")


def cost_entry(generator: nn.Module, configured: nn.Module, z_dim: int, configured_z_dim: int) -> dict[str, Any]:
    """Parameters, non-zeros, sparsity and per-sample MACs of ``generator``, and the MAC and
    parameter reductions against ``configured`` (the generator before any compression)."""
    cost = network_cost(generator.eval(), latents(1, z_dim))
    dense = network_cost(configured.eval(), latents(1, configured_z_dim))
    return {
        "params": cost.params,
        "nonzero_params": cost.nonzero,
        "sparsity": 1 - cost.nonzero / max(cost.params, 1),
        "macs_per_sample": cost.macs,
        "configured_params": dense.params,
        "configured_macs_per_sample": dense.macs,
        "mac_reduction": dense.macs / max(cost.macs, 1),
        "param_reduction": dense.params / max(cost.nonzero, 1),
    }


def model_card(
    *,
    file: str | Path,
    runtime: str,
    architecture: dict[str, Any],
    z_dim: int,
    output_shape: list[int],
    cost: dict[str, Any],
    quality: Optional[dict[str, Any]],
    verification: Optional[dict[str, Any]],
    source: dict[str, Any],
    training_config: Optional[dict[str, Any]],
    quantization: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "file": Path(file).name,
        "sha256": sha256(file),
        "runtime": runtime,
        "architecture": architecture,
        "input": {"name": "z", "shape": ["batch", z_dim], "distribution": "standard normal"},
        "output": {"name": "images", "shape": ["batch", *output_shape], "range": [-1, 1]},
        "cost": cost,
        "quality": quality,
        "verification": verification,
        "quantization": quantization,
        "source": source,
        "training_config": training_config,
    }


def write_card(card: dict[str, Any], out: str | Path) -> Path:
    path = card_path(out)
    text = json.dumps(card, indent=2, sort_keys=False, default=str) + "\n"
    write_atomically(path, lambda f: f.write(text.encode()), what="the model card")
    return path
