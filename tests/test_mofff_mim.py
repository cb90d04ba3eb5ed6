"""MOF-FF for 2-methylimidazolate (mIm, ZIF-8's linker) and for Im and mIm in one cell: real LAMMPS runs.

Against the authors' published set-up (``../shared/data/mofff/ZIF8_CH3.in`` + ``ZIF8_CH3.data``, those tests
skip without it): the encoded CH3 coefficients and charges are the published ones, the typing reproduces the
authors' data file term by term, and the energy of the DFT ZIF-8 CIF (and of a rattled copy) equals a LAMMPS
run of the published input.  Without ../shared: the built-in YUG frame methylated (``conftest.methylated``)
and a mixed cell with half of its linkers methylated type, give finite energies and forces that match
finite differences, and leave the Im typing untouched.
"""

import os
import re
import shutil
import warnings

import numpy as np
import pytest
from ase import Atoms
from conftest import builtin_frames, methylated
from test_mofff import _read_lammps_data, assert_terms_match, authors_atoms

from ase_cggpr.mofff import MOFFFCalculator, TypingError, mofff_typing
from ase_cggpr.mofff import parameters as P


@pytest.fixture(scope="module")
def lammps():
    from ase_cggpr.mofff.driver import load_lammps

    try:
        return load_lammps()
    except ImportError as exc:
        pytest.skip(str(exc))


def _yug():
    (atoms,) = builtin_frames(net="YUG", order="d")
    atoms.calc = None
    return atoms


def demethylated(atoms: Atoms, every: int = 2, start: int = 0) -> Atoms:
    """A copy of a Zn(mIm)2 structure with every ``every``-th methyl (in C2 order, from ``start``) replaced by
    an H on C2 (C-H 1.0989 Å, along C2->CH3): a mixed Im/mIm cell."""
    from ase.neighborlist import neighbor_list

    i, j, D = neighbor_list("ijD", atoms, {("C", "N"): 1.6, ("C", "C"): 1.6, ("C", "H"): 1.25})
    sym = np.array(atoms.get_chemical_symbols())
    c2s = [c for c in np.flatnonzero(sym == "C") if (sym[j[i == c]] == "N").sum() == 2]
    out = atoms.copy()
    remove = []
    for c2 in c2s[start::every]:
        (me,) = [x for x in j[i == c2] if sym[x] == "C"]
        u = D[(i == c2) & (j == me)][0]
        out.positions[me] = atoms.positions[c2] + 1.0989 * u / np.linalg.norm(u)  # the methyl C becomes the H
        out.symbols[me] = "H"
        remove += [int(h) for h in j[i == me] if sym[h] == "H"]
    del out[remove]
    return out


# --- without ../shared -----------------------------------------------------------------------------------

def test_methylated_yug_types_with_the_ch3_set():
    atoms = methylated(_yug(), "YUG-mIm")
    top = mofff_typing(atoms)
    assert top.force_field.key == "CH3"
    names = np.array(top.type_names)
    sym = np.array(atoms.get_chemical_symbols())
    assert (names == "c4_c1h3").sum() == (names == "c3_c1n2").sum() == 32  # 32 linkers in YUG
    assert (names == "h1_c1@me").sum() == 96 and (names == "h1_c1").sum() == 64
    assert set(names[sym == "N"]) == {"n3_c2zn1"} and set(names[sym == "Zn"]) == {"zn4_n4"}
    assert top.charges.sum() == pytest.approx(0.0, abs=1e-10)
    assert np.allclose(top.charges[sym == "Zn"], 0.729)
    # every term has CH3-set parameters: the methyl's own terms are there
    assert len(top.impropers) == 32 * 5 and P.CH3_IMPROPERS[2][0][1] == "c4_c1h3"
    assert (top.improper_types == 2).sum() == 32


def test_im_typing_is_unchanged():
    atoms = _yug()
    top = mofff_typing(atoms)
    assert top.force_field.key == "H" and top.force_field.atom_types == P.ATOM_TYPES
    assert np.allclose(top.charges, [P.CHARGE[n] for n in top.type_names], atol=0)


