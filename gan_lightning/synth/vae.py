"""A variational auto-encoder sized from the data's sample shape: the source of synthetic samples.

``ConvVAE`` for images ``(C, H, W)``, ``MLPVAE`` for flat samples such as 2-D points; both may
be class-conditional (a one-hot label joins the encoder's features and the decoder's latent).
The likelihood is a Gaussian of fixed ``likelihood_std`` around the decoder's mean, so the
logged ELBO is a true lower bound of log p(x) in nats per sample; samples are the decoder's
means (images through tanh, hence in the data's [-1, 1]).

:func:`fit_vae` trains one deterministically from a seed without touching the caller's RNG;
:func:`cached_vae` keeps the result on disk under a key made of the training data's bytes and
the settings, as the domain features are cached, so a changed dataset never reuses a stale VAE.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from gan_lightning.cache import cache_dir as _cache_dir
from gan_lightning.errors import CheckpointError

# Bump when the models or their training change, so old cache entries are not reused.
VAE_VERSION = "1"


@dataclass(frozen=True)
class VAESettings:
    """Everything that decides which VAE is trained (with the data, the cache key).

    Args:
        latent_dim: size of the latent code.
        width: channels of the first conv layer (hidden units of the MLP).
        conditional: condition encoder and decoder on the class label.
        epochs: passes over the training data.
        batch_size: samples per step.
        lr: Adam learning rate.
        beta: weight of the KL term (1 is the ELBO; beta-VAE otherwise).
        likelihood_std: standard deviation of the Gaussian likelihood p(x|z).
        seed: seed of the initial weights, the batches and the reparameterisation noise.
    """

    latent_dim: int = 16
    width: int = 32
    conditional: bool = False
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    beta: float = 1.0
    likelihood_std: float = 0.1
    seed: int = 0


class VAE(nn.Module):
    """What both VAEs share: the reparameterised ELBO and sampling. Subclasses build
    ``encode(x, onehot) -> (mu, logvar)`` and ``decode(z, onehot) -> x``."""

    def __init__(self, sample_shape: tuple[int, ...], latent_dim: int, width: int, num_classes: int = 0) -> None:
        super().__init__()
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.latent_dim = latent_dim
        self.width = width
        self.num_classes = num_classes
        # class frequencies of the training data: conditional samples are drawn in those proportions
        self.register_buffer("class_prior", torch.full((max(num_classes, 1),), 1.0 / max(num_classes, 1)))

    @property
    def config(self) -> dict:
        return {"sample_shape": list(self.sample_shape), "latent_dim": self.latent_dim, "width": self.width, "num_classes": self.num_classes}

    def _onehot(self, labels: Optional[torch.Tensor], n: int, device) -> Optional[torch.Tensor]:
        if not self.num_classes:
            return None
        if labels is None:
            raise ValueError("a conditional VAE needs labels")
        return F.one_hot(labels.long().to(device), self.num_classes).float()

    @staticmethod
    def _joined(x: torch.Tensor, onehot: Optional[torch.Tensor]) -> torch.Tensor:
        """``x`` with the one-hot label appended (conditional VAEs), else ``x``."""
        return x if onehot is None else torch.cat([x, onehot], 1)

    def encode(self, x: torch.Tensor, onehot: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, onehot: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss_terms(self, x: torch.Tensor, labels: Optional[torch.Tensor], likelihood_std: float) -> dict[str, torch.Tensor]:
        """Per-sample means of ``recon`` (-log p(x|z), one noise draw) and ``kl`` (KL(q(z|x) || N(0, I)))."""
        onehot = self._onehot(labels, len(x), x.device)
        mu, logvar = self.encode(x, onehot)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_hat = self.decode(z, onehot)
        dims = x[0].numel()
        squared = (x_hat - x).pow(2).flatten(1).sum(1)
        recon = squared / (2 * likelihood_std**2) + dims * math.log(likelihood_std * math.sqrt(2 * math.pi))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return {"recon": recon.mean(), "kl": kl.mean()}

    def sample_labels(self, n: int, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        if not self.num_classes:
            return None
        return torch.multinomial(self.class_prior.cpu(), n, replacement=True, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, labels: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` samples (decoder means) on the VAE's device; conditional VAEs draw labels from the
        training class frequencies unless given. ``generator`` (a CPU one) makes them reproducible."""
        device = self.class_prior.device
        if self.num_classes and labels is None:
            labels = self.sample_labels(n, generator)
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return self.decode(z, self._onehot(labels, n, device))


