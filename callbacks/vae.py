"""vae: synthetic samples from a VAE, switched on with ``--callbacks vae``.

Before GAN training starts, a VAE (``gan_lightning.synth.vae``) is trained on the training
split the GAN sees (its ``train_fraction`` subset), with its own short schedule and progress
bar, logging ``vae/elbo``, ``vae/recon`` and ``vae/kl`` per VAE epoch; it is cached on disk
under a key of the data's bytes and the settings, or loaded from ``--vae.ckpt``. Under DDP
rank 0 obtains it and broadcasts the weights, so every rank holds the same VAE. Its weights
are saved in this callback's checkpoint state: a resumed run uses the very same VAE.

What the discriminator is shown (``--vae.mode``), a ``fraction`` that follows ``schedule``:

- ``replace``: that fraction of each real batch is replaced by VAE samples;
- ``append``: VAE samples are added to each real batch, making up that fraction of it;
- ``fake``: VAE samples are added to the discriminator's fakes, making up that fraction of them
  (D learns that blur is fake, the use the literature suggests might help);
- ``none``: D never sees them; the VAE only serves others (``--prune.calibration_source vae``).

The fraction in force is logged as ``train/synthetic_fraction``. Blurry VAE samples shown as
real can teach D that blur is real: benchmarks/low_data.py measures which mode helps.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from pytorch_lightning import Trainer
from typing_extensions import override
from tqdm.auto import tqdm

from callbacks.registry import register
from gan_lightning.core.hooks import GANCallback
from gan_lightning.dataset_tensors import stack_samples
from gan_lightning.errors import CheckpointError, ConfigError
from gan_lightning.synth.vae import VAE, VAESettings, cached_vae, load_vae, make_vae
from gan_lightning.logs import get_logger

log = get_logger(__name__)

Mode = Literal["replace", "append", "fake", "none"]
Schedule = Literal["constant", "linear", "cosine"]


def fraction_schedule(kind: str, fraction: float, end_epoch: Optional[float]) -> Callable[[float], float]:
    """The synthetic fraction at a point of training (in epochs, fractional): ``constant``, or
    ``linear``/``cosine`` decay from ``fraction`` at epoch 0 to 0 at ``end_epoch``."""
    if kind == "constant" or not end_epoch:
        return lambda t: fraction
    if kind == "linear":
        return lambda t: fraction * max(0.0, 1.0 - t / end_epoch)
    if kind == "cosine":
        return lambda t: fraction * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t / end_epoch)))
    raise ConfigError(f"--vae.schedule must be constant, linear or cosine, got {kind!r}")


def synthetic_count(mode: str, fraction: float, n: int) -> int:
    """How many synthetic samples make ``fraction`` of a batch of ``n``: replaced ones make up
    that fraction of the n, appended ones that fraction of the n + k."""
    if mode == "replace":
        return round(fraction * n)
    return round(fraction * n / (1.0 - fraction))


@register("vae")
class VAEAugmentation(GANCallback):
    """A VAE trained on the training split, whose samples the discriminator sees as real or fake.

    Args:
        mode: ``replace`` or ``append`` (shown as real), ``fake`` (shown as extra fakes) or
            ``none`` (not shown; e.g. only for ``--prune.calibration_source vae``).
        fraction: share of the real batch (replace, append) or of the fakes (fake) that is
            synthetic, in [0, 1] (below 1 for append and fake), at the start of the schedule.
        schedule: ``constant``, or ``linear``/``cosine`` decay to 0 by ``end_epoch``.
        end_epoch: epoch at which a decaying fraction reaches 0 (default: --trainer.max_epochs).
        ckpt: a VAE file (written by this callback's cache) to use instead of training one.
        latent_dim: VAE latent size.
        width: channels of the VAE's first conv layer (hidden units for flat data).
        conditional: condition the VAE on the class labels (the data must have them); samples
            then follow the training split's class frequencies.
        epochs: VAE training epochs, before GAN training.
        batch_size: VAE training batch size.
        lr: VAE learning rate (Adam).
        beta: weight of the KL term (1: the ELBO).
        likelihood_std: standard deviation of the VAE's Gaussian likelihood; smaller gives
            sharper reconstructions and a less regular latent space.
        seed: seed of the VAE's training.
        cache_dir: where trained VAEs are cached (default: ~/.cache/gan-lightning/vae, or
            $GAN_LIGHTNING_CACHE/vae).
    """

    def __init__(
        self,
        mode: Mode = "replace",
        fraction: float = 0.25,
        schedule: Schedule = "constant",
        end_epoch: Optional[int] = None,
        ckpt: Optional[str] = None,
        latent_dim: int = 16,
        width: int = 32,
        conditional: bool = False,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        beta: float = 1.0,
        likelihood_std: float = 0.1,
        seed: int = 0,
        cache_dir: Optional[str] = None,
    ) -> None:
        if mode not in ("replace", "append", "fake", "none"):
            raise ConfigError(f"--vae.mode must be replace, append, fake or none, got {mode!r}")
        if not 0.0 <= fraction <= 1.0:  # also refuses NaN
            raise ConfigError(f"--vae.fraction must be in [0, 1] (a share of the batch), got {fraction}")
        if fraction == 1.0 and mode in ("append", "fake"):
            raise ConfigError(f"--vae.fraction 1 with --vae.mode {mode} would need infinitely many synthetic samples: use a value below 1, or --vae.mode replace")
        if end_epoch is not None and end_epoch < 1:
            raise ConfigError(f"--vae.end_epoch must be >= 1 or null (--trainer.max_epochs), got {end_epoch}")
        for flag, value in (("latent_dim", latent_dim), ("width", width), ("epochs", epochs), ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"--vae.{flag} must be an integer >= 1, got {value}")
        for flag, value in (("lr", lr), ("likelihood_std", likelihood_std)):
            if not value > 0:
                raise ConfigError(f"--vae.{flag} must be > 0, got {value}")
        if not beta >= 0:
            raise ConfigError(f"--vae.beta must be >= 0, got {beta}")
        self.mode = mode
        self.fraction = float(fraction)
        self.schedule = schedule
        self.end_epoch = end_epoch
        fraction_schedule(schedule, self.fraction, end_epoch)  # refuses an unknown name now, not mid-run
        self.ckpt = ckpt
        self.settings = VAESettings(latent_dim, width, conditional, epochs, batch_size, lr, beta, likelihood_std, seed)
        self.cache_dir = Path(cache_dir) if cache_dir else None  # None: $GAN_LIGHTNING_CACHE/vae as it is when the VAE is needed
        self.vae: Optional[VAE] = None
        self.source: dict[str, Any] = {}  # where the VAE came from: logged, and kept in checkpoints

    # ------------------------------------------------------------------ the VAE
    @override
    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        data = trainer.datamodule
        if data is None or not hasattr(data, "train_set"):
            raise ConfigError("--callbacks vae trains its VAE on the training split: it needs a gan-lightning datamodule (--data)")
        if self.settings.conditional and getattr(data, "num_classes", None) in (None, 0, 1):
            raise ConfigError(f"--vae.conditional needs data with class labels, and {type(data).__name__} has none: set --vae.conditional false")
        if self.ckpt and self.vae is None:
            vae, record = load_vae(self.ckpt)
            self.check_shape(vae, tuple(data.sample_shape), f"--vae.ckpt {self.ckpt}")
            self.vae, self.source = vae, {"from": "file", "path": str(self.ckpt), "key": record.get("key")}
        end = self.end_epoch or trainer.max_epochs
        if self.schedule != "constant" and not (end and end > 0):
            raise ConfigError(f"--vae.schedule {self.schedule} decays to 0 by an epoch: set --vae.end_epoch (or --trainer.max_epochs)")
        self.schedule_fn = fraction_schedule(self.schedule, self.fraction, end)

    @staticmethod
    def check_shape(vae: VAE, sample_shape: tuple[int, ...], name: str) -> None:
        if tuple(vae.sample_shape) != tuple(sample_shape):
            raise CheckpointError(
                f"{name} makes samples of shape {tuple(vae.sample_shape)} but the data has {tuple(sample_shape)}:"
                " give a VAE trained on this data, or leave --vae.ckpt unset to train one"
            )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        if self.vae is None:  # neither --vae.ckpt nor a resumed checkpoint gave one
            state = self._obtain(trainer) if trainer.is_global_zero else None
            config, weights, self.source = trainer.strategy.broadcast(state, src=0)
            self.vae = make_vae(tuple(config["sample_shape"]), config["latent_dim"], config["width"], config["num_classes"])
            self.vae.load_state_dict(weights)
        self.vae.to(pl_module.device).eval().requires_grad_(False)

    def _obtain(self, trainer: Trainer) -> tuple[dict, dict, dict]:
        data = trainer.datamodule
        images, labels = stack_samples(data.train_set)
        num_classes = getattr(data, "num_classes", None) or 0
        bar = tqdm(total=self.settings.epochs, desc="VAE", unit="epoch", disable=trainer.progress_bar_callback is None, leave=False)

        def on_epoch_end(epoch: int, means: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix(elbo=f"{means['elbo']:.1f}")

        try:
            vae, record, path, hit = cached_vae(images.float(), labels, self.settings, num_classes, self.cache_dir, on_epoch_end)
        finally:
            bar.close()
        for logger in trainer.loggers:
            for epoch, values in enumerate(zip(record["elbo"], record["recon"], record["kl"])):
                logger.log_metrics({"vae/elbo": values[0], "vae/recon": values[1], "vae/kl": values[2], "vae/epoch": epoch}, step=epoch)
        log.info(
            f"VAE {'from the cache' if hit else 'trained'}: {len(record['elbo'])} epochs on {record['num_train']} samples,"
            f" ELBO {record['elbo'][0]:.1f} -> {record['elbo'][-1]:.1f} nats/sample; {path}"
        )
        return vae.config, vae.state_dict(), {"from": "cache" if hit else "trained", "path": str(path), "key": record["key"]}

    # ------------------------------------------------------------------ GAN hooks
    def _fraction_now(self, trainer: Trainer) -> float:
        batches = trainer.num_training_batches
        within = trainer.fit_loop.batch_idx / batches if math.isfinite(batches) and batches > 0 else 0.0
        return self.schedule_fn(trainer.current_epoch + within)

    def _mixed(self, trainer: Trainer, module, batch: torch.Tensor) -> torch.Tensor:
        fraction = self._fraction_now(trainer)
        module.log("train/synthetic_fraction", fraction, on_step=True, on_epoch=False, batch_size=len(batch))
        k = synthetic_count(self.mode, fraction, len(batch))
        if k == 0:
            return batch
        synthetic = self.vae.sample(k).to(batch.device, batch.dtype)
        if self.mode == "replace":
            return torch.cat([synthetic, batch[k:]])
        return torch.cat([batch, synthetic])

    @override
    def transform_real_batch(self, trainer: Trainer, module, real: torch.Tensor) -> torch.Tensor:
        return self._mixed(trainer, module, real) if self.mode in ("replace", "append") else real

    @override
    def transform_fake_batch(self, trainer: Trainer, module, fake: torch.Tensor) -> torch.Tensor:
        return self._mixed(trainer, module, fake) if self.mode == "fake" else fake

    @override
    def synthetic_samples(self, trainer: Trainer, module, n: int, seed: int) -> Optional[torch.Tensor]:
        if self.vae is None:
            return None
        return self.vae.sample(n, generator=torch.Generator().manual_seed(seed)).to(module.device)

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        if self.vae is None:
            return {}
        return {"config": self.vae.config, "weights": {k: v.cpu() for k, v in self.vae.state_dict().items()}, "source": self.source,
                "settings": asdict(self.settings)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict.get("config"):
            return  # saved before the VAE existed: it is obtained as in a new run
        config = state_dict["config"]
        self.vae = make_vae(tuple(config["sample_shape"]), config["latent_dim"], config["width"], config["num_classes"])
        self.vae.load_state_dict(state_dict["weights"])
        self.source = dict(state_dict.get("source", {}), resumed=True)
