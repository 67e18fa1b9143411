"""Feature spaces for FID/KID/IS/precision-recall, registered with torch-fidelity.

``domain``: a small classifier trained on the datamodule's labelled training data, once,
deterministically, and cached on disk under a key made of the data itself and the training
settings, so the same data always gives the same yardstick and changed data never reuses a
stale one. It works offline, which the standard Inception features do not.

``inception``: torch-fidelity's InceptionV3 (``inception-v3-compat``), the standard FID. Its
weights come from a file given by path or from torch's hub cache; with neither and no
network, :func:`inception_weights_or_fail` refuses at once instead of hanging on a download.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from gan_lightning.cache import cache_dir as _cache_dir
from gan_lightning.dataset_tensors import stack_samples
from gan_lightning.errors import ConfigError
from gan_lightning.quality.inception_file import verify_inception_weights

DOMAIN_EXTRACTOR = "gan-lightning-domain"
# Bump when the classifier or its training changes, so old cache entries are not reused.
DOMAIN_VERSION = "1"


class DomainClassifier(nn.Module):
    """A small classifier whose penultimate layer serves as the feature space.

    Images ``(C, H, W)`` go through two conv blocks and an adaptive pool (any size works);
    flat samples such as 2-D points through an MLP.
    """

    feature_dim = 128

    def __init__(self, sample_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.sample_shape = tuple(sample_shape)
        self.num_classes = num_classes
        if len(self.sample_shape) == 3:
            c = self.sample_shape[0]
            self.body = nn.Sequential(
                nn.Conv2d(c, 32, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(4),
                nn.Flatten(), nn.Linear(64 * 16, self.feature_dim), nn.LeakyReLU(0.2),
            )
        else:
            d = int(torch.tensor(self.sample_shape).prod())
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(d, 64), nn.LeakyReLU(0.2), nn.Linear(64, self.feature_dim), nn.LeakyReLU(0.2)
            )
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x.float())
        return features, self.head(features)


def domain_cache_key(datamodule, train_x: torch.Tensor, train_y: torch.Tensor, settings: dict) -> str:
    """Key of the cached classifier: what the data is (its bytes, not its name) and how it was trained."""
    h = hashlib.sha256()
    h.update(f"{DOMAIN_VERSION}|{type(datamodule).__qualname__}|{sorted(settings.items())}".encode())
    h.update(train_x.float().numpy().tobytes())
    h.update(train_y.long().numpy().tobytes())
    return h.hexdigest()[:20]


def domain_cache_dir() -> Path:
    """``$GAN_LIGHTNING_CACHE/domain`` (default ``~/.cache/gan-lightning/domain``), read now."""
    return _cache_dir("domain")


def domain_classifier(datamodule, cache_dir: Optional[Path] = None, **settings) -> tuple[Path, dict]:
    """The cached classifier file for this datamodule's data, trained first if it is not cached.

    Uses the whole labelled training split (not ``train_fraction``'s subset), so runs on
    fractions of the data are measured with the same yardstick. Returns the file and its
    record: held-out ``accuracy`` on the validation split, ``key``, ``num_train``.
    ``settings``: ``epochs`` (5), ``seed`` (0), ``lr`` (1e-3), ``batch_size`` (128).
    """
    # Loading data and training draw from the global RNG; a GAN run must not train differently
    # depending on whether the cache was already filled.
    with torch.random.fork_rng():
        return _domain_classifier(datamodule, Path(cache_dir) if cache_dir else domain_cache_dir(), **settings)


def _domain_classifier(
    datamodule, cache_dir: Path, epochs: int = 5, seed: int = 0, lr: float = 1e-3, batch_size: int = 128
) -> tuple[Path, dict]:
    if getattr(datamodule, "num_classes", None) in (None, 0, 1):
        raise ConfigError(
            f"{type(datamodule).__name__} has no class labels, so the domain features cannot be trained:"
            " use --metrics.features inception (or data with labels)"
        )
    train, val = datamodule.load_splits()
    train_x, train_y = stack_samples(train)
    settings = {"epochs": epochs, "seed": seed, "lr": lr, "batch_size": batch_size}
    key = domain_cache_key(datamodule, train_x, train_y, settings)
    path = Path(cache_dir) / f"domain-{key}.pt"
    if path.is_file():
        return path, torch.load(path, map_location="cpu", weights_only=True)["record"]

    n = train_x.shape[0]
    torch.manual_seed(seed)  # the caller's RNG is restored by fork_rng in domain_classifier
    g = torch.Generator().manual_seed(seed)
    model = DomainClassifier(tuple(datamodule.sample_shape), datamodule.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(batch_size):
            loss = F.cross_entropy(model(train_x[idx])[1], train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    val_x, val_y = stack_samples(val)
    with torch.no_grad():
        accuracy = (model(val_x)[1].argmax(1) == val_y).float().mean().item()
    record = {"accuracy": accuracy, "key": key, "num_train": n, "num_val": len(val_y), **settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # unique per process: parallel runs may fill one cache
    torch.save(
        {"state_dict": model.state_dict(), "sample_shape": list(model.sample_shape), "num_classes": model.num_classes, "record": record},
        tmp,
    )
    tmp.replace(path)  # atomic, so a concurrent reader never sees half a file
    return path, record


def load_domain_classifier(path: str | Path) -> DomainClassifier:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = DomainClassifier(tuple(saved["sample_shape"]), saved["num_classes"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity adapter: ``features`` (penultimate layer) for FID/KID/PRC, ``logits_unbiased`` for IS.

    Takes samples in the data's own format and scale ([-1, 1] floats), not uint8 images.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ConfigError("the domain feature extractor needs its classifier file (feature_extractor_weights_path)")
        self.classifier = load_domain_classifier(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list():
        return ("features", "logits_unbiased")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased"}.get(metric, "features")

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        raise NotImplementedError

    def forward(self, x):
        features, logits = self.classifier(x)
        out = {"features": features, "logits_unbiased": logits}
        return tuple(out[name] for name in self.features_list)


if DOMAIN_EXTRACTOR not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(DOMAIN_EXTRACTOR, DomainFeatureExtractor)


def _network_reachable(host: str = "github.com", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def inception_weights_or_fail(weights: Optional[str]) -> Optional[str]:
    """The Inception weights file to use (None: torch-fidelity's own cache or download).

    Refuses in one sentence, without waiting on a download, when no file is given or cached
    and the download host cannot be reached.
    """
    if weights is not None:
        if not Path(weights).is_file():
            raise ConfigError(f"--metrics.inception_weights {weights} does not exist; pass the InceptionV3 FID weights file")
        verify_inception_weights(weights, "--metrics.inception_weights")
        return weights
    cached = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
    if cached.is_file():
        verify_inception_weights(cached, "the cached InceptionV3 weights file")
        return None
    if _network_reachable():
        return None
    raise ConfigError(
        f"the InceptionV3 FID weights are not cached ({cached}) and there is no network to download them:"
        f" fetch {URL_INCEPTION_V3} elsewhere and pass --metrics.inception_weights PATH, or use --metrics.features domain"
    )