class ConvVAE(VAE):
    """Images ``(C, H, W)``: two stride-2 convolutions down, two transposed ones up, resized to
    (H, W) when they are not multiples of 4."""

    def __init__(self, sample_shape: tuple[int, ...], latent_dim: int = 16, width: int = 32, num_classes: int = 0) -> None:
        super().__init__(sample_shape, latent_dim, width, num_classes)
        c, h, w = self.sample_shape
        self.grid = (math.ceil(h / 4), math.ceil(w / 4))
        flat = 2 * width * self.grid[0] * self.grid[1]
        self.encoder = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(self.grid), nn.Flatten(),
        )
        self.to_latent = nn.Linear(flat + num_classes, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim + num_classes, flat), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, 2, 1),
        )

    def encode(self, x, onehot):
        return self.to_latent(self._joined(self.encoder(x), onehot)).chunk(2, dim=1)

    def decode(self, z, onehot):
        x = self.decoder(self.from_latent(self._joined(z, onehot)).view(len(z), 2 * self.width, *self.grid))
        if tuple(x.shape[-2:]) != self.sample_shape[1:]:
            x = F.interpolate(x, size=self.sample_shape[1:], mode="bilinear", align_corners=False)
        return torch.tanh(x)


class MLPVAE(VAE):
    """Flat samples (e.g. 2-D points): unbounded outputs, since such data has no fixed range."""

    def __init__(self, sample_shape: tuple[int, ...], latent_dim: int = 2, width: int = 64, num_classes: int = 0) -> None:
        super().__init__(sample_shape, latent_dim, width, num_classes)
        d = math.prod(self.sample_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d + num_classes, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim + num_classes, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d))

    def encode(self, x, onehot):
        return self.encoder(self._joined(x.flatten(1), onehot)).chunk(2, dim=1)

    def decode(self, z, onehot):
        return self.decoder(self._joined(z, onehot)).view(len(z), *self.sample_shape)


def make_vae(sample_shape: tuple[int, ...], latent_dim: int, width: int, num_classes: int = 0) -> VAE:
    """The VAE for samples of this shape: convolutional for ``(C, H, W)``, an MLP otherwise."""
    cls = ConvVAE if len(sample_shape) == 3 else MLPVAE
    return cls(tuple(sample_shape), latent_dim=latent_dim, width=width, num_classes=num_classes)


@dataclass
class FitRecord:
    """Per-epoch means of the training objective, nats per sample: ``elbo`` = -(recon + kl)."""

    elbo: list[float] = field(default_factory=list)
    recon: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)


