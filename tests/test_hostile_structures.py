"""Hostile structures and labels: each gives one clear error naming the structure and the problem, fast,
and a reused calculator always gives the fresh calculator's numbers.

Everything is built from the package's built-in data inside the tests (no ../shared needed), except the last
test, which also checks real CIFs when ../shared/data is there.
"""

import io
import time

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write
from ase.spacegroup import crystal

from ase_cggpr import CGGPRCalculator, CGGPRModel, coarse_grain, local_energies
from ase_cggpr.beads import find_connectivity
from ase_cggpr.errors import CGGPRError, LabelError, StructureError
from ase_cggpr.io import default_dataset_path, iter_structures, reference_energy_from_info
from ase_cggpr.structure_checks import shortest_contact


@pytest.fixture(scope="module")
def builtin():
    """The first 12 atomistic frames (ABW, 136 atoms: same numbers, different rattles) and their beads."""
    atomistic = read(default_dataset_path("atomistic"), ":12")
    cg = read(default_dataset_path("cg"), ":12")
    for k, (a, b) in enumerate(zip(atomistic, cg, strict=True)):
        a.info["name"] = f"builtin-{k}"
        b.info["name"] = f"builtin-cg-{k}"
    return atomistic, cg


@pytest.fixture(scope="module")
def model(builtin):
    return CGGPRModel(representation="AB2").fit(builtin[0][:3], label_key="energies")


def _fresh_results(model, atoms):
    atoms = atoms.copy()
    atoms.calc = CGGPRCalculator(model, return_std=True)
    atoms.get_potential_energy()
    return atoms.calc.results


def _fresh_energy(model, atoms):
    return _fresh_results(model, atoms)["energy"]


# --- cells ------------------------------------------------------------------------------------------------

def _near_singular(atoms):  # volume ~0.19 Å^3: the third vector almost in the plane of the first two
    cell = atoms.cell.array.copy()
    cell[2] = cell[0] * 0.3 + cell[1] * 0.7 + np.cross(cell[0], cell[1]) * 0.19 / np.linalg.norm(
        np.cross(cell[0], cell[1])) ** 2
    out = atoms.copy()
    out.set_cell(cell, scale_atoms=False)
    return out


def _flat(atoms):  # face height 0.5 Å, volume per atom still plenty (66 Å^3)
    out = atoms.copy()
    cell = out.cell.array.copy() * [[10], [10], [1]]
    normal = np.cross(cell[0], cell[1])
    normal /= np.linalg.norm(normal)
    cell[2] = 200.0 * cell[0] / np.linalg.norm(cell[0]) + 0.5 * normal
    out.set_cell(cell, scale_atoms=False)
    return out


def _scaled_cell(atoms, factor):
    out = atoms.copy()
    out.set_cell(out.cell.array * factor, scale_atoms=True)
    return out


def _with(atoms, **changes):
    out = atoms.copy()
    for key, value in changes.items():
        if key == "position":
            index, xyz = value
            pos = out.positions.copy()
            pos[index] = xyz
            out.positions = pos
        elif key == "cell_entry":
            cell = out.cell.array.copy()
            cell[value[0]] = value[1]
            out.cell = cell
        elif key == "pbc":
            out.pbc = value
    return out


HOSTILE_CELLS = {
    "near-singular cell": (_near_singular, r"degenerate or far too small: volume 0\.19 Å\^3 for \d+ atoms"),
    "flat skewed cell": (_flat, r"nearly flat or extremely skewed: lattice planes \w are 0\.\d+ Å apart"),
    "cell in picometres": (lambda a: _scaled_cell(a, 100.0), r"far too large for its atoms.*wrong length unit"),
    "cell shrunk 10x": (lambda a: _scaled_cell(a, 0.1), r"degenerate or far too small.*per atom"),
    "NaN position": (lambda a: _with(a, position=(7, [np.nan, 0, 0])), r"non-finite .*positions.* \[7\]"),
    "inf position": (lambda a: _with(a, position=(3, [0, np.inf, 0])), r"non-finite .*positions.* \[3\]"),
    "NaN cell": (lambda a: _with(a, cell_entry=(1, [np.nan, 1, 0])), r"the cell is not finite"),
    "inf cell": (lambda a: _with(a, cell_entry=(0, [np.inf, 0, 0])), r"the cell is not finite"),
    "slab": (lambda a: _with(a, pbc=(True, True, False)), r"periodic in all three directions"),
    "no atoms": (lambda a: a[[]], r"no atoms"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CELLS))
