"""The result of ``edgetl select``: ranked rows, Pareto front, recommendation, table, JSON and plot.

>>> pareto_front([(1.0, 10.0), (0.5, 5.0), (0.4, 8.0), (0.9, None)])
[True, True, False, False]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .latency import Latency
from .scores import NegativeTransfer

__all__ = ["CandidateResult", "Selection", "pareto_front", "recommend", "latency_source", "plot_selection"]


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's scores, compute and latency; ``rank`` 1 is the highest LogME."""

    backbone: str
    size: int
    logme: float
    knn: float  # leave-one-out k-NN balanced accuracy, 0..1
    macs: int
    latency: Latency
    transfer: NegativeTransfer | None = None  # pretrained vs random-init (None: not checked)
    rank: int = 0
    pareto: bool = False
    within_budget: bool | None = None  # None: latency unknown

    @property
    def name(self) -> str:
        return f"{self.backbone}@{self.size}"

    @property
    def at_risk(self) -> bool:
        return self.transfer is not None and self.transfer.at_risk

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["name"] = self.name
        out["latency"] = asdict(self.latency)
        if self.transfer is not None:
            out["transfer"] = {**asdict(self.transfer), "logme_gain": self.transfer.logme_gain,
                               "knn_gain": self.transfer.knn_gain, "at_risk": self.transfer.at_risk,
                               "reason": self.transfer.reason()}  # fmt: skip
        return out


def pareto_front(points: Sequence[tuple[float, float | None]]) -> list[bool]:
    """Return, per ``(score, latency_ms)``, whether no other point is at least as good on both and better on one.

    Higher score and lower latency are better; a point of unknown latency (None) is never on the front.
    """
    known = [(s, t) for s, t in points if t is not None]
    front = []
    for s, t in points:
        if t is None:
            front.append(False)
            continue
        dominated = any(s2 >= s and t2 <= t and (s2 > s or t2 < t) for s2, t2 in known)
        front.append(not dominated)
    return front


def latency_source(rows: Sequence[CandidateResult]) -> str:
    """Return how the rows' latencies were had: ``measured``, ``estimated``, ``mixed`` or ``unknown`` (none known)."""
    sources = {r.latency.source for r in rows} - {"unknown"}
    return sources.pop() if len(sources) == 1 else "mixed" if sources else "unknown"


def recommend(rows: Sequence[CandidateResult], budget_ms: float, figure: str = "") -> tuple[int | None, str]:
    """Return ``(index of the recommended row or None, why)``: the best LogME within the p50 budget.

    Candidates flagged for negative-transfer risk are passed over while another fits the budget.
    ``figure``: the reference figure estimates rest on (:func:`~edgetl.selection.latency.reference_figure`),
    named when estimates rule out every candidate.
    """
    fits = [i for i, r in enumerate(rows) if r.latency.p50_ms is not None and r.latency.p50_ms <= budget_ms]
    known = [i for i, r in enumerate(rows) if r.latency.p50_ms is not None]
    if not known:
        return None, "no latency is known for any candidate, so none can be checked against the budget"
    if not fits:
        fastest = min(known, key=lambda i: rows[i].latency.p50_ms)  # type: ignore[arg-type,return-value]
        r = rows[fastest]
        why = (f"no candidate fits the p50 budget of {budget_ms:g} ms; the fastest is {r.name} at "
               f"{r.latency.p50_ms:.1f} ms ({r.latency.source}): try smaller --sizes, a faster device, or a profile "
               "with a larger budget")  # fmt: skip
        if r.latency.source == "estimated":
            why += (f". The estimate scales {figure or 'the profile reference figure'} by MACs and errs on the slow "
                    "side (docs/select.md): before giving up, time the fastest candidates on the device with "
                    "edgetl-runtime bench")  # fmt: skip
        return None, why
    safe = [i for i in fits if not rows[i].at_risk]
    pool = safe or fits
    best = max(pool, key=lambda i: rows[i].logme)
    r = rows[best]
    why = (f"{r.name}: the highest LogME ({r.logme:.3f}) of the {len(fits)} candidate(s) within the p50 budget of "
           f"{budget_ms:g} ms ({r.latency.p50_ms:.1f} ms, {r.latency.source})")  # fmt: skip
    by_knn = max(pool, key=lambda i: rows[i].knn)
    if by_knn != best:
        why += f"; k-NN prefers {rows[by_knn].name} ({rows[by_knn].knn:.1%} against {r.knn:.1%})"
    if not safe:
        why += "; WARNING: every candidate within the budget is at risk of negative transfer (see the table)"
    return best, why


