"""Fast SOAP backend: featomic with a radial basis that reproduces quippy's vectors element by element.

quippy's ``soap`` descriptor expands the Gaussian-smeared neighbour density (width ``atom_sigma``) in
GAP's equispaced-Gaussian radial basis:

* ``n_max`` Gaussians ``g_a(r) = exp(-alpha (r - r_a)**2)`` with ``alpha = 1 / (2 atom_sigma**2)`` and
  centres ``r_a = a (cutoff + atom_sigma sqrt(20 ln 10)) / n_max``, ``a = 0 .. n_max-1``;
* the radial part of a neighbour at distance ``r`` in channel ``l`` is sampled on the centres,
  ``f_la(r) = exp(-alpha (r**2 + r_a**2)) i_l(2 alpha r r_a)`` (``i_l``: modified spherical Bessel
  function of the first kind), interpolated by the Gaussians (``Cov^-1 f``, ``Cov_ab = g_a(r_b)``) and
  rewritten in the orthonormal basis ``L^-1 g`` where ``L L^T`` is the Cholesky factorisation of the
  overlap ``S_ab = int_0^inf g_a g_b r**2 dr``: coefficients ``L^T Cov^-1 f_l(r)``.

featomic reproduces this with an ``Explicit`` basis holding, per ``l``, a cubic Hermite spline of those
``n_max`` functions of ``r``, a ``DiracDelta`` density with centre weight 1 (the centre's own Gaussian is
exactly ``g_0``), and a ``ShiftedCosine`` cutoff of the same width as quippy's transition. The power
spectrum is formed here, in quippy's feature order: (species, n) pairs ``ia >= jb`` with ``ia`` outer,
the radial index fastest within a species, ``l`` innermost; off-diagonal pairs scaled by ``sqrt(2)`` and
each ``l`` by ``1/sqrt(2l+1)``; rows normalised to unit length.

Position gradients are available through :func:`compute_gradients`, which keeps them in the compact
form of the spherical-expansion gradients and contracts them with ``dE/dx`` per centre (see
:class:`SoapGradients`), so a force evaluation never materialises the (n_centres, n_atoms, 3, D) array.
With ``strain=True`` the same featomic call also returns the expansion's strain gradients, contracted
the same way into ``dE/d(eps)`` (3, 3), from which the model forms the stress. A structure with more than
:data:`GRADIENT_CENTRES_PER_BATCH` centres keeps only its vectors; each contraction recomputes the gradients batch
by batch of centres, so memory stays bounded on large networks (5,174-bead AB2 cell, energy + forces: peak 4.1 ->
1.2 GB, CPU time 9.0 -> 8.4 s, the values computed once more).

:class:`FeatomicBackend` is the :class:`~ase_cggpr.descriptors.DescriptorBackend` over these functions: it
builds the ``SphericalExpansion`` calculator (and its splines) once and uses it for every call; the calculator's
JSON parameters (the tabulated splines) are also kept on disk (:func:`cached_calculator_parameters`), so a new
process builds it in about 0.1 s instead of 1-2 s. With ``strain=True`` featomic's strain gradients cost about as
much as the position gradients (20 ms each for the shipped AB2 on the 272-atom cag cell, values 3 ms): ask for
the stress only when it is needed.

featomic is a core dependency of the package (declared once, in ``install_requires``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from ase import Atoms
from scipy import sparse
from scipy.special import erf, ive

from ..cachedir import cache_dir
from . import DescriptorBackend, check_centres, dimension

INSTALL_HINT = "reinstall the package: pip install ase-cggpr (featomic is a core dependency)"

try:  # core dependencies; a broken installation gets the fix in one line
    import featomic
    import metatensor
    from featomic._hypers import hypers_to_json
    from featomic.basis import Explicit
    from featomic.calculator_base import CalculatorBase
    from featomic.cutoff import Cutoff, ShiftedCosine
    from featomic.density import DiracDelta
    from featomic.splines import Spline, SplinedRadialBasis
except ImportError as _error:  # pragma: no cover - a broken installation
    raise ImportError("the featomic SOAP backend needs featomic and metatensor-core: reinstall the package: "
                      "pip install ase-cggpr (featomic is a core dependency)") from _error

#: Largest number of centres expanded in one featomic call by :func:`compute` (bounds memory).
CENTRES_PER_BATCH = 512

#: Most centres whose position / strain gradients :class:`SoapGradients` holds at once (bounds memory: the
#: shipped AB2 basis keeps about 2.3 MB of gradients per centre in a dense ZIF); a structure with more centres
#: keeps only its vectors and recomputes the gradients batch by batch inside each contraction.
GRADIENT_CENTRES_PER_BATCH = 192

#: Target accuracy of the radial splines, relative to the largest value of the splined functions.
SPLINE_RELATIVE_ACCURACY = 1e-8


def _import_featomic():
    """featomic and metatensor (core dependencies, imported at the module top)."""
    return featomic, metatensor


# ---------------------------------------------------------------------------------------------
# GAP's equispaced-Gaussian radial basis
# ---------------------------------------------------------------------------------------------

def gap_radial_basis(cutoff: float, atom_sigma: float, n_max: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(alpha, Gaussian centres r_a, transform Cov^-1 L) of quippy's default SOAP radial basis."""

    alpha = 0.5 / atom_sigma**2
    basis_cutoff = cutoff + atom_sigma * math.sqrt(20.0 * math.log(10.0))
    centres = np.arange(n_max) * (basis_cutoff / n_max)
    ri, rj = centres[None, :], centres[:, None]
    covariance = np.exp(-alpha * (ri - rj) ** 2)
    # int_0^inf exp(-alpha (r - ri)^2) exp(-alpha (r - rj)^2) r^2 dr, closed form
    overlap = (np.exp(-alpha * (ri**2 + rj**2)) * math.sqrt(2.0) * alpha**1.5 * (ri + rj)
               + alpha * np.exp(-0.5 * alpha * (ri - rj) ** 2) * math.sqrt(math.pi)
               * (1.0 + alpha * (ri + rj) ** 2) * (1.0 + erf(math.sqrt(alpha / 2.0) * (ri + rj))))
    overlap /= math.sqrt(128.0 * alpha**5)
    chol = np.linalg.cholesky(overlap)
    transform = np.linalg.solve(covariance, chol)
    return alpha, centres, transform


