"""MOF-FF atom typing and bonded terms of Zn(Im)2, Zn(mIm)2 (2-methylimidazolate) and mixed cells from connectivity.

Atom types of Im (``parameters.ATOM_TYPES``): Zn (``zn4_n4``); N bonded to Zn (``n3_c2zn1``); the C between
the two N (``c3_h1n2``) and its H (``h1_c1S``); the other two C (``c3_c1h1n1``) and their H (``h1_c1``).
mIm (``parameters.CH3_ATOM_TYPES``): the C between the two N bonded to the methyl C (``c3_c1n2``), the methyl
C (``c4_c1h3``, C + 3 H) and its H (``h1_c1@me``); ring C4/C5, their H, N and Zn as for Im.
Each linker (bonded component without Zn) takes the parameter set of its formula (C3H3N2: the H set,
C4H5N2: the CH3 set); a term belongs to the linker of its non-Zn atoms (the N of a Zn-N bond, the centre
of an angle or improper, the N of a dihedral's Zn-N central bond), so an Im and an mIm in one cell each keep
their own published terms.  Only an N-Zn-N angle can join two linkers: between an Im and an mIm it takes the
mean of the two sets' coefficients.  A Zn's charge is its set's, or between sets the mean of the Zn charges
of its four linkers' sets (each linker carries -q_Zn/2 of its set, so every cell stays neutral).
Angles: every pair of neighbours of every atom.  Dihedrals: every proper i-j-k-l over every bond j-k,
including those through Zn.  Impropers: centre first, on every 3-coordinate C and N.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from ase.neighborlist import neighbor_list

from ..errors import StructureError
from ..metals import FRAMEWORK_METAL
from . import parameters as P

#: The only metal MOF-FF for ZIFs has parameters for (:data:`ase_cggpr.metals.FRAMEWORK_METAL`, type ``zn4_n4``).
METAL = FRAMEWORK_METAL.symbol
#: Sorted neighbour symbols of a linker N bonded to the metal.
_N_NEIGHBOURS = sorted(["C", "C", METAL])

#: distance cut-offs (Å) used to infer bonds when no explicit bond list is given
BOND_CUTOFFS: dict[tuple[str, str], float] = {
    (METAL, "N"): 2.6,
    ("C", "N"): 1.7,
    ("C", "C"): 1.7,
    ("C", "H"): 1.3,
}

_MAX_LISTED = 8


class TypingError(StructureError):
    """A Zn(Im)2 / Zn(mIm)2 structure cannot be typed for MOF-FF (unknown element, wrong coordination, ...)."""


@dataclass(frozen=True, eq=False)
class MOFFFTyping:
    """MOF-FF typing of one structure; all atom indices are 0-based.

    Type ids are those of ``force_field`` (:func:`~ase_cggpr.mofff.parameters.force_field_table`): for Zn(Im)2
    the authors' ``ZIF8_H.data``, for Zn(mIm)2 their ``ZIF8_CH3.data``, for Im and mIm in one cell the
    combined table.
    """

    types: np.ndarray  #: (n_atoms,) atom type ids
    charges: np.ndarray  #: (n_atoms,) partial charges, e
    bonds: np.ndarray  #: (n_bonds, 2)
    bond_types: np.ndarray
    angles: np.ndarray  #: (n_angles, 3), centre in the middle
    angle_types: np.ndarray
    dihedrals: np.ndarray  #: (n_dihedrals, 4)
    dihedral_types: np.ndarray
    impropers: np.ndarray  #: (n_impropers, 4), centre first
    improper_types: np.ndarray
    name: str = ""
    shifts: np.ndarray | None = field(default=None, repr=False)  #: (n_bonds, 3) image shifts if known
    force_field: P.ForceFieldTable = field(default_factory=lambda: P.force_field_table(("H",)), repr=False)

    @property
    def n_atoms(self) -> int:
        return len(self.types)

    @property
    def type_names(self) -> list[str]:
        return [self.force_field.atom_types[t - 1] for t in self.types]

    def signature(self) -> bytes:
        """Bytes identifying the typing (two frames with equal signatures can share a LAMMPS instance)."""
        parts = [self.types, self.bonds, self.bond_types, self.angles, self.angle_types,
                 self.dihedrals, self.dihedral_types, self.impropers, self.improper_types]
        return b"|".join([self.force_field.key.encode()]
                         + [np.ascontiguousarray(p, dtype=np.int64).tobytes() for p in parts])


def _structure_name(atoms: Atoms, name: str | None) -> str:
    if name:
        return name
    for key in ("name", "structure_id", "id", "refcode", "framework_type", "topology", "net"):
        if key in atoms.info:
            return str(atoms.info[key])
    return atoms.get_chemical_formula()


def _listed(items: list[str]) -> str:
    more = len(items) - _MAX_LISTED
    return "; ".join(items[:_MAX_LISTED]) + (f"; ... and {more} more" if more > 0 else "")


def infer_bonds(atoms: Atoms, cutoffs: dict[tuple[str, str], float] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Bonds (i < j, or i == j across images) and image shifts from interatomic distances (Å cut-offs)."""
    cutoffs = dict(BOND_CUTOFFS if cutoffs is None else cutoffs)
    present = set(atoms.get_chemical_symbols())
    cut = {k: v for k, v in cutoffs.items() if k[0] in present and k[1] in present}
    if not cut:
        return np.zeros((0, 2), int), np.zeros((0, 3), int)
    i, j, S = neighbor_list("ijS", atoms, cut, self_interaction=False)
    keep = (i < j) | ((i == j) & _positive_shift(S))
    return np.stack([i[keep], j[keep]], axis=1), S[keep]


