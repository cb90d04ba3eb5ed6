"""The numbers of the core stay bit-identical across refactorings (issue 32).

Rewritten since: the ``A/*`` arrays on 2026-12-07 (the shipped A model retrained on relaxed frames, issue 31;
every other array unchanged, checked with ``np.array_equal`` against the previous file); the ``atomistic/*`` arrays
on 2026-12-07 (the shipped atomistic model retrained, recipe rd+none+relaxed, M 3,000, issue 31; the other 43
arrays unchanged, checked the same way).

``tests/data/core_numbers.npz`` holds what the code of commit 9df9dc1 (before issue 32's restructuring)
predicted, on this repository's built-in frames, for: the three shipped models (``compute`` with std, forces and
stress; ``predict_maps``; the screen's symmetry-unique prediction), a freshly fitted exact model, a streamed
sparse model (local labels and total energies) and a cross-validation. Every array must be equal
(``np.array_equal``), not close: the restructuring moved code, it did not change a floating-point operation.
Written by ``python tests/test_core_numbers.py write`` (only when the maths changes on purpose; say so in
the commit). Bit-identity holds for one machine's BLAS; on another machine a difference at the last bit
means the reference must be rewritten there with the code of that commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import SMALL, net_frames  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "data" / "core_numbers.npz"


def core_numbers() -> dict[str, np.ndarray]:
    """Every number the reference file holds, computed with the code under test."""
    from ase_cggpr.evaluation.cv import cross_validate
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.screening import predict_symmetric

    frames = net_frames("atomistic")
    out: dict[str, np.ndarray] = {}
    for name in ("AB2", "A", "atomistic"):
        model = CGGPRModel.load(name)
        for k in (0, 2):
            p = model.compute(frames[k], forces=True, stress=True, return_std=True)
            out[f"{name}/compute{k}/energies"] = p.local_energies
            out[f"{name}/compute{k}/std"] = p.std
            out[f"{name}/compute{k}/forces"] = p.forces
            out[f"{name}/compute{k}/stress"] = p.stress
        maps = [model.bead_map(frames[k]) for k in (0, 2)]
        means, stds = model.predict_maps(maps, return_std=True)
        for k, (e, s) in enumerate(zip(means, stds, strict=True)):
            out[f"{name}/maps{k}/energies"], out[f"{name}/maps{k}/std"] = e, s
        mean, std, n_unique = predict_symmetric(model, maps[0])
        out[f"{name}/symmetric/energies"], out[f"{name}/symmetric/std"] = mean, std
        out[f"{name}/symmetric/n_unique"] = np.array(n_unique)
    train, test = frames[:2], frames[2]
    exact = CGGPRModel(representation="AB2", **SMALL).fit(train, label_key="energies")
    p = exact.compute(test, forces=True, return_std=True)
    out["fit/exact/alpha"] = exact.regressor_.alpha_
    out["fit/exact/energies"], out["fit/exact/std"], out["fit/exact/forces"] = p.local_energies, p.std, p.forces
    sparse = CGGPRModel(representation="AB2", solver="sparse", solver_options={"n_inducing": 12},
                        **SMALL).fit(train, label_key="energies")
    p = sparse.compute(test, forces=True, return_std=True)
    out["fit/sparse/alpha"] = sparse.regressor_.alpha_
    out["fit/sparse/energies"], out["fit/sparse/std"], out["fit/sparse/forces"] = p.local_energies, p.std, p.forces
    totals = CGGPRModel(representation="AB2", solver="sparse", solver_options={"n_inducing": 12},
                        **SMALL).fit(train, energy_key="mofff_energy")
    out["fit/totals/alpha"] = totals.regressor_.alpha_
    out["fit/totals/energies"] = totals.compute(test).local_energies
    X = exact.vectors([exact.bead_map(a) for a in frames])
    y = np.sin(np.arange(len(X)))  # labels (eV) that a fold cannot predict exactly
    groups = np.repeat(["a", "b", "c"], len(X) // 3 + 1)[:len(X)]
    cv = cross_validate(X, y, groups, exact.spec, n_folds=3, solver="exact")
    out["cv/predictions"] = cv.predictions
    out["cv/train_rmse"] = np.array(cv.train_rmse)
    return out


def test_core_numbers_are_bit_identical():
    if not REFERENCE.exists():
        pytest.skip(f"no reference file {REFERENCE}")
    with np.load(REFERENCE, allow_pickle=False) as reference:
        expected = {k: reference[k] for k in reference.files}
    got = core_numbers()
    assert sorted(got) == sorted(expected)
    differ = [k for k in expected if not np.array_equal(np.asarray(got[k]), expected[k])]
    assert not differ, f"not bit-identical: {differ}"


if __name__ == "__main__" and sys.argv[1:] == ["write"]:
    np.savez(REFERENCE, **core_numbers())
    print(f"wrote {REFERENCE}")
