"""The discriminator balance control (callbacks/balance.py) and the optimizer moments kept at a cut."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from callbacks.balance import DiscriminatorBalance
from callbacks.prune import Prune
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.compress.pruning import reinitialize
from gan_lightning.core.hooks import GANCallback
from gan_lightning.errors import ConfigError
from tests.helpers import REPO, make_trainer, tiny_digits, tiny_module, tiny_run_args, train_py_ddp


class Run:
    """One process's trainer, as far as the control uses it: a mean over one rank is the value."""

    def __init__(self, module) -> None:
        self.module = module
        optimizer = torch.optim.Adam(module.discriminator.parameters())
        module.discriminator(torch.zeros(2, 1, 8, 8)).sum().backward()
        optimizer.step()  # moments to clear
        self.trainer = SimpleNamespace(
            strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor), optimizers=[optimizer], loggers=[], is_global_zero=True,
            current_epoch=3, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=10)),
        )
        self.module.log = lambda *a, **k: None

    def steps(self, balance: DiscriminatorBalance, margin: float, n: int) -> None:
        """``n`` batches of one D step each, at one margin."""
        for _ in range(n):
            balance.on_discriminator_outputs(self.trainer, self.module, torch.tensor(margin), torch.tensor(0.0))
            balance.on_train_batch_end(self.trainer, self.module, None, None, 0)

    def event(self, balance: DiscriminatorBalance) -> None:
        balance.on_architecture_changed(self.trainer, self.module, "generator", None)


def d_weights(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.discriminator.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


def test_restarts_d_when_its_margin_after_the_event_crosses_the_threshold(seeded):
    run, balance = Run(tiny_module(loss="lsgan")), DiscriminatorBalance(window=1, probe_steps=3, tolerance=0.1, seed=7)
    run.steps(balance, 0.5, 4)  # the dense pair's balance
    trained = d_weights(run.module)
    run.event(balance)
    assert balance.reference == pytest.approx(0.5) and balance.threshold == pytest.approx(0.55)
    run.steps(balance, 0.9, 2)
    assert same(d_weights(run.module), trained) and balance.decisions == []  # still probing
    run.steps(balance, 0.9, 1)
    fresh = copy.deepcopy(run.module.discriminator)
    reinitialize(fresh, seed=7 + 1)
    assert same(d_weights(run.module), {k: v for k, v in fresh.state_dict().items()})  # the seeded fresh D
    assert not same(d_weights(run.module), trained)
    assert len(run.trainer.optimizers[0].state) == 0  # and fresh moments
    assert balance.decisions == [[3, 9, 0.9, 0.55, True]] and balance.margin is None


def test_after_a_restart_the_adversarial_term_ramps_back_in(seeded):
    run, balance = Run(tiny_module(loss="lsgan")), DiscriminatorBalance(window=1, probe_steps=1, ramp_epochs=1.0)
    run.trainer.num_training_batches = 4
    run.steps(balance, 0.5, 2)
    assert balance.adversarial_weight(run.trainer, run.module) == 1.0  # no restart, no ramp
    run.event(balance)
    weights = []
    for _ in range(6):
        run.steps(balance, 0.9, 1)  # the first decides: D restarts
        weights.append(balance.adversarial_weight(run.trainer, run.module))
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0] and balance.ramp is None
    kept = DiscriminatorBalance(window=1, probe_steps=1, ramp_epochs=1.0)
    run.steps(kept, 0.5, 2)
    run.event(kept)
    run.steps(kept, 0.5, 3)  # under the threshold: D kept, nothing to ramp
    assert kept.adversarial_weight(run.trainer, run.module) == 1.0 and kept.ramp is None


def test_keeps_d_when_its_margin_after_the_event_stays_under_the_threshold(seeded):
    run, balance = Run(tiny_module(loss="lsgan")), DiscriminatorBalance(window=1, probe_steps=3, tolerance=0.1)
    run.steps(balance, 0.5, 4)
    trained = d_weights(run.module)
    run.event(balance)
    run.steps(balance, 0.54, 5)
    assert same(d_weights(run.module), trained) and len(run.trainer.optimizers[0].state) > 0
    assert balance.decisions == [[3, 9, 0.54, 0.55, False]]
    assert balance.margin == pytest.approx(0.54)  # the running margin goes on after the probe


def test_never_acts_without_an_event_or_when_off(seeded):
    run = Run(tiny_module(loss="lsgan"))
    trained = d_weights(run.module)
    balance = DiscriminatorBalance(window=1, probe_steps=1)
    run.steps(balance, 5.0, 5)  # however strong D is, nothing was compressed
    off = DiscriminatorBalance(mode="off", window=1, probe_steps=1, target_margin=0.0)
    run.event(off)
    run.steps(off, 5.0, 5)
    assert same(d_weights(run.module), trained) and balance.decisions == off.decisions == [] and off.margin is None


