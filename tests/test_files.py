"""A full or read-only disk: every output file is written beside its name and renamed into place,
so a refused write keeps the earlier file byte for byte, leaves no partial file, and is one
sentence. torch's zip writer hides the OSError in a RuntimeError ("unexpected pos ..."), which
these tests provoke for real, by handing torch a stream that refuses bytes as a full disk does."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest
import torch

from gan_lightning import files
from gan_lightning.core.checkpoint import AtomicCheckpointIO
from gan_lightning.errors import CheckpointError, ConfigError, WriteError


class FullDisk:
    """A stream on a disk with ``free`` bytes left: the kernel's ENOSPC after that."""

    def __init__(self, f, free: int) -> None:
        self.f, self.free = f, free

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= size
        return self.f.write(data)


def torch_save_on_full_disk(obj, free=1000):
    return lambda f: torch.save(obj, FullDisk(f, free))


def test_torch_hides_the_full_disk_in_a_runtime_error_whose_context_is_the_oserror(tmp_path):
    # the shape of the error that reached users as ~60 lines of traceback
    with open(tmp_path / "x", "wb") as f, pytest.raises(RuntimeError, match=r"unexpected pos \d+ vs \d+") as caught:
        torch.save({"w": torch.zeros(10_000)}, FullDisk(f, 1000))
    assert isinstance(caught.value.__context__, OSError) and caught.value.__context__.errno == errno.ENOSPC
    assert files.write_failure(caught.value, tmp_path) == "disk full"


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_keeps_the_earlier_file_byte_for_byte_and_no_partial(tmp_path):
    path = tmp_path / "g.pt"
    files.write_atomically(path, lambda f: torch.save({"w": torch.ones(3)}, f))
    before = path.read_bytes()
    with pytest.raises(WriteError, match=r"^could not write --out .*g\.pt \(disk full\); the earlier g\.pt is intact: free space or choose another --out$"):
        files.write_atomically(path, torch_save_on_full_disk({"w": torch.zeros(10_000)}))
    assert path.read_bytes() == before
    assert names(tmp_path) == ["g.pt"]


def test_the_checkpoint_writer_catches_torchs_runtime_error(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    before = path.read_bytes()
    real_save = torch.save
    with monkeypatch.context() as mp:
        mp.setattr(torch, "save", lambda obj, f: real_save(obj, FullDisk(f, 500)))
        with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*last\.ckpt \(disk full\); the earlier last\.ckpt is intact: .*--checkpoint\.dirpath, then resume"):
            io.save_checkpoint({"step": 2, "w": torch.zeros(10_000)}, path)
    assert path.read_bytes() == before
    assert names(tmp_path) == ["last.ckpt"]


def test_a_read_only_folder_is_named_and_nothing_is_left(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]))

    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(WriteError, match=r"could not write --out .*e\.json \(read-only file system\); nothing was written: choose another --out$"):
        files.write_atomically(tmp_path / "e.json", lambda f: f.write(b"{}"))
    monkeypatch.undo()
    assert names(tmp_path) == []


@pytest.mark.parametrize("exc", [ValueError("a bug"), KeyboardInterrupt()])
def test_other_errors_pass_unchanged_and_leave_no_partial_file(tmp_path, exc):
    def write(f):
        f.write(b"half")
        raise exc

    with pytest.raises(type(exc)):
        files.write_atomically(tmp_path / "g.pt", write)
    assert names(tmp_path) == []


def statvfs(flag=0, free=1):
    return lambda folder: SimpleNamespace(f_flag=flag, f_bfree=free, f_bavail=free)


@pytest.mark.parametrize(
    "stat, why",
    [(statvfs(free=0), "disk full"), (statvfs(flag=os.ST_RDONLY), "read-only file system"), (statvfs(), "the file system refused the write: [enforce fail")],
)
def test_torch_writing_to_a_path_leaves_no_oserror_so_the_folder_is_asked(tmp_path, monkeypatch, stat, why):
    # torch.save(obj, "path") and torch.jit.save write through their own C++ stream
    monkeypatch.setattr(files.os, "statvfs", stat)
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert files.write_failure(error, tmp_path).startswith(why)


def test_errors_that_are_not_refused_writes_are_left_alone(tmp_path):
    assert files.write_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), tmp_path) is None
    assert files.write_failure(OSError(errno.ENOENT, "No such file"), tmp_path) is None
    assert files.write_failure(ConfigError("already a sentence"), tmp_path) is None


def test_a_torchscript_export_on_a_full_disk_is_one_sentence_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from gan_lightning.deploy import runtimes
    from gan_lightning.networks import DCGANGenerator

    def full_disk(generator, z, path, metadata):
        path.write_bytes(b"half an archive")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setitem(runtimes.WRITERS, "torchscript", full_disk)
    monkeypatch.setattr(files.os, "statvfs", statvfs(free=0))
    with pytest.raises(WriteError, match=r"could not write --out .*g\.ts \(disk full\); nothing was written"):
        runtimes.write_verified(DCGANGenerator(z_dim=8, image_size=8, channels=1, width=4), 8, tmp_path / "g.ts", "torchscript", {})
    assert names(tmp_path) == []


def test_images_the_disk_could_not_hold_are_removed_again(tmp_path, monkeypatch):
    """generate's and synthesize's PNG folders: no half set is left behind (the user's own file stays)."""
    from gan_lightning.commands import generate

    written = []

    def save_png(pixels, path):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        path.write_bytes(b"png")
        written.append(path)

    monkeypatch.setattr(generate, "save_png", save_png)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "000001.png").write_bytes(b"the user's own")  # replaced, as --overwrite says
    pixels = torch.zeros(10, 8, 8, 1, dtype=torch.uint8)
    with pytest.raises(WriteError, match=r"could not write image 4 of 10 into --out .*ds \(disk full\); the images written before it were removed again: free space"):
        generate.write_images(pixels, tmp_path / "ds")
    assert names(tmp_path / "ds") == ["000001.png"]