def _fd_check(atoms, idx, tol=1e-5):
    from ase.calculators.fd import calculate_numerical_forces

    atoms.calc = MOFFFCalculator()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert np.isfinite(energy) and np.isfinite(forces).all()
    fd = calculate_numerical_forces(atoms, eps=1e-4, iatoms=idx)
    assert np.abs(fd - forces[idx]).max() < tol
    return energy


def test_methylated_yug_forces_match_finite_differences(lammps):
    atoms = methylated(_yug(), "YUG-mIm")
    atoms.rattle(0.01, seed=2)
    sym = np.array(atoms.get_chemical_symbols())
    idx = [0, int(np.flatnonzero(sym == "N")[0]), len(atoms) - 4, len(atoms) - 3, len(atoms) - 1]  # methyl C, H
    _fd_check(atoms, idx)


def test_mixed_cell_half_methylated(lammps):
    mim = methylated(_yug(), "YUG-mIm")
    mixed = demethylated(mim, every=2)
    assert mixed.get_chemical_formula() != mim.get_chemical_formula()
    top = mofff_typing(mixed, name="YUG-mixed")
    ff = top.force_field
    assert ff.key == "H+CH3"
    names = np.array(top.type_names)
    assert (names == "c4_c1h3|CH3").sum() == 16 and (names == "c3_h1n2|H").sum() == 16
    assert (names == "c3_c1n2|CH3").sum() == 16
    assert top.charges.sum() == pytest.approx(0.0, abs=1e-10)
    # a Zn takes the mean of its linkers' sets' Zn charges
    zn = np.flatnonzero(mixed.numbers == 30)
    assert set(np.round(top.charges[zn], 6)) <= {0.5212, 0.729, round((3 * 0.5212 + 0.729) / 4, 6),
                                                  round((0.5212 + 0.729) / 2, 6),
                                                  round((0.5212 + 3 * 0.729) / 4, 6)}
    assert len(set(np.round(top.charges[zn], 6))) > 1
    # Im atoms carry H-set types, mIm atoms CH3-set types; N-Zn-N between the two: the mixed angle
    assert (top.angle_types == ff.mixed_angle_id).sum() > 0
    assert {n.split("|")[-1] for n in names if n != "zn4_n4"} == {"H", "CH3"}
    # every term has the set of its linker: bonds and impropers by their non-Zn atoms
    linker_set = np.array([n.split("|")[-1] if n != "zn4_n4" else "" for n in names])
    n_h = {kind: len(getattr(P.H_SET, kind)) for kind in ("bonds", "impropers")}
    for (i, j), t in zip(top.bonds, top.bond_types, strict=True):
        s = linker_set[j] if linker_set[i] == "" else linker_set[i]
        assert (t <= n_h["bonds"]) == (s == "H")
    for row, t in zip(top.impropers, top.improper_types, strict=True):
        assert (t <= n_h["impropers"]) == (linker_set[row[0]] == "H")
    sym = np.array(mixed.get_chemical_symbols())
    idx = [int(zn[0]), int(np.flatnonzero(names == "c4_c1h3|CH3")[0]), int(np.flatnonzero(names == "h1_c1S|H")[0]),
           int(np.flatnonzero(sym == "N")[3])]
    mixed.rattle(0.01, seed=4)
    _fd_check(mixed, idx)


def test_mixed_cell_energy_is_the_sum_of_its_typed_terms(lammps):
    """The per-term split of a mixed cell: bonded terms belong to one linker's set; the cell's energy is the sum
    of the per-atom energies, and stress matches finite differences."""
    from ase.calculators.fd import calculate_numerical_stress

    mixed = demethylated(methylated(_yug()), every=2, start=1)
    mixed.rattle(0.01, seed=5)
    mixed.calc = MOFFFCalculator(terms=True)
    energy = mixed.get_potential_energy()
    res = mixed.calc.results
    total = sum(res[f"energies_{t}"] for t in ("pair", "bond", "angle", "dihedral", "improper", "kspace"))
    assert np.allclose(total, res["energies"], atol=1e-8)
    assert res["energies"].sum() == pytest.approx(energy, abs=1e-6)
    sd = calculate_numerical_stress(mixed, eps=1e-5)
    assert np.abs(sd - mixed.get_stress()).max() < 1e-6


