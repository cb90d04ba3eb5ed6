"""Atoms -> beads: find metal nodes and imidazolate linkers under periodic boundaries.

A ZIF is a tetrahedral AB2 net: metal nodes (A, e.g. Zn2+) joined by imidazolate-type linkers (B).
:func:`find_connectivity` finds, by bonded connectivity (ASE's neighbour list, periodic), every metal, every
linker (a connected group of non-metal atoms), the linker's five-membered ring (the two donor N and the
atoms between them) and the two metals each linker bridges. :func:`coarse_grain` then builds the
structure the descriptor sees, in one of three representations:

``atomistic``  all atoms; SOAP centres on the metals.
``AB2``        A bead on each metal, B bead at the geometric centroid of each linker's ring atoms (C and
               N, no H), unwrapped across the cell.
``A``          A beads only.

Each metal and each linker has its own bead element (:data:`A_BEADS`, :data:`B_BEADS`), so different metals
and different linkers are different species to the descriptor:

=====  ======  ===========================  ======
metal  A bead  linker                       B bead
=====  ======  ===========================  ======
Zn     Si      Im (C3H3N2)                  O
Co     Ge      mIm (C4H5N2)                 S
Cd     Sn      eIm (C5H7N2)                 Se
Fe     Pb      bIm (C7H5N2)                 Te
=====  ======  ===========================  ======

Zn(Im)2 is Si/O, the hZIF convention, so existing bead files and models are unchanged. A beads are group-14
and B beads group-16 elements because a ZIF's AB2 net is a zeolite's TO2 net: the 4-connected tetrahedral
nodes take the T atom's group (Si), the 2-connected bridges the bridging oxygen's (O). Metals beyond the four
have no bead element (use the atomistic representation for them). Already coarse-grained input written with
the same table is read back with it (a Ge bead is a Co site, an S bead an mIm linker), if it looks like beads:
every A-B bond between :data:`CG_AB_MIN` and :data:`CG_AB_CUTOFF` Å (Zn to ring centroid is ~3.2 Å; an
atomistic SiO2 such as quartz, Si-O 1.6 Å, is refused), every A site bonded to 4 B beads and every B bead to
2 A sites. The atom <-> bead correspondence is kept (:class:`Connectivity`) so
results can be reported per atom.

Coordination defects (a metal with other than 4 linker N within :data:`METAL_N_CUTOFF`, or bead input's A site
with other than 4 B beads; a linker bridging other than 2 metals: dangling, free or over-bridging) are refused
by default (``defects="refuse"``, what training and labelling need). With ``defects="flag"`` (the default of
prediction: calculator, ``compute``, ``predict``, ``screen``, ``relax``) the structure is mapped all the same
and :attr:`Connectivity.defects` holds a :class:`DefectReport` naming every defective metal and linker;
:mod:`ase_cggpr.defects` turns it into a per-site trust mask. A structure with no 4-coordinated metal at all is
refused in both modes (not a ZIF network).

Before any neighbour search, :func:`find_connectivity` refuses unphysical cells, partial occupancies
(:mod:`ase_cggpr.structure_checks`) and atomistic input without a metal; its one neighbour search
(:func:`find_bonds`) also refuses atoms closer than the build screen's limits (1.0 Å, 0.6 Å with H).
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.formula import Formula
from ase.geometry import find_mic
from ase.neighborlist import neighbor_list
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .errors import OptionError, StructureError
from .metals import FRAMEWORK_METAL, METALS
from .spec import canonical_representation
from .structure_checks import MIN_DISTANCE, MIN_DISTANCE_H, check_cell, check_structure, contact_message, worst_contact

__all__ = ["A_BEADS", "A_SYMBOL", "B_BEADS", "B_SYMBOL", "BeadMap", "Bonds", "Connectivity", "DEFECT_MODES",
           "DefectReport", "bead_positions", "check_defects_mode",
           "check_cell", "check_input",
           "coarse_grain", "BondTracker", "find_bonds",
           "find_connectivity", "is_coarse_grained", "structure_name", "connectivity_from_bonds"]

#: Elements never treated as metal nodes.
NON_METALS = frozenset("H He B C N O F Ne Si P S Cl Ar Se Br Kr I Xe".split())

#: Linkers the mapper recognises, by Hill formula. Anything else is an error naming the formula.
KNOWN_LINKERS = {
    "C3H3N2": "Im (imidazolate)",
    "C4H5N2": "mIm (2-methylimidazolate)",
    "C5H7N2": "eIm (2-ethylimidazolate)",
    "C7H5N2": "bIm (benzimidazolate)",
}

#: Bond cut-offs (Å) between non-metal elements; metal-N bonds use METAL_N_CUTOFF.
COVALENT_CUTOFFS = {("C", "C"): 1.75, ("C", "N"): 1.75, ("N", "N"): 1.6, ("C", "H"): 1.3,
                    ("H", "N"): 1.3, ("C", "O"): 1.6, ("N", "O"): 1.6, ("H", "O"): 1.2}
METAL_N_CUTOFF = 2.6
#: A-site to B-bead cut-off (Å) for already coarse-grained input (Zn to ring centroid is ~3.24 Å).
CG_AB_CUTOFF = 4.2
#: Shortest accepted A-B bond (Å) in coarse-grained input. Zn to imidazolate-ring centroid is 3.11-3.22 Å in
#: the DFT structures of real ZIFs and 2.85-3.65 Å over the built-in (rattled) bead set; Si-O in an atomistic
#: SiO2 (quartz, a raw IZA net) is 1.6 Å, which is not bead input.
CG_AB_MIN = 2.4
#: In coarse-grained input an A site bonds its 4 nearest B beads; a 5th within CG_AB_CUTOFF must be at least
#: this factor farther than the 4th (dense nets put non-bonded beads at ~4.1 Å, bonded ones stay below ~3.4 Å).
CG_GAP_FACTOR = 1.1

#: Bead element of each metal (A beads, group 14) and of each linker by Hill formula (B beads, group 16); see
#: the module docstring. Zn -> Si and Im -> O are the hZIF convention.
A_BEADS = {metal.symbol: metal.a_bead for metal in METALS.values()}  # Zn: Si, Co: Ge, Cd: Sn, Fe: Pb
B_BEADS = {"C3H3N2": "O", "C4H5N2": "S", "C5H7N2": "Se", "C7H5N2": "Te"}
assert set(B_BEADS) == set(KNOWN_LINKERS), "every known linker needs a B-bead element"
#: The metal an A-bead element stands for, and the linker a B-bead element stands for (reading bead input).
METAL_OF_A_BEAD = {bead: metal for metal, bead in A_BEADS.items()}
LINKER_OF_B_BEAD = {bead: linker for linker, bead in B_BEADS.items()}

#: Element symbols of the A and B beads of Zn(Im)2 (the hZIF convention).
A_SYMBOL, B_SYMBOL = FRAMEWORK_METAL.a_bead, B_BEADS["C3H3N2"]


def a_bead(metal: str, name: str) -> str:
    """The A-bead element of ``metal``; StructureError naming the structure when it has none."""
    if metal not in A_BEADS:
        raise StructureError(f"metal {metal} has no bead element in the coarse-grained representations (A beads "
                             f"are defined for {', '.join(A_BEADS)}: beads.A_BEADS); use the atomistic "
                             "representation", structure=name)
    return A_BEADS[metal]


def b_bead(linker: str, name: str) -> str:
    """The B-bead element of the linker with Hill formula ``linker``."""
    if linker not in B_BEADS:
        raise StructureError(f"linker {linker} has no bead element (B beads are defined for "
                             f"{', '.join(B_BEADS)}: beads.B_BEADS)", structure=name)
    return B_BEADS[linker]


#: What coarse-graining does with coordination defects: ``"refuse"`` (a StructureError) or ``"flag"`` (map the
#: structure and report them in :attr:`Connectivity.defects`).
DEFECT_MODES = ("flag", "refuse")


def check_defects_mode(value) -> str:
    """``value`` if it is one of :data:`DEFECT_MODES`, else an OptionError naming the choices."""
    if value not in DEFECT_MODES:
        raise OptionError(f"defects must be one of {DEFECT_MODES}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class DefectReport:
    """Coordination defects found by :func:`find_connectivity` with ``defects="flag"``.

    Attributes:
        metal_coordination: (n_metals,) linker donors bonded to each metal (N atoms within
            :data:`METAL_N_CUTOFF`; for bead input, B beads bonded), in metal order.
        defective_metals: sorted positions (in metal order) of the defective metals: coordination other than
            4, or bonded to a defective linker.
        metal_reasons: one reason per defective metal (e.g. ``"3 N neighbours"``, ``"binds linker 12, which
            bridges 1 metal"``).
        defective_linkers: sorted indices of the linkers bridging other than 2 metals.
        linker_bridges: number of metal bonds of each defective linker (0: free, 1: dangling, 3+: over-bridging).
    """

    metal_coordination: np.ndarray
    defective_metals: np.ndarray
    metal_reasons: tuple[str, ...]
    defective_linkers: np.ndarray
    linker_bridges: np.ndarray

    def __bool__(self) -> bool:
        return bool(len(self.defective_metals) or len(self.defective_linkers))

    def summary(self, metal_indices: np.ndarray, symbols: Sequence[str], *, limit: int = 6) -> str:
        """One line: how many metals / linkers are defective and the first ``limit`` of them by atom index."""
        shown = [f"{symbols[k]} {int(metal_indices[k])} ({reason})"
                 for k, reason in zip(self.defective_metals[:limit], self.metal_reasons[:limit], strict=False)]
        more = len(self.defective_metals) - len(shown)
        text = (f"{len(self.defective_metals)} defective metal site(s): {', '.join(shown)}"
                + (f" and {more} more" if more > 0 else ""))
        if len(self.defective_linkers):
            kinds = Counter(int(b) for b in self.linker_bridges)
            text += "; " + ", ".join(f"{n} linker(s) bridging {b} metal(s)" for b, n in sorted(kinds.items()))
        return text


def _defect_report(n_metals: int, coordination: np.ndarray, linker_metals: Sequence[Sequence[int]],
                   good: int = 4) -> DefectReport:
    """The :class:`DefectReport` from each metal's coordination and each linker's bonded metals (positions)."""
    reasons: dict[int, list[str]] = {}
    for k in np.flatnonzero(coordination != good):
        reasons.setdefault(int(k), []).append(f"{int(coordination[k])} linker bonds")
    bridges = np.array([len(m) for m in linker_metals], dtype=int)
    bad_linkers = np.flatnonzero(bridges != 2)
    for b in bad_linkers:
        for k in set(linker_metals[b]):
            reasons.setdefault(int(k), []).append(f"binds linker {int(b)}, which bridges {int(bridges[b])} metal(s)")
    order = sorted(reasons)
    return DefectReport(metal_coordination=np.asarray(coordination, dtype=int),
                        defective_metals=np.array(order, dtype=int),
                        metal_reasons=tuple("; ".join(reasons[k]) for k in order),
                        defective_linkers=bad_linkers.astype(int), linker_bridges=bridges[bad_linkers])


def _linker_metal_array(linker_metals: Sequence[Sequence[int]]) -> np.ndarray:
    """(n_linkers, 2) metal positions per linker; -1 pads a linker bridging fewer than 2 metals (one bridging
    more keeps its first two: its full list is in the defect report)."""
    out = np.full((len(linker_metals), 2), -1, dtype=int)
    for k, metals in enumerate(linker_metals):
        out[k, :min(2, len(metals))] = list(metals)[:2]
    return out


def _refuse_if_not_a_network(name: str, report: DefectReport, n_metals: int, what: str) -> None:
    """Flagging is for a network with defects; with no well-formed metal at all it is not a ZIF."""
    if n_metals and len(report.defective_metals) == n_metals:
        raise StructureError(f"not a ZIF network: none of its {n_metals} metal sites has a well-formed environment "
                             f"({what}); even with defects='flag' a structure needs 4-coordinated metals",
                             structure=name)


@dataclasses.dataclass(frozen=True)
class Connectivity:
    """Connectivity of a framework: which atoms form which bead. Positions are not stored.

    Attributes:
        name: structure name used in error messages.
        coarse_grained_input: True when the input was already beads (elements of A_BEADS / B_BEADS).
        metal_indices: atom index of each metal node (the A sites), in atom order.
        metal_symbols: chemical symbol of each metal node (for coarse-grained input, the metal its A bead
            stands for: "Zn" for Si).
        linkers: atom indices of each linker (all its atoms, H included).
        rings: atom indices of each linker's ring atoms (the B bead is their centroid).
        linker_formulas: Hill formula of each linker (for coarse-grained input, the linker its B bead stands
            for: "C3H3N2" for O).
        linker_metals: (n_linkers, 2) positions in ``metal_indices`` of the two metals each linker bridges
            (-1 where a defective linker bridges fewer; see ``defects``).
        defects: the :class:`DefectReport` when the structure was mapped with ``defects="flag"`` and has
            coordination defects, else None (a well-formed network).
    """

    name: str
    coarse_grained_input: bool
    metal_indices: np.ndarray
    metal_symbols: tuple[str, ...]
    linkers: tuple[np.ndarray, ...]
    rings: tuple[np.ndarray, ...]
    linker_formulas: tuple[str, ...]
    linker_metals: np.ndarray
    defects: DefectReport | None = None

    @property
    def n_metals(self) -> int:
        return len(self.metal_indices)


@dataclasses.dataclass(frozen=True)
class BeadMap:
    """A structure in one representation, ready for the descriptor.

    Attributes:
        connectivity: the :class:`Connectivity` it was built from.
        representation: ``"atomistic"``, ``"AB2"`` or ``"A"``.
        structure: the ASE Atoms the descriptor sees (all atoms, or the beads of A_BEADS / B_BEADS).
        centre_indices: indices in ``structure`` of the SOAP centres, one per metal, in metal order.
    """

    connectivity: Connectivity
    representation: str
    structure: Atoms
    centre_indices: np.ndarray

    @property
    def name(self) -> str:
        return self.connectivity.name


def structure_name(atoms: Atoms, fallback: str = "structure") -> str:
    """A human-readable name for error messages (info 'name', 'structure_id' or the formula)."""
    for key in ("name", "structure_name", "refcode", "net", "structure_id"):
        if key in atoms.info:
            return str(atoms.info[key])
    return f"{fallback} {atoms.get_chemical_formula()}"


_A_ELEMENTS = frozenset(A_BEADS.values())
_B_ELEMENTS = frozenset(B_BEADS.values())
_BEAD_ELEMENTS = _A_ELEMENTS | _B_ELEMENTS


def is_coarse_grained(atoms: Atoms) -> bool:
    """True for bead structures: only bead elements (A_BEADS, B_BEADS; hZIF's Si and O), at least one A bead."""
    symbols = set(atoms.get_chemical_symbols())
    return bool(symbols) and symbols <= _BEAD_ELEMENTS and bool(symbols & _A_ELEMENTS)


@dataclasses.dataclass(frozen=True)
class Bonds:
    """The bonded pairs of a structure, from one periodic neighbour search.

    Directed pairs (both (i, j) and (j, i)), one entry per periodic image, sorted by (i, j, d): atomistic
    input holds the covalent and metal-N bonds, coarse-grained input every A-B pair within
    :data:`CG_AB_CUTOFF`. :func:`connectivity_from_bonds` turns them into a :class:`Connectivity`; for atomistic
    input the connectivity is a function of ``numbers`` and the pairs (i, j) alone (see :meth:`same_connectivity`).
    """

    i: np.ndarray
    j: np.ndarray
    d: np.ndarray
    numbers: np.ndarray
    coarse_grained: bool

    def same_connectivity(self, other: Bonds | None) -> bool:
        """True when ``other`` has the same atoms and bonded pairs, so it gives the same :class:`Connectivity`.

        Always False for coarse-grained input, whose connectivity also depends on the A-B distances.
        """
        return (other is not None and not self.coarse_grained and not other.coarse_grained
                and np.array_equal(self.numbers, other.numbers) and np.array_equal(self.i, other.i)
                and np.array_equal(self.j, other.j))


def _cutoff_table(atoms: Atoms) -> tuple[np.ndarray, bool]:
    """(119 x 119 table of bond cut-offs (Å) by atomic numbers, 0 = never bonded; coarse-grained input?)."""
    table = np.zeros((119, 119))
    coarse = is_coarse_grained(atoms)
    if coarse:
        pairs = {(a, b): CG_AB_CUTOFF for a in _A_ELEMENTS for b in _B_ELEMENTS}
    else:
        pairs = dict(COVALENT_CUTOFFS)
        for metal in set(atoms.get_chemical_symbols()) - NON_METALS:
            pairs[(metal, "N")] = METAL_N_CUTOFF
    for (a, b), cutoff in pairs.items():
        za, zb = atomic_numbers[a], atomic_numbers[b]
        table[za, zb] = table[zb, za] = cutoff
    return table, coarse


def _bond_radius(atoms: Atoms, table: np.ndarray) -> float:
    present = np.unique(atoms.numbers)
    return max(float(table[np.ix_(present, present)].max()), MIN_DISTANCE, MIN_DISTANCE_H)


def _select_bonds(atoms: Atoms, name: str, i: np.ndarray, j: np.ndarray, d: np.ndarray, cutoffs: np.ndarray,
                  coarse: bool) -> Bonds:
    """Contact check over all pairs (i, j, d) given, then the pairs closer than their bond cut-off."""
    contact = worst_contact(atoms.numbers, i, j, d)
    if contact is not None:
        raise StructureError(contact_message(atoms, contact), structure=name)
    keep = d < cutoffs
    i, j, d = i[keep], j[keep], d[keep]
    order = np.lexsort((d, j, i))
    return Bonds(i=i[order], j=j[order], d=d[order], numbers=atoms.numbers.copy(), coarse_grained=coarse)


def find_bonds(atoms: Atoms, *, name: str | None = None) -> Bonds:
    """Bonded pairs of ``atoms`` from one neighbour search, after the short-contact check.

    Call :func:`~ase_cggpr.structure_checks.check_structure` first (:func:`find_connectivity` does): a
    degenerate cell makes the neighbour search itself explode.

    Raises:
        StructureError: when two atoms are closer than the screen's limits
            (:data:`~ase_cggpr.structure_checks.MIN_DISTANCE`, ``MIN_DISTANCE_H`` with H).
    """
    name = name or structure_name(atoms)
    table, coarse = _cutoff_table(atoms)
    numbers = atoms.numbers
    i, j, d = neighbor_list("ijd", atoms, _bond_radius(atoms, table))
    return _select_bonds(atoms, name, i, j, d, table[numbers[i], numbers[j]], coarse)


class BondTracker:
    """The exact :func:`find_bonds` of a structure that is evaluated again and again (MD, relaxations).

    A Verlet list: a full neighbour search keeps every pair within the bond radius plus ``skin`` (Å) with its
    periodic image offset. While ``numbers``, ``pbc`` and the cell are unchanged and no atom has moved more
    than ``skin / 2`` from where that search saw it, every pair now within the bond radius is among those
    candidates, so their distances, recomputed vectorised, give exactly the bonds (and short contacts) a
    fresh search would find. Anything else (another structure, permuted atoms, a new cell) triggers a fresh
    search.
    """

    def __init__(self, skin: float = 0.5):
        self.skin = float(skin)
        self._ref: dict | None = None
        self.n_searches = 0

    def bonds(self, atoms: Atoms, *, name: str | None = None) -> Bonds:
        """The bonds of ``atoms``, equal to :func:`find_bonds`'s (same contact check, same pairs).

        ``atoms`` must have passed :func:`check_input` (the neighbour search needs a sane cell).
        """
        name = name or structure_name(atoms)
        ref, self._ref = self._ref, None
        positions = atoms.positions
        cell = np.asarray(atoms.cell)
        if (ref is not None and np.array_equal(atoms.numbers, ref["numbers"]) and np.array_equal(cell, ref["cell"])
                and np.array_equal(atoms.pbc, ref["pbc"]) and positions.shape == ref["positions"].shape
                and float(((positions - ref["positions"]) ** 2).sum(axis=1).max()) < (self.skin / 2) ** 2):
            i, j = ref["i"], ref["j"]
            vectors = positions[j] - positions[i] + ref["offsets"]
            d = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
            bonds = _select_bonds(atoms, name, i, j, d, ref["cutoffs"], ref["coarse"])
            self._ref = ref
            return bonds
        table, coarse = _cutoff_table(atoms)
        numbers = atoms.numbers
        i, j, shifts, d = neighbor_list("ijSd", atoms, _bond_radius(atoms, table) + self.skin)
        self.n_searches += 1
        cutoffs = table[numbers[i], numbers[j]]
        bonds = _select_bonds(atoms, name, i, j, d, cutoffs, coarse)
        self._ref = {"numbers": numbers.copy(), "cell": cell.copy(), "pbc": atoms.pbc.copy(),
                     "positions": positions.copy(), "i": i, "j": j, "offsets": shifts @ cell, "cutoffs": cutoffs,
                     "coarse": coarse}
        return bonds


def find_connectivity(atoms: Atoms, *, name: str | None = None, defects: str = "refuse") -> Connectivity:
    """Find metals, linkers, rings and metal-linker bridges from bonded connectivity (periodic).

    ``defects``: ``"refuse"`` (default) raises on a coordination defect; ``"flag"`` maps the structure and
    reports them in ``Connectivity.defects`` (see the module docstring).

    Raises:
        StructureError: naming the structure, the offending atom indices and what was found, when the cell
            or occupancies are unphysical (:func:`~ase_cggpr.structure_checks.check_structure`), two atoms are
            too close, there is no metal, a linker is broken or unrecognised, or a metal is not 4-connected /
            a linker not 2-connected; for coarse-grained input, when the beads do not look like ZIF beads.
    """
    name = name or structure_name(atoms)
    check_input(atoms, name)
    return connectivity_from_bonds(atoms, find_bonds(atoms, name=name), name=name, defects=defects)


def check_input(atoms: Atoms, name: str) -> None:
    """Every check that needs no neighbour search: cell, occupancies, and a metal in atomistic input."""
    check_structure(atoms, name)
    if not is_coarse_grained(atoms):
        _metal_mask(atoms, name)


def _metal_mask(atoms: Atoms, name: str) -> np.ndarray:
    is_metal = np.array([s not in NON_METALS for s in atoms.get_chemical_symbols()])
    if not is_metal.any():
        raise StructureError(f"no metal atoms found (elements: {sorted(set(atoms.get_chemical_symbols()))}); "
                             "a ZIF needs metal nodes such as Zn", structure=name)
    return is_metal


def connectivity_from_bonds(atoms: Atoms, bonds: Bonds, *, name: str | None = None,
                            defects: str = "refuse") -> Connectivity:
    """The :class:`Connectivity` of ``atoms`` from its :class:`Bonds` (see :func:`find_connectivity`)."""
    name = name or structure_name(atoms)
    flag = check_defects_mode(defects) == "flag"
    if bonds.coarse_grained:
        return _coarse_grained_connectivity(atoms, name, bonds, flag=flag)
    symbols = np.array(atoms.get_chemical_symbols())
    is_metal = _metal_mask(atoms, name)
    metal_indices = np.flatnonzero(is_metal)
    i, j = bonds.i, bonds.j

    # metal - donor bonds (one entry per metal-N bond, periodic images counted separately)
    metal_bond = is_metal[i] & ~is_metal[j]
    mb_i, mb_j = i[metal_bond], j[metal_bond]
    # covalent graph of the non-metal atoms
    organic = ~is_metal[i] & ~is_metal[j]
    n = len(atoms)
    graph = coo_matrix((np.ones(organic.sum()), (i[organic], j[organic])), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)

    linker_ids = sorted({component[a] for a in np.flatnonzero(~is_metal)})
    members: dict[int, list[int]] = {c: [] for c in linker_ids}
    for a in np.flatnonzero(~is_metal):
        members[component[a]].append(a)

    metal_position = {m: k for k, m in enumerate(metal_indices)}
    coordination = Counter(mb_i.tolist())
    wrong = [(m, coordination.get(m, 0)) for m in metal_indices if coordination.get(m, 0) != 4]
    if wrong and not flag:
        detail = ", ".join(f"{symbols[m]} {m}: {c} N neighbours" for m, c in wrong[:8])
        raise StructureError(f"wrong metal coordination: every metal must bind 4 linker N atoms within "
                             f"{METAL_N_CUTOFF} Å; found {detail}" + (" ..." if len(wrong) > 8 else ""),
                             structure=name)

    bridges: dict[int, list[tuple[int, int]]] = {c: [] for c in linker_ids}  # component -> (metal, donor)
    for m, d in zip(mb_i.tolist(), mb_j.tolist(), strict=True):
        bridges[component[d]].append((m, d))

    linkers, rings, formulas, linker_metals = [], [], [], []
    neighbours = _adjacency(i[organic], j[organic])
    for c in linker_ids:
        atom_ids = np.array(sorted(members[c]))
        formula = Formula.from_list(symbols[atom_ids].tolist()).format("hill")
        if formula not in KNOWN_LINKERS:
            raise StructureError(
                f"unrecognised or broken linker {formula} (atom indices {atom_ids[:12].tolist()}"
                f"{' ...' if atom_ids.size > 12 else ''}); recognised linkers: "
                + ", ".join(f"{f} {d}" for f, d in KNOWN_LINKERS.items()), structure=name)
        metal_bonds = bridges[c]
        if len(metal_bonds) != 2 and not flag:
            raise StructureError(f"linker {formula} (atom indices {atom_ids.tolist()}) binds {len(metal_bonds)} "
                                 "metal atoms; every linker must bridge exactly 2", structure=name)
        donors = [d for _, d in metal_bonds]
        if flag and (len(donors) != 2 or donors[0] == donors[1]):  # a defective linker: the ring of its two N
            donors = [a for a in atom_ids.tolist() if symbols[a] == "N"][:2]
        ring = _ring_through(donors[0], donors[1], neighbours, symbols) if len(donors) == 2 else None
        if ring is None:
            raise StructureError(f"linker {formula} (atom indices {atom_ids.tolist()}): no ring joins its "
                                 f"donor atoms {donors}", structure=name)
        linkers.append(atom_ids)
        rings.append(np.array(sorted(ring)))
        formulas.append(formula)
        linker_metals.append([metal_position[m] for m, _ in metal_bonds])

    report = None
    if flag:
        counts = np.array([coordination.get(m, 0) for m in metal_indices], dtype=int)
        report = _defect_report(len(metal_indices), counts, linker_metals)
        _refuse_if_not_a_network(name, report, len(metal_indices), f"4 linker N within {METAL_N_CUTOFF} Å")
        report = report or None
    return Connectivity(name=name, coarse_grained_input=False, metal_indices=metal_indices,
                    metal_symbols=tuple(symbols[metal_indices].tolist()), linkers=tuple(linkers),
                    rings=tuple(rings), linker_formulas=tuple(formulas),
                    linker_metals=_linker_metal_array(linker_metals), defects=report)


def _adjacency(i: np.ndarray, j: np.ndarray) -> dict[int, set[int]]:
    neighbours: dict[int, set[int]] = {}
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        neighbours.setdefault(a, set()).add(b)
    return neighbours


def _shortest_path(start: int, goal: int, neighbours: dict[int, set[int]], allowed) -> list[int] | None:
    parent = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [goal]
            while path[-1] != start:
                path.append(parent[path[-1]])
            return path[::-1]
        for nxt in neighbours.get(node, ()):
            if nxt not in parent and allowed(nxt):
                parent[nxt] = node
                queue.append(nxt)
    return None


def _ring_through(d1: int, d2: int, neighbours: dict[int, set[int]], symbols: np.ndarray) -> set[int] | None:
    """Smallest ring of heavy atoms containing both donors: two internally disjoint shortest paths."""
    heavy = lambda a: symbols[a] != "H"  # noqa: E731
    first = _shortest_path(d1, d2, neighbours, heavy)
    if first is None:
        return None
    interior = set(first[1:-1])
    second = _shortest_path(d1, d2, neighbours, lambda a: heavy(a) and a not in interior)
    if second is None:
        return None
    return set(first) | set(second)


def _coarse_grained_connectivity(atoms: Atoms, name: str, bonds: Bonds, *, flag: bool = False) -> Connectivity:
    symbols = np.array(atoms.get_chemical_symbols())
    is_a = np.isin(symbols, sorted(_A_ELEMENTS))
    a_sites = np.flatnonzero(is_a)
    b_sites = np.flatnonzero(np.isin(symbols, sorted(_B_ELEMENTS)))
    a_names = "/".join(sorted(set(symbols[a_sites])))  # "Si" for hZIF input
    b_names = "/".join(sorted(set(symbols[b_sites]))) or B_SYMBOL
    ab = is_a[bonds.i]
    i, j, d = bonds.i[ab], bonds.j[ab], bonds.d[ab]
    order = np.lexsort((d, i))  # by A site, nearest bead first
    i, j, d = i[order], j[order], d[order]
    if d.size and d.min() < CG_AB_MIN:
        k = int(np.argmin(d))
        n_short = int(np.count_nonzero(d < CG_AB_MIN))
        raise StructureError(f"not coarse-grained ZIF beads: A site {symbols[i[k]]} {i[k]} is {d[k]:.2f} Å from "
                             f"B bead {symbols[j[k]]} {j[k]} ({n_short} A-B pairs shorter than {CG_AB_MIN:g} Å); "
                             "bead input (A beads such as Si = metal sites, B beads such as O = linker-ring "
                             "centroids) needs A-B distances near the Zn to ring-centroid distance "
                             f"(~3.2 Å; accepted {CG_AB_MIN:g}-{CG_AB_CUTOFF:g} Å). An atomistic SiO2 (Si-O ~1.6 Å: "
                             "quartz, a raw IZA net) is not bead input; scale a bare net to A-B ~3.2 Å first",
                             structure=name)
    first = np.searchsorted(i, a_sites)
    count = np.searchsorted(i, a_sites, side="right") - first
    wrong = [(a, int(c)) for a, c in zip(a_sites, count, strict=True) if c < 4]
    if wrong and not flag:
        detail = ", ".join(f"{symbols[a]} {a}: {c} B beads" for a, c in wrong[:8])
        raise StructureError(f"wrong A-site coordination in coarse-grained input: every A site ({a_names}) needs 4 "
                             f"B beads ({b_names}) within {CG_AB_CUTOFF} Å; found {detail}", structure=name)
    crowded = [(a, d[f + 3], d[f + 4]) for a, f, c in zip(a_sites, first, count, strict=True)
               if c > 4 and d[f + 4] < CG_GAP_FACTOR * d[f + 3]]
    if crowded and not flag:
        detail = ", ".join(f"{symbols[a]} {a}: 4th at {d4:.2f} Å, 5th at {d5:.2f} Å" for a, d4, d5 in crowded[:8])
        raise StructureError(f"wrong A-site coordination in coarse-grained input: every A site ({a_names}) needs 4 "
                             f"B beads ({b_names}) clearly nearer than the rest (5th at least {CG_GAP_FACTOR:g} x "
                             f"farther); found {detail}", structure=name)
    # bonds per A site: its 4 nearest B beads; with ``flag``, fewer when fewer are within the cut-off, and
    # every bead not clearly farther than the 4th (CG_GAP_FACTOR) when crowded (an over-coordinated site)
    n_bonds = np.minimum(count, 4)
    if flag:
        for k in np.flatnonzero(count > 4):
            f, c = first[k], count[k]
            if d[f + 4] < CG_GAP_FACTOR * d[f + 3]:
                n_bonds[k] = int(np.count_nonzero(d[f:f + c] < CG_GAP_FACTOR * d[f + 3]))
    offsets = np.arange(int(n_bonds.sum())) - np.repeat(np.cumsum(n_bonds) - n_bonds, n_bonds)
    nearest = np.repeat(first, n_bonds) + offsets
    i, j = i[nearest], j[nearest]
    position = {a: k for k, a in enumerate(a_sites)}
    bridged: dict[int, list[int]] = {b: [] for b in b_sites}
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        bridged[b].append(position[a])
    bad = [(b, len(v)) for b, v in bridged.items() if len(v) != 2]
    if bad and not flag:
        detail = ", ".join(f"{symbols[b]} {b}: {c} A sites" for b, c in bad[:8])
        raise StructureError(f"every B bead ({b_names}) must bridge exactly 2 A sites (bead input is a net of "
                             f"4-connected A and 2-connected B); found {detail}", structure=name)
    report = None
    if flag:
        report = _defect_report(len(a_sites), n_bonds, [bridged[b] for b in b_sites])
        _refuse_if_not_a_network(name, report, len(a_sites), f"4 B beads within {CG_AB_CUTOFF} Å")
        report = report or None
    singletons = tuple(np.array([b]) for b in b_sites)
    return Connectivity(name=name, coarse_grained_input=True, metal_indices=a_sites,
                    metal_symbols=tuple(METAL_OF_A_BEAD[s] for s in symbols[a_sites].tolist()), linkers=singletons,
                    rings=singletons, linker_formulas=tuple(LINKER_OF_B_BEAD[s] for s in symbols[b_sites].tolist()),
                    linker_metals=_linker_metal_array([bridged[b] for b in b_sites]), defects=report)


#: Where a B bead sits (:func:`bead_positions`): ``"ring"``, the centroid of the linker's ring atoms (the shipped
#: models, Im and mIm alike), or ``"mass"``, the linker's centre of mass (H included; for mIm it lies ~0.5 Å from
#: the ring centroid towards the methyl). Issue 33 kept ``"ring"`` for mIm: on 5 held-out splits of the Zn(mIm)2
#: frameworks (91 nets) it gave the lower per-framework RMSE (mean 62 vs 87 meV per Zn with the relaxed frames
#: weighted, 77 vs 99 without) and the higher Spearman (0.71 vs 0.61; 0.68 vs 0.43), and forces map onto the ring
#: atoms as for Im (``scripts/mim_study.py``; ``datasets/mim-build/README.md``).
BEAD_CENTRES = ("ring", "mass")


def bead_positions(atoms: Atoms, connectivity: Connectivity, centre: str = "ring") -> np.ndarray:
    """B-bead positions (Å), wrapped into the cell: per linker the centroid of its ring atoms (``centre="ring"``,
    what every model uses) or its centre of mass (``"mass"``, all its atoms; used to compare bead positions),
    unwrapped across the cell first."""
    if centre not in BEAD_CENTRES:
        raise ValueError(f"centre must be one of {BEAD_CENTRES}, got {centre!r}")
    positions = atoms.positions
    if connectivity.coarse_grained_input:
        return positions[[r[0] for r in connectivity.rings]].copy()
    groups = connectivity.rings if centre == "ring" else connectivity.linkers
    if not groups:
        return np.zeros((0, 3))
    # every member's minimum-image offset from its group's first atom, in one find_mic call (the same
    # vectors, element by element, as one call per group), then the (mass-weighted) mean per group
    sizes = np.array([len(r) for r in groups])
    members = np.concatenate(groups)
    owner = np.repeat(np.arange(len(groups)), sizes)
    anchors = positions[members[np.concatenate([[0], np.cumsum(sizes)[:-1]])]]
    offsets, _ = find_mic(positions[members] - anchors[owner], atoms.cell, pbc=True)
    if centre == "mass":
        weights = atoms.get_masses()[members]
        total = np.bincount(owner, weights=weights)
        mean = np.stack([np.bincount(owner, weights=weights * offsets[:, x]) for x in range(3)], axis=1)
        mean /= total[:, None]
    elif (sizes == sizes[0]).all():
        mean = offsets.reshape(len(groups), sizes[0], 3).mean(axis=1)
    else:
        mean = np.stack([np.bincount(owner, weights=offsets[:, x]) for x in range(3)], axis=1) / sizes[:, None]
    centres = anchors + mean
    fractional = np.linalg.solve(np.asarray(atoms.cell).T, centres.T).T
    return (fractional % 1.0) @ np.asarray(atoms.cell)


def coarse_grain(atoms: Atoms, representation: str = "AB2", *, name: str | None = None,
                 connectivity: Connectivity | None = None, centre: str = "ring") -> BeadMap:
    """Map a ZIF onto the representation the descriptor sees.

    Args:
        atoms: periodic metal imidazolate framework (atomistic) or bead structure (coarse-grained; elements
            of :data:`A_BEADS` / :data:`B_BEADS`, Si/O for Zn(Im)2).
        representation: ``"atomistic"``, ``"AB2"`` or ``"A"``.
        name: structure name for error messages (default: from ``atoms.info`` or the formula).
        connectivity: a :class:`Connectivity` found earlier for the same atoms (re-used when only positions moved).
        centre: where the B beads sit (:data:`BEAD_CENTRES`; ``"ring"``, the ring centroid, for every model).

    Returns:
        A :class:`BeadMap`; its ``structure`` is a new Atoms object (the input is not modified).
    """
    representation = canonical_representation(representation)
    if connectivity is None:
        connectivity = find_connectivity(atoms, name=name)
    else:
        check_cell(atoms, connectivity.name)
    metals = connectivity.metal_indices
    if representation == "atomistic":
        if connectivity.coarse_grained_input:
            raise StructureError("the atomistic representation needs atomistic input, but this structure is "
                                 "already coarse-grained (beads)", structure=connectivity.name)
        structure = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
        centres = metals.copy()
    else:
        a_positions = atoms.positions[metals]
        symbols = [a_bead(metal, connectivity.name) for metal in connectivity.metal_symbols]
        if representation == "AB2":
            b_positions = bead_positions(atoms, connectivity, centre)
            symbols += [b_bead(linker, connectivity.name) for linker in connectivity.linker_formulas]
            positions = np.vstack([a_positions, b_positions])
        else:
            positions = a_positions
        structure = Atoms(symbols=symbols, positions=positions, cell=atoms.cell, pbc=True)
        centres = np.arange(len(metals))
    structure.info["name"] = connectivity.name
    return BeadMap(connectivity=connectivity, representation=representation, structure=structure,
                   centre_indices=centres)