def _positive_shift(S: np.ndarray) -> np.ndarray:
    """True for the first non-zero component of each shift positive (to keep one of each +/- pair)."""
    out = np.zeros(len(S), bool)
    for n, s in enumerate(S):
        nz = np.nonzero(s)[0]
        out[n] = len(nz) > 0 and s[nz[0]] > 0
    return out


def _check_images(atoms: Atoms, bonds: np.ndarray, shifts: np.ndarray, name: str) -> None:
    """LAMMPS evaluates bonded terms between closest images: explicit images must be the closest ones."""
    if len(bonds) == 0 or not atoms.pbc.any():
        return
    pos = atoms.positions
    cell = atoms.cell.array
    vec = pos[bonds[:, 1]] + shifts @ cell - pos[bonds[:, 0]]
    mic, mic_len = find_mic(vec, atoms.cell, atoms.pbc)
    bad = np.nonzero(np.linalg.norm(vec - mic, axis=1) > 1e-6)[0]
    if len(bad):
        length = np.linalg.norm(vec, axis=1)
        items = [f"{bonds[b, 0]}-{bonds[b, 1]} (image {tuple(int(x) for x in shifts[b])}: {length[b]:.2f} Å, "
                 f"closest image {mic_len[b]:.2f} Å)" for b in bad]
        # a bond longer than twice the longest bonding cut-off through its listed image is not a small cell:
        # the positions are not in the periodic images (or cell basis) the bonds and shifts were made for
        if (length[bad] > 2 * max(BOND_CUTOFFS.values())).any():
            raise TypingError(
                "bonds that are not between closest periodic images and far longer than a bond through the "
                "listed image: the positions do not fit the bond shifts given (wrapped, in another cell basis, "
                f"or another atom order; not a cell too small): {_listed(items)}", structure=name)
        raise TypingError(
            "bonds that are not between closest periodic images (the cell is too small for the "
            f"bonded terms; use a supercell): {_listed(items)}", structure=name)


