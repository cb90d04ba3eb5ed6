"""Decorating an AB2 net with Zn on A sites and ideal imidazolate (Im, C3H3N2) on B sites.

The hZIF recipe: the ring centroid (of its three C and two N atoms) sits on the B site, the
ring lies in the plane of the two B->A vectors, and its C2 axis (through the C between the two
N atoms) lies along their bisector, with that C pointing towards the A sites. Each N bonds to
the Zn on its own side. The decorator returns the connectivity it built so that force-field
typing never has to guess bonds from (possibly distorted) distances.

Ideal imidazolate geometry (facts: DFT-optimised ZIF-8(H), Dürholt et al. 2019):
N-C2 1.357 Å, N-C4 1.389 Å, C4-C5 1.393 Å, C-H 1.098 Å (C2) and 1.097 Å (C4/C5),
angle N-C2-N 112.6°, angle N-C4-H 121.3°.

2-methylimidazolate (mIm, C4H5N2; ``linker="mIm"`` or ``"mixed:FRACTION"``): the same ring, the H on C2
replaced by a methyl C on the C2 axis (along the bisector, away from the ring centroid) with the MOF-FF CH3
set's geometry (:mod:`ase_cggpr.mofff.parameters`): C2-CH3 1.488754 Å and C-H 1.100 Å (bond r0), angle
C2-C-H 110.94° (theta0; it gives H-C-H 107.97°, the set's 107.965°), one methyl H perpendicular to the ring
plane.  The ring is the Im ring in both, so the bead (ring centroid on the B site) is placed the same way.

Methyl rotamers (:func:`choose_methyl_rotamers`, on by default for mIm): in small cells the methyls of
neighbouring linkers meet (ideal decoration of the SiO2 nets: H-H 0.02-0.5 Å in EDI, NPO, BCT, DFT, NAB, SBN,
ATT, SOD).  Each methyl is turned about its C2-C axis, deterministically, to the rotamer (36 steps of its
120° period) that maximises its shortest contact with the atoms of other linkers, Zn and the other methyls
(contacts beyond 2.5 Å count as 2.5 Å, so a methyl with room keeps the ideal rotamer); sweeps repeat until
no methyl turns (at most 6).  Bond lengths and angles are unchanged; only the H-C2-C-H torsion moves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.geometry import find_mic
from ase.neighborlist import neighbor_list

from ..errors import OptionError, StructureError
from ..metals import FRAMEWORK_METAL
from .nets import Net, bond_vectors

# --- ideal imidazolate geometry (Å, degrees) ---
D_C2N = 1.357
D_NC4 = 1.389
D_C4C5 = 1.393
D_C2H = 1.098
D_C4H = 1.097
ANGLE_NC2N = 112.6
ANGLE_NC4H = 121.3

#: The metal put on every A site (:data:`ase_cggpr.metals.FRAMEWORK_METAL`).
METAL = FRAMEWORK_METAL.symbol

#: Order of the 8 atoms of one linker in a decorated structure.
#: Na bonds to the first A site of the B site, Nb to the second; Ca bonds to Na, Cb to Nb.
LINKER_SYMBOLS = ("N", "N", "C", "C", "C", "H", "H", "H")
LINKER_LABELS = ("Na", "Nb", "C2", "Ca", "Cb", "H2", "Ha", "Hb")
#: Intra-linker bonds as index pairs into LINKER_LABELS.
LINKER_BONDS = ((0, 2), (1, 2), (0, 3), (1, 4), (3, 4), (2, 5), (3, 6), (4, 7))
#: Ring atoms (C and N) whose centroid is the linker bead.
RING = (0, 1, 2, 3, 4)

# --- 2-methylimidazolate: the methyl (MOF-FF CH3 set: bond r0 and angle theta0) ---
D_C2CM = 1.488754
D_CMH = 1.100
ANGLE_C2CMH = 110.94
#: Order of the 11 atoms of one mIm linker: the Im order with H2 replaced by the methyl C, then its 3 H.
MIM_LINKER_SYMBOLS = ("N", "N", "C", "C", "C", "C", "H", "H", "H", "H", "H")
MIM_LINKER_LABELS = ("Na", "Nb", "C2", "Ca", "Cb", "Cm", "Ha", "Hb", "Hm1", "Hm2", "Hm3")
MIM_LINKER_BONDS = LINKER_BONDS + ((5, 8), (5, 9), (5, 10))
#: linker name -> (symbols, bonds, formula)
LINKERS: dict[str, tuple[tuple[str, ...], tuple[tuple[int, int], ...], str]] = {
    "Im": (LINKER_SYMBOLS, LINKER_BONDS, "C3H3N2"),
    "mIm": (MIM_LINKER_SYMBOLS, MIM_LINKER_BONDS, "C4H5N2"),
}


#: The ideal imidazolate's internal geometry (Å, degrees) as keyword arguments of :func:`ideal_linker`: MOF-FF's
#: (the constants above). Another labeller's own geometry (its relaxed imidazolate, e.g. ACE's) has the same keys
#: (:func:`ase_cggpr.dataset.config.im_geometry_of`).
IM_GEOMETRY: dict[str, float] = dict(d_c2n=D_C2N, d_nc4=D_NC4, d_c4c5=D_C4C5, d_c2h=D_C2H, d_c4h=D_C4H,
                                     angle_nc2n=ANGLE_NC2N, angle_nc4h=ANGLE_NC4H)


def ideal_linker(d_c2n: float = D_C2N, d_nc4: float = D_NC4, d_c4c5: float = D_C4C5, d_c2h: float = D_C2H,
                 d_c4h: float = D_C4H, angle_nc2n: float = ANGLE_NC2N, angle_nc4h: float = ANGLE_NC4H) -> np.ndarray:
    """In-plane coordinates (8, 2), Å, of a planar C2v imidazolate, ring centroid at the origin, from its bond
    lengths (Å) and angles (degrees); the defaults are :data:`IM_GEOMETRY` (MOF-FF's ideal linker).

    x runs from Nb to Na (the "a" side is +x), y along the C2 axis towards C2.
    """
    half = np.radians(angle_nc2n) / 2
    c2 = np.array([0.0, 0.0])
    na = np.array([d_c2n * np.sin(half), -d_c2n * np.cos(half)])
    x_c = d_c4c5 / 2
    dy = np.sqrt(d_nc4**2 - (na[0] - x_c) ** 2)
    ca = np.array([x_c, na[1] - dy])
    flip = np.array([-1.0, 1.0])
    ring = np.array([na, na * flip, c2, ca, ca * flip])
    h2 = c2 + np.array([0.0, d_c2h])
    # H on Ca: rotate the Ca->Na unit vector by angle_nc4h away from the ring
    u = (na - ca) / np.linalg.norm(na - ca)
    t = np.radians(angle_nc4h)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    outward = ca - ring.mean(axis=0)
    ha_dir = max((rot @ u, rot.T @ u), key=lambda v: v @ outward)
    ha = ca + d_c4h * ha_dir
    xy = np.vstack([ring, h2, ha, ha * flip])
    return xy - ring.mean(axis=0)


def measure_im_geometry(atoms: Atoms, connectivity) -> dict[str, float]:
    """Mean internal geometry of the imidazolates (C3H3N2) of ``atoms``: the keyword arguments of
    :func:`ideal_linker` (bond lengths in Å, angles in degrees; each side's C4/C5, H and
    N-C4 value averaged with the other's, as the planar C2v ideal linker has one of each), plus ``n_linkers`` and
    ``<key>_std`` (the spread over linkers and sides). Raises ValueError when there is no Im linker.
    ``connectivity``: its :func:`ase_cggpr.beads.find_connectivity` (``linkers``, ``linker_formulas``)."""
    positions = atoms.get_positions()
    values: dict[str, list[float]] = {k: [] for k in IM_GEOMETRY}
    n = 0
    for index, formula in zip(connectivity.linkers, connectivity.linker_formulas, strict=True):
        if formula != LINKERS["Im"][2]:
            continue
        index = np.asarray(index, dtype=int)
        xyz = positions[index[0]] + find_mic(positions[index] - positions[index[0]], atoms.cell, atoms.pbc)[0]
        symbols = atoms.numbers[index]
        n_at, c_at, h_at = (np.where(symbols == atomic_numbers[e])[0] for e in ("N", "C", "H"))
        d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
        c2 = c_at[np.argmin(d[np.ix_(c_at, n_at)].max(axis=1))]  # the C bonded to both N
        c45 = [c for c in c_at if c != c2]
        n_of = {c: n_at[np.argmin(d[c, n_at])] for c in c45}
        h_of = {c: h_at[np.argmin(d[c, h_at])] for c in (c2, *c45)}
        values["d_c2n"] += [d[c2, m] for m in n_at]
        values["d_nc4"] += [d[n_of[c], c] for c in c45]
        values["d_c4c5"].append(d[c45[0], c45[1]])
        values["d_c2h"].append(d[c2, h_of[c2]])
        values["d_c4h"] += [d[c, h_of[c]] for c in c45]
        values["angle_nc2n"].append(_angle(xyz[n_at[0]], xyz[c2], xyz[n_at[1]]))
        values["angle_nc4h"] += [_angle(xyz[n_of[c]], xyz[c], xyz[h_of[c]]) for c in c45]
        n += 1
    if not n:
        raise ValueError("no imidazolate (C3H3N2) linker to measure")
    out: dict[str, float] = {k: float(np.mean(v)) for k, v in values.items()}
    out.update({f"{k}_std": float(np.std(v)) for k, v in values.items()})
    out["n_linkers"] = n
    return out


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Angle a-b-c in degrees."""
    u, v = a - b, c - b
    return float(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1.0, 1.0))))


