"""The `clip` callback (WGAN weight clipping): bounds after every D step, which parameters,
the saturation metric and its warning, bad input, the preset, DDP and bf16-mixed."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from callbacks.clip import WeightClipping
from datamodules.digits import DigitsDataModule
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.compress.clipping import clamp_, clipped_parameters, saturation
from gan_lightning.core.hooks import GANCallback
from gan_lightning.core.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator
from tests.helpers import REPO, make_trainer, tiny_digits, tiny_module, train_py_ddp
from train import main

TINY = str(REPO / "tests" / "tiny.yaml")
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)
# RMSprop's first steps move each weight by about 10 * lr, so lr_d 1e-2 takes a freshly
# clipped weight well past C: every clamp below has work to do.
WGAN = dict(loss="wasserstein", optimizer="rmsprop", lr_d=1e-2, lr_g=1e-3)
# A power of two, so that "|w| <= C" holds exactly in fp32 (fp32's 0.05 is above 0.05).
C = 0.0625


def max_abs(params) -> float:
    return max(float(p.detach().abs().max()) for p in params)


def split_params(network: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Linear/Conv parameters, normalisation parameters) of ``network``."""
    layers = [p for m in network.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) for p in m.parameters()]
    norms = [p for m in network.modules() if isinstance(m, NORMS) for p in m.parameters()]
    assert len(layers) + len(norms) == len(list(network.parameters())), "a parameter of neither kind"
    return layers, norms


class BoundProbe(GANCallback):
    """Placed after the clip callback: records what the next D forward pass will see."""

    def __init__(self) -> None:
        self.d_steps: list[dict] = []
        self.batches = 0

    def on_discriminator_step_end(self, trainer, module) -> None:
        self.d_steps.append(
            {
                "batch": trainer.fit_loop.batch_idx,
                "d": max_abs(module.discriminator.parameters()),
                "g": max_abs(module.generator.parameters()),
                "autocast": torch.is_autocast_enabled("cpu"),
                "dtypes": {p.dtype for p in module.discriminator.parameters()},
            }
        )

    def on_generator_step_end(self, trainer, module) -> None:
        self.batches += 1


class UnclippedProbe(GANCallback):
    """Placed before the clip callback: sees the weights straight after the optimizer step."""

    def __init__(self) -> None:
        self.d: list[float] = []

    def on_discriminator_step_end(self, trainer, module) -> None:
        self.d.append(max_abs(module.discriminator.parameters()))


def _fit(tmp_path, callbacks, batches=2, precision="32-true", **module_kwargs):
    module = tiny_module(**{**WGAN, **module_kwargs})
    trainer = make_trainer(tmp_path, limit_train_batches=batches, limit_val_batches=0, callbacks=callbacks, precision=precision)
    trainer.fit(module, tiny_digits())
    return module, trainer


# ---------------------------------------------------------------------- (1) every D step
def test_bounds_hold_after_every_discriminator_step_inside_training(tmp_path, seeded):
    c, n_critic, batches = C, 3, 2
    before, after = UnclippedProbe(), BoundProbe()
    clip = WeightClipping(clip_value=c, network="both")
    module, trainer = _fit(tmp_path, [before, clip, after], batches=batches, n_critic=n_critic)

    # the hook ran after every D step, not once per batch or epoch
    assert len(after.d_steps) == n_critic * batches == len(before.d)
    assert [s["batch"] for s in after.d_steps] == [b for b in range(batches) for _ in range(n_critic)]
    assert after.batches == batches
    for step in after.d_steps:
        assert step["d"] <= c and step["g"] <= c, step
    # each optimizer step pushed the critic past the bound, and the clamp put it back on it
    assert all(d > c for d in before.d)
    assert all(s["d"] == pytest.approx(c) for s in after.d_steps)
    # the generator is clipped after its own step too, so it ends inside the bounds
    assert max_abs(module.generator.parameters()) <= c and max_abs(module.discriminator.parameters()) <= c

    # the epoch's saturation is the fraction of all clipped values at the bound, by hand
    values = torch.cat([p.detach().abs().flatten() for p in [*module.discriminator.parameters(), *module.generator.parameters()]])
    by_hand = float((values >= c * (1 - 1e-6)).float().mean())
    assert 0 < by_hand < 1
    assert float(trainer.callback_metrics["compress/clip_saturation"]) == pytest.approx(by_hand, abs=1e-6)


