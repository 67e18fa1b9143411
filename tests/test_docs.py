"""The documentation: the site builds in strict mode, its flag reference comes from the code, and
the pages GitHub shows outside the site link to files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callbacks import CALLBACKS
from tests.helpers import REPO

# [text](target) and ![alt](target); a target with a scheme (https:, mailto:) is not a file
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:")


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file is missing; ``/x`` is GitHub's repository-root form."""
    broken = []
    for target in LINK.findall(page.read_text()):
        path = target.split("#")[0]
        if SCHEME.match(target) or not path:
            continue
        resolved = REPO / path.lstrip("/") if path.startswith("/") else page.parent / path
        if not resolved.exists():
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", ["README.md", "benchmarks/README.md"])
def test_links_of_the_pages_outside_the_site_resolve(page):
    assert broken_links(REPO / page) == []


def test_a_missing_link_target_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [web](https://example.org) [gone](nowhere.md#x) ![img](img/missing.png) [anchor](#here)")
    assert broken_links(page) == ["nowhere.md#x", "img/missing.png"]


def test_every_plug_in_is_in_the_front_page_table():
    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `")]
    assert sorted(name for name in CALLBACKS if not any(line.startswith(f"| `{name}` |") for line in rows)) == []


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.slow
def test_the_flag_reference_is_generated_from_help_not_committed(site):
    assert not (REPO / "docs" / "reference" / "flags.md").exists()
    page = (site / "reference" / "flags" / "index.html").read_text()
    # every registered plug-in has its own section, holding the options its class declares
    assert sorted(name for name in CALLBACKS if f'id="{name}"' not in page) == []
    for flag in ("--prune.generator_amount", "--distill.student", "--balance.mode", "--clip.clip_value"):
        assert flag in page
    for command in ("evaluate", "export", "generate", "synthesize"):
        assert f'id="{command}-command"' in page


@pytest.mark.slow
def test_the_benchmarks_page_and_its_json_are_in_the_site(site):
    assert (site / "benchmarks" / "index.html").exists()
    committed = sorted(p.name for p in (REPO / "benchmarks" / "measured").glob("*.json"))
    assert committed and sorted(p.name for p in (site / "benchmarks" / "measured").glob("*.json")) == committed


def test_the_pareto_front_keeps_only_the_runs_nothing_beats():
    from benchmarks.plot_pareto import pareto_front

    dense, small, worse_small, middle = {"g_macs": 4, "fid": 30}, {"g_macs": 1, "fid": 32}, {"g_macs": 1, "fid": 38}, {"g_macs": 2, "fid": 35}
    assert pareto_front([dense, worse_small, middle, small]) == [small, dense]
