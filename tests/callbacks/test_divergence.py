"""Divergence is caught where it happens (weights, BatchNorm statistics, Adam's state, not only
losses), the rescue checkpoint holds the last finite state and says so, and resuming with a new
learning rate uses it."""

from __future__ import annotations

import copy
import logging
import re

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from callbacks.divergence import DivergenceGuard, StateCopy
from callbacks.interrupt import InterruptCheckpoint
from gan_lightning.errors import NonFiniteLossError
from tests.helpers import make_trainer, tiny_digits, tiny_module, tiny_run_args
from train import main


def all_finite(checkpoint) -> bool:
    tensors = [v for v in checkpoint["state_dict"].values() if v.is_floating_point()]
    tensors += [v for o in checkpoint["optimizer_states"] for s in o["state"].values() for v in s.values() if torch.is_tensor(v) and v.is_floating_point()]
    return all(torch.isfinite(t).all() for t in tensors)


class _PoisonBatchNorm(pl.Callback):
    """Sends the generator's BatchNorm running variance to infinity after batch ``at``, as a
    huge learning rate does; training-mode BatchNorm ignores it, so every loss stays finite."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.at:
            module.generator.stem[1].running_var.fill_(float("inf"))


def test_a_non_finite_statistic_stops_training_and_the_rescue_is_the_state_before_it(tmp_path, seeded):
    module = tiny_module()
    saver = InterruptCheckpoint()
    trainer = make_trainer(tmp_path, limit_val_batches=0, callbacks=[_PoisonBatchNorm(at=3), saver, DivergenceGuard()])
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(module, tiny_digits())
    assert str(info.value).startswith(
        "generator.stem.1.running_var became non-finite at epoch 0, batch 3 (step 8); the last finite state (parameters, buffers"
        f" and optimizer state of step 6) is saved to {saver.ckpt_path}: lower --model.lr_g"
    )
    saved = torch.load(saver.ckpt_path, map_location="cpu", weights_only=True)
    assert all_finite(saved)
    for k, v in module.state_dict().items():  # the module holds what the file holds: the restored state
        torch.testing.assert_close(saved["state_dict"][k], v)


class _RecordStates(pl.Callback):
    """The module's and the optimizers' state after each batch, by global step: what a fresh deep
    copy (the guard's former way of keeping it) would hold."""

    def __init__(self) -> None:
        self.states = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.states[trainer.global_step] = (copy.deepcopy(module.state_dict()), [copy.deepcopy(o.state_dict()) for o in trainer.optimizers])


def test_the_rescue_is_exactly_the_state_of_the_last_finite_step_optimizer_moments_included(tmp_path, seeded):
    module, record = tiny_module(), _RecordStates()
    trainer = make_trainer(tmp_path, limit_val_batches=0, callbacks=[record, _PoisonBatchNorm(at=3), InterruptCheckpoint(), DivergenceGuard()])
    with pytest.raises(NonFiniteLossError):
        trainer.fit(module, tiny_digits())
    kept_module, kept_optimizers = record.states[6]
    torch.testing.assert_close(module.state_dict(), kept_module, rtol=0, atol=0)
    for optimizer, kept in zip(trainer.optimizers, kept_optimizers):
        torch.testing.assert_close(optimizer.state_dict(), kept, rtol=0, atol=0)


def _net_and_adam(width: int = 3):
    net = nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width))
    optimizer = torch.optim.Adam(net.parameters())
    return net, optimizer


def _step(net, optimizer) -> None:
    net(torch.randn(8, 4)).square().mean().backward()
    optimizer.step()


def _tensors(state) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(state) if torch.is_tensor(t)]


def test_the_copy_lives_in_cpu_buffers_allocated_once_and_is_not_a_view_of_the_state():
    net, optimizer = _net_and_adam()
    _step(net, optimizer)
    kept = StateCopy()
    kept.keep({"module": net.state_dict(), "optimizers": [optimizer.state_dict()]})
    buffers = [t.data_ptr() for t in _tensors(kept.state())]
    _step(net, optimizer)
    kept.keep({"module": net.state_dict(), "optimizers": [optimizer.state_dict()]})
    assert [t.data_ptr() for t in _tensors(kept.state())] == buffers  # copied into, not allocated again
    assert all(t.device.type == "cpu" for t in _tensors(kept.state()))
    assert kept.nbytes == sum(t.nbytes for t in _tensors({"m": net.state_dict(), "o": optimizer.state_dict()}))
    expected = copy.deepcopy({"module": net.state_dict(), "optimizers": [optimizer.state_dict()]})
    _step(net, optimizer)  # the live state moves on; the copy must not
    torch.testing.assert_close(kept.state(), expected, rtol=0, atol=0)


def test_a_new_layout_gets_new_buffers_of_its_shapes():
    net, optimizer = _net_and_adam(width=3)
    _step(net, optimizer)
    kept = StateCopy()
    kept.keep({"module": net.state_dict(), "optimizers": [optimizer.state_dict()]})
    net, optimizer = _net_and_adam(width=2)  # as after a structured cut
    _step(net, optimizer)
    kept.keep({"module": net.state_dict(), "optimizers": [optimizer.state_dict()]})
    torch.testing.assert_close(kept.state(), {"module": net.state_dict(), "optimizers": [optimizer.state_dict()]}, rtol=0, atol=0)


def test_without_the_guard_the_same_run_ends_silently_with_the_non_finite_statistic(tmp_path, seeded):
    """The control for the test above: the loss check alone does not see it."""
    module = tiny_module()
    trainer = make_trainer(tmp_path, limit_val_batches=0, callbacks=[_PoisonBatchNorm(at=3)])
    trainer.fit(module, tiny_digits())
    assert torch.isinf(module.generator.stem[1].running_var).all()


def test_a_real_divergence_from_the_command_line_is_one_sentence_and_a_finite_rescue(tmp_path, capfd):
    flags = ("--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0", "--model.lr_g", "1e6", "--model.lr_d", "1e6")
    assert main(tiny_run_args(tmp_path, *flags)) == 2
    error = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error: ")]
    rescue = tmp_path / "version_0" / "checkpoints" / "on_exception.ckpt"
    assert len(error) == 1 and "became non-finite" in error[0] and f"is saved to {rescue}: lower --model.lr_g" in error[0]
    assert all_finite(torch.load(rescue, map_location="cpu", weights_only=True))


def test_an_exploding_run_is_warned_about_once_before_it_breaks(tmp_path, seeded, caplog):
    trainer = make_trainer(tmp_path, limit_val_batches=0, limit_train_batches=4, callbacks=[DivergenceGuard(explode_at=1.0)])
    trainer.fit(tiny_module(), tiny_digits())
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "exploding" in r.getMessage()]
    assert len(warned) == 1 and re.search(r"training is exploding: .* reached .* at epoch 0", warned[0])


def test_resuming_with_a_new_learning_rate_uses_it(tmp_path):
    assert main(tiny_run_args(tmp_path / "a", "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0", "--model.lr_g", "0.05")) == 0
    ckpt = tmp_path / "a" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["optimizer_states"][0]["param_groups"][0]["lr"] == 0.05
    assert main(tiny_run_args(tmp_path / "a", "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0", "--model.lr_g", "0.001",
                              "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt))) == 0
    assert torch.load(ckpt, weights_only=True)["optimizer_states"][0]["param_groups"][0]["lr"] == 0.001
