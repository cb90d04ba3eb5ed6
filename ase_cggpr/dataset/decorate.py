"""Decorating an AB2 net with Zn on A sites and ideal imidazolate (Im, C3H3N2) on B sites.

The hZIF recipe: the ring centroid (of its three C and two N atoms) sits on the B site, the
ring lies in the plane of the two B->A vectors, and its C2 axis (through the C between the two
N atoms) lies along their bisector, with that C pointing towards the A sites. Each N bonds to
the Zn on its own side. The decorator returns the connectivity it built so that force-field
typing never has to guess bonds from (possibly distorted) distances.

Ideal imidazolate geometry (facts: DFT-optimised ZIF-8(H), Dürholt et al. 2019):
N-C2 1.357 Å, N-C4 1.389 Å, C4-C5 1.393 Å, C-H 1.098 Å (C2) and 1.097 Å (C4/C5),
angle N-C2-N 112.6°, angle N-C4-H 121.3°.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from ase import Atoms

from ..errors import StructureError
from .nets import Net, bond_vectors

# --- ideal imidazolate geometry (Å, degrees) ---
D_C2N = 1.357
D_NC4 = 1.389
D_C4C5 = 1.393
D_C2H = 1.098
D_C4H = 1.097
ANGLE_NC2N = 112.6
ANGLE_NC4H = 121.3

#: Order of the 8 atoms of one linker in a decorated structure.
#: Na bonds to the first A site of the B site, Nb to the second; Ca bonds to Na, Cb to Nb.
LINKER_SYMBOLS = ("N", "N", "C", "C", "C", "H", "H", "H")
LINKER_LABELS = ("Na", "Nb", "C2", "Ca", "Cb", "H2", "Ha", "Hb")
#: Intra-linker bonds as index pairs into LINKER_LABELS.
LINKER_BONDS = ((0, 2), (1, 2), (0, 3), (1, 4), (3, 4), (2, 5), (3, 6), (4, 7))
#: Ring atoms (C and N) whose centroid is the linker bead.
RING = (0, 1, 2, 3, 4)


def _ideal_linker() -> np.ndarray:
    """In-plane coordinates (8, 2) of the ideal imidazolate, ring centroid at the origin.

    x runs from Nb to Na (the "a" side is +x), y along the C2 axis towards C2.
    """
    half = np.radians(ANGLE_NC2N) / 2
    c2 = np.array([0.0, 0.0])
    na = np.array([D_C2N * np.sin(half), -D_C2N * np.cos(half)])
    x_c = D_C4C5 / 2
    dy = np.sqrt(D_NC4**2 - (na[0] - x_c) ** 2)
    ca = np.array([x_c, na[1] - dy])
    flip = np.array([-1.0, 1.0])
    ring = np.array([na, na * flip, c2, ca, ca * flip])
    h2 = c2 + np.array([0.0, D_C2H])
    # H on Ca: rotate the Ca->Na unit vector by ANGLE_NC4H away from the ring
    u = (na - ca) / np.linalg.norm(na - ca)
    t = np.radians(ANGLE_NC4H)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    outward = ca - ring.mean(axis=0)
    ha_dir = max((rot @ u, rot.T @ u), key=lambda v: v @ outward)
    ha = ca + D_C4H * ha_dir
    xy = np.vstack([ring, h2, ha, ha * flip])
    return xy - ring.mean(axis=0)


#: Ideal linker coordinates (8, 2), Å; see :func:`_ideal_linker`.
IDEAL_LINKER = _ideal_linker()


@dataclasses.dataclass
class Decorated:
    """A decorated Zn(Im)2 structure and the connectivity the decorator built.

    Attributes:
        atoms: Zn atoms (one per A site, same order) followed by 8 atoms per B site in
            :data:`LINKER_LABELS` order.
        bonds: (n_bonds, 2) int array of bonded atom index pairs (Zn-N and intra-linker).
        linker_zn: (n_B, 2) Zn indices bonded to each linker (Na side, Nb side).
        n_zn: number of Zn atoms.
    """

    atoms: Atoms
    bonds: np.ndarray
    linker_zn: np.ndarray
    n_zn: int

    def linker_atoms(self, k: int) -> np.ndarray:
        """Atom indices (8,) of linker ``k``."""
        start = self.n_zn + 8 * k
        return np.arange(start, start + 8)


def linker_frames(vectors: np.ndarray, name: str = "net") -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal in-plane axes of each linker from its two B->A vectors (n_B, 2, 3).

    Returns (ex, ey), each (n_B, 3): ex points from the second A's side to the first's,
    ey along the bisector (C2 axis) towards the A sites. Near-linear A-B-A (within 1°)
    has no defined plane: the plane is then chosen through the line and the Cartesian
    axis most perpendicular to it, with C2 along that axis.
    """
    u1 = vectors[:, 0] / np.linalg.norm(vectors[:, 0], axis=1)[:, None]
    u2 = vectors[:, 1] / np.linalg.norm(vectors[:, 1], axis=1)[:, None]
    if (np.linalg.norm(vectors, axis=-1) < 1e-6).any():
        raise StructureError("a B site coincides with its A site", structure=name)
    bis = u1 + u2
    diff = u1 - u2
    nb = np.linalg.norm(bis, axis=1)
    linear = nb < 2 * np.sin(np.radians(0.5))
    ey = np.empty_like(bis)
    ex = diff / np.linalg.norm(diff, axis=1)[:, None]
    ey[~linear] = bis[~linear] / nb[~linear, None]
    for k in np.where(linear)[0]:
        axis = np.eye(3)[np.argmin(np.abs(ex[k]))]
        perp = axis - (axis @ ex[k]) * ex[k]
        ey[k] = perp / np.linalg.norm(perp)
    return ex, ey