def fit_vae(
    images: torch.Tensor, labels: Optional[torch.Tensor], settings: VAESettings, num_classes: int = 0,
    on_epoch_end: Optional[Callable[[int, dict[str, float]], None]] = None,
) -> tuple[VAE, FitRecord]:
    """Train a VAE on ``images`` (CPU tensors; ``labels`` needed when conditional). The same
    data and settings give the same weights; the caller's global RNG is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        vae = make_vae(tuple(images.shape[1:]), settings.latent_dim, settings.width, num_classes if settings.conditional else 0)
        if vae.num_classes:
            counts = torch.bincount(labels.long(), minlength=vae.num_classes).float()
            vae.class_prior.copy_(counts / counts.sum())
        order = torch.Generator().manual_seed(settings.seed)
        optimizer = torch.optim.Adam(vae.parameters(), lr=settings.lr)
        record = FitRecord()
        n = len(images)
        for epoch in range(settings.epochs):
            totals = {"recon": 0.0, "kl": 0.0}
            for index in torch.randperm(n, generator=order).split(settings.batch_size):
                terms = vae.loss_terms(images[index], labels[index] if vae.num_classes else None, settings.likelihood_std)
                loss = terms["recon"] + settings.beta * terms["kl"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for k in totals:
                    totals[k] += terms[k].item() * len(index)
            means = {k: v / n for k, v in totals.items()}
            means["elbo"] = -(means["recon"] + means["kl"])
            for k in ("elbo", "recon", "kl"):
                getattr(record, k).append(means[k])
            if on_epoch_end is not None:
                on_epoch_end(epoch, means)
    return vae.eval(), record


def vae_cache_key(images: torch.Tensor, labels: torch.Tensor, settings: VAESettings) -> str:
    """What the VAE is trained on (the data's bytes, not its name) and how."""
    h = hashlib.sha256()
    h.update(f"{VAE_VERSION}|{sorted(asdict(settings).items())}".encode())
    h.update(images.float().contiguous().numpy().tobytes())
    h.update(labels.long().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def save_vae(vae: VAE, path: Path, record: dict) -> None:
    """Atomically (a temporary file, then a rename), so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"gan_lightning_vae": vae.config, "state_dict": vae.state_dict(), "record": record}, tmp)
    tmp.replace(path)


def is_vae_file(path: str | Path) -> bool:
    """Whether ``path`` is a file written by :func:`save_vae` (and not, say, an exported generator)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file, or one that plain weights loading cannot read (TorchScript)
        return False
    return isinstance(saved, dict) and "gan_lightning_vae" in saved


def load_vae(path: str | Path, flag: str = "--vae.ckpt") -> tuple[VAE, dict]:
    """A VAE written by :func:`save_vae` (or the vae callback's cache), and its record."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{flag} {path} does not exist{' (it is a folder)' if path.is_dir() else ''}; give a VAE file written by the vae callback")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: whatever torch.load raises
        raise CheckpointError(f"{flag} {path} cannot be read as a VAE file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(saved, dict) or "gan_lightning_vae" not in saved:
        raise CheckpointError(f"{flag} {path} is not a VAE file written by the vae callback")
    config = saved["gan_lightning_vae"]
    vae = make_vae(tuple(config["sample_shape"]), config["latent_dim"], config["width"], config["num_classes"])
    vae.load_state_dict(saved["state_dict"])
    return vae.eval(), saved.get("record", {})


def vae_cache_dir() -> Path:
    """``$GAN_LIGHTNING_CACHE/vae`` (default ``~/.cache/gan-lightning/vae``), read now."""
    return _cache_dir("vae")


def cached_vae(
    images: torch.Tensor, labels: torch.Tensor, settings: VAESettings, num_classes: int, cache_dir: Optional[Path] = None,
    on_epoch_end: Optional[Callable[[int, dict[str, float]], None]] = None,
) -> tuple[VAE, dict, Path, bool]:
    """The VAE for this data and these settings: from the cache, else trained and cached.
    Returns the VAE, its record (``key``, per-epoch ``elbo``/``recon``/``kl``, ``num_train``),
    its file, and whether it came from the cache."""
    key = vae_cache_key(images, labels, settings)
    path = (Path(cache_dir) if cache_dir else vae_cache_dir()) / f"vae-{key}.pt"
    if path.is_file():
        vae, record = load_vae(path, flag="the VAE cache file")
        return vae, record, path, True
    vae, fit = fit_vae(images, labels, settings, num_classes, on_epoch_end)
    record = {"key": key, "num_train": len(images), "settings": asdict(settings), **asdict(fit)}
    save_vae(vae, path, record)
    return vae, record, path, False
