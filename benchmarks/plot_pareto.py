"""FID against generator MACs, from the JSON that benchmarks/compress_paths.py wrote.

Every point is a row of the JSON (nothing is measured here), so the picture changes only when a
benchmark is rerun. Lower left is better; the line joins the runs that no other run beats on
both MACs and FID (the Pareto front).

    python benchmarks/plot_pareto.py [--json benchmarks/measured/compress_paths_digits.json] [--out docs/img/pareto.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def points(result: dict) -> list[dict]:
    """One point per run of every training seed: the dense references, then each variant in each form."""
    out = []
    for seed, runs in result["seeds"].items():
        for key, label in (("dense", f"dense, {result['dense_epochs']} + {result['after_epochs']} epochs"),
                           ("teacher", f"dense, {result['dense_epochs']} epochs")):
            out.append({"label": label, "seed": seed, "dense": True, "teacher": key == "teacher", **runs[key]})
        for row in runs["rows"]:
            label = f"{row['variant']} ({row['form'].replace('_', ' ')}), x{row['mac_reduction']:g} fewer"
            out.append({"label": label, "seed": seed, "dense": False, "teacher": False, **row})
    return out


def pareto_front(pts: list[dict]) -> list[dict]:
    """The points that no other point beats on both MACs and FID, cheapest first."""
    front = [p for p in pts if not any(q["g_macs"] <= p["g_macs"] and q["fid"] < p["fid"] or q["g_macs"] < p["g_macs"] and q["fid"] <= p["fid"] for q in pts)]
    return sorted(front, key=lambda p: p["g_macs"])


def plot(result: dict, out: Path, source: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or a server
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pts = points(result)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for p in pts:
        ax.errorbar(p["g_macs"] / 1e6, p["fid"], yerr=p["fid_std"], fmt="s" if p["dense"] else "o", capsize=3,
                    color="0.35" if p["dense"] else "tab:blue", mfc="white" if p["teacher"] else None)
        ax.annotate(f"{p['label']}: {p['modes']:.3g} class{'' if p['modes'] == 1 else 'es'}", (p["g_macs"] / 1e6, p["fid"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = pareto_front(pts)
    ax.plot([p["g_macs"] / 1e6 for p in front], [p["fid"] for p in front], "--", color="tab:orange", lw=1, label="Pareto front")
    ax.set_xscale("log")
    # log FID too: a collapsed run (FID in the hundreds) and runs near the dense one (tens) both stay readable
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([10, 20, 50, 100, 200, 500, 1000, 2000]))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    # plain numbers at round values: the default log labels (2x10^-1, ...) collide at this width
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.125, 0.25, 0.5, 1, 2, 4, 8]))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("generator MACs per sample (millions, log scale)")
    first = next(iter(result["seeds"].values()))["dense"]
    ax.set_ylabel(f"FID (log scale), mean ± std over latent seeds {','.join(map(str, first['eval_seeds']))}")
    ax.set_title(f"{result['tag']}: compression on train.py's path ({result['dense_epochs']} + {result['after_epochs']} epochs, "
                 f"seed {','.join(result['seeds'])})", fontsize=10)
    ax.margins(x=0.25, y=0.15)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.text(0.01, 0.01, f"data: {source}", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "measured" / "compress_paths_digits.json")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "pareto.png")
    args = parser.parse_args()
    source = args.json.resolve().relative_to(REPO).as_posix() if args.json.resolve().is_relative_to(REPO) else str(args.json)
    plot(json.loads(args.json.read_text()), args.out, source)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
