"""prune, lowrank and distill on an ordinary LightningModule with automatic optimization: a small
CNN classifier on the 8x8 digits, trained dense once, then compressed and fine-tuned.

The accuracy margin comes from measuring this very setup (4 dense epochs, the event at the
start of 2 fine-tuning epochs, 539 validation digits) over training seeds 0-9 (the README
table): the dense classifier reached 0.965-0.985, and after fine-tuning no variant lost more
than 0.033 of it (structured 50% with l1 at most 0.024, with taylor 0.033, with distillation
0.017, low-rank 0.032, unstructured 80% 0.013). Right after the structured cut, before
fine-tuning, accuracy was 0.022-0.165 below the dense one.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning import Callback
from torch import nn

from callbacks.distill import Distill
from callbacks.lowrank import LowRankFactorization
from callbacks.prune import Prune
from callbacks.target import target_of
from datamodules.digits import DigitsDataModule
from gan_lightning.compress.lowrank import LowRank
from gan_lightning.compress.profiling import network_cost
from gan_lightning.compress.pruning import example_input
from gan_lightning.errors import ConfigError
from tests.helpers import make_trainer, tiny_digits, tiny_module

MARGIN = 0.05  # fine-tuned accuracy >= dense - MARGIN (worst measured drop: 0.033, see the module docs)
DENSE_EPOCHS, FINE_TUNE_EPOCHS = 4, 2


class Classifier(pl.LightningModule):
    """What a user writes: nothing here knows about compression, except ``example_input_array``
    (Lightning's own attribute), through which the callbacks trace ``self.model``."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, 10),
        )
        self.lr = 1e-2
        self.example_input_array = torch.zeros(2, 1, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def digits() -> DigitsDataModule:
    return DigitsDataModule(image_size=8, batch_size=64, val_fraction=0.3)


@torch.no_grad()
def accuracy(module: Classifier) -> float:
    data = digits()
    data.setup()
    was_training = module.training
    module.eval()
    right = total = 0
    for x, y in data.val_dataloader():
        right += int((module(x).argmax(1) == y).sum())
        total += len(y)
    module.train(was_training)
    return right / total


class AfterEvent(Callback):
    """Placed after the compression callbacks: at the start of the first epoch, right after their
    event, it measures accuracy before any fine-tuning and notes what the optimizer holds."""

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch == 0:
            self.accuracy = accuracy(module)
            self.optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
            self.parameters = {id(p) for p in module.parameters()}


def fit(tmp_path: Path, module: Classifier, *callbacks: Callback, epochs: int) -> pl.Trainer:
    trainer = make_trainer(tmp_path, max_epochs=epochs, limit_val_batches=0, log_every_n_steps=1, callbacks=list(callbacks))
    trainer.fit(module, digits())
    return trainer


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> tuple[Classifier, float]:
    pl.seed_everything(0)
    module = Classifier()
    fit(tmp_path_factory.mktemp("dense"), module, epochs=DENSE_EPOCHS)
    return module, accuracy(module)


def compress(dense_module: Classifier, tmp_path: Path, *callbacks: Callback) -> tuple[Classifier, pl.Trainer, AfterEvent]:
    """A copy of the dense classifier, compressed at the start of fine-tuning."""
    pl.seed_everything(1)
    module = copy.deepcopy(dense_module)
    probe = AfterEvent()
    trainer = fit(tmp_path, module, *callbacks, probe, epochs=FINE_TUNE_EPOCHS)
    return module, trainer, probe


def cost(module: Classifier):
    return network_cost(module.model, example_input(module, "model"))


def hidden_widths(module: Classifier) -> list[int]:
    return [m.weight.shape[0] for m in module.model if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]


def logged(tmp_path: Path) -> list[dict]:
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_structured_pruning_cuts_the_classifier_and_fine_tuning_recovers_its_accuracy(dense, tmp_path):
    dense_module, dense_accuracy = dense
    module, trainer, probe = compress(dense_module, tmp_path, Prune(networks={"model": 0.5}, start_epoch=0))
    assert module.automatic_optimization
    before, after = cost(dense_module), cost(module)
    assert after.params < 0.3 * before.params and after.macs < 0.4 * before.macs
    assert hidden_widths(module) == [8, 16, 32]  # half of [16, 32, 64]; the output layer is left alone
    assert probe.optimized == probe.parameters  # the optimizer was rebuilt over the cut parameters
    assert probe.accuracy < dense_accuracy - 0.01  # the cut did hurt ...
    assert accuracy(module) >= dense_accuracy - MARGIN  # ... and fine-tuning won it back
    rows = logged(tmp_path)
    assert any(float(r["compress/model_macs"] or "nan") == after.macs for r in rows if "compress/model_macs" in r)


def test_taylor_scores_with_the_modules_own_loss_without_logging_it(dense, tmp_path):
    dense_module, dense_accuracy = dense
    module, trainer, probe = compress(dense_module, tmp_path, Prune(networks={"model": 0.5}, start_epoch=0, criterion="taylor"))
    assert hidden_widths(module) == [8, 16, 32]
    assert accuracy(module) >= dense_accuracy - MARGIN
    # one train/loss row per training batch: the scoring passes through training_step logged nothing
    assert sum(1 for r in logged(tmp_path) if r.get("train/loss")) == trainer.num_training_batches * FINE_TUNE_EPOCHS
    assert "log" not in vars(module)  # the silenced self.log is the class's again


def test_distillation_adds_the_output_term_to_the_classifiers_loss(dense, tmp_path):
    dense_module, dense_accuracy = dense
    distill = Distill(network="model", output_loss="mse")
    module, trainer, _ = compress(dense_module, tmp_path, Prune(networks={"model": 0.5}, start_epoch=0), distill)
    assert sum(p.numel() for p in distill.teacher_net.parameters()) == cost(dense_module).params
    assert float(trainer.callback_metrics["train/distill_output"]) > 0
    assert accuracy(module) >= dense_accuracy - MARGIN
    assert "training_step" not in vars(module)  # the wrapper is gone after fit


def test_unstructured_masks_hold_after_every_optimizer_step(dense, tmp_path):
    dense_module, dense_accuracy = dense
    prune = Prune(networks={"model": 0.8}, granularity="unstructured", start_epoch=0)
    module, _, probe = compress(dense_module, tmp_path, prune)
    params = dict(module.named_parameters())
    assert prune.masks and all(params[key][~mask].abs().max() == 0 for key, mask in prune.masks.items())
    kept = sum(int(mask.sum()) for mask in prune.masks.values()) / sum(mask.numel() for mask in prune.masks.values())
    assert kept == pytest.approx(0.2, abs=0.01)
    assert probe.optimized == probe.parameters
    assert accuracy(module) >= dense_accuracy - MARGIN


def test_lowrank_factorizes_the_classifier(dense, tmp_path):
    dense_module, dense_accuracy = dense
    module, _, probe = compress(dense_module, tmp_path, LowRankFactorization(networks=["model"], epoch=0))
    assert any(isinstance(m, LowRank) for m in module.model.modules())
    assert cost(module).macs < cost(dense_module).macs
    assert probe.optimized == probe.parameters
    assert accuracy(module) >= dense_accuracy - MARGIN


class NoExample(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = None


NOT_A_MODULE = "--prune.networks names 'lr', which is a float, not a torch.nn.Module"
GAN_ONLY = r"work\(s\) on a GANModule only"


@pytest.mark.parametrize(
    "make_module, callbacks, message",
    [
        (Classifier, lambda: [Prune(networks={"modle": 0.5})], "names 'modle', which it does not have; the networks of Classifier: model"),
        (Classifier, lambda: [Prune(networks={"lr": 0.5})], NOT_A_MODULE),
        (Classifier, lambda: [Prune()], "Classifier is not a GANModule: name its network"),
        (Classifier, lambda: [Prune(networks={"model": 0.5}, criterion="fisher")], "--prune.criterion fisher " + GAN_ONLY),
        (Classifier, lambda: [LowRankFactorization()], "name its network.* --lowrank.networks"),
        (Classifier, lambda: [Distill(network="model")], "distill needs a teacher"),
        (Classifier, lambda: [Prune(networks={"model": 0.5}), Distill()], "--distill.network"),
        (Classifier, lambda: [Prune(networks={"model": 0.5}), Distill(network="model", gan_weight=0.0)], "--distill.gan_weight " + GAN_ONLY),
        (NoExample, lambda: [Prune(networks={"model": 0.5})], "NoExample has no example_input_array"),
        (tiny_module, lambda: [Prune(networks={"generator": 0.5})], "--prune.networks names the networks of a LightningModule that is not a GAN"),
    ],
)
def test_settings_that_cannot_work_are_refused_in_one_sentence(tmp_path, make_module, callbacks, message):
    module = make_module()
    data = tiny_digits() if not isinstance(module, Classifier) else digits()
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=callbacks())
    with pytest.raises(ConfigError, match=message):
        trainer.fit(module, data)


def test_one_adapter_tells_a_gan_from_any_other_module():
    """What differs between the two kinds of module is answered by the target, not by the
    callbacks: the GAN's events always report G and D and hand over its sampling generator."""
    gan, classifier = tiny_module(ema_decay=0.9), Classifier()
    gan_target, module_target = target_of(gan), target_of(classifier)
    assert gan_target.reported(["generator"]) == ["generator", "discriminator"]
    assert module_target.reported(["model"]) == ["model"]
    assert gan_target.student(None) == "generator" and module_target.student("model") == "model"
    previous = gan_target.previous("generator")
    assert previous is not gan.generator_ema and torch.equal(next(previous.parameters()), next(gan.generator_ema.parameters()))
    assert gan_target.previous("discriminator") is None
    assert module_target.previous("model") is not classifier.model
    module_target.refuse_gan_only({"--prune.latent_amount": False})  # unused GAN-only settings pass
    with pytest.raises(ConfigError, match="--prune.latent_amount work"):
        module_target.refuse_gan_only({"--prune.latent_amount": True})
    gan_target.refuse_gan_only({"--prune.latent_amount": True})


def test_no_callback_asks_whether_its_module_is_a_gan_but_the_adapter():
    sources = sorted((Path(__file__).parents[2] / "callbacks").glob("*.py"))
    asking = [p.name for p in sources if p.name != "target.py" and ("GANModule)" in p.read_text() or "is_gan(" in p.read_text())]
    assert sources and asking == []