def test_bf16_mixed_clips_the_fp32_master_weights_at_every_step(tmp_path, seeded):
    c = C
    probe = BoundProbe()
    _fit(tmp_path, [WeightClipping(clip_value=c), probe], batches=2, precision="bf16-mixed", n_critic=2)
    assert len(probe.d_steps) == 4
    for step in probe.d_steps:
        assert step["autocast"] and step["dtypes"] == {torch.float32}
        assert step["d"] == pytest.approx(c) and step["d"] <= c


# ---------------------------------------------------------------------- (2) which parameters
@pytest.mark.parametrize(
    "network,parameters,norm",
    [
        ("discriminator", "weights", "batch"),
        ("discriminator", "all", "batch"),
        ("discriminator", "all", "layer"),  # GroupNorm
        ("generator", "weights", "batch"),
        ("generator", "all", "batch"),
    ],
)
def test_parameters_weights_leaves_norm_layers_alone_and_all_clips_them(tmp_path, seeded, network, parameters, norm):
    c = C
    # 16x16, because the 8x8 tiny critic has no layer between its first conv and the logit to normalise
    module = GANModule(
        DCGANGenerator(z_dim=8, image_size=16, channels=1, width=4),
        DCGANDiscriminator(image_size=16, channels=1, width=4, norm=norm),
        n_critic=2,
        **WGAN,
    )
    trainer = make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0, callbacks=[WeightClipping(c, network, parameters)])
    trainer.fit(module, DigitsDataModule(image_size=16, batch_size=32))

    clipped, other = (module.discriminator, module.generator) if network == "discriminator" else (module.generator, module.discriminator)
    layers, norms = split_params(clipped)
    assert norms, "the test network must have normalisation parameters"
    assert max_abs(layers) == pytest.approx(c) and max_abs(layers) <= c
    if parameters == "all":
        # norm scales start at 1, so without the clamp they would still be far above c
        assert max_abs(norms) == pytest.approx(c) and max_abs(norms) <= c
    else:
        assert max_abs(norms) > 0.5  # scales near their initial 1, untouched
    assert max_abs(other.parameters()) > c  # the other network is not clipped


def test_clipped_parameters_selects_layers_or_everything_once():
    shared = nn.Linear(2, 2)
    net = nn.Sequential(shared, nn.BatchNorm1d(2), shared, nn.Conv1d(2, 2, 1), nn.GroupNorm(1, 2))
    weights = clipped_parameters(net, "weights")
    assert {id(p) for p in weights} == {id(shared.weight), id(shared.bias), id(net[3].weight), id(net[3].bias)}
    assert len(weights) == 4  # the tied Linear counted once
    assert len(clipped_parameters(net, "all")) == 8


# ---------------------------------------------------------------------- (3) saturation + warning
def known_critic() -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        # |w| >= 0.01 * (1 - 1e-6) is at the bound: 0.01, -0.02, 0.01*(1-1e-7) and -0.01 are; 0.005, 0.0099 are not
        net[0].weight.copy_(torch.tensor([[0.01, -0.02], [0.005, 0.01 * (1 - 1e-7)]]))
        net[0].bias.copy_(torch.tensor([0.0099, -0.01]))
        net[1].weight.fill_(1.0)  # at the bound once "all" counts it
        net[1].bias.zero_()
    return net


def _epoch_end(callback: WeightClipping, critic: nn.Module, epoch: int = 0) -> list:
    logged = []
    module = SimpleNamespace(discriminator=critic, generator=nn.Linear(1, 1), log=lambda name, value, **kw: logged.append((name, value)))
    callback.on_train_epoch_end(SimpleNamespace(current_epoch=epoch), module)
    return logged


@pytest.mark.parametrize("parameters,expected", [("weights", 4 / 6), ("all", 6 / 10)])
def test_saturation_is_the_fraction_at_the_bound(parameters, expected):
    logged = _epoch_end(WeightClipping(0.01, parameters=parameters, warn_saturation=1.0), known_critic())
    assert logged == [("compress/clip_saturation", pytest.approx(expected))]