#: Ideal linker coordinates (8, 2), Å: MOF-FF's (:data:`IM_GEOMETRY`); see :func:`ideal_linker`.
IDEAL_LINKER = ideal_linker()


def _ideal_mim_linker() -> np.ndarray:
    """Coordinates (11, 3) of the ideal mIm in the linker frame (x, y as :func:`ideal_linker`, z = x cross y)."""
    xy = IDEAL_LINKER
    c2 = np.array([*xy[2], 0.0])
    cm = c2 + np.array([0.0, D_C2CM, 0.0])
    phi = np.radians(180.0 - ANGLE_C2CMH)  # from the outward C2 axis
    hs = [cm + D_CMH * np.array([np.sin(phi) * np.cos(psi), np.cos(phi), np.sin(phi) * np.sin(psi)])
          for psi in np.radians([90.0, 210.0, 330.0])]
    ring_h = np.column_stack([xy, np.zeros(len(xy))])
    return np.vstack([ring_h[:5], cm, ring_h[6:8], *hs])


#: Ideal mIm coordinates (11, 3), Å, in the linker frame; see :func:`_ideal_mim_linker`.
IDEAL_MIM_LINKER = _ideal_mim_linker()

#: Index of the methyl C and of its three H within an mIm linker (:data:`MIM_LINKER_LABELS`).
METHYL_C = 5
METHYL_H = (8, 9, 10)
#: Azimuths (degrees) of the methyl H about the C2-C axis in the ideal rotamer (0: along ex, 90: along ez).
METHYL_AZIMUTHS = (90.0, 210.0, 330.0)
#: Rotamer search: steps over the methyl's 120° period, contact cap (Å) and sweeps.
ROTAMER_STEPS = 36
ROTAMER_CAP = 2.5
ROTAMER_SWEEPS = 6


