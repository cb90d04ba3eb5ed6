"""Per-atom energies -> per-metal local-environment energies (the learning target).

For metal i with linkers j (four of them):

    e_local(i) = e_Zn(i) + 1/2 * sum_j e_Im(j)

where e_Im(j) is the sum of the per-atom energies (eV) of all atoms of linker j (C, N, H). Each linker is
shared by two metals, so summing e_local over a cell gives the cell energy. The Zn-only target is e_Zn(i).

Label arrays can be
* per-atom energies on every atom (e.g. MOF-FF ``energies``): local energies are formed here;
* per-metal values already (e.g. ``e_local`` on Zn or on Si A sites in coarse-grained files, NaN or
  anything on the other atoms is ignored as long as every non-metal entry is NaN).
ASE moves a per-atom extxyz column named ``energy`` (or ``energies``) into ``atoms.calc.results``; both
places are searched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from ase import Atoms

from .beads import Connectivity, find_connectivity, structure_name
from .errors import LabelError, StructureError

TARGETS = ("local", "metal")


def as_label_array(values, *, what: str, name: str) -> np.ndarray:
    """``values`` as a float array, or a LabelError naming the structure when they are not numbers.

    ``what`` describes the values in the message (e.g. ``"label array 'energies'"``). Strings, booleans,
    objects and complex numbers are refused rather than converted.
    """
    raw = np.asarray(values)
    if raw.dtype.kind not in "iuf":
        example = f", e.g. {raw.ravel()[:1].tolist()[0]!r}" if raw.size else ""
        raise LabelError(f"structure {name!r}: {what} is not numeric (dtype {raw.dtype}{example}); labels must "
                         "be energies in eV")
    return raw.astype(float, copy=False)


def per_atom_array(atoms: Atoms, key: str, *, name: str | None = None) -> np.ndarray:
    """The per-atom float array ``key`` from ``atoms.arrays`` or ``atoms.calc.results`` (eV).

    Raises:
        LabelError: when no array of that name exists (the message lists the per-atom arrays that do), or
            when it is not numeric or not one value per atom (the message gives its shape).
    """
    name = name or structure_name(atoms)
    if not isinstance(key, str) or not key.strip():
        raise LabelError(f"the label key must be a non-empty array name, got {key!r}")
    if key in ("numbers", "positions", "momenta", "masses", "initial_magmoms", "initial_charges", "tags"):
        raise LabelError(f"structure {name!r}: {key!r} is a property of the atoms, not a label array; give the "
                         "name of a per-atom energy array (e.g. 'energies') or per-site local energies ('e_local')")
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    if key in atoms.arrays:
        raw = atoms.arrays[key]
    elif key in results:
        raw = results[key]
    else:
        available = sorted(k for k in atoms.arrays if k not in ("numbers", "positions"))
        available += sorted(k for k, v in results.items() if np.shape(v) == (len(atoms),))
        hint = ""
        if key in ("energy", "energies") and atoms.calc is None:
            hint = (" (if these atoms came from an extxyz file: ASE keeps a per-atom column of this name "
                    "in atoms.calc.results, and Atoms.copy() drops it)")
        raise LabelError(f"structure {name!r}: no per-atom label array {key!r}; per-atom arrays present: "
                         f"{available or 'none'}{hint}")
    values = as_label_array(raw, what=f"label array {key!r}", name=name)
    if values.shape != (len(atoms),):
        extra = " (a single number, e.g. a total energy)" if values.ndim == 0 else (
            f" ({values.shape[1]} components per atom)" if values.ndim == 2 and len(values) == len(atoms) else "")
        raise LabelError(f"structure {name!r}: label array {key!r} has the wrong shape {values.shape}{extra}; "
                         f"expected ({len(atoms)},): one value per atom")
    return values


def _renamed(function: str, removed: dict) -> None:
    """Refuse a keyword removed in 0.3.0, naming its new name (CHANGELOG.md)."""
    if "key" in removed:
        raise TypeError(f"{function}(key=...) was renamed {function}(label_key=...)")
    if removed:
        raise TypeError(f"{function}() got unexpected keyword argument(s) {sorted(removed)}")


def local_energies(atoms: Atoms, *, label_key: str = "energies", target: str = "local",
                   connectivity: Connectivity | None = None, name: str | None = None, **removed) -> np.ndarray:
    """Per-metal labels (eV), in the order of ``connectivity.metal_indices``.

    Args:
        atoms: atomistic structure with per-atom energies, or a structure carrying per-metal values.
        label_key: name of the per-atom array (``key=`` before 0.3.0).
        target: ``"local"`` (e_local, the default) or ``"metal"`` (e_Zn only).
        connectivity: connectivity found earlier (found here when omitted).
    """
    _renamed("local_energies", removed)
    key = label_key
    if target not in TARGETS:
        raise LabelError(f"unknown label target {target!r}; choose one of {TARGETS}")
    connectivity = connectivity or find_connectivity(atoms, name=name)
    values = per_atom_array(atoms, key, name=connectivity.name)
    metals = connectivity.metal_indices
    others = np.setdiff1d(np.arange(len(atoms)), metals)
    per_metal_array = connectivity.coarse_grained_input or (others.size > 0 and np.isnan(values[others]).all())
    if not np.isfinite(values[metals]).all():
        bad = metals[~np.isfinite(values[metals])]
        raise LabelError(f"structure {connectivity.name!r}: label array {key!r} is not finite on metal/A-site "
                         f"atoms {bad[:10].tolist()}")
    if per_metal_array:
        if target == "metal":
            raise LabelError(f"structure {connectivity.name!r}: {key!r} holds per-site values, so the metal-only "
                             "target cannot be formed; give a per-atom energy array")
        return values[metals].copy()
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))
        raise LabelError(f"structure {connectivity.name!r}: per-atom energies {key!r} not finite at atoms "
                         f"{bad[:10].tolist()}")
    e_metal = values[metals]
    if target == "metal":
        return e_metal.copy()
    e_linker = np.array([values[atoms_j].sum() for atoms_j in connectivity.linkers])
    shared = np.zeros(len(metals))
    np.add.at(shared, connectivity.linker_metals.ravel(), np.repeat(e_linker, 2))
    return e_metal + 0.5 * shared


def reference_energy(structures: list[Atoms], *, label_key: str = "energies", **removed) -> float:
    """Mean local energy per metal (eV) over reference structures (e.g. relaxed zni).

    Subtract it from labels to express energies relative to the reference polymorph.
    """
    _renamed("reference_energy", removed)
    if not structures:
        raise StructureError("no reference structures given")
    return float(np.mean(np.concatenate([local_energies(a, label_key=label_key) for a in structures])))


def _stored_label(atoms: Atoms, own: dict, key: str, *, name: str, what: str, where: str, listed: str,
                  keep: Callable[[str, Any], bool]) -> Any:
    """``own[key]`` (the structure's ``info`` or ``arrays``), else ``atoms.calc.results[key]`` (where ASE's extxyz
    reader moves ``energy`` and ``forces``). Raises :class:`LabelError` naming the structure and listing the entries
    of both that ``keep`` accepts when neither has ``key``."""
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    if key in own:
        return own[key]
    if key in results:
        return results[key]
    present = sorted(k for k, v in list(own.items()) + list(results.items()) if keep(k, v))
    raise LabelError(f"structure {name!r}: no {what} {key!r} in its {where} or calculator results; "
                     f"{listed} present: {present or 'none'}")


def total_energy(atoms: Atoms, key: str = "energy", *, name: str | None = None) -> float:
    """The total energy (eV) of a structure, one number: ``atoms.info[key]`` or ``atoms.calc.results[key]``.

    ASE's extxyz reader moves a per-frame ``energy`` into ``atoms.calc.results``; both places are searched
    (info first). What GAP, MACE or NequIP training files carry.

    Raises:
        LabelError: naming the structure when there is no such value, or it is not one finite number (a
            per-atom array is refused: give it as ``label_key`` instead).
    """
    name = name or structure_name(atoms)
    if not isinstance(key, str) or not key.strip():
        raise LabelError(f"the energy key must be a non-empty name, got {key!r}")
    raw = _stored_label(atoms, atoms.info, key, name=name, what="total energy", where="info",
                        listed="single values", keep=lambda k, v: np.ndim(v) == 0)
    if isinstance(raw, (bool, np.bool_)) or np.ndim(raw) != 0:
        shape = np.shape(raw)
        hint = " (a per-atom array: train on it with --label-key instead)" if shape == (len(atoms),) else ""
        raise LabelError(f"structure {name!r}: total energy {key!r} is not one number (shape {shape}){hint}")
    value = as_label_array(raw, what=f"total energy {key!r}", name=name)
    if not np.isfinite(value):
        raise LabelError(f"structure {name!r}: total energy {key!r} is {float(value)} (not finite)")
    return float(value)


def atom_forces(atoms: Atoms, key: str = "forces", *, name: str | None = None) -> np.ndarray:
    """The (n_atoms, 3) forces (eV/Å) of a structure: ``atoms.arrays[key]`` or ``atoms.calc.results[key]``
    (ASE's extxyz reader moves ``forces`` into the calculator results).

    Raises:
        LabelError: naming the structure when there is no such array, it is not numeric, not (n_atoms, 3)
            or not finite.
    """
    name = name or structure_name(atoms)
    if not isinstance(key, str) or not key.strip():
        raise LabelError(f"the forces key must be a non-empty name, got {key!r}")
    raw = _stored_label(atoms, atoms.arrays, key, name=name, what="forces", where="arrays",
                        listed="(n_atoms, 3) arrays",
                        keep=lambda k, v: np.shape(v) == (len(atoms), 3) and k != "positions")
    values = as_label_array(raw, what=f"forces {key!r}", name=name)
    if values.shape != (len(atoms), 3):
        raise LabelError(f"structure {name!r}: forces {key!r} have shape {values.shape}; expected "
                         f"({len(atoms)}, 3)")
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        raise LabelError(f"structure {name!r}: forces {key!r} not finite at atoms {bad[:10].tolist()}")
    return values.copy()