def test_saturation_counts_bf16_weights_clamped_to_the_nearest_bf16_bound():
    # bf16 stores 0.07 as 0.06982..., below 0.07 * (1 - 1e-6): comparing in fp32 would miss them
    w = nn.Parameter(torch.tensor([0.5, -0.5, 0.0, 0.03], dtype=torch.bfloat16))
    clamp_([w], 0.07)
    assert float(w.max()) < 0.07 * (1 - 1e-6)
    assert saturation([w], 0.07) == 0.5


def test_saturation_warns_once_above_the_threshold_with_the_flags_to_change(caplog):
    def clip_warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "clip" in r.getMessage()]

    clip = WeightClipping(0.01, parameters="weights", warn_saturation=0.65)
    _epoch_end(clip, known_critic(), epoch=0)  # 4/6 >= 0.65
    messages = clip_warnings()
    assert len(messages) == 1
    for flag in ("67%", "--clip.warn_saturation 0.65", "--model.lr_d", "--clip.clip_value", "configs/wgan_gp.yaml"):
        assert flag in messages[0]
    _epoch_end(clip, known_critic(), epoch=1)  # once is enough
    _epoch_end(WeightClipping(0.01, parameters="all", warn_saturation=0.65), known_critic())  # 0.6: below
    assert clip_warnings() == messages


# ---------------------------------------------------------------------- (4) bad input, preset
@pytest.mark.parametrize(
    "extra,message",
    [
        (["--callbacks", "clip", "--clip.clip_value", "0"], "error: --clip.clip_value must be > 0 (the original WGAN uses 0.01), got 0.0"),
        (["--callbacks", "clip", "--clip.clip_value", "-0.01"], "error: --clip.clip_value must be > 0"),
        (["--callbacks", "clip", "--clip.warn_saturation", "1.5"], "error: --clip.warn_saturation must be in (0, 1], got 1.5"),
        (["--clip.clip_value", "0.1"], "--clip.clip_value was set but the 'clip' callback is not switched on; add it with --callbacks clip"),
    ],
)
def test_bad_clip_input_is_one_clear_sentence(tmp_path, capsys, extra, message):
    run = tmp_path / "run"
    args = ["--config", TINY, "--trainer.default_root_dir", str(run), "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(run)]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run.exists()


def test_unknown_network_lists_the_allowed_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", TINY, "--callbacks", "clip", "--clip.network", "critic"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "clip.network" in err and "discriminator" in err and "both" in err


def test_wgan_clip_preset_switches_clipping_on_from_yaml(tmp_path):
    cli = GANLightningCLI(
        args=["fit", "--config", str(REPO / "configs" / "wgan_clip.yaml"), "--trainer.fast_dev_run", "1",
              "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu",
              "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "val/swd"]
    )
    clips = [cb for cb in cli.trainer.callbacks if isinstance(cb, WeightClipping)]
    assert len(clips) == 1 and clips[0].clip_value == 0.01 and clips[0].network == "discriminator"
    hp = cli.model.hparams
    assert (hp.loss, hp.optimizer, hp.n_critic, hp.gp_weight) == ("wasserstein", "rmsprop", 5, 0.0)
    assert cli.trainer.global_step == 5 + 1
    assert max_abs(cli.model.discriminator.parameters()) == pytest.approx(0.01)


# ---------------------------------------------------------------------- (5) DDP
@pytest.mark.slow
def test_ddp_two_processes_clip_to_identical_weights(tmp_path):
    c, dump = C, tmp_path / "ranks"
    cmd = [
        "--config", TINY,
        "--model.loss", "wasserstein", "--model.optimizer", "rmsprop", "--model.lr_d", "0.01", "--model.n_critic", "2",
        "--callbacks", "clip", "--clip.clip_value", str(c),
        "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "val/swd",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
        "--trainer.callbacks+=tests.probes.ClipDump", "--trainer.callbacks.out_dir", str(dump),
    ]
    r0, r1 = train_py_ddp(tmp_path, *cmd)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["clip_callbacks"] == ["WeightClipping"]
    assert len(r0["d_max_abs"]) == 3 and all(m == pytest.approx(c) and m <= c for m in r0["d_max_abs"] + r1["d_max_abs"])
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name
    d = torch.cat([p.abs().flatten() for k, p in r0["params"].items() if k.startswith("discriminator.")])
    assert r0["saturation"] == r1["saturation"] == pytest.approx(float((d >= c * (1 - 1e-6)).float().mean()), abs=1e-6)