def methyl_h_positions(cm: np.ndarray, ex: np.ndarray, ey: np.ndarray, ez: np.ndarray,
                       turns: np.ndarray) -> np.ndarray:
    """Positions (n, 3, 3), Å, of the three methyl H of ``n`` mIm linkers, each turned by ``turns`` (n,) radians
    about its C2-C axis (``ey``) from the ideal rotamer; ``cm`` (n, 3) are the methyl C positions."""
    phi = np.radians(180.0 - ANGLE_C2CMH)
    psi = np.radians(METHYL_AZIMUTHS)[None, :] + np.asarray(turns, dtype=float)[:, None]  # (n, 3)
    return (cm[:, None, :] + D_CMH * (np.sin(phi) * np.cos(psi)[..., None] * ex[:, None, :]
                                      + np.cos(phi) * ey[:, None, :]
                                      + np.sin(phi) * np.sin(psi)[..., None] * ez[:, None, :]))


def choose_methyl_rotamers(atoms: Atoms, starts: np.ndarray, ex: np.ndarray, ey: np.ndarray,
                           ez: np.ndarray) -> np.ndarray:
    """Turn (radians, one per mIm linker) of each methyl about its C2-C axis that maximises its shortest contact.

    ``atoms`` is a decorated structure with the ideal rotamers, ``starts`` the first atom of each mIm linker
    and ``ex, ey, ez`` (n, 3) their frames.  A methyl's contacts are the distances from its three H to every atom
    outside its own linker (periodic images of its own linker included) and to the current H of the other
    methyls, capped at :data:`ROTAMER_CAP` (2.5 Å): a methyl with no contact below the cap keeps the ideal
    rotamer.  Methyls are visited in order, each set to the best of :data:`ROTAMER_STEPS` turns over its 120°
    period (ties: its current turn, then the smallest), and sweeps repeat until none turns or
    :data:`ROTAMER_SWEEPS` have run.  Deterministic: the same structure gives the same turns.
    """
    n = len(starts)
    turns = np.zeros(n)
    if n == 0:
        return turns
    cm = starts + METHYL_C
    h_idx = starts[:, None] + np.array(METHYL_H)  # (n, 3)
    # a methyl H (1.1 Å from its C) within the cap of an atom needs that atom within 3.6 Å of the C, and of
    # another methyl's H that methyl's C within 5.8 Å: per-atom cutoffs 3.2 (methyl C) + 0.5 (others) give
    # every methyl C-atom pair below 3.7 Å and every methyl C-methyl C pair below 6.4 Å
    radii = np.full(len(atoms), 0.5)
    radii[cm] = 3.2
    i, j, shift = neighbor_list("ijS", atoms, radii)
    from_cm = np.isin(i, cm)
    i, j, shift = i[from_cm], j[from_cm], shift[from_cm]
    owner = np.full(len(atoms), -1)
    sizes = len(MIM_LINKER_SYMBOLS)
    for m, s0 in enumerate(starts):
        owner[s0:s0 + sizes] = m
    methyl_of_c = {int(c): m for m, c in enumerate(cm)}
    is_methyl_h = np.zeros(len(atoms), dtype=bool)
    is_methyl_h[h_idx.ravel()] = True
    cell = atoms.cell.array
    pos = atoms.positions
    m_of_i = np.array([methyl_of_c[int(x)] for x in i], dtype=int)
    offset = shift @ cell
    static, partners = [], []  # per methyl: fixed points (k, 3); (other methyl, offset) pairs
    for m in range(n):
        sel = m_of_i == m
        jj, off = j[sel], offset[sel]
        own = (owner[jj] == m) & ~shift[sel].any(axis=1)  # its own atoms in the same image
        fixed = ~own & ~is_methyl_h[jj]
        static.append(pos[jj[fixed]] + off[fixed])
        other_c = np.isin(jj, cm) & ~(jj == cm[m]) | (jj == cm[m]) & shift[sel].any(axis=1)
        partners.append([(methyl_of_c[int(c)], o) for c, o in zip(jj[other_c], off[other_c], strict=True)])
    grid = np.arange(ROTAMER_STEPS) * (2 * np.pi / 3) / ROTAMER_STEPS
    step = np.zeros(n, dtype=int)
    h_now = methyl_h_positions(pos[cm], ex, ey, ez, turns)  # (n, 3, 3)

    def scores(m: int) -> np.ndarray:
        cand = methyl_h_positions(np.repeat(pos[cm[m]][None], len(grid), axis=0), np.repeat(ex[m][None], len(grid), 0),
                                  np.repeat(ey[m][None], len(grid), 0), np.repeat(ez[m][None], len(grid), 0), grid)
        best = np.full(len(grid), ROTAMER_CAP)
        points = [static[m]] + [h_now[p] + o for p, o in partners[m] if p != m]
        pts = np.vstack(points) if points else np.zeros((0, 3))
        if len(pts):
            d = np.linalg.norm(cand[:, :, None, :] - pts[None, None], axis=-1)  # (steps, 3, k)
            best = np.minimum(best, d.min(axis=(1, 2)))
        for p, o in partners[m]:
            if p == m:  # its own periodic image turns with it
                d = np.linalg.norm(cand[:, :, None, :] - (cand[:, None, :, :] + o), axis=-1)
                best = np.minimum(best, d.min(axis=(1, 2)))
        return best

    for _ in range(ROTAMER_SWEEPS):
        turned = False
        for m in range(n):
            sc = scores(m)
            top = sc.max()
            if sc[step[m]] >= top - 1e-9:
                continue
            step[m] = int(np.flatnonzero(sc >= top - 1e-9)[0])
            turns[m] = grid[step[m]]
            h_now[m] = methyl_h_positions(pos[cm[m]][None], ex[m][None], ey[m][None], ez[m][None],
                                          turns[m:m + 1])[0]
            turned = True
        if not turned:
            break
    return turns


