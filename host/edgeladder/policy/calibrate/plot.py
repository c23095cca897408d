"""calibration.png: the ladder's accuracy against its escalation rate, and reliability diagrams.

The left panel also draws the guaranteed accuracy: the reference's accuracy minus each point's
upper bound on its loss against it (``risk_upper``), the best at each escalation rate, beside
the target (the reference minus delta).

Drawn from calibration.json's content alone, with matplotlib's Agg backend (no display);
matplotlib is imported here, lazily, so that the rest of calibrate does not need it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeladder.util.atomic import write_bytes


def _frontier(esc: np.ndarray, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best accuracy reachable at each escalation rate or below (a staircase)."""
    order = np.lexsort((-acc, esc))
    e, a = esc[order], np.maximum.accumulate(acc[order])
    keep = np.r_[a[1:] > a[:-1], True] | np.r_[True, e[1:] != e[:-1]]
    return e[keep], a[keep]


def plot_calibration(path: str | Path, report: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sw = report["sweep"]
    esc, acc = np.asarray(sw["escalation"]), np.asarray(sw["accuracy"])
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    ax.scatter(100 * esc, 100 * acc, s=4, c="0.8", label="threshold settings", zorder=1)
    fe, fa = _frontier(esc, acc)
    ax.step(100 * fe, 100 * fa, where="post", color="C0", label="best at each rate", zorder=2)
    colors = iter(["C2", "C4", "C1", "C5"])
    for name, a in report["tiers_alone"].items():
        ax.axhline(100 * a, color=next(colors), ls=":", lw=1, label=f"{name} alone {a:.2%}")
    reference = list(report["tiers_alone"].values())[-1]
    g = report["chosen"].get("guarantee") or {}
    if "risk_upper" in sw:
        # accuracy >= reference - risk: what the loss bound leaves of the reference, per point
        ge, ga = _frontier(esc, reference - np.asarray(sw["risk_upper"]))
        conf = g.get("confidence", 0.9)
        label = f"guaranteed: reference − loss bound ({conf:.0%}, per point)"
        ax.step(100 * ge, 100 * ga, where="post", color="C6", lw=1.2, label=label, zorder=2)
    target = report["target"]
    if target["mode"] == "accuracy":
        name = target["reference"]
        label = f"target = {name} − δ" if target["delta"] < 0 else "target"
        ax.axhline(100 * target["accuracy"], color="C3", ls="--", lw=1, label=label)
    else:
        ax.axvline(100 * target["max_escalation"], color="C3", ls="--", lw=1, label="target")
    ch, fx = report["chosen"], report["fixed_threshold"]["ladder"]
    ax.plot(100 * ch["escalation"], 100 * ch["accuracy"], "r*", ms=14, label="chosen", zorder=3)
    if ch.get("bound_accuracy") is not None:
        conf = report["stages"][0]["bound"]["confidence"]
        at = (100 * ch["escalation"], 100 * ch["bound_accuracy"])
        ax.plot(*at, "rv", ms=8, mfc="none", label=f"chosen, at the {conf:.0%} bound", zorder=3)
    if g.get("risk_upper") is not None:
        held = "held" if g.get("held") else "not certified"
        at = (100 * ch["escalation"], 100 * (reference - g["risk_upper"]))
        ax.plot(*at, "P", color="C6", ms=8, label=f"chosen, guaranteed ({held})", zorder=3)
    fixed_at = (100 * fx["escalation_rate"], 100 * fx["accuracy"])
    ax.plot(*fixed_at, "kD", ms=7, label="fixed 0.95 / 0.90", zorder=3)
    lo = min(min(report["tiers_alone"].values()), reference - (g.get("risk_upper") or 0.0))
    ax.set_ylim(100 * lo - 0.5, 100.2)
    right = max(25.0, 250 * ch["escalation"], 150 * fx["escalation_rate"])
    ax.set_xlim(-1, min(101.0, right))
    ax.set_xlabel("escalated off the board (% of inputs)")
    ax.set_ylabel("ladder accuracy (%)")
    ax.set_title(f"{report['task']}: ladder on the {report['split']} split ({report['inputs']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")

    rel.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
    for i, st in enumerate(report["stages"]):
        if st["where"] == "cloud" and i:
            continue  # answers everything: its calibration decides nothing
        for key, style, when in (
            ("reliability_before", ":", "T=1"),
            ("reliability_after", "-", ""),
        ):
            bins = st[key]
            x = [b["confidence"] for b in bins]
            y = [b["accuracy"] for b in bins]
            label = f"{st['name']} " + (when or f"T={st['temperature']:.2f}")
            label += f" (ECE {st['ece_before' if when else 'ece_after']:.3f})"
            rel.plot(x, y, style, marker="o", ms=3, color=f"C{i}", label=label)
    rel.set_xlabel("confidence (max probability)")
    rel.set_ylabel("accuracy")
    rel.set_title("reliability before / after temperature")
    rel.grid(alpha=0.3)
    rel.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_bytes(path, buf.getvalue())
