"""The InceptionV3 weights file is read safely before torch-fidelity reads it unsafely."""

from __future__ import annotations

import pickle
import subprocess

import pytest
import torch

from gan_lightning.errors import ConfigError
from gan_lightning.quality import features
from gan_lightning.quality.inception_file import verify_inception_weights


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return subprocess.run, (["touch", str(self.marker)],)


def test_a_state_dict_of_tensors_passes_and_is_handed_on(tmp_path):
    path = tmp_path / "inception.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, path)
    verify_inception_weights(path, "--x")
    assert features.inception_weights_or_fail(str(path)) == str(path)


def test_a_pickle_of_code_is_refused_without_running_it(tmp_path):
    path, marker = tmp_path / "inception.pth", tmp_path / "PWNED"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ConfigError, match=r"^--metrics\.inception_weights .*inception\.pth is not a plain weights file .* so it was not read"):
        features.inception_weights_or_fail(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("content", [[torch.zeros(1)], {}, {"a": 1}])
def test_anything_but_named_tensors_is_refused(tmp_path, content):
    path = tmp_path / "w.pth"
    torch.save(content, path)
    with pytest.raises(ConfigError, match=r"^--flag .*w\.pth is not a state dict of named tensors"):
        verify_inception_weights(path, "--flag")


def test_the_cached_download_is_checked_too(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = tmp_path / "checkpoints" / features.URL_INCEPTION_V3.rsplit("/", 1)[-1]
    cached.parent.mkdir()
    cached.write_bytes(pickle.dumps(Payload(tmp_path / "PWNED")))
    with pytest.raises(ConfigError, match="^the cached InceptionV3 weights file"):
        features.inception_weights_or_fail(None)
    torch.save({"w": torch.zeros(1)}, cached)
    assert features.inception_weights_or_fail(None) is None  # torch-fidelity loads it from the cache itself
    assert not (tmp_path / "PWNED").exists()


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"^--inception_weights .*nope\.pth does not exist"):
        verify_inception_weights(tmp_path / "nope.pth", "--inception_weights")