def test_judge_replaced_judges_only_a_replaced_generator_and_the_default_judges_cuts_too(seeded):
    run, balance = Run(tiny_module(loss="lsgan")), DiscriminatorBalance(judge="replaced", window=1, probe_steps=1)
    balance.on_fit_start(run.trainer, run.module)
    run.steps(balance, 0.5, 2)
    run.event(balance)  # the same generator object, cut in place
    run.steps(balance, 5.0, 2)
    assert balance.decisions == []
    run.steps(balance, 0.5, 2)
    run.module.generator = copy.deepcopy(run.module.generator)  # a student took its place
    run.event(balance)
    run.steps(balance, 5.0, 1)
    assert [d[-1] for d in balance.decisions] == [True]
    judge_any = DiscriminatorBalance(window=1, probe_steps=1)
    assert judge_any.judge == "any"
    judge_any.on_fit_start(run.trainer, run.module)
    run.steps(judge_any, 0.5, 2)
    run.event(judge_any)
    run.steps(judge_any, 5.0, 1)
    assert [d[-1] for d in judge_any.decisions] == [True]


def test_a_discriminator_change_is_not_judged(seeded):
    run, balance = Run(tiny_module(loss="lsgan")), DiscriminatorBalance(window=1, probe_steps=1)
    run.steps(balance, 0.5, 2)
    balance.on_architecture_changed(run.trainer, run.module, "discriminator", None)
    run.steps(balance, 5.0, 2)
    assert balance.decisions == []


def test_unmeasured_reference_falls_back_to_the_loss_default_or_is_not_judged(seeded):
    run, balance = Run(tiny_module(loss="lsgan")), DiscriminatorBalance()
    run.event(balance)
    assert balance.reference == 0.5 and balance.probe == []
    run, balance = Run(tiny_module(loss="wasserstein")), DiscriminatorBalance()
    run.event(balance)
    assert balance.probe is None  # no scale to guess from: needs --balance.target_margin
    balance = DiscriminatorBalance(target_margin=2.0)
    run.event(balance)
    assert balance.reference == 2.0


@pytest.mark.parametrize("kwargs", [{"mode": "sometimes"}, {"judge": "cuts"}, {"tolerance": -0.1}, {"ramp_epochs": -1}, {"window": 0}, {"probe_steps": 0}])
def test_bad_options_are_refused_naming_the_flag(kwargs):
    with pytest.raises(ConfigError, match=f"--balance.{next(iter(kwargs))}"):
        DiscriminatorBalance(**kwargs)


def test_a_cut_keeps_the_discriminators_adam_moments(tmp_path, seeded):
    """Pruning the generator rebuilds the optimizers; D's parameters are the same tensors, so its
    moments are kept (a fresh Adam jolts a trained D), while G's start afresh."""
    moments = {}

    def adam_state(trainer):
        opt_g, opt_d = trainer.optimizers
        return len(opt_g.state), {id(p): s["exp_avg"].clone() for p, s in opt_d.state.items()}

    class Moments(GANCallback):
        def on_train_epoch_start(self, trainer, module):
            moments[trainer.current_epoch] = adam_state(trainer)

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 0:
                moments["after_cut"] = adam_state(trainer)

    prune = Prune(generator_amount=0.5, start_epoch=1, metric="none")
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[Moments(), prune])
    trainer.fit(tiny_module(loss="lsgan"), tiny_digits())
    g_states, d_moments = moments["after_cut"]
    assert g_states == 0  # the cut generator's optimizer is new
    assert d_moments and len(d_moments) == len(moments[1][1])
    assert all(torch.equal(m, moments[1][1][k]) for k, m in d_moments.items())  # D's moments survived the cut


def test_a_pending_probe_survives_resume(tmp_path):
    """Stopped while the event is still being judged, the resumed run finishes judging it
    against the same reference."""
    prune = ["--callbacks", "prune", "--prune.start_epoch", "1", "--prune.metric", "none", "--metrics.every_n_epochs", "0",
             "--checkpoint.monitor", "null", "--model.loss", "lsgan", "--balance.judge", "any"]
    GANLightningCLI(args=["fit", *tiny_run_args(tmp_path / "a", *prune, "--trainer.max_epochs", "2", "--balance.probe_steps", "100")])
    last = next((tmp_path / "a").rglob("last.ckpt"))
    saved = torch.load(last, weights_only=True)["callbacks"]["DiscriminatorBalance"]
    assert len(saved["probe"]) == 3 and saved["decisions"] == [] and saved["reference"] is not None
    cli = GANLightningCLI(args=["fit", *tiny_run_args(tmp_path / "b", *prune, "--trainer.max_epochs", "3", "--balance.probe_steps", "5",
                                                      "--ckpt_path", str(last))])
    balance = next(cb for cb in cli.trainer.callbacks if isinstance(cb, DiscriminatorBalance))
    assert balance.reference == saved["reference"]
    assert len(balance.decisions) == 1 and balance.decisions[0][0] == 2  # decided in the resumed epoch, on 3 + 2 margins


@pytest.mark.slow
def test_ddp_ranks_take_the_same_decision_and_keep_identical_weights(tmp_path):
    dump = tmp_path / "ranks"
    r0, r1 = train_py_ddp(
        tmp_path, "--config", str(REPO / "tests" / "tiny.yaml"), "--trainer.max_epochs", "2", "--model.loss", "lsgan",
        "--callbacks", "prune", "--prune.start_epoch", "1", "--prune.metric", "none",
        "--balance.judge", "any", "--balance.target_margin", "-1", "--balance.probe_steps", "1",  # any margin crosses it: D restarts
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
        "--trainer.callbacks+=tests.probes.RankDump", "--trainer.callbacks.out_dir", str(dump),
    )
    assert r0["balance"]["decisions"] == r1["balance"]["decisions"] and r0["balance"]["decisions"][0][-1] is True
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name
