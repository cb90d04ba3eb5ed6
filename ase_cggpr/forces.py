"""Forces: the gradient of the learned energy, by the chain rule through the SOAP descriptor.

The model energy of a structure is a sum over metal environments (centres) i,

    E = sum_i e(x_i),    e(x) = mean + sum_n alpha_n (offset + x · x_n)**zeta,

with x_i the normalised SOAP vector of centre i and x_n the training environments. Then

    dE/dx_i = zeta sum_n alpha_n (offset + x_i · x_n)**(zeta - 1) x_n        (one D-vector per centre)
    dE/dr_j = sum_i (dx_i/dr_j)^T dE/dx_i                                       (per bead/atom j)

``dE/dx_i`` is formed in blocks of training rows (never an n_centres x N x D array) and contracted with the
descriptor's position gradients centre by centre, so the (n_centres, n_atoms, 3, D) Jacobian is never
stored: with featomic (default when installed, 3-5x faster) the contraction goes through the spherical
expansion gradients (:class:`ase_cggpr.descriptors.featomic.SoapGradients`); with quippy (``grad=True``)
the per-pair gradient rows of one structure are contracted as they come and summed per atom (quippy gives
one row per periodic image of a neighbour).

What the forces mean physically
-------------------------------
They are minus the gradient of the *learned* energy with respect to the positions of what the descriptor
sees. In the atomistic representation that is every atom. In the coarse-grained representations the energy
depends only on the A beads (the metals) and, for AB2, on the B beads at the centroids of the linkers' ring
atoms; by the chain rule the force on a B bead is shared equally among its ring atoms (1/n each, n ring
atoms), the A-bead force acts on the metal, and everything else (H atoms, substituents, and internal linker
motions that leave the ring centroid in place: ring deformation, rotation of the ring about its centroid)
carries no force. Such forces drive the coarse-grained degrees of freedom (metal positions and linker
centroids) down the learned energy surface; they are not, and do not approximate, the atomistic forces.
The forces sum to zero (translation invariance of SOAP) up to numerical noise.

Stress is not provided: it would need the strain derivatives of the descriptor (the virial), which the
descriptor backends here do not expose in contracted form.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from ase import Atoms

from .beads import BeadMap
from .descriptors import SPECIES
from .errors import ModelError

GradientBackend = Literal["auto", "featomic", "quippy"]

#: Training rows per block when forming dE/dx (bounds the n_centres x block kernel slab).
TRAINING_BLOCK = 4096


def _regressor_weights(regressor) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(training or inducing vectors, weights, zeta, offset) such that e(x) = const + sum_n w_n k(x, X_n)."""
    for x_name, w_name in (("X_", "alpha_"), ("Z_", "alpha_"), ("inducing_", "alpha_")):
        X, w = getattr(regressor, x_name, None), getattr(regressor, w_name, None)
        if X is not None and w is not None and np.shape(X)[0] == np.shape(w)[0]:
            return np.asarray(X), np.asarray(w), int(regressor.zeta), float(regressor.offset)
    raise ModelError(f"forces need a kernel-weight regressor (X_, alpha_); got {type(regressor).__name__}")


def energy_gradient_wrt_vectors(regressor, X: np.ndarray, *, block: int = TRAINING_BLOCK) -> np.ndarray:
    """dE/dx per centre, (n_centres, D): zeta sum_n alpha_n (offset + x·x_n)**(zeta-1) x_n, in training blocks."""
    train, alpha, zeta, offset = _regressor_weights(regressor)
    X = np.asarray(X, dtype=np.float64)
    out = np.zeros_like(X)
    if zeta == 0:
        return out
    for start in range(0, train.shape[0], block):
        rows = np.asarray(train[start:start + block], dtype=np.float64)
        k = X @ rows.T
        k += offset
        if zeta > 2:
            np.power(k, zeta - 1, out=k)
        elif zeta == 1:
            k[:] = 1.0
        k *= alpha[start:start + block]
        out += k @ rows
    out *= zeta
    return out


def default_gradient_backend() -> str:
    """``featomic`` when it can be imported (faster), else ``quippy``."""
    try:
        import featomic  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        return "quippy"
    return "featomic"


def _descriptor_kwargs(spec) -> dict:
    species, centres = SPECIES[spec.representation]
    return dict(species=species, centre_species=centres, cutoff=spec.cutoff, atom_sigma=spec.atom_sigma,
                n_max=spec.n_max, l_max=spec.l_max, cutoff_transition_width=spec.cutoff_transition_width)