def decorate(net: Net, cg: Atoms | None = None, *, name: str | None = None) -> Decorated:
    """Decorate an AB2 net with Zn on A sites and ideal imidazolate on B sites.

    Args:
        net: the net (its connectivity: ``b_neighbours`` and ``b_shifts``).
        cg: optional coarse-grained geometry (Si/O, same ordering as ``net.atoms``) to
            decorate instead of ``net.atoms``, e.g. a relaxed or rattled copy.
        name: structure name used in error messages (default: the net's name).

    Returns:
        A :class:`Decorated` structure: Zn exactly on the A sites, every ring centroid
        exactly on its B site. Distances are not rescaled here (see
        :func:`ase_cggpr.dataset.nets.scale_net`).
    """
    name = name or net.name
    cg = net.atoms if cg is None else cg
    n_a = net.n_a
    n_b = len(net.b_neighbours)
    if len(cg) != n_a + n_b:
        raise StructureError(f"geometry has {len(cg)} sites, net has {n_a + n_b}", structure=name)
    vec = bond_vectors(cg, net.b_neighbours, net.b_shifts)
    ex, ey = linker_frames(vec, name)
    centres = cg.positions[n_a:]
    linkers = (centres[:, None, :] + IDEAL_LINKER[None, :, 0, None] * ex[:, None, :]
               + IDEAL_LINKER[None, :, 1, None] * ey[:, None, :])
    positions = np.vstack([cg.positions[:n_a], linkers.reshape(-1, 3)])
    symbols = ["Zn"] * n_a + list(LINKER_SYMBOLS) * n_b
    atoms = Atoms(symbols, positions=positions, cell=cg.cell.array, pbc=True)
    base = n_a + 8 * np.arange(n_b)
    intra = np.array(LINKER_BONDS)
    bonds = [(base[:, None, None] + intra[None]).reshape(-1, 2)]
    bonds.append(np.column_stack([net.b_neighbours[:, 0], base + 0]))
    bonds.append(np.column_stack([net.b_neighbours[:, 1], base + 1]))
    bonds = np.vstack(bonds).astype(int)
    return Decorated(atoms=atoms, bonds=bonds, linker_zn=net.b_neighbours.copy(), n_zn=n_a)


def coarse_grain_decorated(dec: Decorated, atoms: Atoms | None = None) -> Atoms:
    """Si/O coarse-grained copy of a decorated structure (same atom order as its net).

    Si sits on each Zn, O on the centroid of each linker's five ring atoms (C and N), the
    ring unwrapped by minimum image about its first N. ``atoms`` is a (relaxed, rattled)
    copy of ``dec.atoms`` with the same atom order; the default is ``dec.atoms``.
    """
    atoms = dec.atoms if atoms is None else atoms
    n_b = len(dec.linker_zn)
    pos = atoms.positions
    ring_idx = dec.n_zn + 8 * np.arange(n_b)[:, None] + np.array(RING)[None]
    ring = pos[ring_idx]
    rel = ring - ring[:, :1]
    cell = atoms.cell
    frac = np.linalg.solve(cell.array.T, rel.reshape(-1, 3).T).T
    frac -= np.round(frac)
    rel = (frac @ cell.array).reshape(rel.shape)
    centres = ring[:, 0] + rel.mean(axis=1)
    return Atoms(["Si"] * dec.n_zn + ["O"] * n_b,
                 positions=np.vstack([pos[:dec.n_zn], centres]), cell=cell.array, pbc=True)
