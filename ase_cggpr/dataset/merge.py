"""Collecting a build's finished nets into ``atomistic.extxyz`` / ``cg.extxyz`` and summarising them."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from .config import (
    NetFiles,
)


def merge(out_dir: str | Path, names: Sequence[str], *, compress: bool = False,
          framework_types: Mapping[str, str] | None = None) -> dict:
    """Collect the finished nets ``names`` (in order) into ``atomistic.extxyz`` and ``cg.extxyz``.

    Each net gets ``structure_id`` = its position in ``names`` among nets with frames, and with
    ``framework_types`` (net name -> :func:`~ase_cggpr.dataset.nets.framework_type_key`) ``info['framework_type']``, so
    that cross-validation can keep nets of one topology from different sources in one fold
    (``--group-key framework_type``, the default). Returns a summary: counts, per-level label statistics (eV, raw local
    energies of kept frames) and per-net summaries; it is also written to ``summary.json``.
    """
    out_dir = Path(out_dir)
    suffix = ".extxyz.gz" if compress else ".extxyz"
    summaries = []
    all_at, all_cg = [], []
    sid = 0
    for name in names:
        files = NetFiles.of(out_dir, name)
        if not files.marker.exists():
            summaries.append(dict(net=name, status="missing"))
            continue
        s = json.loads(files.marker.read_text())
        summaries.append(s)
        if s.get("status") != "done" or not s.get("kept"):
            continue
        at = read(files.atomistic, index=":")
        cg = read(files.cg, index=":")
        for a in (*at, *cg):
            a.info["structure_id"] = sid
            if framework_types is not None:
                a.info["framework_type"] = framework_types[name]
        all_at.extend(at)
        all_cg.extend(cg)
        sid += 1
    _write_all(out_dir / f"atomistic{suffix}", all_at)
    _write_all(out_dir / f"cg{suffix}", all_cg)
    summary = summarise(summaries)
    if framework_types is not None:
        summary["n_topologies"] = len({framework_types[s["net"]] for s in summaries if s.get("kept")})
    summary["files"] = [f"atomistic{suffix}", f"cg{suffix}"]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_all(path: Path, images: list[Atoms]) -> None:
    for a in images:
        # ASE's reader moves a per-atom 'energies' column into a calculator: put it back
        results = getattr(a.calc, "results", {}) if a.calc is not None else {}
        if "energies" not in a.arrays and "energies" in results:
            a.arrays["energies"] = np.asarray(results["energies"], dtype=float)
        a.calc = None
    tmp = path.parent / (path.name + ".tmp")
    if path.suffix == ".gz":
        buf = io.StringIO()
        write(buf, images, format="extxyz")
        with gzip.open(tmp, "wt", compresslevel=9) as fh:
            fh.write(buf.getvalue())
    else:
        write(tmp, images, format="extxyz")
    tmp.replace(path)


def summarise(summaries: Sequence[dict]) -> dict:
    """Totals and per-level label statistics over per-net summaries."""
    out: dict = dict(n_nets=len(summaries))
    for status in ("done", "failed", "skipped", "missing"):
        out[f"n_{status}"] = sum(1 for s in summaries if s.get("status") == status)
    for key in ("generated", "screened_out", "energy_filtered", "kept"):
        out[f"frames_{key}"] = int(sum(s.get(key, 0) for s in summaries))
    out["n_nets_with_frames"] = sum(1 for s in summaries if s.get("kept"))
    out["n_relax_not_converged"] = sum(1 for s in summaries
                                       if s.get("status") == "done" and not s.get("relax_converged"))
    for which in ("label_stats", "label_stats_unfiltered"):
        pooled: dict[str, dict] = {}
        for s in summaries:
            for level, st in s.get(which, {}).items():
                p = pooled.setdefault(level, dict(n=0, sum=0.0, sumsq=0.0, min=np.inf, max=-np.inf))
                p["n"] += st["n"]
                p["sum"] += st["sum"]
                p["sumsq"] += st["sumsq"]
                p["min"] = min(p["min"], st["min"])
                p["max"] = max(p["max"], st["max"])
        out[which] = {lvl: dict(n=p["n"], mean=p["sum"] / p["n"],
                                std=float(np.sqrt(max(p["sumsq"] / p["n"] - (p["sum"] / p["n"]) ** 2, 0))),
                                min=p["min"], max=p["max"]) for lvl, p in pooled.items() if p["n"]}
    out["zn_environments"] = int(sum(v["n"] for v in out["label_stats"].values()))
    out["failures"] = {s["net"]: s.get("reason", "") for s in summaries
                       if s.get("status") in ("failed", "skipped")}  # "missing": not built yet (n_missing)
    out["seconds"] = round(sum(s.get("seconds", 0.0) for s in summaries), 1)
    out["nets"] = list(summaries)
    return out
