"""Figures of the evaluation (matplotlib, the optional ``plot`` extra): parity plots (the paper's Fig. 2b),
learning curves (Fig. 2c) and grid-search heatmaps with the optimum marked (Fig. 3).

Each function returns a matplotlib Figure and, given ``path``, saves it (format from the suffix).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import CGGPRError

COLOURS = {"atomistic": "tab:blue", "AB2": "tab:orange", "A": "tab:green"}
LABELS = {"atomistic": "atomistic", "AB2": "AB2 (CG)", "A": "A-only (CG)"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise CGGPRError("plots need matplotlib: pip install 'ase-cggpr[plot]'") from None
    return plt


def _finish(fig, path: str | os.PathLike | None):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def parity(results: Mapping[str, tuple[np.ndarray, np.ndarray]], *, path: str | os.PathLike | None = None,
           unit: str = "eV"):
    """One parity panel per representation: ``results[rep] = (labels, out-of-fold predictions)``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 4), squeeze=False)
    for ax, (rep, (y, p)) in zip(axes[0], results.items(), strict=True):
        y, p = np.asarray(y), np.asarray(p)
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([low, high], [low, high], color="0.5", lw=1)
        ax.scatter(y, p, s=4, alpha=0.4, color=COLOURS.get(rep, "k"))
        err = float(np.sqrt(np.mean((y - p) ** 2)))
        ax.set_title(f"{LABELS.get(rep, rep)}: RMSE {1000 * err:.1f} m{unit}")
        ax.set_xlabel(f"reference ({unit})")
        ax.set_ylabel(f"GPR ({unit})")
        ax.set_aspect("equal")
    return _finish(fig, path)


def learning_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], *,
                    paper: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                    path: str | os.PathLike | None = None, show_train: bool = False):
    """Test RMSE vs training environments (log-log), one line per representation; the paper's dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for rep, rows in curves.items():
        n = [r["numb_training_atoms"] for r in rows]
        ax.plot(n, [r["av_test_rmse"] for r in rows], "o-", color=COLOURS.get(rep), label=f"{LABELS.get(rep, rep)}")
        if show_train:
            ax.plot(n, [r["av_train_rmse"] for r in rows], ":", color=COLOURS.get(rep))
    for rep, rows in (paper or {}).items():
        ax.plot([r["numb_training_atoms"] for r in rows], [r["av_test_rmse"] for r in rows], "x--",
                color=COLOURS.get(rep), alpha=0.6, label=f"{LABELS.get(rep, rep)} (paper)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training environments N")
    ax.set_ylabel("test RMSE (eV per Zn)")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def grid_heatmap(rows: Sequence[Mapping[str, Any]], *, noise: float | None = None, title: str = "",
                 path: str | os.PathLike | None = None):
    """Test RMSE over cutoff x atom_sigma (one noise value: ``noise`` or the best one); optimum marked."""
    plt = _pyplot()
    if not rows:
        raise CGGPRError("no grid-search rows to plot")
    if noise is None:
        noise = min(rows, key=lambda r: r["test_rmse"])["noise"]
    rows = [r for r in rows if abs(float(r["noise"]) - float(noise)) < 1e-9]
    cutoffs = sorted({float(r["cutoff"]) for r in rows})
    sigmas = sorted({float(r["atom_sigma"]) for r in rows})
    grid = np.full((len(sigmas), len(cutoffs)), np.nan)
    for r in rows:
        grid[sigmas.index(float(r["atom_sigma"])), cutoffs.index(float(r["cutoff"]))] = r["test_rmse"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    image = ax.pcolormesh(_edges(cutoffs), _edges(sigmas), grid, shading="flat", cmap="viridis_r")
    fig.colorbar(image, ax=ax, label="test RMSE (eV)")
    best = min(rows, key=lambda r: r["test_rmse"])
    ax.plot(best["cutoff"], best["atom_sigma"], marker="*", color="red", ms=14,
            label=f"optimum {best['cutoff']} Å, {best['atom_sigma']} Å: {best['test_rmse']:.4f} eV")
    ax.set_xlabel("cutoff (Å)")
    ax.set_ylabel("atom_sigma (Å)")
    ax.set_title(title or f"noise {noise}")
    ax.legend(fontsize=8, loc="upper right")
    return _finish(fig, path)


def _edges(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
