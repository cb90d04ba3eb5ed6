"""Training from total energies (issue 30 item 2): the sum-of-local-energies rows of the sparse solver.

Real SOAP on the built-in MOF-FF data: each frame's total energy is the sum of its per-atom ``energies``; a model
trained on those totals alone must recover the per-Zn local energies of frameworks it never saw about as well as
a model trained on the local energies of the same frames, and their cell energies.
"""

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from click.testing import CliRunner
from conftest import SMALL, builtin_frames

from ase_cggpr import CGGPRModel
from ase_cggpr.beads import coarse_grain
from ase_cggpr.cli import main
from ase_cggpr.errors import CGGPRError, ModelError
from ase_cggpr.kernels import PolynomialKernel
from ase_cggpr.labels import local_energies, total_energy
from ase_cggpr.streaming import array_chunks, fit_sparse_stream

HELD_OUT = set(range(0, 32, 4))  # 8 of the 32 nets (structure_id) never seen in training
M = 400


@pytest.fixture(scope="module")
def split():
    """(train, test) frames: the ideal (d) and bead-rattled (r-d) frames of the built-in data (what an AB2
    model can learn: its beads see no atom rattle), each with info['energy'] = the sum of its per-atom
    MOF-FF energies; the test frames are those of 8 held-out nets."""
    frames = builtin_frames("atomistic", order=("d", "r-d"))
    for atoms in frames:
        atoms.info["energy"] = float(np.sum(atoms.calc.results["energies"]))
    train = [a for a in frames if a.info["structure_id"] not in HELD_OUT]
    test = [a for a in frames if a.info["structure_id"] in HELD_OUT]
    return train, test


def _mapped(frames):
    """AB2 bead maps of the frames and their local-energy labels (eV), mapped once for several models."""
    maps = [coarse_grain(a, "AB2") for a in frames]
    return maps, [local_energies(a, connectivity=m.connectivity) for a, m in zip(frames, maps, strict=True)]


def _errors(model, mapped, reference):
    maps, labels = mapped
    predicted = model.predict_maps(maps)
    truth = [lab - reference for lab in labels]
    per_zn = np.concatenate(predicted) - np.concatenate(truth)
    cell = np.array([(p.sum() - t.sum()) / len(t) for p, t in zip(predicted, truth, strict=True)])
    return float(np.sqrt(np.mean(per_zn**2))), float(np.sqrt(np.mean(cell**2)))


def test_totals_recover_local_energies_on_held_out_frameworks(split):
    train, test = split
    reference = train[0].info["reference_energy"]
    options = dict(representation="AB2", **SMALL, reference_energy=reference, solver="sparse",
                   solver_options={"n_inducing": M})
    train_mapped, test_mapped = _mapped(train), _mapped(test)
    local = CGGPRModel(**options).fit_maps(*train_mapped)
    totals = CGGPRModel(**options).fit_totals_maps(train_mapped[0], [a.info["energy"] for a in train],
                                                   energy_key="energy")
    assert totals.training_["labels"] == "total energies" and totals.training_["n_totals"] == len(train)
    assert totals.training_["n_environments"] == local.training_["n_environments"]
    # one per-Zn offset: the weighted least-squares one, sum of totals over sum of sites (= the local mean)
    assert totals.regressor_.mean_ == pytest.approx(local.regressor_.mean_, abs=1e-9)
    local_zn, local_cell = _errors(local, test_mapped, reference)
    totals_zn, totals_cell = _errors(totals, test_mapped, reference)
    # measured (seed 0, M = 400, n_max 6, l_max 3): per Zn 0.130 (local) / 0.150 eV (totals);
    # cell energy per Zn 0.079 / 0.069 eV
    assert totals_zn <= 1.5 * local_zn and totals_zn < 0.19
    assert totals_cell <= 1.2 * local_cell and totals_cell < 0.09
    # training cell energies: the totals model, which learned them directly, reproduces them at least as
    # well as the local model (both are regularised by the same per-site noise, 0.2 eV; measured 0.072 and
    # 0.092 eV per Zn)
    some = (train_mapped[0][::4], train_mapped[1][::4])
    fit_cell = _errors(totals, some, reference)[1]
    local_fit_cell = _errors(local, some, reference)[1]
    assert fit_cell <= local_fit_cell


