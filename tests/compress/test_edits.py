"""gan_lightning.compress.edits: one ordered record of cuts, factorizations and replacements per
network, replayed in order on a fresh network, serialised as plain data, and read from the three
records written before it."""

from __future__ import annotations

import io

import pytest
import torch

from gan_lightning.compress.edits import VERSION, Cut, EditRecord, Edit, Factorize, Replace, old_edits
from gan_lightning.compress.lowrank import LowRank, factorize_module
from gan_lightning.compress.pruning import cut_units
from gan_lightning.compress.surgery import INPUT_KEY
from gan_lightning.errors import CheckpointError
from gan_lightning.networks import DCGANGenerator
from tests.helpers import tiny_module

SPEC = {"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": {"z_dim": 8, "image_size": 8, "channels": 1, "width": 4}}


def cut_factorize_cut():
    """A module whose generator was cut (latents too), factorized, then cut in its factor."""
    torch.manual_seed(0)
    module = tiny_module()
    module.edits.append("generator", cut_units(module, "generator", {"stem.0": torch.tensor([0, 1, 3])}, keep_inputs=torch.tensor([0, 2, 3, 4, 5, 6, 7])))
    module.edits.append("generator", factorize_module(module, {"generator.stem.0": 3})["generator"])
    # a cut made after the factorization names a factor: the 3 rank units of stem.0.0
    module.edits.append("generator", cut_units(module, "generator", {"stem.0.0": torch.tensor([0, 2])}))
    return module


def test_the_record_is_the_edits_in_order_and_replays_them_on_a_fresh_network():
    module = cut_factorize_cut()
    assert module.edits.edits("generator") == [Cut({"stem.0": [0, 1, 3]}, [0, 2, 3, 4, 5, 6, 7]), Factorize({"stem.0": 3}), Cut({"stem.0.0": [0, 2]})]
    fresh = module.edits.replay("generator", DCGANGenerator(z_dim=8, image_size=8, channels=1, width=4), torch.zeros(2, 8))
    assert isinstance(fresh.stem[0], LowRank) and fresh.stem[0][0].weight.shape == (2, 7) and fresh.z_dim == 7
    fresh.load_state_dict(module.generator.state_dict())  # every shape matches
    z = torch.randn(4, 7)
    module.generator.eval(), fresh.eval()
    assert torch.equal(fresh(z), module.generator(z))


def test_order_matters_a_cut_of_a_factor_before_the_factorization_is_refused():
    record = cut_factorize_cut().edits
    swapped = EditRecord({"generator": [record.edits("generator")[2], record.edits("generator")[1]]})
    with pytest.raises(CheckpointError, match="^layer 'stem.0.0' is recorded as cut but DCGANGenerator has no such layer") as info:
        swapped.replay("generator", DCGANGenerator(z_dim=8, image_size=8, channels=1, width=4), torch.zeros(2, 8))
    assert "\n" not in str(info.value)


def test_replaying_an_already_rebuilt_network_changes_nothing():
    module = cut_factorize_cut()
    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    same = module.edits.replay("generator", module.generator, torch.zeros(2, module.z_dim))
    after = same.state_dict()
    assert same is module.generator and after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_state_is_plain_data_that_weights_only_loading_reads_back():
    record = cut_factorize_cut().edits
    record.append("generator", Replace(SPEC, {"class_path": "x.Y", "init_args": {}}))
    buffer = io.BytesIO()
    torch.save(record.to_state(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert state["version"] == VERSION and [e["kind"] for e in state["networks"]["generator"]] == ["cut", "factorize", "cut", "replace"]
    assert EditRecord.from_state(state) == record and EditRecord.from_state(state) != cut_factorize_cut().edits


def test_an_unknown_kind_or_a_newer_version_is_one_sentence():
    with pytest.raises(CheckpointError, match="of kind 'prune_heads' that this version does not know") as info:
        EditRecord.from_state({"version": VERSION, "networks": {"generator": [{"kind": "prune_heads"}]}})
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match=f"of version {VERSION + 1}; this code reads up to version {VERSION}"):
        EditRecord.from_state({"version": VERSION + 1, "networks": {}})


def test_derived_facts_are_queries_on_the_record():
    record = cut_factorize_cut().edits
    assert record.latent_size("generator", 8) == 7 and record.latent_size("discriminator", 8) == 8
    assert record.kept("generator") == {"stem.0": [0, 1, 3], INPUT_KEY: [0, 2, 3, 4, 5, 6, 7], "stem.0.0": [0, 2]}
    assert record.ranks("generator") == {"stem.0": 3} and record.compressed("generator") and not record.compressed("discriminator")
    record.append("generator", Cut({"stem.0.0": [1]}, [1, 2, 3]))  # positions among what the last cut left
    assert record.kept("generator")["stem.0.0"] == [2] and record.kept("generator")[INPUT_KEY] == [2, 3, 4]
    assert record.spec("generator", SPEC) == SPEC and record.replacement("generator") is None
    student = Replace({**SPEC, "init_args": {**SPEC["init_args"], "width": 2}}, SPEC)
    record.append("generator", student)
    # the edits before a replacement were the replaced network's
    assert record.replacement("generator") == student and record.spec("generator", SPEC) == student.spec
    assert record.latent_size("generator", 8) == 8 and not record.compressed("generator") and record.kept("generator") == {}
    built = record.replay("generator", DCGANGenerator(z_dim=8, image_size=8, channels=1, width=4), torch.zeros(2, 8))
    # the student's shapes, none of the earlier cuts
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in DCGANGenerator(**student.spec["init_args"]).state_dict().items()}


def test_the_old_records_become_the_order_they_were_replayed_in():
    structure = {"stem.0": [0, 1], INPUT_KEY: [2, 3, 4, 5, 6, 7], "stem.0.0": [0, 2]}
    assert old_edits(structure, {"stem.0": 3}) == [Cut({"stem.0": [0, 1]}, [2, 3, 4, 5, 6, 7]), Factorize({"stem.0": 3}), Cut({"stem.0.0": [0, 2]})]
    replaced = {**SPEC, "replaces": {"class_path": "a.B", "init_args": {}}}
    checkpoint = {"structure": {"discriminator": {"net.0": [1]}}, "lowrank": {"generator.stem.0": 2, "discriminator.net.6": 1}, "replaced": {"generator": replaced}}
    record = EditRecord.from_checkpoint(checkpoint)
    assert record.edits("generator") == [Replace(SPEC, replaced["replaces"]), Factorize({"stem.0": 2})]
    assert record.edits("discriminator") == [Cut({"net.0": [1]}), Factorize({"net.6": 1})]
    assert EditRecord.from_checkpoint({}) == EditRecord() and not EditRecord.from_checkpoint({})
    assert all(isinstance(e, Edit) for e in record.edits("generator"))
