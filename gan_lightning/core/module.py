"""GANModule: the alternating adversarial update with manual optimization."""

from __future__ import annotations

import copy
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from torch import nn
from typing_extensions import override

from gan_lightning.compress.edits import Edit, EditRecord
from gan_lightning.compress.profiling import evaluating, parameter_device
from gan_lightning.core.hooks import architecture_changed, callbacks_with_hook
from gan_lightning.core.lightning_private import built_by_cli, find_unused_parameters
from gan_lightning.core.losses import LossName, get_loss, gradient_penalty, r1_penalty
from gan_lightning.core.module_checkpoints import CheckpointedModule
from gan_lightning.errors import ConfigError, NonFiniteLossError
from gan_lightning.quality.swd import sliced_wasserstein
from gan_lightning.logs import get_logger

log = get_logger(__name__)

DIVERGENCE_ADVICE = "lower --model.lr_g/--model.lr_d, add --model.gp_weight, or try --model.loss hinge"


class GANModule(CheckpointedModule, pl.LightningModule):
    """Trains any generator/discriminator pair with n_critic D steps then one G step per batch.

    Both optimizer steps go through ``manual_backward`` and the Lightning optimizers, so
    precision plugins, gradient scaling and DDP gradient sync apply. Note that
    ``trainer.global_step`` counts optimizer steps: one batch is ``n_critic + 1`` steps, so
    ``--trainer.max_steps`` is in optimizer steps, not batches.

    Args:
        generator: maps ``(n, z_dim)`` latents to samples; must expose ``z_dim`` unless ``z_dim`` is given.
        discriminator: maps samples to ``(n,)`` logits.
        loss: ``bce`` (non-saturating), ``hinge``, ``wasserstein`` or ``lsgan``.
        n_critic: discriminator steps per batch (each with fresh latents, same real batch); >= 1.
        gp_weight: weight of the WGAN-GP gradient penalty on interpolates; 0 disables it.
        r1_weight: weight of the R1 penalty on real samples; 0 disables it.
        optimizer: ``adam`` or ``rmsprop`` (the original WGAN), for both networks.
        lr_g: generator learning rate.
        lr_d: discriminator learning rate.
        betas: Adam betas for both networks (ignored by rmsprop).
        ema_decay: if set (e.g. 0.999), keep an exponential moving average of the generator,
            used for validation and samples; must be in (0, 1).
        z_dim: latent size, when the generator has no ``z_dim`` attribute.
        val_num_samples: at most this many validation images per rank are compared with as
            many generated ones for ``val/swd``.
        val_seed: seed of the latents used in validation, so epochs are comparable.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: LossName = "bce",
        n_critic: int = 1,
        gp_weight: float = 0.0,
        r1_weight: float = 0.0,
        optimizer: Literal["adam", "rmsprop"] = "adam",
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        ema_decay: Optional[float] = None,
        z_dim: Optional[int] = None,
        val_num_samples: int = 1024,
        val_seed: int = 1234,
    ) -> None:
        super().__init__()
        if n_critic < 1:
            raise ConfigError(f"--model.n_critic must be an integer >= 1, got {n_critic}")
        if gp_weight < 0 or r1_weight < 0:
            raise ConfigError(f"--model.gp_weight and --model.r1_weight must be >= 0, got {gp_weight} and {r1_weight}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(f"--model.ema_decay must be in (0, 1) or null, got {ema_decay}")
        if lr_g <= 0 or lr_d <= 0:
            raise ConfigError(f"--model.lr_g and --model.lr_d must be > 0, got {lr_g} and {lr_d}")
        # Under LightningCLI the hparams hold the networks' class paths and init args, which is
        # what load_from_checkpoint needs; built from Python they would be whole modules, which
        # the state_dict already stores.
        from_cli = built_by_cli()
        self.save_hyperparameters(ignore=[] if from_cli else ["generator", "discriminator"])
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.adversarial = get_loss(loss)
        # the latent size the generator is built with; a latent cut shrinks what it takes (z_dim)
        self.built_z_dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
        if not isinstance(self.built_z_dim, int) or self.built_z_dim < 1:
            raise ConfigError(
                f"{type(generator).__name__} has no integer z_dim attribute: set --model.z_dim to its latent size"
            )
        self.generator_ema: Optional[nn.Module] = None
        if ema_decay is not None:
            self.generator_ema = copy.deepcopy(generator).requires_grad_(False)
        self._val_real: list[torch.Tensor] = []
        # Every structural edit of the networks, in order (cuts, factorizations, a replacement; see
        # gan_lightning.compress.edits): checkpoints carry it, so that a resumed run, evaluate and
        # export build the networks that were trained, not the configured ones.
        self.edits = EditRecord()
        # Modules that train with the generator without being part of it (distillation adapters):
        # in the generator's optimizer and under DDP, saved with the model, never exported.
        self.auxiliary = nn.ModuleDict()

    @property
    def z_dim(self) -> int:
        """The latent size the generator takes: the built one, or what a latent cut left."""
        return self.edits.latent_size("generator", self.built_z_dim)

    # ------------------------------------------------------------------ sampling
    @property
    def sampling_generator(self) -> nn.Module:
        """The generator used for samples and validation: the EMA copy when enabled."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def sample_z(self, n: int, seed: Optional[int] = None) -> torch.Tensor:
        if seed is None:
            return torch.randn(n, self.z_dim, device=self.device)
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.z_dim, generator=g).to(self.device)

    @torch.no_grad()
    def generate(self, n: int, seed: Optional[int] = None, chunk: int = 500) -> torch.Tensor:
        """``n`` samples from the sampling generator in eval mode, ``chunk`` at a time to bound
        memory; the same seed gives the same latents."""
        g = self.sampling_generator
        with evaluating(g):
            return torch.cat([g(z).float() for z in self.sample_z(n, seed).split(chunk)])

    @override
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.sampling_generator(z)

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "sample_shape", None) is not None:
            self.check_sample_shape(tuple(datamodule.sample_shape))
        find_unused_parameters(self.trainer.strategy)

    @torch.no_grad()
    def check_sample_shape(self, expected: tuple[int, ...]) -> None:
        """Refuse, with one sentence, networks that cannot make or judge samples of this shape."""
        hint = (
            "use 2-D networks such as configs/gmm_ring.yaml (MLPs with out_shape/in_shape [2])"
            if len(expected) == 1
            else "make --model.generator.init_args and --model.discriminator.init_args (image_size, channels,"
            " out_shape/in_shape) match --data (image_size, channels)"
        )
        # eval(): a probe must not move BatchNorm's running statistics
        modes = (self.generator.training, self.discriminator.training)
        self.generator.eval(), self.discriminator.eval()
        device = parameter_device(self.generator)  # in setup, self.device is already the target device
        try:
            produced = tuple(self.generator(torch.zeros(2, self.z_dim, device=device)).shape[1:])
            if produced != expected:
                raise ConfigError(f"the generator makes samples of shape {produced} but the data has {expected}: {hint}")
            try:
                judged = tuple(self.discriminator(torch.zeros(2, *expected, device=device)).shape)
            except RuntimeError as exc:
                raise ConfigError(f"the discriminator cannot take samples of shape {expected} ({exc}): {hint}") from exc
            if judged != (2,):
                raise ConfigError(f"the discriminator must return one logit per sample, shape (n,), but returned {judged}")
        finally:
            self.generator.train(modes[0]), self.discriminator.train(modes[1])

    @override
    def configure_optimizers(self):
        def build(params, lr):
            if self.hparams.optimizer == "rmsprop":
                return torch.optim.RMSprop(params, lr=lr)
            return torch.optim.Adam(params, lr=lr, betas=tuple(self.hparams.betas))

        return build([*self.generator.parameters(), *self.auxiliary.parameters()], self.hparams.lr_g), build(
            self.discriminator.parameters(), self.hparams.lr_d
        )

    @override
    def on_train_start(self) -> None:
        # A resumed optimizer brings the checkpoint's learning rates; the configured ones are
        # what the user asked for (typically lower, after a divergence), so they win, loudly.
        for optimizer, key in zip(self.trainer.optimizers, ("lr_g", "lr_d")):
            for group in optimizer.param_groups:
                if group["lr"] != self.hparams[key]:
                    log.info(f"--model.{key} {self.hparams[key]} replaces the checkpoint's learning rate {group['lr']}")
                    group["lr"] = self.hparams[key]

    # ------------------------------------------------------------------ training
    @override
    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        for cb in callbacks_with_hook(self.trainer, "transform_real_batch"):
            real = cb.transform_real_batch(self.trainer, self, real)
        opt_g, opt_d = self.optimizers()
        n = real.shape[0]

        for _ in range(self.hparams.n_critic):
            d_logs = self._discriminator_step(opt_d, real)
            for cb in callbacks_with_hook(self.trainer, "on_discriminator_step_end"):
                cb.on_discriminator_step_end(self.trainer, self)

        # A fake made during the D step cannot be reused here: toggle_optimizer switched the
        # generator's requires_grad off, so it carries no graph back to G.
        self.toggle_optimizer(opt_g)
        z = self.sample_z(n)
        fake = self.generator(z)
        g_adv = self.adversarial.generator(self.discriminator(self._augmented(fake)))
        adv_weight = 1.0
        for cb in callbacks_with_hook(self.trainer, "adversarial_weight"):
            adv_weight *= float(cb.adversarial_weight(self.trainer, self))
        terms: dict[str, torch.Tensor] = {}
        for cb in callbacks_with_hook(self.trainer, "generator_loss_terms"):
            terms.update(cb.generator_loss_terms(self.trainer, self, z, fake))
        g_loss = adv_weight * g_adv + sum(terms.values())  # 1.0 * x is x, bit for bit
        self._refuse_non_finite("train/g_loss", g_loss)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        for cb in callbacks_with_hook(self.trainer, "on_generator_step_end"):
            cb.on_generator_step_end(self.trainer, self)
        # after the hooks, so that the average follows the generator as they left it (clipped, masked)
        self._update_ema()

        # Every self.log call costs about a millisecond, several percent of a small GAN's step,
        # so parts equal to their total are not logged again.
        self.log_dict({"train/d_loss": d_logs.pop("train/d_loss"), "train/g_loss": g_loss.detach()}, prog_bar=True, batch_size=n)
        logs = {**d_logs, **{f"train/g_term/{k}": v.detach() for k, v in terms.items()}}
        if terms:
            logs["train/g_adv"] = g_adv.detach()
        self.log_dict(logs, batch_size=n)

    def _discriminator_step(self, opt_d, real: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self.generator(self.sample_z(real.shape[0]))
        for cb in callbacks_with_hook(self.trainer, "transform_fake_batch"):
            fake = cb.transform_fake_batch(self.trainer, self, fake)
        real, fake = self._augmented(real), self._augmented(fake)
        self.toggle_optimizer(opt_d)
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        d_adv = self.adversarial.discriminator(d_real, d_fake)
        d_loss = d_adv
        logs = {"train/d_real": d_real.detach().float().mean(), "train/d_fake": d_fake.detach().float().mean()}
        if self.hparams.gp_weight > 0:
            gp = gradient_penalty(self.discriminator, real, fake)
            d_loss = d_loss + self.hparams.gp_weight * gp
            logs["train/d_gp"] = gp.detach()
        if self.hparams.r1_weight > 0:
            r1 = r1_penalty(self.discriminator, real)
            d_loss = d_loss + self.hparams.r1_weight * r1
            logs["train/d_r1"] = r1.detach()
        self._refuse_non_finite("train/d_loss", d_loss)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        for cb in callbacks_with_hook(self.trainer, "on_discriminator_outputs"):
            cb.on_discriminator_outputs(self.trainer, self, logs["train/d_real"], logs["train/d_fake"])
        if self.hparams.gp_weight > 0 or self.hparams.r1_weight > 0:  # else d_adv is d_loss
            logs["train/d_adv"] = d_adv.detach()
        return {**logs, "train/d_loss": d_loss.detach()}

    def _augmented(self, samples: torch.Tensor) -> torch.Tensor:
        """What the discriminator is shown for ``samples`` (see ``augment_discriminator_input``)."""
        for cb in callbacks_with_hook(self.trainer, "augment_discriminator_input"):
            samples = cb.augment_discriminator_input(self.trainer, self, samples)
        return samples

    def _refuse_non_finite(self, name: str, loss: torch.Tensor) -> None:
        # Checked before backward so that no update is made from it; reduced across ranks so
        # that all ranks stop together instead of one deadlocking the others. What is saved
        # (the last finite state) is the rescue callbacks' business (callbacks.divergence).
        bad = self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False)
        if bad:
            raise NonFiniteLossError(
                f"{name} became {loss.item()} at epoch {self.current_epoch}, batch {self.trainer.fit_loop.batch_idx}", DIVERGENCE_ADVICE
            )

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        decay = self.hparams.ema_decay
        for ema_p, p in zip(self.generator_ema.parameters(), self.generator.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - decay)
        for ema_b, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema_b.copy_(b)

    # ------------------------------------------------------------------ validation
    @override
    def on_validation_epoch_start(self) -> None:
        self._val_real = []

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        kept = sum(r.shape[0] for r in self._val_real)
        if kept < self.hparams.val_num_samples:
            self._val_real.append(real[: self.hparams.val_num_samples - kept].float())

    @override
    def on_validation_epoch_end(self) -> None:
        if not self._val_real:
            return
        real = torch.cat(self._val_real)
        # Each rank sees its own shard; offsetting the seed by rank keeps fakes independent too.
        fake = self.generate(real.shape[0], seed=self.hparams.val_seed + self.global_rank)
        swd = sliced_wasserstein(real, fake, seed=self.hparams.val_seed)
        self.log("val/swd", swd, sync_dist=True, prog_bar=True)
        self._val_real = []

    # ------------------------------------------------------------------ compression
    def architecture_changed(
        self, network: str, previous: Optional[nn.Module] = None, rebuild_optimizers: bool = True, edit: Optional[Edit] = None
    ) -> None:
        """:func:`gan_lightning.core.hooks.architecture_changed` for this module."""
        architecture_changed(self.trainer, self, network, previous, rebuild_optimizers, edit)