@dataclass(frozen=True)
class Selection:
    """Everything ``edgetl select`` found; ``rows`` ranked by LogME, best first."""

    data: str
    profile: str
    host_profile: str | None
    latency_source: str  # measured | estimated | mixed (some rows fell back to the estimate) | unknown
    budget_p50_ms: float
    n_images: int
    class_counts: dict[str, int]
    rows: tuple[CandidateResult, ...]
    recommended: str | None
    reason: str
    reference: dict[str, Any]  # the profile's reference model: backbone, size, MACs, p50_ms, overhead_ms
    skipped: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    host: dict[str, Any] = field(default_factory=dict)
    json_path: str | None = None
    plot_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows"] = [r.to_dict() for r in self.rows]
        out["skipped"] = [{"backbone": b, "reason": why} for b, why in self.skipped]
        out["notes"] = list(self.notes)
        return out

    @property
    def title(self) -> str:
        counts = ", ".join(f"{n} {c}" for c, n in self.class_counts.items())
        return (f"edgetl select: {self.data} ({self.n_images} images: {counts}) for {self.profile}; "
                f"latency {self.latency_source.upper()}, p50 budget {self.budget_p50_ms:g} ms")

    def to_rich(self) -> Any:
        """Return a rich ``Table`` of the ranked rows."""
        from rich import box
        from rich.markup import escape
        from rich.table import Table

        est = self.latency_source == "estimated"
        any_est = any(r.latency.source == "estimated" for r in self.rows)
        table = Table(title=escape(self.title), box=box.SIMPLE_HEAD,
                      caption=escape("* Pareto front (LogME x latency); budget: p50 within the profile's budget; "
                                     "transfer: pretrained vs random-init features" + (
                                         "; ~ latency ESTIMATED from the profile's reference figure by MACs "
                                         "(rough, see docs/select.md)" if any_est else "")))  # fmt: skip
        for name, justify in (("#", "right"), ("candidate", "left"), ("LogME", "right"), ("k-NN bal.", "right"),
                              ("GMACs", "right"), ("p50 ms" + (" (est.)" if est else ""), "right"),
                              ("budget", "left"), ("transfer", "left")):  # fmt: skip
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for r in self.rows:
            marker = "*" if r.pareto else " "
            budget = "-" if r.within_budget is None else ("ok" if r.within_budget else "over")
            transfer = "-" if r.transfer is None else {"risk": "[red]RISK[/red]"}.get(r.transfer.verdict,
                                                                                     r.transfer.verdict)
            p50 = "-" if r.latency.p50_ms is None else f"{r.latency.p50_ms:.1f}{'~' if r.latency.source == 'estimated' else ''}"
            name = f"[bold]{escape(r.name)}[/bold]" if r.name == self.recommended else escape(r.name)
            table.add_row(str(r.rank), f"{marker}{name}", f"{r.logme:.3f}", f"{r.knn:.1%}", f"{r.macs / 1e9:.2f}",
                          p50, budget, transfer)  # fmt: skip
        return table


def plot_selection(selection: Selection, path: str | Path) -> Path:
    """Write the LogME x latency scatter plot (Pareto front joined, budget line) to ``path`` (PNG, atomically)."""
    from ..evaluation import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    rows = [r for r in selection.rows if r.latency.p50_ms is not None]
    source = selection.latency_source
    for r in rows:
        filled = r.latency.source == "measured"
        colour = "#cc3311" if r.at_risk else ("#228833" if r.name == selection.recommended else "#4477aa")
        ax.scatter([r.latency.p50_ms], [r.logme], s=60, color=colour if filled else "none", edgecolors=colour, zorder=3)
        ax.annotate(r.name.replace("efficientnet_", ""), (r.latency.p50_ms, r.logme), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)  # fmt: skip
    front = sorted((r.latency.p50_ms, r.logme) for r in rows if r.pareto)
    if front:
        ax.plot(*zip(*front), color="#888888", linestyle="--", zorder=2, label="Pareto front")
    ax.axvline(selection.budget_p50_ms, color="black", linestyle=":", label=f"p50 budget {selection.budget_p50_ms:g} ms")
    ax.set_xlabel("p50 latency per image, end to end (ms)" + {
        "estimated": ", ESTIMATED from MACs (rough)", "measured": ", measured",
        "mixed": ", measured (filled) or ESTIMATED from MACs (hollow)"}.get(source, ""))  # fmt: skip
    ax.set_ylabel("LogME (higher transfers better)")
    legend = [("recommended", "#228833", "#228833"), ("negative-transfer risk", "#cc3311", "#cc3311")]
    if source in ("measured", "mixed"):
        legend.append(("measured", "#4477aa", "#4477aa"))
    if source in ("estimated", "mixed"):
        legend.append(("estimated (hollow)", "#4477aa", "none"))
    for label, colour, face in legend:
        ax.scatter([], [], s=40, color=face, edgecolors=colour, label=label)
    where = "/".join(Path(selection.data).parts[-2:])
    ax.set_title(f"{where} on {selection.profile}: transferability vs latency", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.margins(x=0.12, y=0.08)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, Path(path))
