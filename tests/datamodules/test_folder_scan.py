"""A data folder means what it looks like: each real file once however many names lead to it, a
walk that ends in a loop, named pipes and broken links left out (open() on a pipe blocks
forever), and links out of --data.root refused unless --data.follow_links."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from datamodules import ImageFolderDataModule
from datamodules.folder_scan import scan_folder
from gan_lightning.errors import DataError


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (len(path.name) * 20, 0, 0)).save(path)
    return path


def any_name(name: str) -> bool:
    return name.endswith(".png")


@pytest.fixture
def classes(tmp_path):
    root = tmp_path / "images"
    for c in ("a", "b"):
        for i in range(5):
            png(root / c / f"{i}.png")
    return root


def test_a_symlink_loop_adds_no_sample_and_the_walk_ends(classes, caplog):
    os.symlink("..", classes / "a" / "loop")
    os.symlink("../a", classes / "b" / "a_again")
    with caplog.at_level(logging.WARNING):
        data = ImageFolderDataModule(str(classes), image_size=8, channels=1)
    assert len(data.paths) == 10 and len(set(p.resolve() for p in data.paths)) == 10
    assert data.classes == ["a", "b"]  # a loop is no third class
    assert "2 links lead to a file or folder already found" in caplog.text


def test_train_and_validation_share_no_file(classes):
    os.symlink("..", classes / "a" / "loop")
    data = ImageFolderDataModule(str(classes), image_size=8, channels=1, val_fraction=0.3)
    train, val = data.load_splits()
    train_files = {data.paths[i].resolve() for i in train.indices}
    assert train_files.isdisjoint({data.paths[i].resolve() for i in val.indices})


def test_links_and_hard_links_to_one_file_give_one_sample_under_the_first_name(classes):
    os.symlink("0.png", classes / "a" / "z_copy.png")
    os.link(classes / "b" / "0.png", classes / "b" / "hard.png")
    os.symlink("a", classes / "c_alias")  # a first-level alias of a class folder is no class
    data = ImageFolderDataModule(str(classes), image_size=8, channels=1)
    assert len(data.paths) == 10 and classes / "a" / "0.png" in data.paths and classes / "b" / "0.png" in data.paths
    assert data.classes == ["a", "b"]


def test_named_pipes_and_broken_links_are_skipped_naming_them(classes, caplog):
    os.mkfifo(classes / "a" / "x.png")
    os.symlink("gone.png", classes / "a" / "broken.png")
    with caplog.at_level(logging.WARNING):
        data = ImageFolderDataModule(str(classes), image_size=8, channels=1)
    assert len(data.paths) == 10
    assert "skipped 2 entries that are not a regular file" in caplog.text and "a/x.png" in caplog.text and "a/broken.png" in caplog.text


@pytest.mark.parametrize("target", ["folder", "file"])
def test_a_link_leaving_the_root_is_refused_unless_opted_in(classes, target):
    outside = png(classes.parent / "private" / "secret.png")
    os.symlink(outside.parent if target == "folder" else outside, classes / "a" / ("more" if target == "folder" else "s.png"))
    with pytest.raises(DataError, match=r"holds a link a/(more|s\.png) that leads outside it .*--data\.follow_links true") as error:
        ImageFolderDataModule(str(classes), image_size=8, channels=1)
    assert str(error.value).count(".") >= 1 and "\n" not in str(error.value)
    data = ImageFolderDataModule(str(classes), image_size=8, channels=1, follow_links=True)
    assert outside in [p.resolve() for p in data.paths] and len(data.paths) == 11


def test_a_root_that_is_itself_a_link_is_read(classes, tmp_path):
    os.symlink(classes, tmp_path / "linked")
    assert len(scan_folder(tmp_path / "linked", any_name).files) == 10


def test_links_that_stay_inside_the_root_are_read(classes):
    png(classes.parent / "elsewhere.png")
    os.symlink("../b/3.png", classes / "a" / "from_b.png")  # inside: read (once)
    scan = scan_folder(classes, any_name)
    # the file's own name wins over a link's, though the link comes first in the walk
    assert len(scan.files) == 10 and [p.name for p in scan.repeats] == ["from_b.png"]
    assert classes / "b" / "3.png" in scan.files


def test_the_order_does_not_depend_on_the_listing(classes):
    first = scan_folder(classes, any_name).files
    assert first == sorted(first)
