"""``read_nets(..., cache=True)``: the dataset builds keep the analysed nets in the package's cache directory, so a
resumed build does not spend minutes re-reading CIFs; the cached nets must be exactly the ones a fresh read gives."""

from __future__ import annotations

import numpy as np
from ase.io import write
from ase.spacegroup import crystal

from ase_cggpr.dataset import read_nets


def _write_nets(folder):
    folder.mkdir()
    # beta-cristobalite (dia net) and a one-site-short copy of it (rejected: a B site bonded to one A site)
    cristobalite = crystal(["Si", "O"], basis=[(0, 0, 0), (0.125, 0.125, 0.125)], spacegroup=227,
                           cellpar=[7.16, 7.16, 7.16, 90, 90, 90])
    write(folder / "DIA.cif", cristobalite)
    broken = cristobalite.copy()
    del broken[[a.index for a in broken if a.symbol == "Si"][:1]]
    write(folder / "BROKEN.cif", broken)
    return folder


def test_cached_nets_equal_a_fresh_read_and_change_with_the_input(tmp_path, monkeypatch):
    monkeypatch.setenv("CGGPR_CACHE", str(tmp_path / "cache"))
    folder = _write_nets(tmp_path / "nets")
    fresh, fresh_rejected = read_nets([folder])
    first, _ = read_nets([folder], cache=True)
    files = list((tmp_path / "cache" / "nets").glob("*.npz"))
    assert len(files) == 1
    cached, cached_rejected = read_nets([folder], cache=True)
    assert [n.name for n in fresh] == [n.name for n in cached] == ["DIA"]
    assert set(fresh_rejected) == set(cached_rejected) == {"BROKEN"}
    assert cached_rejected == fresh_rejected
    for a, b in zip(fresh, cached, strict=True):
        assert np.array_equal(a.atoms.positions, b.atoms.positions)
        assert np.array_equal(a.atoms.cell.array, b.atoms.cell.array)
        assert a.atoms.get_chemical_symbols() == b.atoms.get_chemical_symbols()
        assert np.array_equal(a.b_neighbours, b.b_neighbours) and np.array_equal(a.b_shifts, b.b_shifts)
        assert a.source == b.source and a.framework_type == b.framework_type
        assert np.allclose(np.linalg.norm(b.bond_vectors(), axis=-1), 3.24)
    # a changed input file is read again (a new key), the old entry is not used
    (folder / "DIA.cif").write_text((folder / "DIA.cif").read_text() + "\n# edited\n")
    read_nets([folder], cache=True)
    assert len(list((tmp_path / "cache" / "nets").glob("*.npz"))) == 2
    # another scale is another entry, with its own geometry
    other, _ = read_nets([folder], cache=True, scale=3.0)
    assert np.allclose(np.linalg.norm(other[0].bond_vectors(), axis=-1), 3.0)
    # a corrupt cache file is ignored (read again and rewritten), never trusted
    for f in (tmp_path / "cache" / "nets").glob("*.npz"):
        f.write_bytes(b"not an npz")
    again, _ = read_nets([folder], cache=True)
    assert np.array_equal(again[0].atoms.positions, read_nets([folder])[0][0].atoms.positions)
