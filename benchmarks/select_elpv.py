"""Model selection on ELPV: does ``edgetl select``'s ranking agree with fine-tuned accuracy?

Runs ``edgetl select`` on ELPV's seed-0 train split for a device profile (default cpu-x86_64, this
host: latency measured), prints its table, then reads the fine-tuned test results of the same
candidates from ``benchmarks/elpv.py`` runs (``RUNS/<recipe>/results.json``, seed 0, the default
recipe with only the backbone and input size changed) and prints Kendall's tau between each score
(LogME, k-NN) and the fine-tuned decision accuracy and ROC AUC, with the exact one-sided p-value of
a tau at least that large under random rankings. Recipes not (yet) trained are listed as missing.

    python benchmarks/select_elpv.py
    python benchmarks/select_elpv.py --profile raspberry-pi-4 --out runs/select-elpv-pi4
    python benchmarks/select_elpv.py --markdown /tmp/select.md

The candidates' recipes: ``defaults`` (efficientnet_lite0 at 224 px), ``lite2-260-teacher``
(efficientnet_lite2 at 260 px) and ``select-<backbone>-<size>`` (e.g. ``select-lite1-208``), trained with
``python benchmarks/elpv.py --recipe select-lite1-208 --seeds 0 --set backbone=efficientnet_lite1
--set input_size=208 --no-int8``.

(Not ``benchmarks/select.py``: run as a script, that name would shadow Python's own ``select``
module, which ``subprocess`` imports.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

from _common import add_state_options, start

FIXED_RECIPES = {"defaults": ("efficientnet_lite0", 224), "lite2-260-teacher": ("efficientnet_lite2", 260)}
SAME_PROTOCOL = {"backbone", "input_size"}  # overrides a comparable recipe may have
TARGETS = (("decision_accuracy", "accuracy"), ("roc_auc", "ROC AUC"))
SCORES = (("logme", "LogME"), ("knn", "k-NN"))


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Return Kendall's tau-b of two equally long sequences (ties in either count as neither order)."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif (dx > 0) == (dy > 0):
            concordant += 1
        else:
            discordant += 1
    denominator = ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")


def p_value(x: list[float], y: list[float], tau: float) -> float:
    """Return the share of the orderings of ``y`` whose tau with ``x`` is at least ``tau`` (exact, n <= 8)."""
    if len(x) > 8:
        return float("nan")
    taus = [kendall_tau(x, list(p)) for p in itertools.permutations(y)]
    return sum(t >= tau - 1e-12 for t in taus) / len(taus)


def recipe_candidate(name: str) -> tuple[str, int] | None:
    """Return ``(backbone, size)`` a recipe name stands for, or None when it is not a selection candidate."""
    if name in FIXED_RECIPES:
        return FIXED_RECIPES[name]
    m = re.fullmatch(r"select-lite([012])-(\d+)", name)
    return (f"efficientnet_lite{m.group(1)}", int(m.group(2))) if m else None


def fine_tuned(runs: Path, seed: int, wanted: list[tuple[str, int]]) -> tuple[dict, list[str]]:
    """Return ``({(backbone, size): float metrics of the seed}, notes on what is missing or left out)``."""
    found, notes = {}, []
    for results in sorted(runs.glob("*/results.json")):
        cand = recipe_candidate(results.parent.name)
        if cand is None:
            continue
        data = json.loads(results.read_text())
        extra = set(data.get("overrides", {})) - SAME_PROTOCOL
        if extra:
            notes.append(f"{results.parent.name}: left out, its recipe also changes {sorted(extra)}")
            continue
        rows = [r for r in data.get("rows", []) if r.get("seed") == seed]
        if rows:
            found[cand] = rows[0]["float"]
    for cand in wanted:
        if cand not in found:
            notes.append(f"{cand[0]}@{cand[1]}: no fine-tuned result for seed {seed} in {runs} (not trained yet?)")
    return found, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/elpv-seed0/train", help="the ELPV train split the candidates were fine-tuned on")
    parser.add_argument("--profile", default="cpu-x86_64", help="device profile [cpu-x86_64: this host, measured]")
    parser.add_argument("--out", default="runs/select-elpv", help="select's output folder (select.json, select.png, cache/)")
    parser.add_argument("--runs", default="runs/bench-elpv", help="benchmarks/elpv.py's output folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed of the fine-tuned results")
    parser.add_argument("--max-images", type=int, default=1000)
    parser.add_argument("--no-measure", action="store_true", help="estimate latencies even on the profile's device")
    add_state_options(parser)
    args = parser.parse_args()
    bench = start(args)

    from rich.console import Console

    from edgetl.selection import SelectOptions, select

    options = SelectOptions(profile=args.profile, max_images=args.max_images, measure=not args.no_measure)
    result = select(args.data, args.out, options)
    console = Console(width=110)
    console.print(result.to_rich())
    console.print(f"recommended: {result.reason}", highlight=False)
    print(f"select took {result.seconds:.0f} s")

    by_cand = {(r.backbone, r.size): r for r in result.rows}
    tuned, notes = fine_tuned(Path(args.runs), args.seed, list(by_cand))
    common = [c for c in by_cand if c in tuned]
    lines = [f"Fine-tuned test results (seed {args.seed}) for {len(common)} of {len(by_cand)} candidates:", "",
             "| candidate | LogME | k-NN | fine-tuned accuracy | fine-tuned ROC AUC |", "|---|---:|---:|---:|---:|"]
    for c in sorted(common, key=lambda c: -by_cand[c].logme):
        r, t = by_cand[c], tuned[c]
        lines.append(f"| {r.name} | {r.logme:.3f} | {r.knn:.1%} | {t['decision_accuracy']:.2%} | {t['roc_auc']:.4f} |")
    lines += ["", "| score | vs | Kendall's tau | one-sided p | n |", "|---|---|---:|---:|---:|"]
    taus = {}
    for (skey, sname), (tkey, tname) in itertools.product(SCORES, TARGETS):
        x = [getattr(by_cand[c], skey) for c in common]
        y = [tuned[c][tkey] for c in common]
        tau = kendall_tau(x, y) if len(common) >= 2 else float("nan")
        p = p_value(x, y, tau) if len(common) >= 2 else float("nan")
        taus[f"{skey}_vs_{tkey}"] = {"tau": tau, "p": p, "n": len(common)}
        lines.append(f"| {sname} | {tname} | {tau:+.3f} | {p:.3f} | {len(common)} |")
    lines += ["", *(f"- {n}" for n in notes)]
    figures = "\n".join(lines)
    print(figures)
    bench.end()
    summary = {"select": result.to_dict(), "fine_tuned": {f"{b}@{s}": tuned[(b, s)] for b, s in common},
               "kendall": taus, "notes": notes, "machine": bench.machine()}  # fmt: skip
    from edgetl_runtime.atomic import write_json

    write_json(Path(args.out) / "ranking.json", summary)
    print(f"wrote {Path(args.out) / 'ranking.json'}")
    return bench.finish(figures)


if __name__ == "__main__":
    sys.exit(main())
