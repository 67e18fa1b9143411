"""evaluate_samples: samples made elsewhere (an exported file) scored as evaluate scores a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan_lightning.commands.evaluate import domain_weights, evaluate_checkpoint, metric_settings
from gan_lightning.commands.generate import latent_batches
from gan_lightning.core.module import GANModule
from gan_lightning.quality.evaluation import evaluate_samples
from tests.helpers import tiny_run_args
from train import main as train_main

SEEDS = [0, 1]
NUM_FAKE = 100


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    assert train_main(tiny_run_args(run)) == 0
    return next(run.rglob("last.ckpt"))


def _scored(ckpt: Path, make) -> dict[int, dict]:
    settings, datamodule = metric_settings(ckpt, next(ckpt.parent.parent.rglob("config.yaml")), num_fake=NUM_FAKE)
    domain = domain_weights(datamodule, settings)
    return {
        seed: evaluate_samples(make(seed), datamodule, settings["features"], settings["num_real"], domain,
                               settings["inception_weights"], settings["real_split"])
        for seed in SEEDS
    }


def test_a_checkpoints_own_samples_score_exactly_as_evaluate_scores_it(tiny_ckpt):
    expected = evaluate_checkpoint(tiny_ckpt, SEEDS, next(tiny_ckpt.parent.parent.rglob("config.yaml")), num_fake=NUM_FAKE)
    module = GANModule.load_from_checkpoint(tiny_ckpt, map_location="cpu").eval()
    got = _scored(tiny_ckpt, lambda seed: module.generate(NUM_FAKE, seed=seed))
    for seed in SEEDS:
        for name, value in expected["per_seed"][str(seed)].items():
            assert got[seed][name] == pytest.approx(value, rel=1e-9, nan_ok=True), (seed, name)
        assert got[seed]["num_fake"] == NUM_FAKE


def test_an_fp32_onnx_exports_samples_score_as_its_checkpoint(tiny_ckpt, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")
    from gan_lightning.commands.export import export_checkpoint
    from gan_lightning.deploy.runtimes import load_runtime

    export_checkpoint(tiny_ckpt, tmp_path / "g.onnx")
    generator = load_runtime(tmp_path / "g.onnx")
    expected = evaluate_checkpoint(tiny_ckpt, SEEDS, next(tiny_ckpt.parent.parent.rglob("config.yaml")), num_fake=NUM_FAKE)
    got = _scored(tiny_ckpt, lambda seed: torch.cat([generator(z) for z in latent_batches(NUM_FAKE, generator.z_dim, seed, 64)]))
    for seed in SEEDS:  # the same latents; ONNX Runtime reorders float sums (about 1e-6 per pixel)
        assert got[seed]["fid"] == pytest.approx(expected["per_seed"][str(seed)]["fid"], rel=1e-4)