def _scaled_bessel(order: int, z: np.ndarray) -> np.ndarray:
    """exp(-z) i_order(z) for z >= 0, without overflow."""

    safe = np.where(z == 0.0, 1.0, z)
    value = np.sqrt(0.5 * math.pi / safe) * ive(order + 0.5, safe)
    return np.where(z == 0.0, 1.0 if order == 0 else 0.0, value)


def gap_radial_functions(ell: int, r: np.ndarray, alpha: float, centres: np.ndarray, transform: np.ndarray,
                         *, derivative: bool = False) -> np.ndarray:
    """The n_max orthonormalised radial functions of channel ``l`` (or their r-derivatives): (len(r), n_max)."""
    r = np.asarray(r, dtype=float)[:, None]
    ra = centres[None, :]
    z = 2.0 * alpha * r * ra
    # exp(-alpha (r^2 + ra^2)) i_l(z) = exp(-alpha (r - ra)^2) * exp(-z) i_l(z)
    gauss = np.exp(-alpha * (r - ra) ** 2)
    bessel = _scaled_bessel(ell, z)
    if not derivative:
        return (gauss * bessel) @ transform
    # i_l'(z) = i_{l+1}(z) + l i_l(z) / z  (limit 1/3 at z = 0 for l = 1, 0 otherwise)
    safe = np.where(z == 0.0, 1.0, z)
    dbessel = _scaled_bessel(ell + 1, z) + np.where(z == 0.0, 0.0, ell / safe) * bessel
    if ell == 1:
        dbessel = np.where(z == 0.0, 1.0 / 3.0, dbessel)
    values = gauss * (-2.0 * alpha * (r - ra) * bessel + 2.0 * alpha * ra * (dbessel - bessel))
    return values @ transform


def _spline_points(ell: int, cutoff: float, alpha: float, centres: np.ndarray, transform: np.ndarray):
    """Equispaced spline knots on [0, cutoff], doubled until cubic Hermite interpolation is accurate."""

    n_intervals = 64
    while True:
        positions = np.linspace(0.0, cutoff, n_intervals + 1)
        values = gap_radial_functions(ell, positions, alpha, centres, transform)
        derivatives = gap_radial_functions(ell, positions, alpha, centres, transform, derivative=True)
        spline = Spline(0.0, cutoff)
        spline.add_points(positions, values, derivatives)
        middles = 0.5 * (positions[1:] + positions[:-1])
        error = np.abs(spline.compute(middles) - gap_radial_functions(ell, middles, alpha, centres, transform)).max()
        scale = max(np.abs(values).max(), 1e-300)
        if error <= SPLINE_RELATIVE_ACCURACY * scale or n_intervals >= 32768:
            return spline
        n_intervals *= 2


def featomic_hypers(*, cutoff: float, atom_sigma: float, n_max: int, l_max: int,
                    cutoff_transition_width: float = 0.5) -> dict:
    """Hyperparameters of a featomic ``SphericalExpansion`` matching quippy's SOAP expansion."""
    featomic, _ = _import_featomic()

    alpha, centres, transform = gap_radial_basis(cutoff, atom_sigma, n_max)
    by_angular = {
        ell: SplinedRadialBasis(spline=_spline_points(ell, cutoff, alpha, centres, transform),
                              max_radial=n_max - 1, radius=cutoff)
        for ell in range(l_max + 1)
    }
    return {
        "cutoff": Cutoff(radius=cutoff, smoothing=ShiftedCosine(width=cutoff_transition_width)),
        "density": DiracDelta(center_atom_weight=1.0),
        "basis": Explicit(by_angular=by_angular, spline_accuracy=None),
    }


