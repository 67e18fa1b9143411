"""gan_lightning.deploy.runtimes: TorchScript and ONNX files of dense, structurally pruned,
unstructured-sparse and factorized generators reproduce the PyTorch generator at a batch size
other than the traced one; a file that would not is never written."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_lightning.compress.lowrank import factorize_module
from gan_lightning.compress.pruning import cut_units
from gan_lightning.deploy.runtimes import METADATA_KEY, load_runtime, runtime_of, write_verified
from gan_lightning.errors import ConfigError, ExportError
from tests.helpers import tiny_module

ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")
RUNTIMES = ["torchscript", "onnx"]


def randomized(module):
    """BatchNorm statistics away from 0/1, so that a lost buffer changes the outputs."""
    with torch.no_grad():
        for m in module.generator.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return module.eval()


def dense():
    torch.manual_seed(0)
    return randomized(tiny_module())


def structured():
    module = dense()
    module.edits.append("generator", cut_units(module, "generator", {"stem.0": torch.tensor([0, 2])}, torch.tensor([0, 1, 3, 4, 6])))
    assert module.z_dim == 5
    return module


def unstructured():
    module = dense()
    with torch.no_grad():
        for p in module.generator.parameters():
            if p.dim() > 1:
                p.mul_(torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) > 0.8)
    return module


def lowrank():
    module = dense()
    factorize_module(module, {"generator.stem.0": 2, "generator.blocks.0": 1})
    return module


GENERATORS = {"dense": dense, "structured": structured, "unstructured": unstructured, "lowrank": lowrank}


@pytest.mark.parametrize("kind", GENERATORS)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exported_generator_matches_pytorch_at_another_batch_size(tmp_path, kind, runtime):
    module = GENERATORS[kind]()
    generator = module.generator
    path = tmp_path / f"g.{runtime}"
    report = write_verified(generator, module.z_dim, path, runtime, {"z_dim": module.z_dim})
    assert report.max_abs_diff <= report.tolerance
    assert generator.training is False and runtime_of(path) == runtime
    loaded = load_runtime(path)
    assert loaded.z_dim == module.z_dim
    z = torch.randn(7, module.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = generator(z)
        got = loaded(z)
    assert got.shape == expected.shape == (7, 1, 8, 8)
    assert torch.allclose(got, expected, atol=1e-5)
    if kind == "unstructured":  # the zeros are in the file's weights: a dense copy of the weights gives other images
        restored = dense().generator
        assert not torch.allclose(restored(z), got, atol=1e-3)


class NoisyGenerator(nn.Module):
    """Samples fresh noise on every call: no file can reproduce it, so verification must refuse."""

    z_dim = 4

    def forward(self, z):
        return z[:, :, None, None] + torch.rand_like(z)[:, :, None, None]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_export_that_does_not_reproduce_the_generator_is_refused_and_leaves_no_file(tmp_path, runtime):
    path = tmp_path / "g.out"
    with pytest.raises(ExportError, match=rf"the {runtime} export of .*g.out differs from the PyTorch generator by up to [0-9.e-]+ \(tolerance 0.0001\)"):
        write_verified(NoisyGenerator(), 4, path, runtime, {"z_dim": 4})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_keeps_the_file_it_would_have_replaced(tmp_path):
    path = tmp_path / "g.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError):
        write_verified(NoisyGenerator(), 4, path, "onnx", {"z_dim": 4})
    assert path.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


def test_the_onnx_model_refuses_latents_of_the_wrong_shape_in_one_sentence(tmp_path):
    module = dense()
    write_verified(module.generator, 8, tmp_path / "g.onnx", "onnx", {"z_dim": 8})
    model = load_runtime(tmp_path / "g.onnx")
    assert model.metadata == {"z_dim": 8}
    for bad in (torch.zeros(3, 5), torch.zeros(8)):
        with pytest.raises(ConfigError) as error:
            model(bad)
        assert str(error.value).endswith(f"g.onnx takes latents of shape (batch, 8), got {tuple(bad.shape)}")


def test_a_torchscript_file_without_our_metadata_is_refused(tmp_path):
    torch.jit.save(torch.jit.trace(nn.Linear(2, 2), torch.zeros(1, 2)), str(tmp_path / "foreign.ts"))
    with pytest.raises(ExportError, match="TorchScript file without gan-lightning metadata"):
        load_runtime(tmp_path / "foreign.ts")
    assert METADATA_KEY == "gan_lightning"


def test_a_foreign_onnx_file_is_refused(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="is not an ONNX model onnxruntime can load"):
        load_runtime(tmp_path / "x.onnx")
