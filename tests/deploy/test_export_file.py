"""gan_lightning.deploy.export_file and ``python -m gan_lightning.commands.export``: encodings, round trips of a
dense, an 80%-sparse, a structurally pruned and a factorized generator, the size gain, the
command on a train.py checkpoint, and refusal of corrupt or foreign files."""

from __future__ import annotations

import pytest
import torch

from gan_lightning.commands import export as export_command
from gan_lightning.compress.edits import Cut, Factorize
from gan_lightning.compress.lowrank import factorize_module
from gan_lightning.compress.pruning import cut_units
from gan_lightning.deploy.export_file import decode, encode, encoded_sizes, export_generator, load_exported, read_export
from gan_lightning.compress.surgery import INPUT_KEY
from gan_lightning.core.module import GANModule
from gan_lightning.errors import CheckpointError, ConfigError
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator
from tests.helpers import tiny_module, tiny_run_args
from train import main

TINY_SPEC = {"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": {"z_dim": 8, "image_size": 8, "channels": 1, "width": 4}}
MEDIUM_ARGS = {"z_dim": 32, "image_size": 16, "channels": 1, "width": 16}
MEDIUM_SPEC = {"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": MEDIUM_ARGS}


def medium_module() -> GANModule:
    """A 16x16 DCGAN generator with ~26k weights: big enough that sizes are about data, not headers."""
    torch.manual_seed(0)
    module = GANModule(DCGANGenerator(**MEDIUM_ARGS), DCGANDiscriminator(image_size=16, channels=1, width=16), ema_decay=0.9)
    with torch.no_grad():  # an EMA unlike the generator, so the test sees which one is exported
        for p in module.generator_ema.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for b in module.generator_ema.buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
    return module.eval()


def assert_round_trip(module: GANModule, path) -> torch.nn.Module:
    generator = load_exported(path)
    z = module.sample_z(7, seed=1)
    expected = module.sampling_generator.eval()(z)
    assert generator.z_dim == module.z_dim
    assert not generator.training
    assert torch.equal(generator(z), expected)
    return generator


