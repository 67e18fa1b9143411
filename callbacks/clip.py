"""clip: WGAN weight clipping (Arjovsky et al., 2017), switched on with ``--callbacks clip``.

The Wasserstein loss only estimates the earth mover's distance when the critic is
K-Lipschitz. The original WGAN enforces that crudely by clamping every critic parameter to
[-c, c] after each critic update; this callback does exactly that through the
``on_discriminator_step_end`` GAN hook, so the generator never sees an unclipped critic.
The gradient penalty (``configs/wgan_gp.yaml``) is the better-behaved alternative; clipping
is kept because it is the baseline papers compare against and it needs no double backward.

Clipping's known failure is saturation: the critic piles its weights onto the bounds and
becomes a much simpler function than its architecture allows. The fraction of clipped
values sitting at a bound is logged each epoch as ``compress/clip_saturation``, with a
one-time warning when it reaches ``warn_saturation``.
"""

from __future__ import annotations

from typing import Literal

from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from callbacks.registry import register
from gan_lightning.compress.clipping import Parameters, clamp_, clipped_parameters, saturation
from gan_lightning.core.hooks import GANCallback
from gan_lightning.errors import ConfigError
from gan_lightning.logs import get_logger

log = get_logger(__name__)

Network = Literal["discriminator", "generator", "both"]

@register("clip")
class WeightClipping(GANCallback):
    """WGAN weight clipping: parameters clamped to [-clip_value, clip_value] after each step.

    The discriminator is clamped after every discriminator optimizer step, the generator
    (when chosen) after its own step, and the chosen networks once as training starts; the
    fraction at the bound is logged each epoch as ``compress/clip_saturation``.

    Args:
        clip_value: the bound c, > 0; the original WGAN uses 0.01.
        network: which network is clipped: ``discriminator`` (WGAN), ``generator`` or ``both``.
        parameters: ``all`` (the original WGAN: every parameter, BatchNorm/GroupNorm affine
            ones included) or ``weights`` (only weights and biases of Linear/Conv layers).
        warn_saturation: warn once when the fraction of clipped values at the bound reaches
            this, in (0, 1].
    """

    def __init__(
        self,
        clip_value: float = 0.01,
        network: Network = "discriminator",
        parameters: Parameters = "all",
        warn_saturation: float = 0.5,
    ) -> None:
        if not clip_value > 0:  # also refuses NaN
            raise ConfigError(f"--clip.clip_value must be > 0 (the original WGAN uses 0.01), got {clip_value}")
        if network not in ("discriminator", "generator", "both"):
            raise ConfigError(f"--clip.network must be discriminator, generator or both, got {network!r}")
        if parameters not in ("weights", "all"):
            raise ConfigError(f"--clip.parameters must be weights or all, got {parameters!r}")
        if not 0 < warn_saturation <= 1:
            raise ConfigError(f"--clip.warn_saturation must be in (0, 1], got {warn_saturation}")
        self.clip_value = float(clip_value)
        self.network = network
        self.parameters = parameters
        self.warn_saturation = float(warn_saturation)
        self.warned = False

    def _params(self, module, network: str) -> list[nn.Parameter]:
        return clipped_parameters(getattr(module, network), self.parameters)

    def _chosen(self, module) -> list[nn.Parameter]:
        names = ("discriminator", "generator") if self.network == "both" else (self.network,)
        return [p for name in names for p in self._params(module, name)]

    @override
    def on_train_start(self, trainer: Trainer, pl_module) -> None:
        chosen = self._chosen(pl_module)
        if not chosen:
            raise ConfigError(
                f"--clip.parameters {self.parameters} selects no parameters of the {self.network} (it has no"
                " Linear or convolution layers): use --clip.parameters all"
            )
        # The original WGAN clamps before each critic update, so even the first one must see a
        # clipped critic (a fresh DCGAN critic has conv weights up to 0.25, norm scales of 1).
        clamp_(chosen, self.clip_value)

    @override
    def on_discriminator_step_end(self, trainer: Trainer, module) -> None:
        if self.network in ("discriminator", "both"):
            clamp_(self._params(module, "discriminator"), self.clip_value)

    @override
    def on_generator_step_end(self, trainer: Trainer, module) -> None:
        # The generator only changes in its own step, so clipping it here keeps it inside the
        # bounds at every later D step without clamping it n_critic times per batch.
        if self.network in ("generator", "both"):
            clamp_(self._params(module, "generator"), self.clip_value)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module) -> None:
        value = saturation(self._chosen(pl_module), self.clip_value)
        # Every rank holds the same clipped weights, so the mean over ranks is each rank's value;
        # sync_dist only spares Lightning's warning about unsynced epoch-level logs under DDP.
        pl_module.log("compress/clip_saturation", value, on_step=False, on_epoch=True, sync_dist=True)
        if value >= self.warn_saturation and not self.warned:
            self.warned = True
            log.warning(
                f"{value:.0%} of the clipped {self.network} values sit at the bound ±{self.clip_value} after epoch"
                f" {trainer.current_epoch} (--clip.warn_saturation {self.warn_saturation}), so the critic is losing"
                " capacity: lower --model.lr_d, raise --clip.clip_value, or use the gradient penalty with"
                " --config configs/wgan_gp.yaml."
            )