def normalise_linker(linker: str) -> str:
    """``"Im"``, ``"mIm"`` or ``"mixed:F"`` with F written as Python writes the float (``mixed:.50`` ->
    ``mixed:0.5``), so that one mix has one name (manifest, store folder): the package's one parser of a linker
    name. Raises ``OptionError`` (a ``ValueError``) for anything else."""
    if not isinstance(linker, str):
        raise OptionError(f"linker must be Im, mIm or mixed:FRACTION, got {linker!r}")
    if linker in LINKERS:
        return linker
    if linker.startswith("mixed:"):
        try:
            fraction = float(linker[len("mixed:"):])
        except ValueError:
            fraction = float("nan")
        if not 0.0 <= fraction <= 1.0:
            raise OptionError(f"linker {linker!r}: the mIm fraction must be a number in [0, 1] (e.g. mixed:0.5)")
        return f"mixed:{fraction!r}"
    raise OptionError(f"unknown linker {linker!r}; use Im, mIm or mixed:FRACTION (FRACTION in [0, 1])")


def linker_assignment(n_b: int, linker: str | list[str] | tuple[str, ...] = "Im", *, seed: int = 0,
                      name: str = "net") -> tuple[str, ...]:
    """The linker of each of ``n_b`` B sites: ``"Im"``, ``"mIm"``, ``"mixed:FRACTION"`` (exactly
    round(FRACTION * n_b) sites mIm, chosen by ``numpy.random.default_rng(seed)``: the same for every frame of
    a net with the same seed) or one name per site."""
    if not isinstance(linker, str):
        kinds = tuple(str(k) for k in linker)
        bad = sorted(set(kinds) - set(LINKERS))
        if len(kinds) != n_b or bad:
            raise OptionError(f"{name}: linker list needs {n_b} names from {list(LINKERS)}; got {len(kinds)}"
                              + (f" with unknown {bad}" if bad else ""))
        return kinds
    try:
        linker = normalise_linker(linker)
    except OptionError as error:
        raise OptionError(f"{name}: {error}") from None
    if linker in LINKERS:
        return (linker,) * n_b
    n_m = int(round(float(linker[len("mixed:"):]) * n_b))
    chosen = np.random.default_rng(seed).permutation(n_b)[:n_m]
    kinds = np.array(["Im"] * n_b, dtype=object)
    kinds[chosen] = "mIm"
    return tuple(kinds)