def test_totals_rows_are_the_projected_process_with_sum_observations():
    """Against the dense formula: (K_mm + K_sm^T L^-1 K_sm) alpha = K_sm^T L^-1 (Y - n mean), L_s = noise^2 n_s;
    and structures of one site each give exactly the local-label fit."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20))
    X /= np.linalg.norm(X, axis=1)[:, None]
    y = rng.normal(size=300)
    local = fit_sparse_stream(array_chunks(X, y, rows=64), n_inducing=50)

    def singles():
        for s in range(0, 300, 64):
            n = len(X[s:s + 64])
            yield X[s:s + 64], np.arange(n), y[s:s + 64], np.ones(n, dtype=int)
    same = fit_sparse_stream(singles, sample=array_chunks(X, y, rows=64), n_inducing=50, totals=True)
    assert np.abs(same.alpha_ - local.alpha_).max() < 1e-9 * np.abs(local.alpha_).max()
    assert same.mean_ == pytest.approx(local.mean_, abs=1e-12)

    counts = rng.integers(1, 9, size=70)
    counts = counts[np.cumsum(counts) <= 300]
    owner = np.repeat(np.arange(len(counts)), counts)
    Xs = X[:len(owner)]
    Y = rng.normal(size=len(counts)) * counts

    def sums():
        yield Xs, owner, Y, counts
    fitted = fit_sparse_stream(sums, sample=array_chunks(Xs, np.zeros(len(owner))), n_inducing=40, noise=0.2,
                               totals=True)
    Z, kernel = fitted.Z_, fitted.kernel
    Kmm = kernel(Z, Z)
    Kmm.flat[:: len(Z) + 1] += fitted.jitter * np.mean(np.diag(Kmm))
    Ksm = np.zeros((len(counts), len(owner)))
    Ksm[owner, np.arange(len(owner))] = 1.0
    Ksm = Ksm @ kernel(Xs, Z)
    noise = 0.04 * counts
    mean = Y.sum() / counts.sum()
    alpha = np.linalg.solve(Kmm + Ksm.T @ (Ksm / noise[:, None]), Ksm.T @ ((Y - counts * mean) / noise))
    assert fitted.mean_ == pytest.approx(mean, abs=1e-12)
    assert np.abs(fitted.alpha_ - alpha).max() < 1e-8 * np.abs(alpha).max()


def test_total_energy_errors_name_the_structure(split):
    atoms = split[0][0].copy()
    atoms.info["name"] = "cellA"
    del atoms.info["energy"]
    with pytest.raises(CGGPRError, match="cellA.*no total energy 'energy'"):
        total_energy(atoms, "energy")
    atoms.info["energy"] = float("nan")
    with pytest.raises(CGGPRError, match="cellA.*not finite"):
        total_energy(atoms, "energy")
    atoms.info["energy"] = "abc"
    with pytest.raises(CGGPRError, match="cellA.*not numeric"):
        total_energy(atoms, "energy")
    model = CGGPRModel(representation="AB2", **SMALL)  # the exact solver cannot take sum rows
    with pytest.raises(ModelError, match="sparse solver"):
        model.fit(split[0][:2], energy_key="energy")
    with pytest.raises(ModelError, match="needs energy_key"):
        model.fit(split[0][:2], forces_key="forces")


def test_cli_train_energy_key_round_trip(split, tmp_path):
    """extxyz files as GAP / MACE users have them (a total ``energy`` per frame, no per-atom energies) ->
    ``cggpr train --energy-key energy`` -> a model file the calculator reads."""
    from ase_cggpr.calculator import CGGPRCalculator

    train, test = split
    frames = []
    for atoms in train[:24:2]:
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, energy=atoms.info["energy"])
        del copy.info["energy"]
        frames.append(copy)
    data = tmp_path / "totals.xyz"
    write(data, frames)
    model_path = tmp_path / "totals.npz"
    args = ["train", data, "-o", model_path, "--energy-key", "energy", "--inducing", "60", "--n-max", "6",
            "--l-max", "3", "--test-fraction", "0.3", "--quiet"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = CGGPRModel.load(model_path)
    assert model.solver == "sparse" and model.training_["energy_key"] == "energy"
    assert model.training_["labels"] == "total energies" and model.training_["test_fraction"] == 0.3
    assert model.reference_energy == pytest.approx(train[0].info["reference_energy"])
    atoms = test[0].copy()
    atoms.calc = CGGPRCalculator(model_path)
    energy = atoms.get_potential_energy()
    assert np.isfinite(energy)
    assert energy == pytest.approx(float(model.predict(test[0]).sum()), abs=1e-8)
    # forces train atomistic models only: an AB2 model refuses them with one line, and nothing is written
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.calc.results["energy"],
                                           forces=np.zeros((len(atoms), 3)))
    write(data, frames)
    args = ["train", data, "-o", tmp_path / "f.npz", "--energy-key", "energy", "--forces-key", "forces"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 1 and "forces train atomistic models only" in result.output
    assert not (tmp_path / "f.npz").exists()
    # a frame without the total: one line naming it
    write(tmp_path / "bad.xyz", [a for a in train[:1]])
    args = ["train", tmp_path / "bad.xyz", "-o", tmp_path / "b.npz", "--energy-key", "free_energy"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 1 and "no total energy 'free_energy'" in result.output
    assert not (tmp_path / "b.npz").exists()


@pytest.fixture(scope="module")
def mofff_force_frames():
    """Atom-rattled (d-r) built-in frames of five nets, labelled with MOF-FF total energies and forces (LAMMPS)."""
    from ase_cggpr.mofff.calculator import MOFFFCalculator

    frames = [a for a in builtin_frames("atomistic", order=("d-r",), rattle=("small", "medium"))
              if a.info["net"] in ("YUG", "ABW", "BIK", "GIS", "SOD")]
    for atoms in frames:
        atoms.calc = MOFFFCalculator()
        atoms.info["energy"] = float(atoms.get_potential_energy())
        atoms.arrays["forces"] = atoms.get_forces().copy()
        atoms.calc.close()
        atoms.calc = None
    return frames


def test_force_rows_are_the_position_derivatives_of_the_summed_kernel(mofff_force_frames):
    """The rows of training on forces against central finite differences of sum_i k(x_i(r), z_m)."""
    from ase_cggpr.beads import coarse_grain
    from ase_cggpr.model import _training_species
    from ase_cggpr.streaming import kernel_position_gradient

    atoms = mofff_force_frames[0]
    model = CGGPRModel(representation="atomistic", **SMALL)
    bead_map = coarse_grain(atoms, "atomistic")
    model.spec = _training_species(model.spec, (None, None), [bead_map])
    backend = model.descriptor_backend()
    gradients = backend.gradients(bead_map.structure)
    Z = backend.vectors([bead_map.structure])[[0, 3]]  # two environments as inducing vectors
    kernel = PolynomialKernel(model.spec.zeta, model.spec.offset)
    rows = kernel_position_gradient(gradients, Z, kernel, batch=1)
    assert rows.shape == (2, 3 * len(atoms))
    h = 1e-4
    for atom, xyz in ((int(bead_map.centre_indices[0]), 0), (int(np.argmax(atoms.numbers == 1)), 2)):
        values = []
        for sign in (1, -1):
            moved = bead_map.structure.copy()
            moved.positions[atom, xyz] += sign * h
            values.append(kernel(backend.vectors([moved]), Z).sum(axis=0))
        numeric = (values[0] - values[1]) / (2 * h)
        assert np.allclose(rows[:, 3 * atom + xyz], numeric, rtol=1e-4, atol=1e-6 * np.abs(rows).max())


def test_forces_train_an_atomistic_model(mofff_force_frames):
    """MOF-FF totals + forces -> an atomistic model whose forces on a held-out net (SOD) are closer to MOF-FF's
    than those of the model trained on the totals alone, and whose cell energies are far better."""
    test = [a for a in mofff_force_frames if a.info["net"] == "SOD"]
    train = [a for a in mofff_force_frames if a.info["net"] != "SOD"]
    reference = train[0].info["reference_energy"]
    results = {}
    for key in (None, "forces"):
        model = CGGPRModel(representation="atomistic", **SMALL, reference_energy=reference, solver="sparse",
                           solver_options={"n_inducing": 60})
        model.fit(train, energy_key="energy", forces_key=key)
        force_errors = np.concatenate([model.compute(a, forces=True).forces - a.arrays["forces"] for a in test])
        energy_errors = []
        for atoms in test:
            local = model.predict(atoms)
            energy_errors.append(local.mean() - (atoms.info["energy"] / len(local) - reference))
        fit_errors = np.concatenate([model.compute(a, forces=True).forces - a.arrays["forces"] for a in train[::4]])
        results[key] = (float(np.sqrt(np.mean(force_errors**2))), float(np.sqrt(np.mean(np.square(energy_errors)))),
                        float(np.sqrt(np.mean(fit_errors**2))))
        if key:
            assert model.training_["labels"] == "total energies and forces"
            assert model.training_["n_force_components"] == 3 * sum(len(a) for a in train)
    # measured (M = 60, n_max 6, l_max 3; held-out force RMSE, cell energy per Zn RMSE, training force RMSE):
    # totals only 0.649 eV/Å, 0.186 eV, 0.456 eV/Å; totals + forces 0.637 eV/Å, 0.101 eV, 0.419 eV/Å. The
    # forces mostly help the energies here: a Zn-centred atomistic model (atom_sigma 0.5 Å) resolves little of
    # the intra-linker forces of these frames (label RMS about 1 eV/Å).
    with_forces, totals_only = results["forces"], results[None]
    assert with_forces[1] < 0.7 * totals_only[1]
    assert with_forces[0] < totals_only[0]
    assert with_forces[2] < 0.97 * totals_only[2]


def test_cli_train_forces_key(mofff_force_frames, tmp_path):
    """``cggpr train --representation atomistic --energy-key energy --forces-key forces`` on an extxyz file as
    ASE writes it (total energy and forces in the calculator results) -> a model whose metadata records them."""
    frames = []
    for atoms in mofff_force_frames[::3]:
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, energy=atoms.info["energy"], forces=atoms.arrays["forces"])
        del copy.info["energy"], copy.arrays["forces"]
        frames.append(copy)
    data = tmp_path / "ef.xyz"
    write(data, frames)
    model_path = tmp_path / "atomistic.npz"
    args = ["train", data, "-o", model_path, "--representation", "atomistic", "--energy-key", "energy",
            "--forces-key", "forces", "--force-noise", "0.2", "--inducing", "20", "--n-max", "4", "--l-max", "2",
            "--test-fraction", "0.3", "--group-key", "net"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "test force RMSE (eV/Å)" in result.output
    model = CGGPRModel.load(model_path)
    assert model.training_["forces_key"] == "forces" and model.training_["force_noise"] == 0.2
    assert model.training_["n_force_components"] > 0
