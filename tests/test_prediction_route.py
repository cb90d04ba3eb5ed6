"""One prediction route: the kernel object, the solvers' gradient, CGGPRModel.compute and the calculator.

Real SOAP (featomic and quippy) on the package's built-in frames and real linear algebra; no ../shared needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import builtin_frames

from ase_cggpr import CGGPRCalculator, CGGPRModel, __version__
from ase_cggpr.errors import ModelError
from ase_cggpr.kernels import PolynomialKernel
from ase_cggpr.model import Prediction
from ase_cggpr.regression import ExactGPR, Regressor, SparseGPR


def _unit_rows(rng, n, d):
    X = rng.normal(size=(n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


# --- the kernel object ---------------------------------------------------------------------------------

@pytest.mark.parametrize("zeta,offset", [(4, 1.0), (1, 0.5), (2, 1.0), (3, 0.0)])
def test_kernel_value_diagonal_and_gradient(zeta, offset):
    rng = np.random.default_rng(zeta)
    A, B = _unit_rows(rng, 5, 9), _unit_rows(rng, 40, 9)
    kernel = PolynomialKernel(zeta, offset)
    np.testing.assert_allclose(kernel(A, B), (offset + A @ B.T) ** zeta, rtol=1e-14, atol=0)  # the old formula
    np.testing.assert_allclose(kernel.diagonal(A), np.diagonal(kernel(A, A)), rtol=1e-14)
    w = rng.normal(size=40)
    gradient = kernel.gradient(A, B, w)
    assert gradient.shape == A.shape
    h = 1e-6
    for i in (0, 4):
        for d in (0, 3, 8):
            plus, minus = A[i:i + 1].copy(), A[i:i + 1].copy()
            plus[0, d] += h
            minus[0, d] -= h
            fd = (kernel(plus, B)[0] @ w - kernel(minus, B)[0] @ w) / (2 * h)
            assert abs(fd - gradient[i, d]) < 1e-7 * max(1.0, abs(fd)), (i, d, fd, gradient[i, d])
    # blocks of B rows give the same gradient as one block
    np.testing.assert_allclose(kernel.gradient(A, B, w, block=7), gradient, rtol=1e-12, atol=1e-13)


def test_kernel_round_trip_and_checks():
    kernel = PolynomialKernel(zeta=4, offset=1.0)
    assert PolynomialKernel.from_dict(json.loads(json.dumps(kernel.to_dict()))) == kernel
    assert kernel.to_dict() == {"kind": "polynomial", "zeta": 4, "offset": 1.0}
    with pytest.raises(ModelError, match="zeta must be an integer"):
        PolynomialKernel(zeta=2.5)
    with pytest.raises(ModelError, match="offset must be"):
        PolynomialKernel(zeta=4, offset=-1.0)
    with pytest.raises(ModelError, match="unknown kernel kind"):
        PolynomialKernel.from_dict({"kind": "rbf", "zeta": 4, "offset": 1.0})
    with pytest.raises(ModelError, match="kernel gradient needs"):
        kernel.gradient(np.ones((2, 3)), np.ones((4, 3)), np.ones(5))


# --- solvers: one interface, with the gradient of the mean -------------------------------------------------

@pytest.mark.parametrize("solver", [ExactGPR(noise=0.1), SparseGPR(noise=0.1, n_inducing=25, seed=1)])
def test_predict_gradient_matches_finite_differences(solver):
    rng = np.random.default_rng(3)
    X = _unit_rows(rng, 60, 12)
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2
    solver.fit(X, y)
    assert isinstance(solver, Regressor)
    assert isinstance(solver.kernel, PolynomialKernel) and solver.kernel.zeta == 4
    Xt = _unit_rows(rng, 4, 12)
    gradient = solver.predict_gradient(Xt)
    assert gradient.shape == Xt.shape and np.abs(gradient).max() > 1e-2  # not vacuous
    h = 1e-6
    for d in range(12):
        step = np.zeros(12)
        step[d] = h
        fd = (solver.predict(Xt + step) - solver.predict(Xt - step)) / (2 * h)
        np.testing.assert_allclose(gradient[:, d], fd, atol=1e-6 * max(1.0, np.abs(fd).max()))
    with pytest.raises(ModelError, match="expects"):
        solver.predict_gradient(Xt[:, :5])


def test_regressor_state_keeps_the_kernel():
    rng = np.random.default_rng(4)
    X = _unit_rows(rng, 30, 6)
    gpr = ExactGPR(zeta=3, offset=0.5).fit(X, rng.normal(size=30))
    params, arrays = gpr.get_state()
    back = ExactGPR.from_state(params, arrays)
    assert back.kernel == PolynomialKernel(3, 0.5)
    np.testing.assert_array_equal(back.predict_gradient(X[:3]), gpr.predict_gradient(X[:3]))


# --- the model: energies and forces in one call ------------------------------------------------------------

@pytest.fixture(scope="module")
def abw():
    (atoms,) = builtin_frames(net="ABW", order="d")
    atoms.calc = None
    atoms.rattle(0.02, seed=5)
    atoms.info["name"] = "ABW-rattled"
    return atoms


def _energy(model, atoms, **kwargs):
    return float(model.compute(atoms, **kwargs).local_energies.sum())


@pytest.mark.parametrize("rep", ["AB2", "atomistic"])
def test_compute_energies_equal_predict_and_forces_are_minus_the_gradient(small_models, abw, rep):
    model = small_models[rep]
    energy_only = model.compute(abw, return_std=True)
    assert isinstance(energy_only, Prediction) and energy_only.forces is None
    mean, std = model.predict(abw, return_std=True)
    np.testing.assert_array_equal(energy_only.local_energies, mean)
    np.testing.assert_array_equal(energy_only.std, std)
    assert energy_only.energy == pytest.approx(mean.sum(), abs=1e-12)
    both = model.compute(abw, forces=True, return_std=True)
    np.testing.assert_allclose(both.local_energies, mean, atol=1e-10)
    np.testing.assert_allclose(both.std, std, atol=1e-10)
    forces = both.forces
    assert forces.shape == (len(abw), 3) and np.abs(forces).max() > 1e-3
    h = 1e-4
    connectivity = both.bead_map.connectivity
    probe = [int(connectivity.metal_indices[1]), int(connectivity.rings[2][1])]
    for i in probe:
        for c in range(3):
            plus, minus = abw.copy(), abw.copy()
            plus.positions[i, c] += h
            minus.positions[i, c] -= h
            fd = -(_energy(model, plus) - _energy(model, minus)) / (2 * h)
            assert abs(fd - forces[i, c]) < 1e-6 + 1e-5 * np.abs(forces).max(), (rep, i, c, fd, forces[i, c])
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-9)


@pytest.mark.parametrize("rep", ["AB2", "A"])
def test_chosen_centres_are_the_same_numbers_as_every_centre(small_models, abw, rep):
    """compute(centres=...) / predict_maps(centres=...): the screen's symmetry-unique route gives the rows of the full
    prediction (to rounding: the selected centres are described on their own), in the order asked for; forces
    need every site; bad positions are one clear error."""
    model = small_models[rep]
    full = model.compute(abw, return_std=True)
    chosen = np.array([5, 0, 2])
    part = model.compute(abw, return_std=True, centres=chosen)
    assert part.centres.tolist() == [5, 0, 2] and part.local_energies.shape == (3,)
    np.testing.assert_allclose(part.local_energies, full.local_energies[chosen], rtol=0, atol=1e-10)
    np.testing.assert_allclose(part.std, full.std[chosen], rtol=0, atol=1e-10)
    np.testing.assert_allclose(part.vectors, full.vectors[chosen], rtol=0, atol=1e-12)
    every = model.compute(abw, return_std=True, centres=np.arange(len(full.local_energies)))
    np.testing.assert_array_equal(every.local_energies, full.local_energies)  # all, in order: described as such
    bead_map = model.bead_map(abw)
    (means,), (stds,) = model.predict_maps([bead_map], return_std=True, centres=[chosen])
    np.testing.assert_array_equal(means, part.local_energies)
    np.testing.assert_array_equal(stds, part.std)
    np.testing.assert_array_equal(model.predict_vectors(part.vectors), part.local_energies)
    with pytest.raises(ModelError, match="forces and stress need every metal site"):
        model.compute(abw, forces=True, centres=chosen)
    for bad in ([0, 0], [-1], [len(full.local_energies)], [0.5]):
        with pytest.raises(ModelError, match="centres must be unique metal-site positions"):
            model.compute(abw, centres=bad)


def test_compute_on_a_bead_map_and_with_the_other_backend(small_models, abw):
    model = small_models["AB2"]
    reference = model.compute(abw, forces=True)
    from_map = model.compute(model.bead_map(abw), forces=True)
    np.testing.assert_array_equal(from_map.forces, reference.forces)
    quippy = model.compute(abw, forces=True, descriptor_backend="quippy")  # the model is a featomic one
    np.testing.assert_allclose(quippy.local_energies, reference.local_energies, atol=1e-7)
    np.testing.assert_allclose(quippy.forces, reference.forces, atol=1e-6)
    with pytest.raises(ModelError, match="descriptor backend"):
        model.compute(abw, descriptor_backend="nonsense")


def test_sparse_model_forces_match_finite_differences(frames, abw):
    model = CGGPRModel(representation="A", backend="featomic", n_max=6, l_max=3, solver="sparse",
                       solver_options={"n_inducing": 12})
    model.fit(frames[:2], label_key="energies")
    forces = model.compute(abw, forces=True).forces
    metal = int(model.bead_map(abw).connectivity.metal_indices[3])
    h = 1e-4
    for c in range(3):
        plus, minus = abw.copy(), abw.copy()
        plus.positions[metal, c] += h
        minus.positions[metal, c] -= h
        fd = -(_energy(model, plus) - _energy(model, minus)) / (2 * h)
        assert abs(fd - forces[metal, c]) < 1e-6 + 1e-5 * np.abs(forces).max()
    assert np.abs(forces).max() > 1e-4


# --- the calculator: options in parameters, properties through get_property -----------------------------

def test_calculator_parameters_todict_and_get_property(small_models, abw, tmp_path):
    path = small_models["AB2"].save(tmp_path / "ab2.npz")
    atoms = abw.copy()
    atoms.calc = CGGPRCalculator(model_path=path, return_std=False)
    assert atoms.calc.parameters["model"] == str(path)
    record = atoms.calc.todict()
    json.dumps(record)  # ase.db stores it
    assert record["model"] == str(path) and "return_std" not in record  # the default (False) is skipped
    assert CGGPRCalculator(model_path=path, return_std=True).todict()["return_std"] is True
    meta = CGGPRModel.load(path).metadata_
    assert record["model_info"]["created"] == meta["created"]
    assert record["model_info"]["package_version"] == meta["package_version"] == __version__
    assert record["model_info"]["representation"] == "AB2"
    local = atoms.calc.get_property("local_energies", atoms)
    assert local.shape == (8,) and np.isfinite(local).all()
    assert "local_energy_std" not in atoms.calc.results  # return_std=False
    std = atoms.calc.get_property("local_energy_std", atoms)  # asked for: computed
    expected_mean, expected_std = small_models["AB2"].predict(atoms, return_std=True)
    np.testing.assert_allclose(local, expected_mean, atol=1e-12)
    np.testing.assert_allclose(std, expected_std, atol=1e-12)
    # the same as model=path given positionally, and an in-memory model records its provenance too
    assert CGGPRCalculator(str(path)).todict()["model"] == str(path)
    in_memory = CGGPRCalculator(small_models["AB2"], descriptor_backend="quippy").todict()
    json.dumps(in_memory)
    assert in_memory["model"] is None and in_memory["descriptor_backend"] == "quippy"
    assert in_memory["model_info"]["package_version"] == __version__
    with pytest.raises(ModelError, match="exactly one of model= or model_path="):
        CGGPRCalculator(small_models["AB2"], model_path=path)


def test_calculator_energy_then_forces_equals_separate_calls(small_models, abw):
    model = small_models["AB2"]
    atoms = abw.copy()
    atoms.calc = CGGPRCalculator(model)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    alone_e, alone_f = abw.copy(), abw.copy()
    alone_e.calc, alone_f.calc = CGGPRCalculator(model), CGGPRCalculator(model)
    assert energy == alone_e.get_potential_energy()
    np.testing.assert_array_equal(forces, alone_f.get_forces())
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    prediction = model.compute(abw, forces=True, return_std=True)
    np.testing.assert_array_equal(forces, prediction.forces)
    assert "local_energy_std" not in atoms.calc.results  # computed only when asked for
    np.testing.assert_allclose(atoms.calc.get_property("local_energy_std", atoms), prediction.std, rtol=0,
                               atol=1e-12)


def test_calculator_descriptor_backend_parameter(small_models, abw):
    atoms = abw.copy()
    atoms.calc = CGGPRCalculator(small_models["AB2"], descriptor_backend="quippy")
    quippy = atoms.get_forces()
    atoms.calc.set(descriptor_backend=None)  # the model's own backend (featomic); the results are reset
    assert atoms.calc.results == {}
    np.testing.assert_allclose(atoms.get_forces(), quippy, atol=1e-6)
    np.testing.assert_array_equal(atoms.get_forces(), small_models["AB2"].compute(abw, forces=True).forces)


def test_calculator_set_refuses_a_bad_model_or_backend_and_keeps_the_old(small_models, abw, tmp_path):
    path = small_models["A"].save(tmp_path / "a.npz")
    calc = CGGPRCalculator(model_path=path)
    with pytest.raises(ModelError, match="no such file"):
        calc.set(model=tmp_path / "missing.npz")
    assert calc.parameters["model"] == str(path) and calc.todict()["model"] == str(path)
    with pytest.raises(ModelError, match="unknown descriptor backend 'dscribe'"):
        calc.set(descriptor_backend="dscribe")
    atoms = abw.copy()
    atoms.calc = calc
    np.testing.assert_allclose(atoms.calc.get_property("local_energies", atoms), small_models["A"].predict(abw),
                               atol=1e-12)
    calc.set(model=small_models["AB2"])  # another model: its numbers, and the record says it is in memory
    np.testing.assert_allclose(atoms.calc.get_property("local_energies", atoms), small_models["AB2"].predict(abw),
                               atol=1e-12)
    assert calc.todict()["model"] is None and calc.todict()["model_info"]["representation"] == "AB2"