def bead_energy_gradient(model, bead_map: BeadMap, *, backend: GradientBackend = "auto"
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(dE/dr on the descriptor structure's atoms (n, 3) in eV/Å, SOAP vectors of the centres (n_centres, D)).

    The vectors are those the gradient was taken at (in metal order), so callers can predict energies
    from them without a second descriptor evaluation.
    """
    spec = model.spec
    if bead_map.representation != spec.representation:
        raise ModelError(f"structure {bead_map.name!r} is in the {bead_map.representation} representation but "
                         f"the model uses {spec.representation}")
    backend = default_gradient_backend() if backend == "auto" else backend
    structure = bead_map.structure
    kwargs = _descriptor_kwargs(spec)
    if backend == "featomic":
        from .descriptors.featomic import compute_gradients

        gradients = compute_gradients(structure, **kwargs)
        _check_centres(gradients.centres, bead_map)
        dE_dx = energy_gradient_wrt_vectors(model.regressor_, gradients.vectors)
        return gradients.contract(dE_dx), gradients.vectors
    if backend == "quippy":
        return _quippy_gradient(model, bead_map, kwargs)
    raise ModelError(f"unknown gradient backend {backend!r}; choose 'auto', 'featomic' or 'quippy'")


def _check_centres(centres: np.ndarray, bead_map: BeadMap) -> None:
    if not np.array_equal(np.asarray(centres), np.asarray(bead_map.centre_indices)):
        raise ModelError(f"structure {bead_map.name!r}: descriptor centres do not match the metal sites")


def _quippy_gradient(model, bead_map: BeadMap, kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
    from .descriptors.quippy import _descriptor, descriptor_string

    descriptor = _descriptor(descriptor_string(**kwargs))
    structure = bead_map.structure
    result = descriptor.calc(structure, grad=True)
    dimension = descriptor.dimensions() - 1
    vectors = np.asarray(result["data"])[:, :dimension]
    centres = np.flatnonzero(np.isin(structure.numbers, kwargs["centre_species"]))
    _check_centres(centres, bead_map)
    dE_dx = energy_gradient_wrt_vectors(model.regressor_, vectors)
    row_of_atom = np.full(len(structure), -1)
    row_of_atom[centres] = np.arange(len(centres))
    index = np.asarray(result["grad_index_0based"])  # (n_pairs, 2): centre atom, neighbour atom (per image)
    grad = result["grad_data"]  # (n_pairs, 3, D + 1): d x_centre / d r_neighbour
    out = np.zeros((len(structure), 3))
    for start in range(0, index.shape[0], 2048):
        rows = slice(start, start + 2048)
        g = np.asarray(grad[rows])[:, :, :dimension]
        contribution = np.einsum("gxd,gd->gx", g, dE_dx[row_of_atom[index[rows, 0]]], optimize=True)
        np.add.at(out, index[rows, 1], contribution)
    return out, vectors


def bead_to_atom_gradient(bead_map: BeadMap, bead_gradient: np.ndarray, n_atoms: int) -> np.ndarray:
    """Chain rule from the descriptor structure to the input atoms: (n_atoms, 3).

    atomistic: identity. AB2: A beads -> metals; each B bead's gradient split equally over its ring atoms
    (the bead is their centroid). A: A beads -> metals. Already coarse-grained input maps bead to bead.
    """
    connectivity = bead_map.connectivity
    out = np.zeros((n_atoms, 3))
    if bead_map.representation == "atomistic":
        out[:] = bead_gradient
        return out
    n_metals = connectivity.n_metals
    out[connectivity.metal_indices] += bead_gradient[:n_metals]
    if bead_map.representation == "AB2":
        for k, ring in enumerate(connectivity.rings):
            out[ring] += bead_gradient[n_metals + k] / len(ring)
    return out


def predict_with_forces(model, atoms: Atoms, bead_map: BeadMap | None = None, *, return_std: bool = False,
                        backend: GradientBackend = "auto"):
    """Local energies (eV, metal order), forces on ``atoms`` (eV/Å) [and per-metal std (eV)].

    The energies are predicted from the same SOAP vectors the gradient was taken at.
    """
    if not model.is_fitted:
        raise ModelError("this model is not fitted yet")
    bead_map = bead_map if bead_map is not None else model.bead_map(atoms)
    bead_gradient, vectors = bead_energy_gradient(model, bead_map, backend=backend)
    forces = -bead_to_atom_gradient(bead_map, bead_gradient, len(atoms))
    prediction = model.regressor_.predict(vectors, return_std=return_std)
    from .model import check_prediction  # a NaN energy, std or force is an error naming the structure

    check_prediction(bead_map.name, prediction[0] if return_std else prediction,
                     prediction[1] if return_std else None)
    if not np.isfinite(forces).all():
        raise ModelError(f"structure {bead_map.name!r}: the model predicted non-finite forces (NaN or inf)")
    if return_std:
        return prediction[0], forces, prediction[1]
    return prediction, forces
