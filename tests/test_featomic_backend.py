"""The featomic SOAP backend against the quippy reference: same vectors element by element, same kernels.

Everything here is a real computation with both libraries, on small built-in structures and on three
MOF-FF-labelled frames of the package's built-in dataset (net YUG, atomistic and coarse-grained; conftest).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ase_cggpr.descriptors import featomic as fb
from ase_cggpr.descriptors import quippy as qb

#: (species, centre species, cutoff, atom_sigma) per representation, the paper's optima.
HYPERS = {
    "atomistic": ((30, 7, 6, 1), (30,), 6.75, 0.5),
    "AB2": ((14, 8), (14,), 9.0, 0.2),
    "A": ((14,), (14,), 13.5, 0.8),
}
DIMENSION = {"atomistic": 18720, "AB2": 4752, "A": 1224}

# tolerances of issue 5
KERNEL_CORRELATION = 1 - 1e-9
KERNEL_MAX_DIFF = 1e-5
VECTOR_MAX_DIFF = 1e-6


def soap_kwargs(representation: str) -> dict:
    species, centres, cutoff, sigma = HYPERS[representation]
    return dict(species=species, centre_species=centres, cutoff=cutoff, atom_sigma=sigma, n_max=16, l_max=8,
                cutoff_transition_width=0.5)


def assert_same_soap(frames: list[Atoms], representation: str) -> tuple[float, float, float]:
    """Compare both backends on ``frames``; return (max |dx|, 1 - corr(K), max |dK|) for the record."""
    kwargs = soap_kwargs(representation)
    reference = qb.compute(frames, **kwargs)
    fast = fb.compute(frames, **kwargs)
    assert fast.shape == reference.shape
    assert fast.shape[1] == DIMENSION[representation]
    assert fast.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-12)
    vector_diff = float(np.abs(fast - reference).max())
    assert vector_diff < VECTOR_MAX_DIFF, f"{representation}: max |x_featomic - x_quippy| = {vector_diff:.2e}"
    k_reference = (1.0 + reference @ reference.T) ** 4
    k_fast = (1.0 + fast @ fast.T) ** 4
    correlation = float(np.corrcoef(k_reference.ravel(), k_fast.ravel())[0, 1]) if len(fast) > 1 else 1.0
    kernel_diff = float(np.abs(k_fast - k_reference).max())
    assert correlation > KERNEL_CORRELATION, f"{representation}: kernel correlation 1 - {1 - correlation:.1e}"
    assert kernel_diff < KERNEL_MAX_DIFF, f"{representation}: max |dK^4| = {kernel_diff:.2e}"
    return vector_diff, 1.0 - correlation, kernel_diff


def relabelled_rocksalt(seed: int = 0) -> Atoms:
    """A small rattled rocksalt cell as Si (A) / O (B) beads: short periodic images, many neighbours."""
    atoms = bulk("NaCl", "rocksalt", a=6.0, cubic=True)
    atoms.set_chemical_symbols(["Si" if z == 11 else "O" for z in atoms.numbers])
    atoms.rattle(0.3, seed=seed)
    return atoms


def four_species_crystal(seed: int = 1) -> Atoms:
    """A rattled zincblende supercell relabelled Zn / N / C / H (atomistic species)."""
    atoms = bulk("ZnS", "zincblende", a=5.4, cubic=True).repeat((1, 1, 2))
    rng = np.random.default_rng(seed)
    symbols = ["Zn" if z == 30 else rng.choice(["N", "C", "H"]) for z in atoms.numbers]
    atoms.set_chemical_symbols(symbols)
    atoms.rattle(0.2, seed=seed)
    return atoms


# ---------------------------------------------------------------------------------------------
# Structures built here (always run)
# ---------------------------------------------------------------------------------------------

def test_radial_function_derivatives_match_finite_differences():
    alpha, centres, transform = fb.gap_radial_basis(9.0, 0.2, 16)
    r = np.linspace(0.0, 9.0, 61)[1:]
    h = 1e-6
    for ell in range(9):
        analytic = fb.gap_radial_functions(ell, r, alpha, centres, transform, derivative=True)
        numeric = (fb.gap_radial_functions(ell, r + h, alpha, centres, transform)
                   - fb.gap_radial_functions(ell, r - h, alpha, centres, transform)) / (2 * h)
        np.testing.assert_allclose(analytic, numeric, atol=1e-8)


def test_centre_atom_is_the_first_basis_gaussian():
    # at r = 0 the sampled radial function is exactly the first Gaussian, so the centre's own density has
    # quippy's coefficients L^T e_0 = (L_00, 0, ..., 0): only the first orthonormal function
    alpha, centres, transform = fb.gap_radial_basis(13.5, 0.8, 16)
    at_zero = fb.gap_radial_functions(0, np.array([0.0]), alpha, centres, transform)[0]
    assert at_zero[0] > 0
    np.testing.assert_allclose(at_zero[1:], 0.0, atol=1e-12 * at_zero[0])


@pytest.mark.parametrize("representation", ["AB2", "A"])
def test_built_crystal_matches_quippy(representation):
    frames = [relabelled_rocksalt(seed) for seed in range(3)]
    if representation == "A":
        frames = [atoms[atoms.numbers == 14] for atoms in frames]
    assert_same_soap(frames, representation)


def test_built_four_species_crystal_matches_quippy():
    assert_same_soap([four_species_crystal(1), four_species_crystal(2)], "atomistic")


def test_isolated_cluster_matches_quippy():
    atoms = relabelled_rocksalt(4)
    atoms.pbc = False
    atoms.cell = None
    assert_same_soap([atoms], "AB2")


def test_rows_follow_frames_and_atoms_including_frames_without_centres():
    kwargs = soap_kwargs("AB2")
    first, second = relabelled_rocksalt(5), relabelled_rocksalt(6)
    no_centre = first[first.numbers == 8]
    calls: list[int] = []
    together = fb.compute([first, no_centre, second], progress=calls.append, **kwargs)
    apart = np.vstack([fb.compute([first], **kwargs), fb.compute([second], **kwargs)])
    np.testing.assert_array_equal(together, apart)
    assert fb.compute([no_centre], **kwargs).shape == (0, DIMENSION["AB2"])
    assert sum(calls) == 3


def test_atoms_outside_the_species_are_ignored_like_quippy():
    # A-only vectors of Si/O frames: O is not a species, so it must not matter (quippy ignores it too)
    kwargs = soap_kwargs("A")
    frames = [relabelled_rocksalt(seed) for seed in (8, 9)]
    with_o = fb.compute(frames, **kwargs)
    np.testing.assert_array_equal(with_o, fb.compute([a[a.numbers == 14] for a in frames], **kwargs))
    np.testing.assert_allclose(with_o, qb.compute(frames, **kwargs), atol=VECTOR_MAX_DIFF)
    gradients = fb.compute_gradients(frames[0], **kwargs)
    np.testing.assert_array_equal(gradients.centres, np.flatnonzero(frames[0].numbers == 14))
    dE_dr = gradients.contract(np.ones_like(gradients.vectors))
    assert dE_dr.shape == (len(frames[0]), 3)
    np.testing.assert_array_equal(dE_dr[frames[0].numbers == 8], 0.0)
    si_only = frames[0][frames[0].numbers == 14]
    np.testing.assert_allclose(dE_dr[frames[0].numbers == 14],
                               fb.compute_gradients(si_only, **kwargs).contract(np.ones_like(gradients.vectors)),
                               atol=1e-12)


def test_small_batches_give_the_same_vectors(monkeypatch):
    kwargs = soap_kwargs("AB2")
    frames = [relabelled_rocksalt(seed) for seed in range(3)]
    whole = fb.compute(frames, **kwargs)
    monkeypatch.setattr(fb, "CENTRES_PER_BATCH", 1)
    np.testing.assert_array_equal(fb.compute(frames, **kwargs), whole)


def test_gradients_in_batches_of_centres_equal_the_whole(monkeypatch):
    """A structure with more centres than GRADIENT_CENTRES_PER_BATCH keeps only its vectors and recomputes the
    gradients batch by batch in each contraction (bounded memory, issue 29): the same numbers."""
    kwargs = soap_kwargs("AB2")
    atoms = relabelled_rocksalt(7)
    key = fb._hypers(kwargs["cutoff"], kwargs["atom_sigma"], 16, 8, 0.5)
    whole = fb.SoapGradients(atoms, (14, 8), (14,), key, strain=True)
    monkeypatch.setattr(fb, "GRADIENT_CENTRES_PER_BATCH", 3)
    batched = fb.SoapGradients(atoms, (14, 8), (14,), key, strain=True)
    assert batched._batched is not None and whole._batched is None and len(whole.centres) > 3
    np.testing.assert_array_equal(batched.centres, whole.centres)
    np.testing.assert_allclose(batched.vectors, whole.vectors, rtol=0, atol=1e-14)
    rng = np.random.default_rng(1)
    dE_dx = rng.normal(size=whole.vectors.shape)
    scale = np.abs(whole.contract(dE_dx)).max()
    np.testing.assert_allclose(batched.contract(dE_dx), whole.contract(dE_dx), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(batched.contract_strain(dE_dx), whole.contract_strain(dE_dx), rtol=0,
                               atol=1e-12 * scale)
    fresh = fb.SoapGradients(atoms, (14, 8), (14,), key, strain=True)  # strain without a position contraction
    np.testing.assert_allclose(fresh.contract_strain(2 * dE_dx), 2 * whole.contract_strain(dE_dx), rtol=0,
                               atol=1e-12 * scale)
    many = rng.normal(size=(2, *whole.vectors.shape))
    np.testing.assert_allclose(batched.contract_many(many), whole.contract_many(many), rtol=0, atol=1e-12 * scale)
    centres = whole.centres[::2]  # selected centres, batched too
    sub = fb.SoapGradients(atoms, (14, 8), (14,), key, centres=centres)
    np.testing.assert_array_equal(sub.centres, centres)
    np.testing.assert_allclose(sub.vectors, whole.vectors[::2], rtol=0, atol=1e-14)


@pytest.mark.parametrize("representation", ["AB2", "atomistic"])
def test_contracted_gradients_match_finite_differences(representation):
    kwargs = soap_kwargs(representation)
    atoms = relabelled_rocksalt(7) if representation == "AB2" else four_species_crystal(3)
    gradients = fb.compute_gradients(atoms, **kwargs)
    np.testing.assert_array_equal(gradients.vectors, fb.compute([atoms], **kwargs))
    rng = np.random.default_rng(0)
    dE_dx = rng.normal(size=gradients.vectors.shape)
    dE_dr = gradients.contract(dE_dx)
    assert dE_dr.shape == (len(atoms), 3)
    np.testing.assert_allclose(dE_dr.sum(axis=0), 0.0, atol=1e-10)  # translation invariance
    h = 1e-5
    for atom in rng.choice(len(atoms), 3, replace=False):
        for axis in range(3):
            energies = []
            for step in (h, -h):
                moved = atoms.copy()
                moved.positions[atom, axis] += step
                energies.append(float(np.sum(fb.compute([moved], **kwargs) * dE_dx)))
            numeric = (energies[0] - energies[1]) / (2 * h)
            assert abs(numeric - dE_dr[atom, axis]) < 1e-7 * max(1.0, abs(numeric))
    # the one-call form evaluates dE/dx at the structure's own vectors
    via_callable = fb.contract_gradients(atoms, dE_dx=lambda x: 2.0 * x + dE_dx, **kwargs)
    np.testing.assert_allclose(via_callable, dE_dr, atol=1e-12)  # d|x|^2/dx is orthogonal to the sphere


def test_a_broken_installation_without_featomic_explains_how_to_install():
    code = (
        "import sys; sys.modules['featomic'] = None\n"
        "try:\n"
        "    import ase_cggpr.descriptors.featomic\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert "featomic is a core dependency" in result.stdout


# ---------------------------------------------------------------------------------------------
# MOF-FF-labelled frames of the built-in dataset
# ---------------------------------------------------------------------------------------------

def read_frames(kind: str) -> list[Atoms]:
    """The three built-in YUG frames (``kind`` "atomistic" or "cg"; 16 Zn each)."""
    from conftest import net_frames

    return net_frames(kind)


@pytest.mark.parametrize("representation", ["atomistic", "AB2", "A"])
def test_dataset_frames_match_quippy(representation):
    if representation == "atomistic":
        frames = read_frames("atomistic")
    else:
        frames = read_frames("cg")
        if representation == "A":
            frames = [atoms[atoms.numbers == 14] for atoms in frames]
    assert_same_soap(frames, representation)


def test_dataset_frame_gradients_match_finite_differences():
    frame = read_frames("cg")[0]
    kwargs = soap_kwargs("AB2")
    rng = np.random.default_rng(1)
    gradients = fb.compute_gradients(frame, **kwargs)
    dE_dx = rng.normal(size=gradients.vectors.shape)
    dE_dr = gradients.contract(dE_dx)
    h = 1e-5
    for atom in (0, int(np.flatnonzero(frame.numbers == 8)[0])):
        for axis in range(3):
            plus, minus = frame.copy(), frame.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            numeric = float(np.sum((fb.compute([plus], **kwargs) - fb.compute([minus], **kwargs)) * dE_dx)) / (2 * h)
            assert abs(numeric - dE_dr[atom, axis]) < 1e-7 * max(1.0, abs(numeric))


@pytest.mark.parametrize("representation", ["atomistic", "AB2", "A"])
def test_models_trained_with_either_backend_predict_the_same(representation):
    from ase_cggpr.model import CGGPRModel

    frames = read_frames("atomistic" if representation == "atomistic" else "cg")
    label_key = "energies" if representation == "atomistic" else "e_local"
    models = {backend: CGGPRModel(representation=representation, backend=backend).fit(frames[:2], label_key=label_key)
              for backend in ("quippy", "featomic")}
    predictions = {backend: model.predict(frames[2]) for backend, model in models.items()}
    assert np.abs(predictions["featomic"] - predictions["quippy"]).max() < 1e-6  # eV: < 1e-3 meV
    # a model trained on quippy vectors predicts the same from featomic vectors
    models["quippy"].spec = models["quippy"].spec.replace(backend="featomic")
    assert np.abs(models["quippy"].predict(frames[2]) - predictions["quippy"]).max() < 1e-6
