"""The places that assume Zn (issue 32): ``docs/metals.md`` lists every one, and they agree with the one table,
:mod:`ase_cggpr.metals`."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from ase.data import atomic_numbers

from ase_cggpr import beads, metals, model, spec
from ase_cggpr.mofff import atom_types, parameters

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "metals.md"
# the package exports functions named like these modules: import the modules themselves
decorate, nets, pipeline = (importlib.import_module(f"ase_cggpr.dataset.{name}")
                            for name in ("decorate", "nets", "pipeline"))

#: What marks a Zn-specific place in code: the quoted symbol, a per-Zn column or field name in quotes, the MOF-FF
#: Zn type, the zni reference structure or energy, an option named after Zn.
MARKERS = re.compile(r"""["']Zn["']|["'][A-Za-z_]*_Zn(_eV)?["']|["']energy_per_zn["']|zn4_n4|zni\.cif|"""
                     r"""-0\.711955|--max-zn|\(30, 7, 6, 1\)""")


def places_in_code() -> dict[str, list[int]]:
    """Package file (relative path) -> lines holding a marker, comments excluded."""
    found: dict[str, list[int]] = {}
    for path in sorted((ROOT / "ase_cggpr").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#") and MARKERS.search(line):
                found.setdefault(str(path.relative_to(ROOT)), []).append(number)
    return found


def test_every_zn_specific_file_is_listed_in_docs_metals():
    text = DOC.read_text()
    listed = set(re.findall(r"`(ase_cggpr/[\w/]+\.py)", text))
    found = places_in_code()
    missing = {path: lines for path, lines in found.items() if path not in listed}
    assert not missing, f"Zn-specific places not listed in docs/metals.md: {missing}"
    assert len(found) >= 8  # the grep still sees the places (a broken pattern would find none)
    for path in listed:
        assert (ROOT / path).is_file(), f"docs/metals.md lists {path}, which does not exist"


def test_the_table_is_what_the_code_uses():
    zn = metals.FRAMEWORK_METAL
    assert zn is metals.METALS["Zn"]
    for symbol, metal in metals.METALS.items():
        assert metal.symbol == symbol and atomic_numbers[symbol] == metal.atomic_number
    assert beads.A_BEADS == {"Zn": "Si", "Co": "Ge", "Cd": "Sn", "Fe": "Pb"}  # the bead files' convention
    assert beads.A_SYMBOL == zn.a_bead == "Si"
    assert spec.DEFAULT_SPECIES["atomistic"] == ((30, 7, 6, 1), (30,)) == ((zn.atomic_number, 7, 6, 1),
                                                                         (zn.atomic_number,))
    assert model.CG_INPUT_METALS == (zn.symbol,)
    assert atom_types.METAL == decorate.METAL == zn.symbol and zn.symbol in nets.A_SYMBOLS
    assert parameters.ZN_TYPE == zn.mofff_type
    assert parameters.ELEMENT[zn.mofff_type] == zn.symbol
    assert nets.ZN_CENTROID == zn.centroid_distance == 3.24
    assert pipeline.ZNI_REFERENCE_ENERGY == zn.zni_reference_energy == -0.711955
    assert all(m.mofff_type is None and m.zni_reference_energy is None
               for m in metals.METALS.values() if m is not zn)  # no MOF-FF parameters for the others