def sparsify(network: torch.nn.Module, amount: float, seed: int = 0) -> None:
    """Zero ``amount`` of every weight matrix/kernel under a random mask (unstructured pruning)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if p.dim() > 1:
                p.mul_((torch.rand(p.shape, generator=gen) >= amount).to(p.dtype))


# ---------------------------------------------------------------------- encodings
@pytest.mark.parametrize(
    "shape,zeros,dtype,expected",
    [
        ((64, 32), 0.0, torch.float32, "dense"),
        ((64, 32), 0.8, torch.float32, "bitmask"),
        ((64, 32), 0.99, torch.float32, "coo"),  # int16 positions
        ((300, 200), 0.995, torch.float32, "coo"),  # 60000 elements: int32 positions
        ((64, 32), 0.8, torch.bfloat16, "bitmask"),
        ((13,), 0.5, torch.float64, "bitmask"),  # not a multiple of 8
        ((), 0.0, torch.float32, "dense"),
    ],
)
def test_each_tensor_gets_its_smallest_encoding_and_decodes_exactly(shape, zeros, dtype, expected):
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(shape, generator=gen).to(dtype)
    t = t * (torch.rand(shape, generator=gen) >= zeros).to(dtype)
    encoding, parts = encode(t)
    assert encoding == expected
    sizes = encoded_sizes(t)
    assert sum(p.numel() * p.element_size() for p in parts) == sizes[encoding] == min(sizes.values())
    back = decode(encoding, parts, list(t.shape), t.dtype)
    assert back.dtype == t.dtype and torch.equal(back, t)


def test_integer_buffers_stay_dense():
    t = torch.tensor(0, dtype=torch.long)  # BatchNorm's num_batches_tracked
    assert encode(t)[0] == "dense" and set(encoded_sizes(t)) == {"dense"}


# ---------------------------------------------------------------------- round trips and sizes
def test_dense_generator_round_trips_and_the_ema_is_what_is_exported(tmp_path):
    module = medium_module()
    report = export_generator(module, tmp_path / "g.pt", spec=MEDIUM_SPEC)
    assert_round_trip(module, tmp_path / "g.pt")
    assert report.exported_bytes == (tmp_path / "g.pt").stat().st_size
    assert report.encodings == {"dense": len(module.generator_ema.state_dict())}
    assert report.nonzero == report.params
    # one blob instead of a zip record per tensor: no bigger than torch.save of the state_dict
    assert report.exported_bytes <= report.dense_bytes == report.configured_bytes


def test_80_percent_sparse_generator_round_trips_and_is_much_smaller(tmp_path):
    module = medium_module()
    (tmp_path / "dense").mkdir(), (tmp_path / "sparse").mkdir(), (tmp_path / "before").mkdir()
    before = export_generator(module, tmp_path / "before" / "g.pt", spec=MEDIUM_SPEC)
    sparsify(module.generator_ema, 0.8)
    dense = export_generator(module, tmp_path / "dense" / "g.pt", spec=MEDIUM_SPEC, sparse=False)
    sparse = export_generator(module, tmp_path / "sparse" / "g.pt", spec=MEDIUM_SPEC)
    assert_round_trip(module, tmp_path / "sparse" / "g.pt")
    assert_round_trip(module, tmp_path / "dense" / "g.pt")
    assert sparse.nonzero < 0.3 * sparse.params
    # stored dense, zeros cost as much as values (up to the pickled checksum and zip padding)
    assert dense.exported_bytes == pytest.approx(before.exported_bytes, rel=0.01)
    # weights at 20% density as a bitmask: 1/8 + 0.2 * 4 bytes instead of 4 per value
    assert sparse.exported_bytes < 0.4 * dense.exported_bytes
    assert sparse.encodings["bitmask"] == 3  # the three weight tensors; norms and buffers stay dense
    assert "exported (sparse where smaller)" in sparse.table() and "zeros" in sparse.table()


def test_structurally_pruned_generator_with_a_cut_latent_round_trips(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(ema_decay=0.9).eval()
    module.edits.append("generator", cut_units(module, "generator", {"stem.0": torch.tensor([0, 2, 3])}, torch.tensor([0, 1, 2, 4, 5, 7])))
    assert module.z_dim == 6 and module.generator_ema.stem[0].weight.shape == (48, 6)
    report = export_generator(module, tmp_path / "g.pt", spec=TINY_SPEC)
    generator = assert_round_trip(module, tmp_path / "g.pt")
    assert generator.stem[0].weight.shape == (48, 6)
    assert report.dense_bytes < report.configured_bytes
    record = read_export(tmp_path / "g.pt")
    assert record["version"] == 2 and record["edits"] == module.edits.only("generator") and record["edits"].kept("generator") == {"stem.0": [0, 2, 3], INPUT_KEY: [0, 1, 2, 4, 5, 7]}


def test_pruned_then_factorized_generator_round_trips(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(ema_decay=0.9).eval()
    module.edits.append("generator", cut_units(module, "generator", {"stem.0": torch.tensor([1, 2, 3])}))
    module.edits.append("generator", factorize_module(module, {"generator.stem.0": 2})["generator"])
    export_generator(module, tmp_path / "g.pt", spec=TINY_SPEC)
    generator = assert_round_trip(module, tmp_path / "g.pt")
    assert generator.stem[0][0].weight.shape == (2, 8) and generator.stem[0][1].weight.shape == (48, 2)


def test_a_module_built_in_python_needs_a_spec(tmp_path):
    with pytest.raises(ConfigError, match="generator_spec"):
        export_generator(tiny_module(), tmp_path / "g.pt")


# ---------------------------------------------------------------------- the command
@pytest.mark.slow
def test_export_command_on_a_pruned_and_factorized_train_py_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    args = tiny_run_args(
        run, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null",
        "--trainer.max_epochs", "2", "--callbacks", "prune,lowrank", "--prune.start_epoch", "0",
        "--prune.generator_amount", "0.5", "--prune.metric", "none", "--lowrank.epoch", "1", "--lowrank.metric", "none",
    )
    assert main(args) == 0
    ckpt = run / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert export_command.main(["--ckpt_path", str(ckpt), "--out", str(tmp_path / "g.pt")]) == 0
    out = capsys.readouterr().out
    for text in ("checkpoint (all training state)", "generator as configured, dense", "exported (sparse where smaller)", "wrote"):
        assert text in out
    module = GANModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert [type(e) for e in module.edits.edits("generator")] == [Cut, Factorize] and module.edits.ranks("generator") == {"stem.0": 2}  # cut, then factorized
    generator = assert_round_trip(module, tmp_path / "g.pt")
    assert generator.stem[0][1].weight.shape == (32, 2)  # 2 of 4 feature maps of 16 features left
    assert export_command.main(["--ckpt_path", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x.pt")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --ckpt_path") and "does not exist" in errors[0]


# ---------------------------------------------------------------------- refusals
def _flip_a_blob_byte(src, dst) -> None:
    record = torch.load(src, weights_only=True)
    record["blob"][len(record["blob"]) // 2] ^= 0xFF
    torch.save(record, dst)


@pytest.mark.parametrize(
    "make,why",
    [
        (lambda p, good: p.write_bytes(b"\x00garbage" * 100), "unreadable"),
        (lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), "unreadable"),
        (lambda p, good: torch.save({"state_dict": {"w": torch.zeros(2)}}, p), "format marker"),
        (lambda p, good: torch.save([1, 2, 3], p), "format marker"),
        (lambda p, good: _flip_a_blob_byte(good, p), "checksum"),
    ],
    ids=["garbage", "truncated", "checkpoint", "list", "bit_flip"],
)
def test_corrupt_or_foreign_files_are_refused_in_one_sentence(tmp_path, make, why):
    good = tmp_path / "good.pt"
    export_generator(tiny_module(), good, spec=TINY_SPEC)
    bad = tmp_path / "bad.pt"
    make(bad, good)
    with pytest.raises(CheckpointError) as info:
        load_exported(bad)
    message = str(info.value)
    assert str(bad) in message and why in message and "is not a gan-lightning generator export" in message
    assert "\n" not in message


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_exported(tmp_path / "nope.pt")
