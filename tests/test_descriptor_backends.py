"""Descriptor backends as classes (ase_cggpr.descriptors): vectors equal the module functions bit for bit,
gradients of featomic and quippy agree and match finite differences, one cached instance per spec.

Small SOAP bases on one built-in YUG frame (16 Zn, 272 atoms), so the file runs in a few seconds.
"""

import numpy as np
import pytest
from conftest import net_frames

from ase_cggpr.beads import coarse_grain
from ase_cggpr.descriptors import (
    DescriptorBackend,
    DescriptorGradients,
    backend_class,
    backend_for,
    soap_dimension,
    soap_vectors,
)
from ase_cggpr.descriptors import featomic as fb
from ase_cggpr.descriptors import quippy as qb
from ase_cggpr.errors import ModelError
from ase_cggpr.spec import ModelSpec

HYPERS = {"atomistic": dict(n_max=4, l_max=2, cutoff=4.0), "AB2": dict(n_max=4, l_max=2),
          "A": dict(n_max=4, l_max=2)}
MODULES = {"featomic": fb, "quippy": qb}


@pytest.fixture(scope="module")
def maps():
    frame = net_frames("atomistic")[1]  # the small r-d rattle: no symmetry makes two centres alike
    return {rep: coarse_grain(frame, rep) for rep in HYPERS}


def spec_of(rep, backend):
    return ModelSpec(representation=rep, backend=backend, **HYPERS[rep])


@pytest.mark.parametrize("backend", ["featomic", "quippy"])
@pytest.mark.parametrize("rep", ["atomistic", "AB2", "A"])
def test_vectors_equal_the_module_functions_bit_for_bit(maps, rep, backend):
    spec = spec_of(rep, backend)
    instance = backend_for(spec)
    assert isinstance(instance, DescriptorBackend) and instance.name == backend
    structure = maps[rep].structure
    reference = MODULES[backend].compute([structure], **instance.hypers())
    np.testing.assert_array_equal(instance.vectors([structure]), reference)
    np.testing.assert_array_equal(soap_vectors([maps[rep]], spec), reference)
    assert reference.shape == (16, soap_dimension(spec)) == (16, instance.dimension)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-12)
    # selected centres: the same rows, bit for bit with the module function
    centres = [maps[rep].centre_indices[[0, 5, 11]]]
    np.testing.assert_array_equal(instance.vectors([structure], centres),
                                  MODULES[backend].compute([structure], **instance.hypers(), centres=centres))


def test_backend_for_keeps_one_instance_per_descriptor_setting(maps):
    spec = spec_of("AB2", "featomic")
    first = backend_for(spec)
    assert backend_for(spec) is first
    assert backend_for(spec.replace(noise=0.5, zeta=2)) is first  # kernel fields do not touch the descriptor
    assert backend_for(spec.replace(cutoff=8.0)) is not first
    other = backend_for(spec, "quippy")
    assert other.name == "quippy" and backend_for(spec.replace(backend="quippy")) is other
    # the featomic calculator (and its splines) is built once and reused by vectors() and gradients()
    first.vectors([maps["AB2"].structure])
    calculator = first.calculator()
    first.gradients(maps["AB2"].structure)
    assert first.calculator() is calculator
    # to_dict names the backend and every hyperparameter; it rebuilds an equal descriptor
    record = first.to_dict()
    assert record == {"backend": "featomic", "species": [14, 8], "centre_species": [14], "cutoff": 9.0,
                      "atom_sigma": 0.2, "n_max": 4, "l_max": 2, "cutoff_transition_width": 0.5}
    rebuilt = backend_class(record.pop("backend"))(**record)
    np.testing.assert_array_equal(rebuilt.vectors([maps["AB2"].structure]), first.vectors([maps["AB2"].structure]))


def test_hyperparameters_are_checked():
    with pytest.raises(ModelError, match="centre species .*among the species"):
        fb.FeatomicBackend(species=(14, 8), centre_species=(30,), cutoff=9.0, atom_sigma=0.2)
    with pytest.raises(ModelError, match="unknown descriptor backend"):
        backend_class("dscribe")


def _directional_fd(instance, structure, dE_dx, direction, h=1e-4):
    plus, minus = structure.copy(), structure.copy()
    plus.positions += h * direction
    minus.positions -= h * direction
    return float(np.sum((instance.vectors([plus]) - instance.vectors([minus])) * dE_dx)) / (2 * h)


@pytest.mark.parametrize("rep", ["atomistic", "AB2", "A"])
def test_gradients_agree_between_backends_and_with_finite_differences(maps, rep):
    structure = maps[rep].structure
    rng = np.random.default_rng(7)
    contracted = {}
    for backend in ("featomic", "quippy"):
        instance = backend_for(spec_of(rep, backend))
        gradients = instance.gradients(structure)
        assert isinstance(gradients, DescriptorGradients)
        np.testing.assert_array_equal(gradients.centres, maps[rep].centre_indices)
        np.testing.assert_allclose(gradients.vectors, instance.vectors([structure]), rtol=0, atol=1e-12)
        dE_dx = np.random.default_rng(3).normal(size=gradients.vectors.shape)
        contracted[backend] = gradients.contract(dE_dx)
        assert contracted[backend].shape == (len(structure), 3)
        # translation invariance: the gradient sums to zero
        np.testing.assert_allclose(contracted[backend].sum(axis=0), 0.0, atol=1e-8)
        for _ in range(2):  # d/dh sum(dE_dx * x(r + h v)) = sum(dE/dr * v)
            direction = rng.normal(size=structure.positions.shape)
            numeric = _directional_fd(instance, structure, dE_dx, direction)
            analytic = float(np.sum(contracted[backend] * direction))
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7), (backend, analytic, numeric)
    scale = np.abs(contracted["quippy"]).max()
    assert np.abs(contracted["featomic"] - contracted["quippy"]).max() < 1e-5 * scale


@pytest.mark.parametrize("backend", ["featomic", "quippy"])
def test_gradients_of_selected_centres(maps, backend):
    """gradients(structure, centres) is the full gradient with dE/dx zero on the other centres."""
    structure = maps["AB2"].structure
    instance = backend_for(spec_of("AB2", backend))
    full = instance.gradients(structure)
    chosen = [2, 9, 13]
    part = instance.gradients(structure, centres=np.array(chosen))
    np.testing.assert_array_equal(part.centres, chosen)
    np.testing.assert_allclose(part.vectors, full.vectors[chosen], rtol=0, atol=1e-12)
    dE_dx = np.random.default_rng(5).normal(size=part.vectors.shape)
    padded = np.zeros_like(full.vectors)
    padded[chosen] = dE_dx
    np.testing.assert_allclose(part.contract(dE_dx), full.contract(padded), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="expected"):
        part.contract(np.zeros_like(full.vectors))
    # no centres at all: no vectors, no gradient
    none = instance.gradients(structure, centres=np.array([], dtype=int))
    assert none.vectors.shape == (0, instance.dimension)
    np.testing.assert_array_equal(none.contract(np.zeros((0, instance.dimension))), np.zeros((len(structure), 3)))
