"""Battery: data folders that do not mean what they look like (links, loops, named pipes), and a
stop signal that arrives while a batch is blocked."""

from __future__ import annotations

import os
import time

from PIL import Image

from tests.reliability.battery import Case, Workspace
from tests.reliability.cases_cli import tiny
from tests.reliability.cases_data import NO_ERROR, QUICK, checkpoint_written, cifar, cifar_run, image_run

CATEGORY, STOP = "folder links and special files", "stop signals"
OUTSIDE = r"error: --data\.root .*images holds a link {} that leads outside it \(to .*\); pass --data\.follow_links true"
SKIPPED = r"skipped {} not a regular file \(a named pipe, socket, device or broken link\): {}"
REPEATS = r"--data\.root .*images: {} to a file or folder already found \(a loop or a second name\), so each file is read once"


def labelled(ws: Workspace, per_class: int = 5) -> str:
    """``images/`` with two class folders of ``per_class`` small PNGs each."""
    root = ws.path("images")
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 12), (40 * i, 100 * c, 0)).save(root / name / f"{i}.png")
    return str(root)


def with_fifo(ws: Workspace) -> str:
    root = labelled(ws)
    for name in ("x", "y", "z"):  # several, so that the seeded split puts one in training
        os.mkfifo(f"{root}/cats/{name}.png")  # open() on it blocks until a writer comes: never
    return root


def with_loop(ws: Workspace) -> str:
    root = labelled(ws)
    os.symlink("..", f"{root}/cats/all")  # images/cats/all/cats/all/... : every image again, 40 levels deep
    return root


def sibling(ws: Workspace) -> str:
    """A folder beside ``images/`` (someone else's data) and ``images/more`` linking to it."""
    root = labelled(ws)
    other = ws.path("private")
    other.mkdir()
    Image.new("RGB", (12, 12), (1, 2, 3)).save(other / "secret.png")
    os.symlink(other, f"{root}/more")
    return root


def file_outside(ws: Workspace) -> str:
    root = labelled(ws)
    Image.new("RGB", (12, 12), (1, 2, 3)).save(ws.path("secret.png"))
    os.symlink(ws.path("secret.png"), f"{root}/cats/secret.png")
    return root


def second_names(ws: Workspace) -> str:
    root = labelled(ws)
    os.symlink("0.png", f"{root}/cats/copy.png")
    os.symlink("../cats/1.png", f"{root}/dogs/also_a_cat.png")
    os.link(f"{root}/dogs/0.png", f"{root}/dogs/hard.png")
    return root


def broken_links(ws: Workspace) -> str:
    root = labelled(ws)
    os.symlink("moved_away.png", f"{root}/cats/gone.png")
    os.symlink("self.png", f"{root}/cats/self.png")
    return root


def cifar_fifo(ws: Workspace, folder) -> None:
    (folder / "data_batch_1").unlink()
    os.mkfifo(folder / "data_batch_1")


def stop_was_quick(ws: Workspace) -> None:
    took = time.time() - float(ws.path("sigterm_sent").read_text())
    assert took < 30, f"the stop landed {took:.0f} s after the signal"


def stop_was_quick_and_kept_the_checkpoint(ws: Workspace) -> None:
    stop_was_quick(ws)
    assert list(ws.path("runs").rglob("last.ckpt")), "the newest checkpoint it names is gone"


def blocked_batch(ws: Workspace, *extra: str) -> list[str]:
    return tiny(ws, *QUICK, "--trainer.max_epochs", "2", "--data", "tests.reliability.stalled_data.StalledDigits",
                "--data.image_size", "8", "--data.batch_size", "16", "--data.mark", str(ws.path("sigterm_sent")), *extra)


def device_file(ws: Workspace) -> str:
    root = labelled(ws)
    os.symlink("/dev/zero", f"{root}/cats/zero.png")  # reading it never ends
    return root