def calculator_parameters(cutoff: float, atom_sigma: float, n_max: int, l_max: int,
                          cutoff_transition_width: float) -> str:
    """The JSON parameter string of featomic's ``spherical_expansion`` calculator for these hyperparameters:
    exactly what ``featomic.SphericalExpansion(**featomic_hypers(...))`` passes to featomic."""


    hypers = featomic_hypers(cutoff=cutoff, atom_sigma=atom_sigma, n_max=n_max, l_max=l_max,
                             cutoff_transition_width=cutoff_transition_width)
    return json.dumps(hypers_to_json(hypers))


def _parameters_path(key: tuple) -> Path | None:

    try:
        featomic_version = version("featomic")
    except PackageNotFoundError:  # pragma: no cover - featomic is imported before this is called
        return None
    record = json.dumps({"hypers": list(key), "spline_accuracy": SPLINE_RELATIVE_ACCURACY,
                         "featomic": featomic_version, "format": 1})
    return cache_dir() / f"spherical-expansion-{hashlib.sha256(record.encode()).hexdigest()[:32]}.json"


def cached_calculator_parameters(cutoff: float, atom_sigma: float, n_max: int, l_max: int,
                                 cutoff_transition_width: float, *, cache: bool = True) -> str:
    """:func:`calculator_parameters`, kept on disk (beside the inducing vectors, :func:`ase_cggpr.cachedir.cache_dir`).

    Building them means tabulating the radial splines (about 0.4 s at n_max 16, l_max 8, cutoff 9 Å: 9 x 2,049
    knots) and writing 600,000 floats as JSON (about 0.9 s); reading the file takes milliseconds. The file holds
    the SHA-256 of the string on its first line and is used only if it matches (a damaged file is rebuilt); a
    cache that cannot be written is skipped silently.
    """
    key = _hypers(cutoff, atom_sigma, n_max, l_max, cutoff_transition_width)
    path = _parameters_path(key) if cache else None
    if path is not None and path.exists():
        try:
            digest, text = path.read_text().split("\n", 1)
            if hashlib.sha256(text.encode()).hexdigest() == digest:
                return text
        except (OSError, ValueError, UnicodeDecodeError):
            pass
    text = calculator_parameters(*key)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(hashlib.sha256(text.encode()).hexdigest() + "\n" + text)
            os.replace(tmp, path)
        except OSError:
            pass
    return text


@lru_cache(maxsize=8)
def _calculator(cutoff: float, atom_sigma: float, n_max: int, l_max: int, cutoff_transition_width: float):
    """featomic's ``SphericalExpansion`` (as a ``CalculatorBase`` built from the same JSON parameter string),
    one per setting in this process and its parameters cached on disk (:func:`cached_calculator_parameters`)."""
    featomic, _ = _import_featomic()

    parameters = cached_calculator_parameters(cutoff, atom_sigma, n_max, l_max, cutoff_transition_width)
    try:
        return CalculatorBase("spherical_expansion", parameters)
    except Exception:  # noqa: BLE001 - a cached string featomic refuses: build it afresh, once
        parameters = cached_calculator_parameters(cutoff, atom_sigma, n_max, l_max, cutoff_transition_width,
                                                  cache=False)
        return CalculatorBase("spherical_expansion", parameters)