def test_hostile_cells_are_refused_before_any_neighbour_search(builtin, model, case):
    make, message = HOSTILE_CELLS[case]
    atoms = make(builtin[0][0])
    start = time.perf_counter()
    with pytest.raises(StructureError, match=r"structure 'builtin-0': .*" + message):
        find_connectivity(atoms)
    with pytest.raises(StructureError, match=message):
        model.predict(atoms)
    atoms.calc = CGGPRCalculator(model)
    with pytest.raises(StructureError, match=message):
        atoms.get_potential_energy()
    assert time.perf_counter() - start < 5.0  # the near-singular cell used to hang in the neighbour list
    for representation in ("atomistic", "AB2", "A"):  # bead input too
        with pytest.raises(StructureError, match=message):
            coarse_grain(make(builtin[1][0]), representation)


def test_the_original_cells_pass(builtin):
    for atoms in (*builtin[0][:2], *builtin[1][:2]):
        assert find_connectivity(atoms).n_metals == 8


# --- short contacts ---------------------------------------------------------------------------------------

def _move_next_to(atoms, mover, anchor, distance):
    out = atoms.copy()
    pos = out.positions.copy()
    offset = out.get_distance(anchor, mover, mic=True, vector=True)
    pos[mover] = pos[anchor] + distance * offset / np.linalg.norm(offset)
    out.positions = pos
    return out


@pytest.mark.parametrize("elements,distance,limit", [("HC", 0.01, 0.6), ("HC", 0.55, 0.6), ("NZn", 0.9, 1.0),
                                                     ("CC", 0.3, 1.0)])
def test_short_contacts_are_errors_for_prediction(builtin, model, elements, distance, limit):
    atoms = builtin[0][0]
    symbols = atoms.get_chemical_symbols()
    mover = symbols.index(elements[0])
    anchor = next(k for k in range(len(atoms)) if symbols[k] == elements[1:] and k != mover
                  and atoms.get_distance(k, mover, mic=True) > 1.5)
    bad = _move_next_to(atoms, mover, anchor, distance)
    pair = tuple(sorted((mover, anchor)))
    message = (rf"structure 'builtin-0': unphysically short contact: atoms {pair[0]} \(\w+\) and {pair[1]} \(\w+\) "
               rf"are {distance:g} Å apart, closer than {limit:g} Å")
    with pytest.raises(StructureError, match=message):
        find_connectivity(bad)
    with pytest.raises(StructureError, match=message):
        model.predict(bad, return_std=True)
    calc = CGGPRCalculator(model)
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_potential_energy()  # the same calculator, first on the good structure
    atoms.positions = bad.positions
    with pytest.raises(StructureError, match=message):
        atoms.get_potential_energy()
    assert shortest_contact(bad)[0] == pytest.approx(distance)  # the build screen uses this same check
    assert shortest_contact(builtin[0][0]) is None


def test_an_atom_near_its_own_image_is_a_short_contact():
    atoms = Atoms("C", cell=[0.8, 5.0, 5.0], pbc=True)
    assert shortest_contact(atoms) == (pytest.approx(0.8), 0, 0)
    with pytest.raises(StructureError, match="far too small|nearly flat"):
        find_connectivity(atoms)


# --- bead input -------------------------------------------------------------------------------------------