@dataclasses.dataclass
class Decorated:
    """A decorated Zn(Im)2 / Zn(mIm)2 / mixed structure and the connectivity the decorator built.

    Attributes:
        atoms: Zn atoms (one per A site, same order) followed by the atoms of each B site's linker
            in :data:`LINKER_LABELS` (Im, 8 atoms) or :data:`MIM_LINKER_LABELS` (mIm, 11 atoms) order.
        bonds: (n_bonds, 2) int array of bonded atom index pairs: intra-linker bonds of every linker,
            then the Zn-Na bond of every linker, then the Zn-Nb bonds.
        linker_zn: (n_B, 2) Zn indices bonded to each linker (Na side, Nb side).
        n_zn: number of Zn atoms.
        linker_kinds: the linker of each B site ("Im" or "mIm"); None: all Im.
    """

    atoms: Atoms
    bonds: np.ndarray
    linker_zn: np.ndarray
    n_zn: int
    linker_kinds: tuple[str, ...] | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.linker_kinds or ("Im",) * len(self.linker_zn)

    @property
    def linker_formulas(self) -> tuple[str, ...]:
        """Formula of each linker ("C3H3N2" for Im, "C4H5N2" for mIm)."""
        return tuple(LINKERS[k][2] for k in self.kinds)

    def linker_starts(self) -> np.ndarray:
        """Index of the first atom (Na) of each linker."""
        sizes = np.array([len(LINKERS[k][0]) for k in self.kinds], dtype=int)
        return self.n_zn + (np.cumsum(sizes) - sizes).astype(int)

    def linker_atoms(self, k: int) -> np.ndarray:
        """Atom indices of linker ``k`` (8 for Im, 11 for mIm)."""
        if self.linker_kinds is None:
            start = self.n_zn + 8 * k
            return np.arange(start, start + 8)
        start = int(self.linker_starts()[k])
        return np.arange(start, start + len(LINKERS[self.linker_kinds[k]][0]))


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