CASES = [
    Case("folder-fifo-named-png", CATEGORY, "train", lambda ws: image_run(ws, with_fifo(ws)),
         SKIPPED.format("3 entries that are", r"cats/x\.png, cats/y\.png, cats/z\.png"),
         rc=0, check=checkpoint_written),
    Case("folder-symlink-loop", CATEGORY, "train", lambda ws: image_run(ws, with_loop(ws)), REPEATS.format("1 link leads") + r": cats/all",
         rc=0, check=checkpoint_written, slow=True),
    Case("folder-link-to-sibling-folder", CATEGORY, "train", lambda ws: image_run(ws, sibling(ws)), OUTSIDE.format("more")),
    Case("folder-link-to-file-outside", CATEGORY, "train", lambda ws: image_run(ws, file_outside(ws)), OUTSIDE.format(r"cats/secret\.png")),
    Case("folder-link-outside-opted-in", CATEGORY, "train", lambda ws: image_run(ws, sibling(ws), "--data.follow_links", "true"), NO_ERROR,
         rc=0, check=checkpoint_written, slow=True),
    Case("folder-second-names-of-a-file", CATEGORY, "train", lambda ws: image_run(ws, second_names(ws)), REPEATS.format("3 links lead"),
         rc=0, check=checkpoint_written, slow=True),
    Case("folder-broken-and-self-links", CATEGORY, "train", lambda ws: image_run(ws, broken_links(ws)),
         SKIPPED.format("2 entries that are", r"cats/gone\.png, cats/self\.png"), rc=0, check=checkpoint_written, slow=True),
    Case("folder-cifar-batch-is-a-fifo", CATEGORY, "train", lambda ws: cifar_run(ws, cifar(ws, cifar_fifo)),
         r"error: CIFAR-10 files are missing: looked for data_batch_1 in .*--data\.root"),
    Case("stop-sigterm-during-blocked-batch", STOP, "train", blocked_batch,
         r"error: training stopped by SIGTERM without a new checkpoint, because no batch boundary came within 2 s of the signal"
         r".*; the newest checkpoint is \S+last\.ckpt; resume with: python train\.py ",
         rc=143, env={"GAN_LIGHTNING_STOP_TIMEOUT": "2"}, check=stop_was_quick_and_kept_the_checkpoint, slow=True),
    # The first batch never comes from the worker: nothing is saved yet, and the sentence says so.
    Case("stop-sigterm-while-a-worker-is-blocked", STOP, "train",
         lambda ws: blocked_batch(ws, "--data.num_workers", "1", "--data.stall_batch", "0"),
         r"error: training stopped by SIGTERM without a new checkpoint, .*; no checkpoint had been written yet",
         rc=143, env={"GAN_LIGHTNING_STOP_TIMEOUT": "2"}, check=stop_was_quick, slow=True),
    Case("stop-sigterm-during-blocked-sanity-check", STOP, "train",
         lambda ws: blocked_batch(ws, "--data.stall_split", "val", "--data.stall_batch", "0"),
         r"error: training stopped by SIGTERM without a new checkpoint, .*; no checkpoint had been written yet",
         rc=143, env={"GAN_LIGHTNING_STOP_TIMEOUT": "2"}, check=stop_was_quick, slow=True),
    # Between Lightning's SIGTERM handler and its loops' first hook: the dataloaders, the ranks' barrier.
    Case("stop-sigterm-while-the-dataloader-is-made", STOP, "train",
         lambda ws: blocked_batch(ws, "--data.stall_split", "loader", "--trainer.num_sanity_val_steps", "0"),
         r"error: training stopped by SIGTERM without a new checkpoint, .*; no checkpoint had been written yet",
         rc=143, env={"GAN_LIGHTNING_STOP_TIMEOUT": "2"}, check=stop_was_quick, slow=True),
    Case("stop-ctrl-c-during-blocked-batch", STOP, "train", lambda ws: blocked_batch(ws, "--data.signum", "2"),
         r"error: training stopped by SIGINT without a new checkpoint, .*; the newest checkpoint is \S+last\.ckpt; resume with: ",
         rc=130, env={"GAN_LIGHTNING_STOP_TIMEOUT": "2"}, check=stop_was_quick_and_kept_the_checkpoint, slow=True),
    Case("folder-link-to-a-device", CATEGORY, "train", lambda ws: image_run(ws, device_file(ws)), OUTSIDE.format(r"cats/zero\.png")),
    Case("folder-link-to-a-device-opted-in", CATEGORY, "train", lambda ws: image_run(ws, device_file(ws), "--data.follow_links", "true"),
         SKIPPED.format("1 entry that is", r"cats/zero\.png"), rc=0, check=checkpoint_written, slow=True),
    Case("stop-timeout-not-a-number", STOP, "train", lambda ws: tiny(ws, *QUICK),
         r"error: GAN_LIGHTNING_STOP_TIMEOUT must be a number of seconds above 0 \(default 20\), got 'soon'",
         env={"GAN_LIGHTNING_STOP_TIMEOUT": "soon"}),
]