def mofff_typing(atoms: Atoms, *, bonds: np.ndarray | None = None, shifts: np.ndarray | None = None,
                   name: str | None = None) -> MOFFFTyping:
    """Type a Zn(Im)2, Zn(mIm)2 or mixed structure for MOF-FF; list its bonds, angles, dihedrals, impropers.

    ``bonds`` is an optional ``(n_bonds, 2)`` integer array of 0-based atom pairs from a caller that
    knows the connectivity (e.g. the linker decorator); ``shifts`` the matching ``(n_bonds, 3)`` integer
    image shifts of the second atom.  Without ``bonds``, they are inferred from distances
    (:data:`BOND_CUTOFFS`).  Raises :class:`TypingError` naming the structure and atoms that cannot be
    typed.
    """
    name = _structure_name(atoms, name)
    symbols = np.array(atoms.get_chemical_symbols())
    n = len(atoms)
    unknown = [f"{k} ({s})" for k, s in enumerate(symbols) if s not in (METAL, "N", "C", "H")]
    if unknown:
        raise TypingError(f"MOF-FF for Zn(Im)2 knows Zn, N, C, H only; other atoms: {_listed(unknown)}",
                            structure=name)
    if bonds is None:
        if shifts is not None:
            raise ValueError("shifts given without bonds")
        bonds, shifts = infer_bonds(atoms)
    else:
        bonds = np.asarray(bonds, dtype=int).reshape(-1, 2)
        if len(bonds) and (bonds.min() < 0 or bonds.max() >= n):
            raise TypingError(f"bond list refers to atoms outside 0..{n - 1}", structure=name)
        if shifts is not None:
            shifts = np.asarray(shifts, dtype=int).reshape(-1, 3)
            if len(shifts) != len(bonds):
                raise ValueError(f"{len(shifts)} shifts for {len(bonds)} bonds")
    if shifts is not None:
        _check_images(atoms, bonds, shifts, name)
    selfb = [f"{i}" for i, j in bonds if i == j]
    if selfb:
        raise TypingError(f"atoms bonded to their own periodic image: {_listed(selfb)}", structure=name)

    # adjacency (sets: a pair listed twice, e.g. through two images, would be a broken typing)
    nbrs: list[list[int]] = [[] for _ in range(n)]
    seen: set[tuple[int, int]] = set()
    dup = []
    for i, j in bonds:
        key = (min(i, j), max(i, j))
        if key in seen:
            dup.append(f"{key[0]}-{key[1]}")
            continue
        seen.add(key)
        nbrs[i].append(int(j))
        nbrs[j].append(int(i))
    if dup:
        raise TypingError(f"atom pairs bonded more than once (through several periodic images?): "
                            f"{_listed(dup)}", structure=name)
    nbrs = [sorted(x) for x in nbrs]
    nsym = [sorted(symbols[x]) for x in nbrs]

    local = np.array([""] * n, dtype=object)  # type name within its parameter set
    errors: list[str] = []

    def env(k: int) -> str:
        return f"{k} ({symbols[k]}, bonded to {''.join(nsym[k]) or 'nothing'})"

    for k in range(n):  # heavy atoms first; H after their C is known
        s = symbols[k]
        if s == METAL:
            if nsym[k] == ["N"] * 4:
                local[k] = P.ZN_TYPE
            else:
                errors.append(env(k) + ": Zn needs 4 N")
        elif s == "N":
            if nsym[k] == _N_NEIGHBOURS:
                local[k] = "n3_c2zn1"
            else:
                errors.append(env(k) + ": N needs 2 C + 1 Zn")
        elif s == "C":
            if nsym[k] == ["H", "N", "N"]:
                local[k] = "c3_h1n2"  # Im C2
            elif nsym[k] == ["C", "H", "N"]:
                local[k] = "c3_c1h1n1"  # C4/C5
            elif nsym[k] == ["C", "N", "N"]:
                local[k] = "c3_c1n2"  # mIm C2 (its C is checked to be the methyl below)
            elif nsym[k] == ["C", "H", "H", "H"]:
                local[k] = "c4_c1h3"  # methyl C
            else:
                errors.append(env(k) + ": C needs H + 2 N, H + C + N (ring), C + 2 N (mIm C2) or C + 3 H "
                              "(methyl)")
    for k in range(n):
        if symbols[k] == "C" and local[k] in ("c3_c1n2", "c4_c1h3"):
            (c,) = [m for m in nbrs[k] if symbols[m] == "C"]
            want = "c4_c1h3" if local[k] == "c3_c1n2" else "c3_c1n2"
            if local[c] and local[c] != want:
                errors.append(env(k) + (": a C bonded to 2 N needs a methyl C (C + 3 H)" if want == "c4_c1h3"
                                        else ": a methyl C needs the mIm C2 (bonded to 2 N)"))
                local[k] = ""
    for k in range(n):
        if symbols[k] == "H":
            if nsym[k] == ["C"] and local[nbrs[k][0]]:
                c = local[nbrs[k][0]]
                local[k] = {"c3_h1n2": "h1_c1S", "c4_c1h3": "h1_c1@me"}.get(c, "h1_c1")
            elif nsym[k] != ["C"]:
                errors.append(env(k) + ": H needs 1 C")
            # H on an untypeable C: that C is already reported
    if errors:
        raise TypingError(f"cannot type {len(errors)} atom(s) for MOF-FF: {_listed(errors)}", structure=name)

    # each linker (bonded component without Zn) takes the parameter set of its formula
    atom_set = np.array([""] * n, dtype=object)
    zn = symbols == METAL
    for start in range(n):
        if zn[start] or atom_set[start]:
            continue
        comp, stack = [start], [start]
        atom_set[start] = "?"
        while stack:
            a = stack.pop()
            for b in nbrs[a]:
                if not zn[b] and not atom_set[b]:
                    atom_set[b] = "?"
                    comp.append(b)
                    stack.append(b)
        counts = {e: int((symbols[comp] == e).sum()) for e in ("C", "H", "N")}
        formula = "".join(f"{e}{counts[e]}" for e in ("C", "H", "N") if counts[e])
        pset = P.SET_FOR_FORMULA.get(formula)
        wrong = [] if pset is None else [k for k in comp if local[k] not in P.PARAMETER_SETS[pset].atom_types]
        if pset is None or wrong:
            what = (f"has no MOF-FF parameter set (known linkers: "
                    f"{', '.join(f'{s.formula} ({s.linker})' for s in P.PARAMETER_SETS.values())})"
                    if pset is None else
                    f"is not {P.PARAMETER_SETS[pset].linker}: atoms {', '.join(map(str, wrong))} typed "
                    f"{', '.join(sorted(set(local[wrong])))}")
            errors.append(f"linker {formula} (atoms {', '.join(map(str, sorted(comp)[:11]))}"
                          f"{', ...' if len(comp) > 11 else ''}) {what}")
        atom_set[comp] = pset or "?"
    if errors:
        raise TypingError(f"cannot type {len(errors)} linker(s) for MOF-FF: {_listed(errors)}", structure=name)
    ff = P.force_field_table({s for s in atom_set if s})
    zn_sets = [tuple(sorted(atom_set[m] for m in nbrs[k])) if zn[k] else () for k in range(n)]
    atom_set[zn] = [ss[0] if len(set(ss)) == 1 else "CH3" for ss in np.array(zn_sets, dtype=object)[zn]]
    types = np.array([ff.atom_id[(atom_set[k], local[k])] for k in range(n)], dtype=int)

    names = list(local)

    def table(spec: dict, symmetric_outer: bool = False) -> dict:
        out = {}
        for tid, (key, _) in spec.items():
            if symmetric_outer:
                out[(key[0], *sorted(key[1:]))] = tid
            else:
                out[tuple(key)] = tid
                out[tuple(key[::-1])] = tid
        return out

    tabs = {s: {"bond": table(P.PARAMETER_SETS[s].bonds), "angle": table(P.PARAMETER_SETS[s].angles),
                "dihedral": table(P.PARAMETER_SETS[s].dihedrals),
                "improper": table(P.PARAMETER_SETS[s].impropers, symmetric_outer=True)} for s in ff.sets}
    gid = {"bond": ff.bond_id, "angle": ff.angle_id, "dihedral": ff.dihedral_id, "improper": ff.improper_id}
    missing: list[str] = []

    def lookup(kind: str, pset: str, idx: tuple[int, ...], key: tuple[str, ...]) -> int:
        tid = tabs[pset][kind].get(key)
        if tid is None:
            missing.append(f"{'-'.join(map(str, idx))} ({'-'.join(key)})")
            return 0
        return gid[kind][(pset, tid)]

    def owner(*atoms_: int) -> str:  # a term belongs to the linker of its non-Zn atoms (one linker)
        return next(atom_set[a] for a in atoms_ if not zn[a])

    bond_list = np.array(sorted(seen), dtype=int).reshape(-1, 2)
    bond_types = [lookup("bond", owner(i, j), (i, j), (names[i], names[j])) for i, j in bond_list]
    angles, angle_types = [], []
    for j in range(n):
        for i, k in combinations(nbrs[j], 2):
            angles.append((i, j, k))
            if zn[j] and atom_set[i] != atom_set[k]:  # N-Zn-N between an Im and an mIm
                angle_types.append(ff.mixed_angle_id)
                continue
            angle_types.append(lookup("angle", owner(j, i), (i, j, k), (names[i], names[j], names[k])))
    dihedrals, dihedral_types = [], []
    for j, k in bond_list:
        for i in nbrs[j]:
            if i == k:
                continue
            for m in nbrs[k]:
                if m == j or m == i:
                    continue
                dihedrals.append((i, j, k, m))
                dihedral_types.append(lookup("dihedral", owner(j, k), (i, j, k, m),
                                             (names[i], names[j], names[k], names[m])))
    impropers, improper_types = [], []
    for c in range(n):
        if symbols[c] in ("C", "N") and len(nbrs[c]) == 3:
            outer = nbrs[c]
            impropers.append((c, *outer))
            improper_types.append(lookup("improper", atom_set[c], (c, *outer),
                                         (names[c], *sorted(names[o] for o in outer))))
    if missing:
        raise TypingError(f"no MOF-FF parameters for {len(missing)} term(s): {_listed(missing)}",
                            structure=name)

    # charges of the linker atoms from their set; a Zn takes its set's charge, or between Im and mIm the
    # mean over its four linkers' sets (each linker's charge is -q_Zn/2 of its set: the cell stays neutral)
    charges = np.array([P.PARAMETER_SETS[atom_set[k]].charge[names[k]] for k in range(n)])
    for k in np.flatnonzero(zn):
        if len(set(zn_sets[k])) > 1:
            charges[k] = float(np.mean([P.PARAMETER_SETS[s].charge["zn4_n4"] for s in zn_sets[k]]))

    def arr(x: list, width: int) -> np.ndarray:
        return np.array(x, dtype=int).reshape(-1, width)

    if shifts is not None:  # keep the shift of each kept bond, oriented i < j
        smap = {}
        for (i, j), s in zip(bonds, shifts, strict=True):
            smap[(i, j)] = s
            smap[(j, i)] = -s
        shifts = np.array([smap[(i, j)] for i, j in bond_list], dtype=int).reshape(-1, 3)
    return MOFFFTyping(
        types=types, charges=charges,
        bonds=bond_list, bond_types=np.array(bond_types, int),
        angles=arr(angles, 3), angle_types=np.array(angle_types, int),
        dihedrals=arr(dihedrals, 4), dihedral_types=np.array(dihedral_types, int),
        impropers=arr(impropers, 4), improper_types=np.array(improper_types, int),
        name=name, shifts=shifts, force_field=ff,
    )