def test_broken_methyl_is_a_typing_error():
    atoms = methylated(_yug())
    names = np.array(mofff_typing(atoms).type_names)
    bad = atoms.copy()
    del bad[[int(np.flatnonzero(names == "h1_c1@me")[0])]]  # a CH2 "methyl"
    with pytest.raises(TypingError, match="C needs") as err:
        mofff_typing(bad, name="YUG-CH2")
    assert "YUG-CH2" in str(err.value) and "C + 3 H" in str(err.value)
    odd = atoms.copy()
    odd.symbols[int(np.flatnonzero(names == "c4_c1h3")[0])] = "N"  # C2-NH3: no MOF-FF environment
    with pytest.raises(TypingError, match="YUG-odd"):
        mofff_typing(odd, name="YUG-odd")


# --- against the authors' published set-up (../shared) ----------------------------------------------------

def _published_coefficients(path):
    """{(kind, id): (names, coefficients)} from the published ``.in`` (names from the trailing comments)."""
    out = {}
    for line in open(path):
        body, _, comment = line.partition("#")
        f = body.split()
        if not f or not f[0].endswith("_coeff") or (len(f) > 3 and f[3] in ("bb", "ba")):
            continue
        kind = f[0][: -len("_coeff")]
        if kind == "pair":
            out[("pair", int(f[1]), int(f[2]))] = tuple(float(x) for x in f[3:8])
            continue
        keys = tuple(re.search(r"\((.*?)\)", comment).group(1).split(","))
        values = f[3:] if f[2] in ("class2", "class2/p6") else f[2:]
        out[(kind, int(f[1]))] = (keys, tuple(float(x) for x in values))
    return out


_AUTHOR_NAME = {"zn4_n4@zn4tet": "zn4_n4", "h1_c1@me": "h1_c1@me", "h1_c1@imid": "h1_c1",
                "c3_c1h1n1@imid": "c3_c1h1n1", "c3_c1n2@imid": "c3_c1n2", "c4_c1h3@me": "c4_c1h3",
                "n3_c2zn1@imid": "n3_c2zn1"}


def test_ch3_parameters_are_the_published_ones(shared_data):
    pub = _published_coefficients(shared_data / "mofff" / "ZIF8_CH3.in")
    names = P.CH3_ATOM_TYPES
    n_pair = 0
    for key, value in pub.items():
        if key[0] == "pair":
            assert tuple(map(float, P.CH3_SET.pair_coeff(names[key[1] - 1], names[key[2] - 1]))) == value
            n_pair += 1
            continue
        kind, tid = key
        spec = {"bond": P.CH3_BONDS, "angle": P.CH3_ANGLES, "dihedral": P.CH3_DIHEDRALS,
                "improper": P.CH3_IMPROPERS}[kind]
        keys, coeffs = value
        assert spec[tid][0] == tuple(_AUTHOR_NAME[k] for k in keys), key
        assert tuple(map(float, spec[tid][1])) == coeffs, key
    assert n_pair == len(P.CH3_PAIR) == 28
    assert sum(k[0] == "bond" for k in pub) == len(P.CH3_BONDS) == 7
    assert sum(k[0] == "angle" for k in pub) == len(P.CH3_ANGLES) == 11
    assert sum(k[0] == "dihedral" for k in pub) == len(P.CH3_DIHEDRALS) == 14
    assert sum(k[0] == "improper" for k in pub) == len(P.CH3_IMPROPERS) == 3
    # charges: per type in the data file (the .in has none)
    _, s = _read_lammps_data(shared_data / "mofff" / "ZIF8_CH3.data")
    for t, q in zip(s["Atoms"][:, 2].astype(int), s["Atoms"][:, 3], strict=True):
        assert P.CH3_CHARGE[names[t - 1]] == q
    # the pair coefficients the two sets share agree (the mixed table relies on it)
    for (a, b), c in P.PAIR.items():
        assert P.CH3_SET.pair_coeff(P.PAIR_EQUIVALENT[a], P.PAIR_EQUIVALENT[b]) == c


