"""The evaluation package's seams (issue 17 item 3): one labelled-set type, one selected-centres SOAP helper,
one ``write_csv`` convention and one ``rmse``, and the report built without the CLI.

Built-in frames only (no ../shared), small SOAP bases; a few seconds.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import net_frames

from ase_cggpr.descriptors import soap_vectors
from ase_cggpr.errors import CGGPRError, ModelError
from ase_cggpr.evaluation import Environments, SoapCache, read_csv, rmse, write_csv
from ase_cggpr.evaluation.report import build_report, markdown_to_html
from ase_cggpr.io import LabelledSet, load_labelled, split_by_group
from ase_cggpr.model import CGGPRModel, selected_vectors
from ase_cggpr.spec import ModelSpec

SPEC = ModelSpec(representation="AB2", n_max=4, l_max=3)


@pytest.fixture(scope="module")
def frames():
    return net_frames("atomistic")


def test_one_labelled_set_type(frames):
    """The evaluation's Environments is io.LabelledSet; load_labelled's per-structure views agree with the flat
    per-environment arrays, and a subset keeps each structure's labels and group."""
    assert Environments is LabelledSet
    loaded = load_labelled(frames, representation="AB2", label_key="energies")
    env = Environments.from_structures(frames, label_key="energies")
    assert isinstance(loaded, LabelledSet) and loaded.representation == "AB2"
    np.testing.assert_array_equal(loaded.labels, env.labels)
    assert [len(lab) for lab in loaded.structure_labels] == [c.n_metals for c in loaded.connectivities]
    np.testing.assert_array_equal(np.concatenate(loaded.structure_labels), loaded.labels)
    assert list(loaded.structure_groups) == [str(a.info["topology"]) for a in frames]  # framework type (legacy key)
    assert loaded.maps() is loaded.bead_maps and loaded.maps("A")[0].representation == "A"
    sub = loaded.subset([2, 0])
    assert sub.frames == [frames[2], frames[0]]
    np.testing.assert_array_equal(sub.structure_labels[0], loaded.structure_labels[2])
    np.testing.assert_array_equal(sub.owner, np.repeat([0, 1], [len(loaded.structure_labels[2]),
                                                                 len(loaded.structure_labels[0])]))
    assert sub.maps()[1] is loaded.bead_maps[0] and sub.n_environments == len(sub.labels)


def test_held_out_groups_fall_back_to_the_name(frames):
    """Held-out sets group by framework type, else structure_id, else the name; the CV by GROUP_KEYS, else alone."""
    copies = [a.copy() for a in frames]
    for k, atoms in enumerate(copies):
        atoms.calc = frames[k].calc
        atoms.info = {"name": f"s{k}", "net": "same"}
    loaded = load_labelled(copies, representation="A", label_key="energies")
    assert list(loaded.structure_groups) == ["s0", "s1", "s2"] and loaded.group_by == "name"
    env = Environments.from_structures(copies, label_key="energies")
    assert set(env.groups) == {"same"} and env.group_by == "net"
    train, test = split_by_group(loaded.structure_groups, 0.4, seed=0)
    assert sorted([*train, *test]) == [0, 1, 2] and len(test) == 1
    with pytest.raises(CGGPRError, match=r"structure 's0': no info\['framework'\] to group it by"):
        load_labelled(copies, representation="A", label_key="energies", group_key="framework")


def test_one_selected_centres_helper(frames):
    """model.selected_vectors describes only the selected centres, bit for bit the rows of the full computation;
    the model's method, the SOAP cache's row path and the screen's centre_vectors give the same numbers."""
    from ase_cggpr.screening import centre_vectors

    env = Environments.from_structures(frames, label_key="energies")
    maps = env.maps("AB2")
    full = soap_vectors(maps, SPEC)
    rows = np.array([0, 3, 15, 16, 17, len(full) - 1])
    X = selected_vectors(maps, SPEC, rows, chunk=1)
    np.testing.assert_array_equal(X, full[rows])
    np.testing.assert_array_equal(CGGPRModel(SPEC).selected_vectors(maps, rows, chunk=2), full[rows])
    np.testing.assert_array_equal(SoapCache(None).vectors(env, SPEC, rows=rows), full[rows])
    n0 = len(maps[0].centre_indices)
    np.testing.assert_array_equal(centre_vectors(SPEC, maps[1], np.array([5, 0, 2])), full[n0 + np.array([5, 0, 2])])
    for bad in ([3, 1], [0, 0], [len(full)]):
        with pytest.raises(ModelError, match="sorted, unique environment indices"):
            selected_vectors(maps, SPEC, np.array(bad))


def test_one_csv_convention_and_rmse(tmp_path):
    """write_csv is (path, rows) in evaluation and screening; rows the other way round are a TypeError naming the
    order; training's rmse is the evaluation's."""
    from ase_cggpr import screening

    path = write_csv(tmp_path / "rows.csv", [{"a": 1, "b": 0.5}, {"a": 2, "b": "x"}])
    assert read_csv(path) == [{"a": 1, "b": 0.5}, {"a": 2, "b": "x"}]
    with pytest.raises(TypeError, match="the path comes first"):
        write_csv([{"a": 1}], tmp_path / "other.csv")
    with pytest.raises(TypeError, match="the path comes first"):
        screening.write_csv([], tmp_path / "ranking.csv")
    out = screening.write_csv(tmp_path / "ranking.csv", [])
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == list(screening.CSV_COLUMNS)
    assert rmse(np.array([1.0, 2.0]), np.array([1.0, 0.0])) == pytest.approx(np.sqrt(2.0))
    assert np.isnan(rmse(np.array([]), np.array([])))


def test_report_without_the_cli(tmp_path):
    """evaluation.report builds the page (markdown and HTML) from a cross-hyper CSV; a CSV without the table's
    columns is one CGGPRError naming it, and no page or figure folder is left."""
    table = write_csv(tmp_path / "table1.csv", [
        {"representation": "AB2", "hypers_of": "AB2", "cutoff": 8.0, "atom_sigma": 0.3, "n_train": 100,
         "train_rmse": 0.01234, "test_rmse": 0.05678},
        {"representation": "A", "hypers_of": "AB2", "cutoff": 8.0, "atom_sigma": 0.3, "n_train": "",
         "train_rmse": 0.02, "test_rmse": 0.07}])
    page = build_report(tmp_path / "report.md", table_files=[table])
    text = page.read_text()
    assert "## Cross-hyper table (Table 1)" in text and "| AB2 | AB2 | 8.0 | 0.3 | 100 | 0.0123 | 0.0568 |" in text
    html_page = build_report(tmp_path / "report.html", table_files=[table])
    html = html_page.read_text()
    assert html == markdown_to_html(text)
    assert "<h2>Cross-hyper table (Table 1)</h2>" in html and "<td>0.0568</td>" in html and "<th>hypers of</th>" in html
    bad = write_csv(tmp_path / "bad.csv", [{"representation": "AB2", "cutoff": 8.0}])
    with pytest.raises(CGGPRError, match=r"bad\.csv is not a cross-hyper CSV \(no field"):
        build_report(tmp_path / "other.md", table_files=[bad])
    assert not (tmp_path / "other.md").exists() and not (tmp_path / "other_figures").exists()
