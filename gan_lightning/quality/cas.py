"""Classification accuracy score (CAS, Ravuri & Vinyals 2019): how useful generated data is
as training data. A classifier trained on N labelled synthetic samples and one trained on N
real ones are both tested on the real validation split; synthetic data as good as real scores
the same accuracy. FID says whether samples look right, CAS whether their labels and variety
carry what a downstream model needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan_lightning.quality.features import DomainClassifier


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int = 10, seed: int = 0,
                     batch_size: int = 64, lr: float = 1e-3) -> DomainClassifier:
    """The domain classifier's architecture trained on ``images``/``labels`` from ``seed``; the
    caller's global RNG is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        model = DomainClassifier(tuple(images.shape[1:]), num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            for index in torch.randperm(len(images), generator=order).split(batch_size):
                loss = F.cross_entropy(model(images[index].float())[1], labels[index].long())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: DomainClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (model(images.float())[1].argmax(1) == labels.long()).float().mean().item()


def classification_accuracy_score(
    synthetic: tuple[torch.Tensor, torch.Tensor], real: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int, epochs: int = 10, seed: int = 0,
) -> dict[str, float]:
    """Test accuracy of a classifier trained on ``synthetic`` and of one trained on as many
    ``real`` samples (the first ones), and their ratio. Each argument is (images, labels)."""
    n = len(synthetic[0])
    if len(real[0]) < n:
        raise ValueError(f"{n} synthetic samples but only {len(real[0])} real ones to compare with")
    on_synthetic = accuracy(train_classifier(*synthetic, num_classes, epochs, seed), *test)
    on_real = accuracy(train_classifier(real[0][:n], real[1][:n], num_classes, epochs, seed), *test)
    return {"cas_synthetic": on_synthetic, "cas_real": on_real, "cas_ratio": on_synthetic / on_real if on_real else float("nan"),
            "num_train": n, "num_test": len(test[0])}