def _authors_atoms(shared_data):
    return authors_atoms(shared_data / "mofff" / "ZIF8_CH3.data", ["Zn", "H", "H", "C", "C", "C", "N"])


def test_ch3_typing_reproduces_authors_data_file(shared_data):
    atoms, tab, s = _authors_atoms(shared_data)
    top = mofff_typing(atoms, name="ZIF8_CH3")
    assert top.force_field.key == "CH3"
    assert np.array_equal(top.types, tab[:, 2].astype(int))
    assert np.array_equal(top.charges, tab[:, 3])
    assert_terms_match(top, s)


def _published_run(lammps, folder, tmp_path, positions=None):
    """Energy (eV) of the published input ``ZIF8_CH3.in`` + ``ZIF8_CH3.data`` run with LAMMPS (``run 0``),
    optionally with the data file's coordinates replaced by ``positions`` (atom id order).  The only edit to
    the input: its two hybrid style lines lose the sub-styles no coefficient uses (``morse``, ``harmonic``,
    ``cosine/buck6d``), which LAMMPS since 2020 refuses ("Bond hybrid sub-style morse is not used")."""
    from ase_cggpr.mofff.driver import KCAL_MOL

    text = (folder / "ZIF8_CH3.in").read_text()
    fixed = text.replace("bond_style hybrid class2 morse harmonic", "bond_style hybrid class2").replace(
        "angle_style hybrid class2/p6 cosine/buck6d", "angle_style hybrid class2/p6")
    assert fixed.count("\n") == text.count("\n") and fixed != text
    (tmp_path / "ZIF8_CH3.in").write_text(fixed)
    if positions is None:
        shutil.copy(folder / "ZIF8_CH3.data", tmp_path / "ZIF8_CH3.data")
    else:
        lines, section = [], None
        for line in open(folder / "ZIF8_CH3.data"):
            head = line.strip()
            if head and head[0].isalpha() and not head[0].isdigit():
                section = head.split()[0]
            f = line.split()
            if section == "Atoms" and len(f) >= 7 and f[0].isdigit():
                x, y, z = positions[int(f[0]) - 1]
                line = f"{f[0]} {f[1]} {f[2]} {f[3]} {x:.10f} {y:.10f} {z:.10f}\n"
            lines.append(line)
        (tmp_path / "ZIF8_CH3.data").write_text("".join(lines))
    cwd = os.getcwd()
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        os.chdir(tmp_path)
        lmp.file("ZIF8_CH3.in")
        lmp.command("run 0")
        return lmp.get_thermo("pe") * KCAL_MOL, lmp.get_natoms()
    finally:
        os.chdir(cwd)
        lmp.close()


def _cif_to_authors_cell(cif: Atoms, authors: Atoms):
    """(rotation R, translation t, CIF index c, lattice shifts n) with each authors' atom at
    ``(cif.positions[c] + n @ cif.cell) @ R + t`` (mod the authors' box): their 2x2x2 cubic cell of the CIF's
    bcc primitive cell, found from the Zn sites, checked on every atom to 2e-3 Å."""
    from itertools import permutations, product

    from scipy.spatial import cKDTree

    conv = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]) @ cif.cell.array  # bcc primitive -> cubic
    a = np.linalg.norm(conv, axis=1)
    assert np.allclose(a, a[0], rtol=1e-6) and np.allclose(conv @ conv.T, a[0] ** 2 * np.eye(3), atol=1e-3)
    R0 = np.linalg.solve(conv, a[0] * np.eye(3))
    box = np.diag(authors.cell.array)
    assert np.allclose(box, 2 * a[0], atol=1e-4)

    def wrap(x):
        x = np.mod(x, box)
        x[x >= box] = 0.0
        return x

    zn_cif = cif.positions[cif.numbers == 30]
    zn_ref = authors.positions[authors.numbers == 30]
    tree = cKDTree(wrap(zn_ref), boxsize=box)
    lat = np.array(list(product(range(-2, 3), repeat=3))) @ cif.cell.array
    best = None
    for perm in permutations(range(3)):
        for signs in product((1, -1), repeat=3):
            S = np.eye(3)[list(perm)] * signs
            if np.linalg.det(S) < 0:
                continue
            R = R0 @ S
            for target in zn_ref:
                t = target - zn_cif[0] @ R
                pts = (zn_cif[:, None, :] + lat[None]).reshape(-1, 3) @ R + t
                d, _ = tree.query(wrap(pts))
                n_hit = int((d < 1e-2).sum())
                if best is None or n_hit > best[0]:
                    best = (n_hit, R, t)
    _, R, t = best
    # every authors' atom: its CIF atom and lattice shift
    back = (authors.positions - t) @ R.T
    frac = np.linalg.solve(cif.cell.array.T, back.T).T
    fc = cif.get_scaled_positions(wrap=False)
    diff = frac[:, None, :] - fc[None]
    dist = np.linalg.norm((diff - np.round(diff)) @ cif.cell.array, axis=2)
    c = dist.argmin(axis=1)
    assert dist.min(axis=1).max() < 2e-3
    assert np.array_equal(authors.numbers, cif.numbers[c])
    n = np.round(frac - fc[c]).astype(int)
    return R, t, c, n


