"""TorchScript files are programs: load_runtime runs only those the export command wrote and
nobody changed since, unless the caller trusts the file; refusals come before torch reads it."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import zipfile

import pytest
import torch

from gan_lightning.commands.generate import main as generate_main
from gan_lightning.deploy import torchscript_trust
from gan_lightning.deploy.runtimes import METADATA_KEY, load_runtime, write_verified
from gan_lightning.errors import ExportError
from tests.helpers import tiny_module


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return subprocess.run, (["touch", str(self.marker)],)


@pytest.fixture
def exported(tmp_path):
    path = tmp_path / "g.ts"
    module = tiny_module().eval()
    write_verified(module.generator, module.z_dim, path, "torchscript", {"z_dim": module.z_dim})
    return path


def replaced(path, member_suffix, new_bytes):
    """``path`` with the member ending in ``member_suffix`` replaced, the rest copied as is."""
    original = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, new_bytes(src.read(info)) if info.filename.endswith(member_suffix) else src.read(info))
    return path


def test_an_export_records_the_hash_and_loads_under_any_name(exported):
    moved = exported.rename(exported.with_name("renamed.ts"))  # the archive's folder keeps the old name
    model = load_runtime(moved)
    assert model.metadata[torchscript_trust.DIGEST_KEY] == torchscript_trust.contents_digest(str(moved), METADATA_KEY)
    assert model(torch.zeros(2, model.z_dim)).shape[0] == 2


def test_changed_code_is_refused_before_torch_reads_the_file(exported, monkeypatch):
    code = next(n for n in zipfile.ZipFile(exported).namelist() if "/code/" in n and n.endswith(".py"))
    replaced(exported, code, lambda text: text + b"\n")
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch read a refused file"))
    with pytest.raises(ExportError, match=r"g\.ts was changed after it was exported .* pass --trust_torchscript"):
        load_runtime(exported)


def test_a_swapped_inner_pickle_is_one_sentence_even_when_trusted(exported, tmp_path):
    marker = tmp_path / "PWNED"
    replaced(exported, "/data.pkl", lambda _: pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(ExportError, match="was changed after it was exported"):
        load_runtime(exported)
    with pytest.raises(ExportError, match=r"^\S+g\.ts is not a TorchScript file torch can load \(.*\); export it again"):
        load_runtime(exported, trust_torchscript=True)
    assert not marker.exists()


def test_an_unhashed_file_runs_only_when_trusted(exported):
    metadata = {"z_dim": 8}
    torch.jit.save(torch.jit.load(str(exported)), str(exported), _extra_files={METADATA_KEY: json.dumps(metadata)})
    with pytest.raises(ExportError, match=r"without the hash of its contents .* pass --trust_torchscript"):
        load_runtime(exported)
    assert load_runtime(exported, trust_torchscript=True).z_dim == 8


def test_a_file_without_metadata_is_never_run(exported, monkeypatch):
    torch.jit.save(torch.jit.load(str(exported)), str(exported))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch read a file without metadata"))
    for trust in (False, True):
        with pytest.raises(ExportError, match="without gan-lightning metadata, so it was not run"):
            load_runtime(exported, trust_torchscript=trust)


def test_generate_takes_the_opt_in(exported, tmp_path, capsys):
    torch.jit.save(torch.jit.load(str(exported)), str(exported), _extra_files={METADATA_KEY: json.dumps({"z_dim": 8})})
    assert generate_main(["--source", str(exported), "--out", str(tmp_path / "a"), "--num_samples", "2", "--device", "cpu"]) == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert generate_main(["--source", str(exported), "--out", str(tmp_path / "b"), "--num_samples", "2", "--device", "cpu", "--trust_torchscript"]) == 0
    assert len(list((tmp_path / "b").glob("*.png"))) == 2
