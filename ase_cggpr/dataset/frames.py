"""Geometry of a net's frames: connectivity of the decorated core, local energies, coarse-graining, bond shifts,
restoring a relaxed structure onto its decoration, and the rattled frames of a relaxed net."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ..beads import Connectivity, coarse_grain
from ..errors import StructureError
from ..labels import local_energies
from .config import (
    BuildConfig,
    frame_seed,
    linker_seed,
)
from .decorate import LINKERS, RING, Decorated, coarse_grain_decorated, decorate
from .nets import Net
from .rattle import rattle


def core_connectivity(dec: Decorated, name: str):
    """The core's :class:`ase_cggpr.beads.Connectivity` built from the decorator's connectivity."""
    n_b = len(dec.linker_zn)
    linkers = tuple(dec.linker_atoms(k) for k in range(n_b))
    ring = np.array(RING)  # the ring atoms lead both linkers (Na, Nb, C2, Ca, Cb)
    return Connectivity(name=name, coarse_grained_input=False,
                    metal_indices=np.arange(dec.n_zn), metal_symbols=("Zn",) * dec.n_zn,
                    linkers=linkers, rings=tuple(lk[ring] for lk in linkers),
                    linker_formulas=dec.linker_formulas, linker_metals=dec.linker_zn.copy())


def local_energies_of(atoms: Atoms, connectivity) -> np.ndarray:
    """Per-Zn local energies (eV) from per-atom ``energies`` (core :func:`local_energies`)."""
    return local_energies(atoms, label_key="energies", connectivity=connectivity)


def coarse_grained_of(atoms: Atoms, connectivity) -> Atoms:
    """Si/O bead structure (core :func:`coarse_grain`, representation AB2)."""
    return coarse_grain(atoms, "AB2", connectivity=connectivity).structure


def bond_shifts(dec: Decorated, net: Net) -> np.ndarray:
    """Integer image shifts (n_bonds, 3) of the second atom of each bond in ``dec.bonds``.

    Linker atoms are placed unwrapped around their B site, so intra-linker bonds have shift 0;
    a Zn-N bond has minus the B->A shift of the net.
    """
    shifts = np.zeros((len(dec.bonds), 3), dtype=int)
    n_b = len(net.b_neighbours)
    n_intra = len(dec.bonds) - 2 * n_b
    shifts[n_intra:n_intra + n_b] = -net.b_shifts[:, 0]
    shifts[n_intra + n_b:] = -net.b_shifts[:, 1]
    return shifts


def unwrap_like(atoms: Atoms, reference: Atoms) -> Atoms:
    """Copy of ``atoms`` with each atom moved by whole cell vectors to lie nearest to its
    position in ``reference`` (same atom order), undoing any wrapping by a relaxer."""
    out = atoms.copy()
    frac = np.linalg.solve(out.cell.array.T, out.positions.T).T
    ref = np.linalg.solve(reference.cell.array.T, reference.positions.T).T
    frac -= np.round(frac - ref)
    out.positions = frac @ out.cell.array
    return out


def align_restored(atoms: Atoms, dec: Decorated, name: str = "") -> Atoms:
    """A restored relaxation of ``dec`` (the net decorated now) in the net's cell basis and periodic images.

    The frames are decorated on the relaxed beads with the net's image shifts (``b_shifts``), which hold only
    if each Zn and each ring centroid lies at the image nearest its net site and the cell vectors are the net's
    (strained). A stored file that is wrapped, or written in another basis of the same lattice (b -> b + a,
    Niggli-reduced, ...), is brought back: the basis first (the integer matrix relating the two cells), then
    each linker made whole along its bonds, then each Zn and each whole linker moved by cell vectors to the
    image of its net site. Beads are matched, not atoms: a relaxation moves an H atom up to half a cell in a
    small cell, a bead at most a quarter. An aligned file (every one the build stores) comes back bit for bit.
    Raises ``StructureError`` if the atom counts differ or the cells are not bases of one (strained) lattice.
    """
    reference = dec.atoms
    if len(atoms) != len(reference):
        raise StructureError(f"the stored relaxation has {len(atoms)} atoms, the decorated net {len(reference)}",
                             structure=name or None)
    cell = atoms.cell.array
    m = cell @ np.linalg.inv(reference.cell.array)  # rows: the stored cell vectors in the net's basis
    basis = np.round(m)  # the identity for any strain below 50 % (relaxations reach 32 %)
    if abs(abs(np.linalg.det(basis)) - 1) > 1e-9:
        raise StructureError(f"the stored relaxation's cell {np.round(atoms.cell.cellpar(), 2).tolist()} is not "
                             f"a strained cell of the net's lattice {np.round(reference.cell.cellpar(), 2).tolist()}",
                             structure=name or None)
    out = atoms.copy()
    if (basis != np.eye(3)).any():
        out.set_cell(np.linalg.solve(basis, cell), scale_atoms=False)
    cell = out.cell.array
    pos = out.positions  # edited in place; an atom whose shift is zero keeps its bits

    def frac(v: np.ndarray) -> np.ndarray:
        return np.linalg.solve(cell.T, v.reshape(-1, 3).T).T.reshape(v.shape)

    def move(idx: np.ndarray, k: np.ndarray) -> None:
        moved = k.any(axis=-1)
        pos[idx[moved]] -= k[moved] @ cell

    beads, sites = coarse_grain_decorated(dec, out), coarse_grain_decorated(dec)
    k = np.round(frac(beads.positions) - np.linalg.solve(sites.cell.array.T, sites.positions.T).T)
    move(np.arange(dec.n_zn), k[:dec.n_zn])
    kinds, starts = np.array(dec.kinds), dec.linker_starts()
    for kind in sorted(set(dec.kinds)):  # the linkers of one kind together (Im; mIm)
        of_kind = np.nonzero(kinds == kind)[0]
        base = starts[of_kind]
        symbols, bonds, _ = LINKERS[kind]
        done, todo = {0}, list(bonds)  # whole linkers: each atom at the image of a bonded, placed atom
        while todo:
            for bond in list(todo):
                placed = [a for a in bond if a in done]
                if placed:
                    p, c = placed[0], bond[1] if placed[0] == bond[0] else bond[0]
                    if c not in done:
                        move(base + c, np.round(frac(pos[base + c] - pos[base + p])))
                        done.add(c)
                    todo.remove(bond)
        for j in range(len(symbols)):  # each linker moves as a whole with its bead
            move(base + j, k[dec.n_zn + of_kind])
    return out


def make_frames(net: Net, relaxed_cg: Atoms, config: BuildConfig,
                shapes: Sequence[np.ndarray] | None = None) -> list[tuple[Atoms, dict]]:
    """Unlabelled frames (atoms, info) of one net from its relaxed bead structure (linkers: ideal, or
    ``shapes`` when given)."""
    frames = []
    if "d" in config.orders:
        dec = decorate_for(net, config, relaxed_cg, shapes)
        frames.append((dec.atoms, dict(batch=0, rattle="none", order="d",
                                       seed=frame_seed(config.seed, net.name, 0, "none", "d"))))
    for batch in range(1, config.batches + 1):
        for level_name in config.levels:
            level = config.level(level_name)
            for order in config.orders:
                if order == "d":
                    continue
                seed = frame_seed(config.seed, net.name, batch, level_name, order)
                rng = np.random.default_rng(seed)
                if order == "r-d":
                    cg = rattle(relaxed_cg, level.beads, level.length, level.angle, rng)
                    atoms = decorate_for(net, config, cg, shapes).atoms
                else:
                    atoms = rattle(decorate_for(net, config, relaxed_cg, shapes).atoms, level.atoms, level.length,
                                   level.angle, rng)
                frames.append((atoms, dict(batch=batch, rattle=level_name, order=order,
                                           seed=seed)))
    return frames


def decorate_for(net: Net, config: BuildConfig, cg: Atoms | None = None,
                 shapes: Sequence[np.ndarray] | None = None) -> Decorated:
    """:func:`decorate` with the build's linker (the net's seeded assignment for a mix), with ``shapes``
    (:func:`~ase_cggpr.dataset.decorate.linker_shapes`) instead of ideal linkers when given; Im as the build
    labeller's own ideal imidazolate (:meth:`BuildConfig.ideal_im`)."""
    return decorate(net, cg, linker=config.linker, seed=linker_seed(config.seed, net.name), shapes=shapes,
                    ideal=config.ideal_im())