def decorate(net: Net, cg: Atoms | None = None, *, name: str | None = None,
             linker: str | list[str] | tuple[str, ...] = "Im", seed: int = 0,
             methyl_rotamers: bool = True, shapes: Sequence[np.ndarray] | None = None,
             ideal: np.ndarray | None = None) -> Decorated:
    """Decorate an AB2 net with Zn on A sites and ideal imidazolate (or 2-methylimidazolate) on B sites.

    Args:
        net: the net (its connectivity: ``b_neighbours`` and ``b_shifts``).
        cg: optional coarse-grained geometry (Si/O, same ordering as ``net.atoms``) to
            decorate instead of ``net.atoms``, e.g. a relaxed or rattled copy.
        name: structure name used in error messages (default: the net's name).
        linker: ``"Im"`` (default), ``"mIm"``, ``"mixed:FRACTION"`` (that fraction of the B sites mIm,
            seeded random per B site, see :func:`linker_assignment`) or one name per B site.  Anything but
            ``"Im"`` records ``info["linker"]`` (this value, or "custom"), ``info["linker_sites"]`` (the
            linker of each B site, comma-separated) and ``info["mim_fraction"]`` in ``atoms``.
        seed: the seed of the mixed assignment (the same seed gives the same sites for every frame).
        methyl_rotamers: turn each methyl to the rotamer with the longest shortest contact
            (:func:`choose_methyl_rotamers`); False keeps the ideal rotamer (one H perpendicular to the ring).
            No effect on Im.
        shapes: optional linker geometries, one (n_atoms, 3) array per B site in the linker frame (ring centroid
            at the origin; x, y, z = ex, ey, ex x ey of :func:`linker_frames`), e.g. a relaxed structure's
            (:func:`linker_shapes`), placed instead of the ideal linkers (needs a non-Im ``linker``: the Im path
            is the hZIF recipe and is left as it is). ``decorate(net, beads_of(relaxed), shapes=linker_shapes(
            dec, relaxed, net))`` gives back the relaxed structure.
        ideal: in-plane coordinates (8, 2), Å, of the imidazolate placed on every Im B site (default
            :data:`IDEAL_LINKER`, MOF-FF's); a labeller's own relaxed imidazolate is
            ``ideal_linker(**geometry)`` (:func:`ideal_linker`; a build takes it from its labeller, see
            :meth:`ase_cggpr.dataset.config.BuildConfig.ideal_im`). mIm linkers are unaffected.

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
    ideal = IDEAL_LINKER if ideal is None else np.asarray(ideal, dtype=float)
    if ideal.shape != IDEAL_LINKER.shape or not np.isfinite(ideal).all():
        raise ValueError(f"ideal imidazolate coordinates must be finite, shape {IDEAL_LINKER.shape}; "
                         f"got shape {ideal.shape}")
    if not (isinstance(linker, str) and linker == "Im"):
        return _decorate_kinds(net, cg, linker_assignment(n_b, linker, seed=seed, name=name),
                               linker if isinstance(linker, str) else "custom", ex, ey, methyl_rotamers, shapes,
                               ideal)
    if shapes is not None:
        raise ValueError("linker shapes are for mIm and mixed decorations; the Im path places ideal linkers")
    linkers = (centres[:, None, :] + ideal[None, :, 0, None] * ex[:, None, :]
               + ideal[None, :, 1, None] * ey[:, None, :])
    positions = np.vstack([cg.positions[:n_a], linkers.reshape(-1, 3)])
    symbols = [METAL] * n_a + list(LINKER_SYMBOLS) * n_b
    atoms = Atoms(symbols, positions=positions, cell=cg.cell.array, pbc=True)
    base = n_a + 8 * np.arange(n_b)
    intra = np.array(LINKER_BONDS)
    bonds = [(base[:, None, None] + intra[None]).reshape(-1, 2)]
    bonds.append(np.column_stack([net.b_neighbours[:, 0], base + 0]))
    bonds.append(np.column_stack([net.b_neighbours[:, 1], base + 1]))
    bonds = np.vstack(bonds).astype(int)
    return Decorated(atoms=atoms, bonds=bonds, linker_zn=net.b_neighbours.copy(), n_zn=n_a)


def _decorate_kinds(net: Net, cg: Atoms, kinds: tuple[str, ...], spec: str, ex: np.ndarray,
                    ey: np.ndarray, methyl_rotamers: bool = True,
                    shapes: Sequence[np.ndarray] | None = None, ideal_im: np.ndarray = IDEAL_LINKER) -> Decorated:
    """:func:`decorate` with a linker per B site (Im and/or mIm; Im as ``ideal_im``)."""
    n_a = net.n_a
    ez = np.cross(ex, ey)
    centres = cg.positions[n_a:]
    ideal = {"Im": np.column_stack([ideal_im, np.zeros(len(ideal_im))]), "mIm": IDEAL_MIM_LINKER}
    positions, symbols, intra = [cg.positions[:n_a]], [METAL] * n_a, []
    start = n_a
    starts = []
    if shapes is not None:
        if len(shapes) != len(kinds) or any(len(x) != len(LINKERS[k][0]) for x, k in zip(shapes, kinds, strict=True)):
            raise StructureError("linker shapes do not match the linkers of the B sites", structure=net.name)
    for k, kind in enumerate(kinds):
        xyz = ideal[kind] if shapes is None else np.asarray(shapes[k], dtype=float)
        positions.append(centres[k] + xyz[:, :1] * ex[k] + xyz[:, 1:2] * ey[k] + xyz[:, 2:] * ez[k])
        symbols += LINKERS[kind][0]
        intra.append(start + np.array(LINKERS[kind][1]))
        starts.append(start)
        start += len(xyz)
    starts = np.array(starts, dtype=int)
    atoms = Atoms(symbols, positions=np.vstack(positions), cell=cg.cell.array, pbc=True)
    mim = np.array([k == "mIm" for k in kinds], dtype=bool)
    if methyl_rotamers and mim.any() and shapes is None:
        turns = choose_methyl_rotamers(atoms, starts[mim], ex[mim], ey[mim], ez[mim])
        atoms.positions[(starts[mim][:, None] + np.array(METHYL_H)).ravel()] = (
            methyl_h_positions(atoms.positions[starts[mim] + METHYL_C], ex[mim], ey[mim], ez[mim],
                               turns).reshape(-1, 3))
    atoms.info["linker"] = spec
    atoms.info["linker_sites"] = ",".join(kinds)
    atoms.info["mim_fraction"] = float(np.mean([k == "mIm" for k in kinds])) if kinds else 0.0
    bonds = np.vstack([*intra, np.column_stack([net.b_neighbours[:, 0], starts + 0]),
                       np.column_stack([net.b_neighbours[:, 1], starts + 1])]).astype(int)
    return Decorated(atoms=atoms, bonds=bonds, linker_zn=net.b_neighbours.copy(), n_zn=n_a,
                     linker_kinds=tuple(kinds))


def linker_shapes(dec: Decorated, atoms: Atoms, net: Net) -> tuple[np.ndarray, ...]:
    """The geometry of each linker of ``atoms`` (a relaxed copy of ``dec.atoms``, linkers whole) in its own frame.

    For B site k: the positions of its atoms relative to its ring centroid, in the frame (ex, ey, ex x ey) of
    :func:`linker_frames` computed from the bead structure of ``atoms`` (Zn and ring centroids). Passed to
    :func:`decorate` as ``shapes`` they carry the relaxed linkers (tilted rings, turned methyls) onto other
    bead positions, e.g. rattled ones, rigidly in each linker's local frame.
    """
    beads = coarse_grain_decorated(dec, atoms)
    vec = bond_vectors(beads, net.b_neighbours, net.b_shifts)
    ex, ey = linker_frames(vec, net.name)
    ez = np.cross(ex, ey)
    cell = atoms.cell.array
    shapes = []
    for k in range(len(dec.linker_zn)):
        rel = atoms.positions[dec.linker_atoms(k)] - beads.positions[dec.n_zn + k]
        frac = np.linalg.solve(cell.T, rel.T).T
        rel = (frac - np.round(frac)) @ cell  # a linker spans less than half a cell around its centroid
        shapes.append(np.column_stack([rel @ ex[k], rel @ ey[k], rel @ ez[k]]))
    return tuple(shapes)


def coarse_grain_decorated(dec: Decorated, atoms: Atoms | None = None) -> Atoms:
    """Si/O coarse-grained copy of a decorated structure (same atom order as its net).

    Si sits on each Zn, O on the centroid of each linker's five ring atoms (C and N), the
    ring unwrapped by minimum image about its first N. ``atoms`` is a (relaxed, rattled)
    copy of ``dec.atoms`` with the same atom order; the default is ``dec.atoms``.
    """
    atoms = dec.atoms if atoms is None else atoms
    n_b = len(dec.linker_zn)
    pos = atoms.positions
    ring_idx = dec.linker_starts()[:, None] + np.array(RING)[None]
    ring = pos[ring_idx]
    rel = ring - ring[:, :1]
    cell = atoms.cell
    frac = np.linalg.solve(cell.array.T, rel.reshape(-1, 3).T).T
    frac -= np.round(frac)
    rel = (frac @ cell.array).reshape(rel.shape)
    centres = ring[:, 0] + rel.mean(axis=1)
    return Atoms(["Si"] * dec.n_zn + ["O"] * n_b,
                 positions=np.vstack([pos[:dec.n_zn], centres]), cell=cell.array, pbc=True)