# ---------------------------------------------------------------------------------------------
# Power spectrum in quippy's order
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _pair_layout(n_species: int, n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quippy's (ia, jb) radial-species pairs (ia outer, jb <= ia) and their sqrt(2) weights."""
    ia, jb = np.tril_indices(n_species * n_max)
    weights = np.where(ia == jb, 1.0, math.sqrt(2.0))
    return ia, jb, weights


def _centre_rows(structures: Sequence[Atoms], selected: Sequence[np.ndarray]):
    """Per structure, an array mapping atom index -> row among the selected centres (-1 if not selected)."""
    maps, row = [], 0
    for structure, atoms in zip(structures, selected, strict=True):
        rows = np.full(len(structure), -1, dtype=np.int64)
        rows[atoms] = np.arange(row, row + len(atoms))
        row += len(atoms)
        maps.append(rows)
    return maps, row


def _expand(structures: Sequence[Atoms], species: tuple[int, ...], centre_species: tuple[int, ...],
            hypers: tuple, gradients: Sequence[str] = (), centres: Sequence[np.ndarray] | None = None,
            calculator=None):
    """featomic expansion of the centres: (coefficients per l, row maps, n_centres, TensorMap or None, kept,
    blocks), ``blocks`` a list of (block, l, species channel, row of each sample's centre) of the TensorMap.

    ``coefficients[l]`` has shape (n_centres, n_species * n_max, 2l+1), rows in quippy's order. Atoms of
    other elements than ``species`` and ``centre_species`` cannot change the vectors (quippy ignores them
    as neighbours), so they are left out of the expansion; ``kept[k]`` holds the original indices of
    structure k's remaining atoms, to which the row maps and the expansion's atom indices refer.
    ``centres`` (per structure, sorted original atom indices of centre-species atoms; None for all)
    restricts the expansion to those centres through featomic's ``selected_samples``. ``gradients``: the
    featomic gradients to keep in the TensorMap (``"positions"``, ``"strain"``). ``calculator``: the
    ``SphericalExpansion`` to use (default: the cached one for ``hypers``).
    """
    _, metatensor = _import_featomic()
    cutoff, atom_sigma, n_max, l_max, width = hypers
    relevant = sorted(set(species) | set(centre_species))
    kept, reduced, selected = [], [], []
    for k, structure in enumerate(structures):
        mask = np.isin(structure.numbers, relevant)
        kept.append(np.flatnonzero(mask))
        reduced.append(structure if mask.all() else structure[mask])
        if centres is None:
            selected.append(np.flatnonzero(np.isin(reduced[-1].numbers, centre_species)))
        else:  # original -> reduced indices (centre species are always kept, order is preserved)
            selected.append(np.searchsorted(kept[-1], np.asarray(centres[k], dtype=np.int64)))
    structures = reduced
    row_maps, n_centres = _centre_rows(structures, selected)
    n_species = len(species)
    coefficients = [np.zeros((n_centres, n_species * n_max, 2 * ell + 1)) for ell in range(l_max + 1)]
    present = sorted({int(z) for s, atoms in zip(structures, selected, strict=True) for z in s.numbers[atoms]})
    if not present:
        return coefficients, row_maps, n_centres, None, kept, []
    if calculator is None:
        calculator = _calculator(cutoff, atom_sigma, n_max, l_max, width)
    selected_keys = metatensor.Labels(["center_type"], np.array([[z] for z in present], dtype=np.int32))
    selected_samples = None
    if centres is not None:
        pairs = np.concatenate([np.column_stack([np.full(len(atoms), k), atoms])
                                for k, atoms in enumerate(selected)])
        selected_samples = metatensor.Labels(["system", "atom"], pairs.astype(np.int32))
    expansion = calculator.compute(list(structures), selected_keys=selected_keys,
                                   selected_samples=selected_samples,
                                   gradients=list(gradients) or None)
    species_index = {int(z): k for k, z in enumerate(species)}
    all_rows = np.concatenate(row_maps)
    first_atom = np.concatenate([[0], np.cumsum([len(s) for s in structures])[:-1]]).astype(np.int64)
    # the keys read as one array and each block's samples once (metatensor's per-access cost is ~20-70 us, more
    # than the arithmetic of a small block); the gradient contractions reuse this list
    names = list(expansion.keys.names)
    key_values = np.asarray(expansion.keys.values)
    lam, neighbour = names.index("o3_lambda"), names.index("neighbor_type")
    blocks = []
    for block, key in zip(expansion.blocks(), key_values, strict=True):
        k = species_index.get(int(key[neighbour]))
        if k is None:
            continue
        ell = int(key[lam])
        samples = block.samples.values  # (system, atom)
        rows = all_rows[first_atom[samples[:, 0]] + samples[:, 1]]
        # values (sample, m, n) -> (sample, n, m)
        coefficients[ell][rows, k * n_max:(k + 1) * n_max, :] = block.values.transpose(0, 2, 1)
        blocks.append((block, ell, k, rows))
    return coefficients, row_maps, n_centres, expansion, kept, blocks


def _power_spectrum(coefficients: list[np.ndarray], n_species: int, n_max: int) -> np.ndarray:
    """Unnormalised power spectrum in quippy's order: (n_centres, D)."""
    ia, jb, weights = _pair_layout(n_species, n_max)
    l_max = len(coefficients) - 1
    n_centres = coefficients[0].shape[0]
    out = np.empty((n_centres, len(ia), l_max + 1))
    for ell, c in enumerate(coefficients):
        products = np.matmul(c, c.transpose(0, 2, 1))
        out[:, :, ell] = products[:, ia, jb] * (weights / math.sqrt(2 * ell + 1))
    return out.reshape(n_centres, len(ia) * (l_max + 1))


def _normalise(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(p, axis=1)
    safe = np.where(norms > 0.0, norms, 1.0)
    return p / safe[:, None], norms


def _hypers(cutoff, atom_sigma, n_max, l_max, cutoff_transition_width) -> tuple:
    return (float(cutoff), float(atom_sigma), int(n_max), int(l_max), float(cutoff_transition_width))


def compute(structures: Sequence[Atoms], *, species: tuple[int, ...], centre_species: tuple[int, ...],
            cutoff: float, atom_sigma: float, n_max: int, l_max: int,
            cutoff_transition_width: float = 0.5, centres: Sequence[np.ndarray] | None = None,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """SOAP vectors (n_centres, D) of the atoms whose Z is in ``centre_species``, frame by frame.

    Equal to quippy's ``soap`` vectors (trailing element dropped) element by element, normalised rows.
    ``centres``, if given, holds per structure the sorted indices of the centre-species atoms whose
    vectors are wanted (None: all of them); only those are expanded (featomic's ``selected_samples``).
    Rows are in structure order, then atom order.
    ``progress(k)`` is called after each batch of structures with the number of structures finished.
    """
    species, centre_species = tuple(int(z) for z in species), tuple(int(z) for z in centre_species)
    hypers = _hypers(cutoff, atom_sigma, n_max, l_max, cutoff_transition_width)
    return _compute(structures, species, centre_species, hypers, centres, progress)


def _compute(structures: Sequence[Atoms], species: tuple[int, ...], centre_species: tuple[int, ...], hypers: tuple,
             centres: Sequence[np.ndarray] | None, progress: Callable[[int], None] | None,
             calculator=None) -> np.ndarray:
    """:func:`compute` with normalised arguments and an optional calculator."""
    n_max, l_max = hypers[2], hypers[3]
    structures = list(structures)
    if centres is not None:
        centres = check_centres(structures, centre_species, centres)
    counts = ([int(np.isin(s.numbers, centre_species).sum()) for s in structures] if centres is None
              else [len(c) for c in centres])
    out = np.empty((sum(counts), dimension(len(species), n_max, l_max)))
    row = start = 0
    while start < len(structures):
        stop, batch_centres = start, 0
        while stop < len(structures) and (stop == start or batch_centres + counts[stop] <= CENTRES_PER_BATCH):
            batch_centres += counts[stop]
            stop += 1
        if batch_centres:
            coefficients, _, n_centres, *_ = _expand(
                structures[start:stop], species, centre_species, hypers,
                centres=None if centres is None else centres[start:stop], calculator=calculator)
            out[row:row + n_centres] = _normalise(_power_spectrum(coefficients, len(species), n_max))[0]
            row += n_centres
        if progress is not None:
            progress(stop - start)
        start = stop
    return out


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

class SoapGradients:
    """Normalised SOAP vectors of one structure with their position (and strain) gradients, kept compact.

    Attributes:
        vectors: (n_centres, D) normalised SOAP vectors (identical to :func:`compute`).
        centres: (n_centres,) atom indices of the centres, in row order.
        n_atoms: number of atoms in the structure.
        has_strain: whether the strain gradients were computed (``strain=True``), so that
            :meth:`contract_strain` works.

    :meth:`contract` turns ``dE/dx`` per centre into ``dE/dr`` per atom, using the chain rule through
    the normalisation and the power spectrum down to the spherical-expansion gradients, so the
    (n_centres, n_atoms, 3, D) Jacobian is never built. :meth:`contract_strain` does the same with
    featomic's strain gradients of the expansion (computed in the same featomic call as the values and the
    position gradients) and gives ``dE/d(eps)`` (3, 3), the derivative under the homogeneous deformation
    ``r -> (1 + eps) r`` of positions and cell. ``centres`` (sorted atom indices of centre-species atoms;
    None for all) restricts the centres.
    """

    def __init__(self, structure: Atoms, species: tuple[int, ...], centre_species: tuple[int, ...],
                 hypers: tuple, centres: np.ndarray | None = None, calculator=None, *, positions: bool = True,
                 strain: bool = False, batch: int | None = None):
        self._species = species
        self._n_max = hypers[2]
        if centres is not None:
            centres = check_centres([structure], centre_species, [centres])
        batch = GRADIENT_CENTRES_PER_BATCH if batch is None else int(batch)
        chosen = (np.flatnonzero(np.isin(structure.numbers, centre_species)) if centres is None
                  else np.asarray(centres[0], dtype=np.int64))
        self._batched = None
        if len(chosen) > batch:  # vectors now, gradients batch by batch in the contractions (bounded memory)
            self._batched = (structure, centre_species, hypers, calculator,
                             [chosen[k:k + batch] for k in range(0, len(chosen), batch)])
            self._positions = positions
            self.has_strain = strain
            self.n_atoms = len(structure)
            self.centres = chosen
            self.vectors = _compute([structure], species, centre_species, hypers, [chosen], None,
                                    calculator=calculator)
            self._strain_of: tuple[np.ndarray, np.ndarray] | None = None
            return
        wanted = (("positions",) if positions else ()) + (("strain",) if strain else ())
        coefficients, row_maps, _, expansion, kept, blocks = _expand([structure], species, centre_species, hypers,
                                                                     gradients=wanted, centres=centres,
                                                                     calculator=calculator)
        self._coefficients = coefficients
        self._expansion = expansion
        self._block_list = blocks
        self._row_map = row_maps[0]
        self._kept = kept[0]
        self._positions = positions
        self.has_strain = strain
        self.n_atoms = len(structure)
        self.centres = self._kept[np.flatnonzero(self._row_map >= 0)]
        self.vectors, self._norms = _normalise(_power_spectrum(coefficients, len(species), self._n_max))
        self._last: tuple[np.ndarray, list[np.ndarray]] | None = None
        self._block_cache: dict[str, list] = {}

    def _coefficient_gradient(self, dE_dx: np.ndarray) -> list[np.ndarray]:
        """dE/dc per l, (n_centres, n_species n_max, 2l+1), for dE/dx per centre (the last one is kept, so
        :meth:`contract` and :meth:`contract_strain` of the same dE/dx share it)."""
        dE_dx = np.asarray(dE_dx, dtype=float)
        if dE_dx.shape != self.vectors.shape:
            raise ValueError(f"dE_dx has shape {dE_dx.shape}, expected {self.vectors.shape}")
        if self._last is not None and np.array_equal(self._last[0], dE_dx):
            return self._last[1]
        # through the normalisation: dE/dp = (g - (g.x) x) / |p|
        x = self.vectors
        safe = np.where(self._norms > 0.0, self._norms, 1.0)
        dE_dp = (dE_dx - np.sum(dE_dx * x, axis=1)[:, None] * x) / safe[:, None]
        n_centres = x.shape[0]
        ia, jb, weights = _pair_layout(len(self._species), self._n_max)
        size = len(self._species) * self._n_max
        l_count = len(self._coefficients)
        dE_dp = dE_dp.reshape(n_centres, len(ia), l_count)
        # p_ab,l = w_ab / sqrt(2l+1) sum_m c_alm c_blm over pairs a >= b. With the symmetric matrix
        # H_ab = w_ab dE/dp_ab / 2 (a != b), H_aa = dE/dp_aa, the chain rule gives dE/dc_l = 2 H c_l / sqrt(2l+1).
        dE_dc = []
        half = np.where(ia == jb, 1.0, 0.5) * weights
        for ell, c in enumerate(self._coefficients):
            h = np.zeros((n_centres, size, size))
            h[:, ia, jb] = dE_dp[:, :, ell] * half
            h[:, jb, ia] = dE_dp[:, :, ell] * half
            dE_dc.append(2.0 / math.sqrt(2 * ell + 1) * np.matmul(h, c))  # (n_centres, size, 2l+1)
        self._last = (dE_dx.copy(), dE_dc)
        return dE_dc

    def _blocks(self, parameter: str) -> list[tuple[np.ndarray, int, int, np.ndarray, np.ndarray]]:
        """Per expansion block with gradients: (gradient values reshaped to (g, 3 or 9, (2l+1) n_max), l,
        species channel k, row of each gradient sample's centre, its atom (kept index) or None for strain).

        Read out of the TensorMap once per parameter and kept (the contractions of the same structure reuse
        them: metatensor's accessors cost more than the arithmetic)."""
        cached = self._block_cache.get(parameter)
        if cached is not None:
            return cached
        out = []
        for block, ell, k, sample_rows in self._block_list:
            gradient = block.gradient(parameter)
            values = gradient.values
            if values.shape[0] == 0:
                continue
            grad_samples = gradient.samples.values  # (sample, system, atom) or (sample, system)
            rows = sample_rows[grad_samples[:, 0]]
            atoms = self._kept[grad_samples[:, 2]] if parameter == "positions" else None
            # positions: (g, xyz, m, n); strain: (g, xyz_2, xyz_1, m, n)
            out.append((values.reshape(values.shape[0], -1, values.shape[-2] * values.shape[-1]), ell, k, rows,
                        atoms))
        self._block_cache[parameter] = out
        return out

    def _weights(self, dE_dc: list[np.ndarray], ell: int, k: int, rows: np.ndarray) -> np.ndarray:
        """dE/dc of the rows' centres for channel k and l, as (g, (2l+1) n_max, 1) in the gradient's (m, n) order."""
        n_max = self._n_max
        w = dE_dc[ell][rows, k * n_max:(k + 1) * n_max, :].transpose(0, 2, 1)  # (g, m, n)
        return w.reshape(w.shape[0], -1, 1)

    def contract(self, dE_dx: np.ndarray) -> np.ndarray:
        """dE/dr (n_atoms, 3) for dE/dx given per centre as (n_centres, D) (derivative w.r.t. normalised x)."""
        if not self._positions:
            raise ValueError("these SOAP gradients were computed without position gradients (positions=False)")
        if self._batched is not None:
            return self._contract_batches(dE_dx, positions=True)[0]
        dE_dc = self._coefficient_gradient(dE_dx)
        out = np.zeros((self.n_atoms, 3))
        if self._expansion is None:
            return out
        atoms, parts = [], []
        for values, ell, k, rows, atom in self._blocks("positions"):
            parts.append(np.matmul(values, self._weights(dE_dc, ell, k, rows))[:, :, 0])  # (g, 3)
            atoms.append(atom)
        if parts:
            atom, part = np.concatenate(atoms), np.concatenate(parts)
            for x in range(3):
                out[:, x] = np.bincount(atom, weights=part[:, x], minlength=self.n_atoms)
        return out

    def contract_many(self, dE_dx: np.ndarray) -> np.ndarray:
        """dE/dr (B, n_atoms, 3) for B derivatives dE/dx given as (B, n_centres, D): :meth:`contract` of each,
        in one pass over the expansion's gradient blocks (the rows of a Jacobian, e.g. the force rows of
        training on forces: one per inducing environment). Memory: B x n_centres x (n_species n_max)^2 floats
        per angular channel."""
        if not self._positions:
            raise ValueError("these SOAP gradients were computed without position gradients (positions=False)")
        dE_dx = np.asarray(dE_dx, dtype=float)
        if dE_dx.ndim != 3 or dE_dx.shape[1:] != self.vectors.shape:
            raise ValueError(f"dE_dx has shape {dE_dx.shape}, expected (B, {self.vectors.shape[0]}, "
                             f"{self.vectors.shape[1]})")
        n_batch = dE_dx.shape[0]
        out = np.zeros((n_batch, self.n_atoms, 3))
        if self._batched is not None:
            for rows, part in self._parts(positions=True, strain=False):
                out += part.contract_many(dE_dx[:, rows])
            return out
        if self._expansion is None or n_batch == 0:
            return out
        x = self.vectors
        safe = np.where(self._norms > 0.0, self._norms, 1.0)
        dE_dp = (dE_dx - np.sum(dE_dx * x, axis=2)[:, :, None] * x) / safe[:, None]
        n_centres = x.shape[0]
        ia, jb, weights = _pair_layout(len(self._species), self._n_max)
        size = len(self._species) * self._n_max
        dE_dp = dE_dp.reshape(n_batch, n_centres, len(ia), len(self._coefficients))
        half = np.where(ia == jb, 1.0, 0.5) * weights
        upper, lower = ia * size + jb, jb * size + ia
        dE_dc = []  # per l: (B, n_centres, size, 2l+1)
        for ell, c in enumerate(self._coefficients):
            # H (as in _coefficient_gradient) filled along its first axis (fancy assignment on the last axes of a
            # (B, n_centres, size, size) array is ten times slower)
            v = (dE_dp[:, :, :, ell] * half).reshape(n_batch * n_centres, -1).T
            h = np.zeros((size * size, n_batch * n_centres))
            h[upper] = v
            h[lower] = v
            h = h.T.reshape(n_batch, n_centres, size, size)
            dE_dc.append(2.0 / math.sqrt(2 * ell + 1) * np.matmul(h, c[None]))
        flat = np.zeros((3 * self.n_atoms, n_batch))
        for ell, jacobian in self._sparse_jacobian().items():
            w = np.ascontiguousarray(dE_dc[ell].transpose(1, 3, 2, 0))  # (n_centres, 2l+1, size, B)
            flat += jacobian @ w.reshape(-1, n_batch)
        out[:] = flat.T.reshape(n_batch, self.n_atoms, 3)
        return out

    def _parts(self, *, positions: bool, strain: bool):
        """(rows, SoapGradients of those rows' centres) per batch of centres (a structure with more than
        ``batch`` centres): the gradients of one batch at a time are in memory."""
        structure, centre_species, hypers, calculator, batches = self._batched
        start = 0
        for centres in batches:
            rows = np.arange(start, start + len(centres))
            start += len(centres)
            yield rows, SoapGradients(structure, self._species, centre_species, hypers, centres=centres,
                                      calculator=calculator, positions=positions, strain=strain, batch=len(centres))

    def _contract_batches(self, dE_dx: np.ndarray, *, positions: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(dE/dr or None, dE/d(eps) or None) batch by batch; with ``positions`` and strain gradients the strain
        contraction of the same pass is kept for :meth:`contract_strain` of the same dE/dx."""
        dE_dx = np.asarray(dE_dx, dtype=float)
        if dE_dx.shape != self.vectors.shape:
            raise ValueError(f"dE_dx has shape {dE_dx.shape}, expected {self.vectors.shape}")
        grad = np.zeros((self.n_atoms, 3)) if positions else None
        virial = np.zeros((3, 3)) if self.has_strain else None
        for rows, part in self._parts(positions=positions, strain=self.has_strain):
            if positions:
                grad += part.contract(dE_dx[rows])
            if self.has_strain:
                virial += part.contract_strain(dE_dx[rows])
        if virial is not None:
            self._strain_of = (dE_dx.copy(), virial)
        return grad, virial

    def _sparse_jacobian(self) -> dict:
        """Per l, d c / d r as a sparse (3 n_atoms, n_centres (2l+1) n_species n_max) matrix: the position
        gradients of the expansion coefficients (rows atom x xyz, columns centre, m, species channel, n), so that
        a contraction with many right-hand sides is one sparse-dense product per l (kept per structure)."""
        cached = self._block_cache.get("positions-sparse")
        if cached is not None:
            return cached

        size = len(self._species) * self._n_max
        parts: dict[int, list] = {}
        for values, ell, k, rows, atom in self._blocks("positions"):
            g, _, width = values.shape  # width = (2l+1) n_max in (m, n) order
            mn = np.arange(width)
            column = (rows[:, None] * (2 * ell + 1) + (mn // self._n_max)[None, :]) * size + \
                k * self._n_max + (mn % self._n_max)[None, :]  # (g, width)
            row = 3 * atom[:, None] + np.arange(3)[None, :]  # (g, 3)
            parts.setdefault(ell, []).append((np.broadcast_to(row[:, :, None], values.shape).ravel(),
                                              np.broadcast_to(column[:, None, :], values.shape).ravel(),
                                              values.ravel()))
        n_centres = self.vectors.shape[0]
        out = {}
        for ell, pieces in parts.items():
            row, column, data = (np.concatenate(p) for p in zip(*pieces, strict=True))
            out[ell] = sparse.csr_matrix((data, (row, column)),
                                         shape=(3 * self.n_atoms, n_centres * (2 * ell + 1) * size))
        self._block_cache["positions-sparse"] = out
        return out

    def contract_strain(self, dE_dx: np.ndarray) -> np.ndarray:
        """dE/d(eps) (3, 3) for dE/dx per centre (n_centres, D): ``[a, b]`` is the derivative with respect to
        ``eps_ab`` of the deformation ``r_a -> r_a + eps_ab r_b`` applied to positions and cell (for a
        rotation-invariant energy it is symmetric; the stress is its symmetric part over the volume)."""
        if not self.has_strain:
            raise ValueError("these SOAP gradients were computed without strain gradients (strain=False)")
        if self._batched is not None:
            kept = self._strain_of
            if kept is not None and np.array_equal(kept[0], np.asarray(dE_dx, dtype=float)):
                return kept[1].copy()  # from the position contraction of the same dE/dx (one featomic pass)
            return self._contract_batches(dE_dx, positions=False)[1]
        dE_dc = self._coefficient_gradient(dE_dx)
        out = np.zeros((3, 3))
        if self._expansion is None:
            return out
        for values, ell, k, rows, _ in self._blocks("strain"):
            # featomic's components are (xyz_2, xyz_1): values[g, b, a] = d c / d eps_ab
            out += np.matmul(values, self._weights(dE_dc, ell, k, rows)).sum(axis=0).reshape(3, 3).T
        return out


def compute_gradients(structure: Atoms, *, species: tuple[int, ...], centre_species: tuple[int, ...],
                      cutoff: float, atom_sigma: float, n_max: int, l_max: int,
                      cutoff_transition_width: float = 0.5) -> SoapGradients:
    """SOAP vectors of one structure's centres and their position gradients (see :class:`SoapGradients`)."""
    return SoapGradients(structure, tuple(int(z) for z in species), tuple(int(z) for z in centre_species),
                         _hypers(cutoff, atom_sigma, n_max, l_max, cutoff_transition_width))


def contract_gradients(structure: Atoms, *, dE_dx: np.ndarray | Callable[[np.ndarray], np.ndarray],
                       species: tuple[int, ...], centre_species: tuple[int, ...], cutoff: float,
                       atom_sigma: float, n_max: int, l_max: int,
                       cutoff_transition_width: float = 0.5) -> np.ndarray:
    """dE/dr (n_atoms, 3) of one structure, given dE/dx per centre.

    ``dE_dx`` is either an (n_centres, D) array or a function of the (n_centres, D) normalised SOAP
    vectors returning it (so that kernel derivatives can be evaluated at this structure's vectors).
    Forces are ``-contract_gradients(...)``.
    """
    gradients = compute_gradients(structure, species=species, centre_species=centre_species, cutoff=cutoff,
                                  atom_sigma=atom_sigma, n_max=n_max, l_max=l_max,
                                  cutoff_transition_width=cutoff_transition_width)
    values = dE_dx(gradients.vectors) if callable(dE_dx) else dE_dx
    return gradients.contract(values)


class FeatomicBackend(DescriptorBackend):
    """featomic SOAP (quippy's vectors element by element), one ``SphericalExpansion`` per instance.

    The calculator and its radial splines are built on first use (about 0.1 s from the disk cache, 1-2 s at the
    paper's basis without it) and
    kept, so a calculator or a screen that calls :func:`~ase_cggpr.descriptors.backend_for` gets them once.
    """

    name = "featomic"

    def __init__(self, **hypers):
        super().__init__(**hypers)
        self._key = _hypers(self.cutoff, self.atom_sigma, self.n_max, self.l_max, self.cutoff_transition_width)
        self._expansion_calculator = None

    def calculator(self):
        """featomic's ``SphericalExpansion`` for these hyperparameters (built once)."""
        if self._expansion_calculator is None:
            self._expansion_calculator = _calculator(*self._key)
        return self._expansion_calculator

    def vectors(self, structures: Sequence[Atoms], centres: Sequence[np.ndarray] | None = None, *,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
        return _compute(structures, self.species, self.centre_species, self._key, centres, progress,
                        calculator=self.calculator())

    def gradients(self, structure: Atoms, centres: np.ndarray | None = None, *,
                  strain: bool = False) -> SoapGradients:
        return SoapGradients(structure, self.species, self.centre_species, self._key, centres=centres,
                             calculator=self.calculator(), strain=strain)

    def strain_gradients(self, structure: Atoms, centres: np.ndarray | None = None) -> SoapGradients:
        """The vectors with their strain gradients only (no position gradients; used by other backends'
        stress, see :class:`~ase_cggpr.descriptors.quippy.QuippyBackend`)."""
        return SoapGradients(structure, self.species, self.centre_species, self._key, centres=centres,
                             calculator=self.calculator(), positions=False, strain=True)


#: The backend class of this module (see :func:`ase_cggpr.descriptors.backend_class`).
BACKEND = FeatomicBackend