def _unrattled(shared_data):
    from ase.io import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read(shared_data / "zif-structures" / "ZIF8_CH3.cif")


@pytest.mark.parametrize("rattle", [0.0, 0.03])
def test_zif8_cif_energy_equals_the_published_lammps_run(shared_data, lammps, tmp_path, rattle):
    from ase.io import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE: "crystal system 'triclinic' is not interpreted for P1"
        cif = read(shared_data / "zif-structures" / "ZIF8_CH3.cif")
    if rattle:
        cif.rattle(rattle, seed=7)
    authors, _, _ = _authors_atoms(shared_data)
    R, t, c, n = _cif_to_authors_cell(cif if not rattle else _unrattled(shared_data), authors)
    positions = (cif.positions[c] + n @ cif.cell.array) @ R + t
    e_pub, n_pub = _published_run(lammps, shared_data / "mofff", tmp_path, positions)
    assert n_pub == len(authors) == 16 * len(cif)
    cif.calc = MOFFFCalculator()
    energy = cif.get_potential_energy()
    assert abs(energy / len(cif) - e_pub / n_pub) < 1e-4
    # measured: 6e-9 (CIF) and 1.6e-8 eV/atom (rattled); the authors' own coordinates agree to 1e-14 eV/atom
    assert abs(energy * 16 - e_pub) < 1e-3


def test_authors_data_file_energy_equals_the_published_run(shared_data, lammps, tmp_path):
    atoms, _, _ = _authors_atoms(shared_data)
    e_pub, _ = _published_run(lammps, shared_data / "mofff", tmp_path)
    atoms.calc = MOFFFCalculator()
    assert atoms.get_potential_energy() == pytest.approx(e_pub, abs=1e-6)


def test_zif8_cif_forces_match_finite_differences(shared_data, lammps):
    from ase.io import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cif = read(shared_data / "zif-structures" / "ZIF8_CH3.cif")
    cif.rattle(0.02, seed=3)
    sym = np.array(cif.get_chemical_symbols())
    top = mofff_typing(cif)
    names = np.array(top.type_names)
    idx = [int(np.flatnonzero(sym == "Zn")[0]), int(np.flatnonzero(names == "c4_c1h3")[0]),
           int(np.flatnonzero(names == "h1_c1@me")[0]), int(np.flatnonzero(names == "c3_c1n2")[0]),
           int(np.flatnonzero(sym == "N")[0])]
    _fd_check(cif, idx)


# --- decoration with mIm (built-in net, no ../shared) ----------------------------------------------------

