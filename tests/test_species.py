"""Species come from the data: bead elements per metal and linker, species recorded in the spec at fit time,
and a clear ModelError (never an IndexError) for a structure with a metal or linker the model has not seen.

Built from the package's built-in Zn(Im)2 frames (net YUG, 16 Zn); Co and mIm structures are made here by
substituting Zn by Co and imidazolate by 2-methylimidazolate (conftest.methylated).
"""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from click.testing import CliRunner
from conftest import SMALL, methylated, net_frames

from ase_cggpr import CGGPRCalculator
from ase_cggpr.beads import A_BEADS, B_BEADS, KNOWN_LINKERS, coarse_grain, find_connectivity
from ase_cggpr.cli import main
from ase_cggpr.descriptors import soap_vectors
from ase_cggpr.errors import ModelError, StructureError
from ase_cggpr.labels import local_energies
from ase_cggpr.model import CGGPRModel
from ase_cggpr.spec import DEFAULT_SPECIES, ModelSpec

UNSEEN_METAL = r"structure '{name}': the model was trained on metals \['Zn'\] / linkers \['C3H3N2'\]; " \
               r"this structure has metal\(s\) \['Co'\]"


def cobalt(atoms, name="YUG_Co"):
    """A copy with every Zn replaced by Co (same positions; labels dropped)."""
    out = atoms.copy()
    out.calc = None
    out.symbols[out.symbols == "Zn"] = "Co"
    out.info["name"] = name
    return out


@pytest.fixture(scope="module")
def yug():
    return net_frames("atomistic")


@pytest.mark.parametrize("rep", ["atomistic", "AB2", "A"])
def test_unseen_metal_is_a_clear_error_in_predict_and_calculator(small_models, yug, rep):
    model = small_models[rep]
    atoms = cobalt(yug[2])
    with pytest.raises(ModelError, match=UNSEEN_METAL.format(name="YUG_Co")):
        model.predict(atoms)
    atoms.calc = CGGPRCalculator(model)
    with pytest.raises(ModelError, match=UNSEEN_METAL.format(name="YUG_Co")):
        atoms.get_potential_energy()
    # a map made without the model's check still gives a ModelError naming the structure (was an IndexError)
    with pytest.raises(ModelError, match="structure 'YUG_Co'.*the model's descriptor"):
        model.predict_maps([coarse_grain(atoms, rep)])


def test_unseen_metal_through_the_cli(small_models, yug, tmp_path):
    path = small_models["AB2"].save(tmp_path / "ab2.npz")
    atoms = cobalt(yug[2])
    del atoms.info["name"]
    write(tmp_path / "co.xyz", atoms)
    result = CliRunner().invoke(main, ["predict", str(path), str(tmp_path / "co.xyz")], catch_exceptions=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "trained on metals ['Zn'] / linkers ['C3H3N2']; this structure has metal(s) ['Co']" in result.output
    assert "co.xyz" in result.output  # the structure is named after its file


def test_unseen_linker_and_a_only(small_models, yug):
    mim = methylated(yug[2], name="YUG_CH3")
    for rep in ("atomistic", "AB2"):
        with pytest.raises(ModelError, match=r"YUG_CH3.*this structure has unsupported linker\(s\) C4H5N2 = mIm") as e:
            small_models[rep].predict(mim)
        assert "cannot tell linkers apart" not in str(e.value)
    with pytest.raises(ModelError, match="unsupported linker.*an A-only model cannot tell linkers apart"):
        small_models["A"].predict(mim)
    labels = [local_energies(a, label_key="energies") for a in yug[:2]]
    with pytest.raises(ModelError, match="linkers C3H3N2 = Im .*C4H5N2 = mIm .*A representation cannot tell"):
        CGGPRModel(representation="A", **SMALL).fit([yug[0], methylated(yug[1])], labels)


def test_bead_elements_per_metal_and_linker(yug):
    """Zn/Im beads stay Si/O (hZIF); mIm's B beads are S, Co's A beads Ge; bead input is read back."""
    assert A_BEADS["Zn"] == "Si" and B_BEADS["C3H3N2"] == "O" and set(B_BEADS) == set(KNOWN_LINKERS)
    assert len(set(A_BEADS.values()) | set(B_BEADS.values())) == len(A_BEADS) + len(B_BEADS)
    im = coarse_grain(yug[0], "AB2").structure
    mim = coarse_grain(methylated(yug[0]), "AB2").structure
    assert im.get_chemical_formula() == "O32Si16" and mim.get_chemical_formula() == "S32Si16"
    np.testing.assert_allclose(mim.positions, im.positions, atol=1e-9)  # same centroids, other element
    co_mim = coarse_grain(cobalt(methylated(yug[0])), "AB2").structure
    assert co_mim.get_chemical_formula() == "Ge16S32"
    assert set(coarse_grain(cobalt(yug[0]), "A").structure.symbols) == {"Ge"}
    # bead input written with the table is read back with it: a Ge bead is a Co site, an S bead an mIm linker
    beads = Atoms(co_mim.symbols, positions=co_mim.positions, cell=co_mim.cell, pbc=True)
    connectivity = find_connectivity(beads, name="beads")
    assert connectivity.coarse_grained_input
    assert set(connectivity.metal_symbols) == {"Co"} and set(connectivity.linker_formulas) == {"C4H5N2"}
    again = coarse_grain(beads, "AB2", connectivity=connectivity).structure
    assert list(again.symbols) == list(co_mim.symbols)
    np.testing.assert_allclose(again.positions, co_mim.positions, atol=1e-12)
    hzif = find_connectivity(net_frames("cg")[0])  # the built-in Si/O bead file: Zn(Im)2 as before
    assert set(hzif.metal_symbols) == {"Zn"} and set(hzif.linker_formulas) == {"C3H3N2"}


def test_metal_without_a_bead_element(yug):
    copper = yug[0].copy()
    copper.symbols[copper.symbols == "Zn"] = "Cu"
    copper.info["name"] = "YUG_Cu"
    with pytest.raises(StructureError, match="YUG_Cu.*metal Cu has no bead element.*atomistic"):
        coarse_grain(copper, "AB2")
    assert len(coarse_grain(copper, "atomistic").centre_indices) == 16


@pytest.mark.parametrize("rep,species,centres", [
    ("atomistic", (30, 27, 7, 6, 1), (30, 27)), ("AB2", (32, 14, 8), (32, 14)), ("A", (32, 14), (32, 14))])
def test_model_fitted_on_zn_and_co(yug, rep, species, centres, tmp_path):
    """Mechanics only: the Co frames carry the Zn frames' labels (fake labels, not Co energies). A model fitted
    on both metals records both species, predicts both, and saves and loads them."""
    hypers = dict(SMALL, n_max=4, cutoff=5.0) if rep == "atomistic" else SMALL
    labels = [local_energies(a, label_key="energies") for a in yug[:2]]
    train = [yug[0], cobalt(yug[1], name="YUG-1-Co")]
    model = CGGPRModel(representation=rep, **hypers).fit(train, labels)
    assert model.spec.species == species and model.spec.centre_species == centres
    assert model.metals_ == ("Co", "Zn") and model.linkers_ == ("C3H3N2",)
    zn, co = model.predict(yug[2]), model.predict(cobalt(yug[2]))
    assert zn.shape == co.shape == (16,) and np.isfinite(zn).all() and np.isfinite(co).all()
    assert np.abs(zn - co).max() > 1e-6  # Co and Zn are different species to the descriptor
    # a Zn-only spec describes the Zn frame as before: the default species are today's
    zn_only = CGGPRModel(representation=rep, **hypers).fit(yug[:2], labels)
    assert (zn_only.spec.species, zn_only.spec.centre_species) == DEFAULT_SPECIES[rep]
    path = model.save(tmp_path / "mixed.npz")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["metadata"]))
    assert meta["spec"]["species"] == list(species) and meta["spec"]["centre_species"] == list(centres)
    loaded = CGGPRModel.load(path)
    assert loaded.spec == model.spec
    np.testing.assert_array_equal(loaded.predict(cobalt(yug[2])), co)


