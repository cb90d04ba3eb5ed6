"""screen(..., relax=True) and ``cggpr screen --relax``: every candidate is relaxed on the model's energy surface
(ase_cggpr.relax, positions and cell) before it is ranked. Real shipped AB2 model, real built-in bead frames."""

from __future__ import annotations

import csv

import numpy as np
from ase.io import write
from click.testing import CliRunner

from ase_cggpr.cli import main
from ase_cggpr.model import CGGPRModel
from ase_cggpr.screening import screen


def _frames():
    from conftest import builtin_frames

    # two small nets (15 and 24 beads), rattled: relaxation must lower their energy
    return [a for a in builtin_frames("cg", net=("EDI", "ABW"), rattle="medium", order="r-d")][:2]


def test_screen_relax_lowers_every_energy():
    model = CGGPRModel.load("AB2")
    frames = _frames()
    assert len(frames) == 2
    plain = {r.id: r for r in screen(model, frames, workers=1).rows}
    relaxed = {r.id: r for r in screen(model, frames, workers=1, relax=True).rows}
    assert plain.keys() == relaxed.keys()
    for key, row in relaxed.items():
        assert not row.error and not plain[key].error, (row.error, plain[key].error)
        assert np.isfinite(row.energy_per_Zn) and np.isfinite(row.max_std)
        assert row.n_Zn == plain[key].n_Zn
        assert row.energy_per_Zn < plain[key].energy_per_Zn - 1e-3  # relaxed below the rattled start


def test_cli_screen_relax(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k, atoms in enumerate(_frames()):
        write(folder / f"s{k}.extxyz", atoms)
    outputs = {}
    for flag in ([], ["--relax"]):
        out = tmp_path / f"rank{len(flag)}.csv"
        result = CliRunner().invoke(main, ["screen", "AB2", str(folder), "-o", str(out), "-j", "1", "-q", *flag])
        assert result.exit_code == 0, result.output
        with open(out) as handle:
            outputs[bool(flag)] = {r["id"]: float(r["energy_per_Zn_eV"]) for r in csv.DictReader(handle)}
    assert outputs[True].keys() == outputs[False].keys() and len(outputs[True]) == 2
    for key in outputs[True]:
        assert outputs[True][key] < outputs[False][key]


def test_an_unconverged_relaxation_is_flagged_and_never_trusted(monkeypatch):
    import ase_cggpr.screening as screening

    model = CGGPRModel.load("AB2")
    frames = _frames()
    done = screen(model, frames, workers=1, relax=True, threshold=10.0).rows
    assert all(r.relaxation.startswith("converged (") and r.trusted and r.rank for r in done), done
    monkeypatch.setattr(screening, "RELAX_MAX_STEPS", 1)  # one optimiser step cannot relax a rattled net
    rows = screen(model, frames, workers=1, relax=True, threshold=10.0).rows
    for row in rows:
        assert not row.error and np.isfinite(row.energy_per_Zn)
        assert row.relaxation.startswith("NOT converged (max force") and "after 1 steps" in row.relaxation
        assert not row.trusted and row.rank is None  # trusted by its std (threshold 10 eV), not by its relaxation
    assert all(r.relaxation == "" for r in screen(model, frames, workers=1).rows)