@pytest.fixture(scope="module")
def sod():
    """The SOD net of the built-in data's ideal (``d``) coarse-grained frame: the beads of a MOF-FF-relaxed
    Zn(Im)2 sod, as in ZIF-8.  (The idealised SiO2 sodalite scaled to Zn-bead 3.24 Å, test_build's net, bends
    its linkers so that the methyls of the two linkers across each 4-ring overlap: 0.22 Å between H.)"""
    from ase_cggpr.dataset.nets import analyse_net

    (cg,) = builtin_frames("cg", net="SOD", order="d")
    cg.calc = None
    return analyse_net(cg, name="SOD")


def test_decorate_mim_geometry_and_typing(sod):
    from ase_cggpr.dataset.decorate import (
        ANGLE_C2CMH,
        D_C2CM,
        D_CMH,
        MIM_LINKER_LABELS,
        coarse_grain_decorated,
        decorate,
    )
    from ase_cggpr.dataset.pipeline import bond_shifts
    from ase_cggpr.mofff.atom_types import infer_bonds
    from ase_cggpr.structure_checks import shortest_contact

    dec = decorate(sod, linker="mIm")
    atoms = dec.atoms
    assert len(atoms) == 12 + 24 * 11 and atoms.get_chemical_formula() == "C96H120N48Zn12"
    assert atoms.info["linker"] == "mIm" and atoms.info["mim_fraction"] == 1.0
    assert dec.linker_formulas == ("C4H5N2",) * 24
    assert np.abs(coarse_grain_decorated(dec).positions - sod.atoms.positions).max() < 1e-9  # bead on B site
    lab = {x: i for i, x in enumerate(MIM_LINKER_LABELS)}
    for k in range(24):
        idx = dec.linker_atoms(k)
        c2, cm = atoms.positions[idx[lab["C2"]]], atoms.positions[idx[lab["Cm"]]]
        centroid = atoms.positions[idx[:5]].mean(axis=0)
        u = (c2 - centroid) / np.linalg.norm(c2 - centroid)
        assert np.linalg.norm(cm - c2) == pytest.approx(D_C2CM, abs=1e-9)
        assert (cm - c2) / D_C2CM @ u == pytest.approx(1.0, abs=1e-9)  # along the bisector, away from the ring
        vec = sod.bond_vectors()[k]  # the bisector of the two B->A directions
        bis = (vec[0] / np.linalg.norm(vec[0]) + vec[1] / np.linalg.norm(vec[1]))
        assert bis / np.linalg.norm(bis) @ u == pytest.approx(1.0, abs=1e-9)
        for h in ("Hm1", "Hm2", "Hm3"):
            assert atoms.get_distance(idx[lab["Cm"]], idx[lab[h]]) == pytest.approx(D_CMH, abs=1e-9)
            assert atoms.get_angle(idx[lab["C2"]], idx[lab["Cm"]], idx[lab[h]]) == pytest.approx(ANGLE_C2CMH,
                                                                                                abs=1e-6)
        assert atoms.get_angle(idx[lab["Hm1"]], idx[lab["Cm"]], idx[lab["Hm2"]]) == pytest.approx(107.965,
                                                                                                 abs=0.01)
    assert shortest_contact(atoms) is None
    shifts = bond_shifts(dec, sod)
    top = mofff_typing(atoms, bonds=dec.bonds, shifts=shifts, name="SOD-mIm")
    assert top.force_field.key == "CH3"
    bonds, sh = infer_bonds(atoms)  # the geometry agrees with the decorator's connectivity
    assert mofff_typing(atoms, bonds=bonds, shifts=sh).signature() == top.signature()


def test_decorate_mixed_is_seeded_per_site_and_recorded(sod):
    from ase_cggpr.dataset.decorate import coarse_grain_decorated, decorate, linker_assignment
    from ase_cggpr.errors import OptionError

    a = decorate(sod, linker="mixed:0.5", seed=3)
    b = decorate(sod, sod.atoms.copy(), linker="mixed:0.5", seed=3)
    c = decorate(sod, linker="mixed:0.5", seed=4)
    assert a.kinds == b.kinds != c.kinds
    assert a.kinds.count("mIm") == 12 and a.atoms.info["mim_fraction"] == 0.5
    assert a.atoms.info["linker"] == "mixed:0.5" and a.atoms.info["linker_sites"].split(",") == list(a.kinds)
    assert len(a.atoms) == 12 + 12 * 8 + 12 * 11
    assert np.abs(coarse_grain_decorated(a).positions - sod.atoms.positions).max() < 1e-9
    assert decorate(sod, linker="mixed:0").kinds == ("Im",) * 24
    assert "linker" not in decorate(sod).atoms.info  # Im frames are unchanged
    for bad in ("mixed:1.5", "mixed:x", "bIm"):
        with pytest.raises(OptionError, match="SOD"):
            linker_assignment(24, bad, name="SOD")