def test_old_model_files_load_with_the_zn_defaults(small_models, yug, tmp_path):
    """A model file written before the spec recorded species (no species fields) loads with the Zn(Im)2 values."""
    model = small_models["AB2"]
    path = model.save(tmp_path / "new.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("metadata")))
    del meta["spec"]["species"], meta["spec"]["centre_species"]
    np.savez(tmp_path / "old.npz", metadata=np.array(json.dumps(meta)), **arrays)
    old = CGGPRModel.load(tmp_path / "old.npz")
    assert (old.spec.species, old.spec.centre_species) == ((14, 8), (14,)) == DEFAULT_SPECIES["AB2"]
    np.testing.assert_array_equal(old.predict(yug[2]), model.predict(yug[2]))
    # a tampered species field is one ModelError naming the file
    for bad, message in (("Si", "list of atomic numbers"), ([14, 14], "twice"), ([8], r"centre_species \[14\]")):
        meta["spec"]["species"], meta["spec"]["centre_species"] = bad, [14]
        np.savez(tmp_path / "bad.npz", metadata=np.array(json.dumps(meta)), **arrays)
        with pytest.raises(ModelError, match=f"cannot load model .*bad.npz: metadata field spec: .*{message}"):
            CGGPRModel.load(tmp_path / "bad.npz")


def test_spec_species_fields():
    spec = ModelSpec(representation="AB2")
    assert spec.species is None and (spec.effective_species, spec.effective_centre_species) == ((14, 8), (14,))
    given = ModelSpec(representation="AB2", species=[32, 14, 8], centre_species=np.array([32, 14]))
    assert given.species == (32, 14, 8) and given.centre_species == (32, 14)
    assert ModelSpec.from_dict(given.to_dict()) == given
    assert "species" in given.descriptor_key() and "species" not in spec.descriptor_key()
    for bad, message in (({"species": [14, 14]}, "twice"), ({"species": []}, "at least one"),
                         ({"species": [0]}, "atomic numbers"), ({"species": "Si"}, "list of atomic numbers"),
                         ({"centre_species": [30]}, "among the species"), ({"species": [True]}, "atomic numbers")):
        with pytest.raises(ModelError, match=message):
            ModelSpec(representation="AB2", **bad)


def test_species_given_in_the_spec_are_kept(yug):
    labels = [local_energies(a, label_key="energies") for a in yug[:2]]
    spec = ModelSpec(representation="AB2", species=(32, 14, 8), centre_species=(32, 14), **SMALL)
    model = CGGPRModel(spec).fit(yug[:2], labels)  # Zn only, but room for Co in the descriptor
    assert model.spec.species == (32, 14, 8)
    X = soap_vectors([coarse_grain(yug[2], "AB2")], model.spec)
    assert X.shape[1] == (3 * 6) * (3 * 6 + 1) // 2 * 4
    narrow = ModelSpec(representation="AB2", species=(14, 8), **SMALL)
    with pytest.raises(ModelError, match=r"training structure 'YUG-1-Co' holds \['Ge'\].*not in the spec's species"):
        CGGPRModel(narrow).fit([yug[0], cobalt(yug[1], name="YUG-1-Co")], labels)
