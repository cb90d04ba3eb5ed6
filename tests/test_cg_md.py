"""examples/cg_md.py: NVT (Langevin), NVE (VelocityVerlet) and NPT (NPTBerendsen) of a built-in bead frame.

Runs the real example (real SOAP, real model) in its small mode (``CGGPR_EXAMPLE_SMALL=1``: 30 steps of 2 fs
each of NVT, NVE and NPT on the 15-bead EDI frame).

NVE bound: measured max |E_tot(t) - E_tot(0)| over 30 steps of 2 fs after 30 steps of 300 K Langevin, with the
shipped AB2 model: 0.024, 0.042, 0.006 meV/bead (seeds 0, 1, 2); with 8 fs steps 0.35 and with 20 fs steps
4.7 meV/bead. The bound, 0.5 meV/bead (1.3 % of the 1.5 kT = 39 meV/bead kinetic energy at 300 K), is > 10x the
2-fs measurements yet is broken by a too-long time step, so forces inconsistent with the energy would show.
"""

from __future__ import annotations

import json

import numpy as np

NVE_DRIFT_BOUND = 5e-4  # eV per bead, see the module docstring


def _run(tmp_path, *args):
    from conftest import run_example

    out = tmp_path / "md.json"
    run = run_example("cg_md.py", "--json", str(out), *args)
    assert run.returncode == 0, run.stderr[-2000:]
    return run, json.loads(out.read_text())


def _check(summary):
    n_steps = summary["steps"]
    assert summary["n_beads"] == 15 and summary["n_zn"] == 5
    # NVT: a finite energy at every step, a temperature of the right order (15 beads: ~20 % fluctuations)
    e_nvt = np.asarray(summary["nvt_energy_per_zn"])
    assert len(e_nvt) == n_steps + 1 and np.isfinite(e_nvt).all()
    assert 100.0 < summary["nvt_mean_temperature"] < 700.0
    # NVE: total energy conserved
    e_tot = np.asarray(summary["nve_total_energy"])
    assert len(e_tot) == n_steps + 1 and np.isfinite(e_tot).all()
    assert summary["nve_max_drift_per_bead"] == np.max(np.abs(e_tot - e_tot[0])) / 15
    assert summary["nve_max_drift_per_bead"] < NVE_DRIFT_BOUND
    # NPT: the barostat moves the cell (finite, a fraction of a percent in 30 steps, not a collapse)
    v0, volumes = summary["npt_initial_volume"], np.asarray(summary["npt_volumes"])
    assert np.isfinite(volumes).all() and np.isfinite(summary["npt_mean_lengths"]).all()
    assert np.max(np.abs(volumes - v0)) > 1e-3
    assert abs(summary["npt_mean_volume"] / v0 - 1) < 0.05


def test_cg_md_shipped_model(tmp_path):
    run, summary = _run(tmp_path)
    assert summary["model"] == "AB2"
    _check(summary)
    assert "NVE VelocityVerlet" in run.stdout and "NPT Berendsen" in run.stdout


def test_cg_md_tiny_model(tmp_path):
    run, summary = _run(tmp_path, "--model", "tiny", "--seed", "3", "--quiet")
    assert summary["model"].startswith("tiny")
    _check(summary)
    assert run.stdout.startswith("summary:")


def test_cg_md_bad_model_is_one_line(tmp_path):
    from conftest import run_example

    run = run_example("cg_md.py", "--model", str(tmp_path / "missing.npz"))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