def test_decorated_mixed_framework_labels_with_mofff(sod, lammps):
    from ase_cggpr.dataset.decorate import decorate
    from ase_cggpr.dataset.pipeline import bond_shifts
    from ase_cggpr.mofff import label_structures

    dec = decorate(sod, linker="mixed:0.5", seed=1)
    shifts = bond_shifts(dec, sod)
    top = mofff_typing(dec.atoms, bonds=dec.bonds, shifts=shifts, name="SOD-mixed")
    assert top.force_field.key == "H+CH3" and top.charges.sum() == pytest.approx(0.0, abs=1e-10)
    atoms = dec.atoms.copy()
    atoms.calc = MOFFFCalculator(bonds=dec.bonds, shifts=shifts)
    energy = atoms.get_potential_energy()
    assert np.isfinite(energy) and np.isfinite(atoms.get_forces()).all()
    (labelled,) = label_structures([dec.atoms.copy()], workers=1)
    assert labelled.info["energy"] == pytest.approx(energy, abs=1e-6)
    assert np.isfinite(labelled.arrays["energies"]).all()
    # the per-Zn local energies of the core (Im and mIm linkers told apart by formula)
    from ase_cggpr.beads import find_connectivity
    from ase_cggpr.labels import local_energies

    conn = find_connectivity(labelled, name="SOD-mixed")
    assert sorted(set(conn.linker_formulas)) == ["C3H3N2", "C4H5N2"]
    e_local = local_energies(labelled, label_key="energies")
    assert len(e_local) == 12 and np.isfinite(e_local).all()
    assert e_local.sum() == pytest.approx(energy, abs=1e-6)


def test_decorated_zif8_beads_relax_to_the_cif_minimum(shared_data, lammps):
    """ZIF-8's own beads decorated with mIm: the methyl C within 0.2 Å of the DFT structure's, and a fixed-cell
    MOF-FF relaxation reaches the relaxed CIF's energy (measured: 2e-7 eV/Zn apart, -7.763124 eV/Zn)."""
    from ase.geometry import get_distances

    from ase_cggpr.beads import coarse_grain
    from ase_cggpr.dataset.decorate import decorate
    from ase_cggpr.dataset.nets import analyse_net
    from ase_cggpr.dataset.pipeline import bond_shifts
    from ase_cggpr.mofff import relax_mofff

    cif = _unrattled(shared_data)
    beads = coarse_grain(cif, "AB2").structure
    beads.symbols = ["O" if s != "Si" else s for s in beads.get_chemical_symbols()]  # B beads as the nets' O
    net = analyse_net(beads, name="ZIF-8 beads")
    dec = decorate(net, linker="mIm")
    shifts = bond_shifts(dec, net)
    mine = np.array(mofff_typing(dec.atoms, bonds=dec.bonds, shifts=shifts).type_names)
    theirs = np.array(mofff_typing(cif).type_names)
    for t in ("c4_c1h3", "c3_c1n2", "n3_c2zn1"):
        d = get_distances(dec.atoms.positions[mine == t], cif.positions[theirs == t], cell=cif.cell, pbc=True)[1]
        assert d.min(axis=1).max() < 0.2, t
    ours = relax_mofff(dec.atoms, cell=False, bonds=dec.bonds, shifts=shifts)
    ref = relax_mofff(cif, cell=False)
    assert ours.converged and ref.converged
    n_zn = 6
    assert ours.atoms.get_potential_energy() / n_zn == pytest.approx(ref.atoms.get_potential_energy() / n_zn,
                                                                     abs=1e-5)