def test_quartz_is_not_bead_input():
    """alpha-quartz (P3_221): every Si has 4 O at 1.60-1.61 Å, every O 2 Si; a 4-/2-connected net, not beads."""
    quartz = crystal(["Si", "O"], basis=[(0.4697, 0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)], spacegroup=154,
                     cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    quartz.info["name"] = "quartz"
    assert quartz.get_chemical_formula() == "O6Si3"
    distances = quartz.get_all_distances(mic=True)[quartz.symbols == "Si"][:, quartz.symbols == "O"]
    assert np.allclose(np.sort(distances, axis=1)[:, :4], 1.61, atol=0.01)
    for representation in ("AB2", "A"):
        with pytest.raises(StructureError, match=r"structure 'quartz': not coarse-grained ZIF beads: A site Si \d+ "
                                                 r"is 1\.6\d Å from B bead O .*atomistic SiO2"):
            coarse_grain(quartz, representation)


def test_bead_input_must_have_bead_distances_and_connectivity(builtin):
    beads = builtin[1][0]
    assert find_connectivity(beads).coarse_grained_input
    with pytest.raises(StructureError, match=r"not coarse-grained ZIF beads: .* 1\.[4-9]\d Å"):
        find_connectivity(_scaled_cell(beads, 0.5))  # a raw SiO2-like net: A-B ~1.6 Å
    no_bead = beads.copy()
    del no_bead[np.flatnonzero(no_bead.symbols == "O")[0]]
    with pytest.raises(StructureError, match=r"every A site \(Si\) needs 4 B beads .*3 B beads"):
        find_connectivity(no_bead)
    extra_a = beads.copy()  # an A site with no beads of its own, between two others
    extra_a += Atoms("Si", positions=[beads.positions[0] + [0.0, 0.0, 1.2]])
    with pytest.raises(StructureError, match=r"not coarse-grained ZIF beads|needs 4 B beads|exactly 2 A sites"):
        find_connectivity(extra_a)


# --- CIF input --------------------------------------------------------------------------------------------

def _cif_text(atoms):
    buffer = io.BytesIO()
    write(buffer, atoms, format="cif")
    return buffer.getvalue().decode()


def test_partial_occupancy_is_refused(builtin, tmp_path):
    text = _cif_text(builtin[0][0])
    ordered = tmp_path / "ordered.cif"
    ordered.write_text(text)
    assert find_connectivity(next(iter_structures([ordered]))).n_metals == 8
    half = tmp_path / "half.cif"
    lines = [line[: line.rindex("1.0000")] + "0.5000" if line.strip().startswith("Zn ") else line
             for line in text.splitlines()]
    half.write_text("\n".join(lines) + "\n")
    atoms = next(iter_structures([half]))
    with pytest.raises(StructureError, match=r"structure 'half.cif': partially occupied or mixed sites .*"
                                             r"8 Zn sites with occupancy 0\.5\. Give an ordered"):
        find_connectivity(atoms)
    with pytest.raises(StructureError, match="partially occupied"):
        coarse_grain(atoms, "AB2")
    mixed = tmp_path / "mixed.cif"  # one Zn site shared half-half with Co
    first = next(k for k, line in enumerate(text.splitlines()) if line.strip().startswith("Zn "))
    lines = text.splitlines()
    zn = lines[first][: lines[first].rindex("1.0000")] + "0.5000"
    lines[first:first + 1] = [zn, zn.replace("Zn  Zn1", "Co  Co1")]
    mixed.write_text("\n".join(lines) + "\n")
    with pytest.raises(StructureError, match=r"mixed\.cif': partially occupied or mixed sites .*shared by Co/Zn"):
        find_connectivity(next(iter_structures([mixed])))


def test_unreadable_and_empty_files(builtin, tmp_path):
    junk = tmp_path / "junk.cif"
    junk.write_text("this is not a CIF\n1 2 3\n")
    with pytest.raises(CGGPRError, match=r"cannot read structures from .*junk\.cif: not a readable CIF file "
                                         r"\(ASE's reader raised AssertionError"):
        list(iter_structures([junk]))
    text = _cif_text(builtin[0][0])
    empty = tmp_path / "empty.cif"  # a cell and no atom sites
    empty.write_text(text[: text.index("loop_\n  _atom_site_type_symbol")])
    with pytest.raises(StructureError, match=r"empty\.cif.*holds no structure"):
        list(iter_structures([empty]))


# --- labels -----------------------------------------------------------------------------------------------

def test_label_arrays_with_the_wrong_shape_or_type(builtin, tmp_path):
    atoms = builtin[0][0].copy()
    atoms.calc = None
    atoms.arrays.pop("energies", None)
    atoms.new_array("energies", np.zeros((len(atoms), 3)))
    path = tmp_path / "e3.extxyz"
    write(path, atoms)
    back = read(path)  # ASE moves the column into calc.results
    for frame in (atoms, back):
        with pytest.raises(LabelError, match=r"label array 'energies' has the wrong shape \(136, 3\) "
                                             r"\(3 components per atom\); expected \(136,\)"):
            local_energies(frame)
    strings = builtin[0][0].copy()
    strings.arrays["energies"] = np.array(["-0.1"] * len(strings))
    with pytest.raises(LabelError, match=r"'builtin-0': label array 'energies' is not numeric \(dtype <U4"):
        local_energies(strings)
    with pytest.raises(LabelError, match="not numeric"):
        CGGPRModel(representation="A").fit([strings], label_key="energies")
    for key in ("positions", "numbers", ""):
        with pytest.raises(LabelError, match="not a label array|non-empty"):
            local_energies(builtin[0][0], label_key=key)
    bad_reference = builtin[0][0].copy()
    bad_reference.info["reference_energy"] = "abc"
    with pytest.raises(LabelError, match="reference_energy 'abc' is not a finite number"):
        reference_energy_from_info([bad_reference])


# --- the calculator's atom -> bead cache ------------------------------------------------------------------

def _permuted(atoms, seed=0):
    order = np.random.default_rng(seed).permutation(len(atoms))
    out = atoms[order]
    out.info["name"] = atoms.info["name"] + "-permuted"
    return out


def _shuffled_within_elements(atoms, seed=0):
    """The same structure with its atoms re-ordered among atoms of one element: ``numbers`` unchanged (like two
    CIFs of different polymorphs with the same atom counts), so only the bonds show that the mapping changed."""
    rng = np.random.default_rng(seed)
    order = np.arange(len(atoms))
    for z in np.unique(atoms.numbers):
        where = np.flatnonzero(atoms.numbers == z)
        order[where] = rng.permutation(where)
    out = atoms[order]
    assert np.array_equal(out.numbers, atoms.numbers)
    return out


def _swap_linker_atoms(atoms, element="C"):
    """Swap the positions of two `element` atoms of different linkers (same numbers, other mapping)."""
    top = find_connectivity(atoms)
    a = next(k for k in top.linkers[0] if atoms.numbers[k] == 6 or atoms.symbols[k] == element)
    b = next(k for k in top.linkers[3] if atoms.symbols[k] == atoms.symbols[a])
    out = atoms.copy()
    pos = out.positions.copy()
    pos[[a, b]] = pos[[b, a]]
    out.positions = pos
    return out


def _move_linker(atoms, shift):
    top = find_connectivity(atoms)
    out = atoms.copy()
    pos = out.positions.copy()
    pos[top.linkers[2]] += shift
    out.positions = pos
    return out


def test_one_calculator_over_many_structures_equals_fresh_calculators(builtin, model):
    frames = builtin[0]
    lattice_shift = frames[0].cell.array[1]
    sequence = [frames[0], frames[5], frames[0], _permuted(frames[5]), frames[7], _swap_linker_atoms(frames[7]),
                frames[1], _move_linker(frames[1], lattice_shift), frames[9], _permuted(frames[9], seed=1),
                _shuffled_within_elements(frames[9]), _shuffled_within_elements(frames[2], seed=4), frames[2]]
    fresh = [_fresh_results(model, a) for a in sequence]
    assert len({round(r["energy"], 6) for r in fresh}) >= 5  # different structures: a stale mapping would show
    calc = CGGPRCalculator(model, return_std=True)
    for atoms, expected in zip(sequence, fresh, strict=True):
        atoms = atoms.copy()
        atoms.calc = calc
        assert atoms.get_potential_energy() == expected["energy"]
        for key in ("energies", "local_energies", "local_energy_std"):
            assert np.array_equal(calc.results[key], expected[key]), key
    # the same Atoms object, positions changed in place to another structure with the same numbers
    atoms = frames[0].copy()
    atoms.calc = calc
    for other in (frames[3], frames[11], _swap_linker_atoms(frames[11]), frames[0]):
        atoms.positions = other.positions
        expected = _fresh_energy(model, atoms)
        assert atoms.get_potential_energy() == expected


def test_calculator_refuses_a_moved_linker_after_a_good_call(builtin, model):
    atoms = builtin[0][2].copy()
    atoms.calc = CGGPRCalculator(model)
    atoms.get_potential_energy()
    atoms.positions = _move_linker(atoms, [3.0, 0.0, 0.0]).positions
    with pytest.raises(StructureError, match="wrong metal coordination|short contact|broken linker"):
        atoms.get_potential_energy()


def test_calculator_forces_after_a_permutation_equal_fresh(builtin, model):
    calc = CGGPRCalculator(model)
    for atoms in (builtin[0][4], _permuted(builtin[0][4], seed=3)):
        mine = atoms.copy()
        mine.calc = calc
        forces = mine.get_forces()
        fresh = atoms.copy()
        fresh.calc = CGGPRCalculator(model)
        assert np.array_equal(forces, fresh.get_forces())


def test_calculator_on_bead_input_equals_fresh(builtin, model):
    calc = CGGPRCalculator(model)
    sequence = [builtin[1][0], builtin[1][6], _permuted(builtin[1][6]), _shuffled_within_elements(builtin[1][6]),
                builtin[1][0]]
    for atoms in sequence:
        mine = atoms.copy()
        mine.calc = calc
        assert mine.get_potential_energy() == _fresh_energy(model, atoms)


def test_calculator_cache_on_real_cifs(shared_data, model):
    """zni then coi (same numbers) on one calculator: coi was 52.42 eV instead of 28.77 eV with a stale map."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zni = read(shared_data / "zif-structures" / "zni.cif")
        coi = read(shared_data / "zif-structures" / "coi.cif")
    assert np.array_equal(zni.numbers, coi.numbers)
    calc = CGGPRCalculator(model)
    for atoms in (zni, coi, zni):
        mine = atoms.copy()
        mine.calc = calc
        assert mine.get_potential_energy() == _fresh_energy(model, atoms)


def test_bond_tracker_equals_a_fresh_search_along_a_trajectory(builtin):
    """Small steps reuse the Verlet candidates, large ones search again; the bonds are always find_bonds'."""
    from ase_cggpr.beads import BondTracker, find_bonds

    atoms = builtin[0][0].copy()
    tracker = BondTracker(skin=0.5)
    rng = np.random.default_rng(2)
    for step in range(12):
        pos = atoms.positions + rng.normal(scale=0.01, size=atoms.positions.shape) * (step > 0)
        if step % 4 == 3:  # every 4th step moves a Zn by 0.3 Å, beyond skin / 2: a new search
            pos[step // 4] += [0.3, 0.0, 0.0]
        atoms.positions = pos
        mine, fresh = tracker.bonds(atoms), find_bonds(atoms)
        assert np.array_equal(mine.i, fresh.i) and np.array_equal(mine.j, fresh.j)
        assert np.allclose(mine.d, fresh.d, atol=1e-12, rtol=0)
    assert 2 <= tracker.n_searches <= 5
    # a short contact approached in steps smaller than the skin is still caught without a new search
    h = np.flatnonzero(atoms.symbols == "H")[0]
    c = int(np.argsort(atoms.get_distances(h, np.flatnonzero(atoms.symbols == "C"), mic=True))[0])
    c = np.flatnonzero(atoms.symbols == "C")[c]
    atoms.positions = _move_next_to(atoms, h, c, 0.7).positions
    tracker.bonds(atoms)
    searches = tracker.n_searches
    with pytest.raises(StructureError, match=rf"atoms {min(h, c)} .* and {max(h, c)} .* 0\.55 Å apart"):
        for target in (0.7, 0.65, 0.61, 0.55):
            atoms.positions = _move_next_to(atoms, h, c, target).positions
            tracker.bonds(atoms)
    assert tracker.n_searches == searches
