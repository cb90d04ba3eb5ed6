"""Evaluation layer: grouped k-fold CV, learning curves, grid searches, the cross-hyper table and the report.

Everything here is built on the core API: :func:`~ase_cggpr.beads.coarse_grain` for the representations,
:func:`~ase_cggpr.labels.local_energies` for the labels, :func:`~ase_cggpr.descriptors.selected_vectors` /
:func:`~ase_cggpr.descriptors.soap_vectors` for SOAP and :class:`~ase_cggpr.model.CGGPRModel` (and so the
solvers of :mod:`ase_cggpr.regression`) for the regression. One module per job:

* :mod:`.environments` -- structure files -> labelled environments (:func:`read_environments`,
  :func:`select_structures`); the labelled-set type is :class:`ase_cggpr.io.LabelledSet` (``Environments``
  is the same class): one label and one CV group per metal environment;
* :mod:`.cache` -- :class:`SoapCache`: the environments' SOAP vectors, computed once per (structures,
  descriptor hyperparameters), on disk and memory-mapped; some rows only describe those centres alone;
* :mod:`.folds` -- :func:`group_folds` (groups kept whole) and the seeded per-fold samples of the
  shared-kernel CV;
* :mod:`.cv` -- :func:`cross_validate` (one model per fold, any solver), :func:`shared_kernel_cv` (one
  kernel for every fold and training size), :class:`CVResult`;
* :mod:`.studies` -- :func:`learning_curve`, :func:`grid_search` (resumable CSV), :func:`cross_hyper_table`;
* :mod:`.tables` -- result files: :func:`write_csv` ``(path, rows, fields)``, :func:`read_csv`, the CV
  predictions, grid-search CSV checks, :func:`rmse`, and the paper's own learning-curve and grid files;
* :mod:`.report` -- :func:`build_report`: one markdown or HTML page with the tables and figures of earlier
  runs (``cggpr report``; the CLI in :mod:`ase_cggpr.cli.evaluation` only parses options and calls these).

Data flow: files -> :func:`read_environments` (labels, groups) -> :meth:`SoapCache.vectors` (X, or only
the sampled rows: :func:`sampled_vectors`) -> :func:`cross_validate` / :func:`shared_kernel_cv` over the
folds of :func:`group_folds` -> :class:`CVResult` / study rows -> :mod:`.tables` files -> :func:`build_report`.

Typical use::

    from ase.io import read
    from ase_cggpr.evaluation import Environments, SoapCache, cross_validate
    from ase_cggpr.spec import ModelSpec

    env = Environments.from_structures(read("train.extxyz", ":"))       # labels + groups
    spec = ModelSpec(representation="AB2")
    X = SoapCache("soap-cache").vectors(env, spec)                       # computed once, on disk
    result = cross_validate(X, env.labels, env.groups, spec, n_train=20000)
    print(result.test_rmse, result.train_rmse)

Folds are grouped: every environment of one group is in the same fold. The group is
``atoms.info['framework_type']`` when present (legacy name ``topology``; the dataset build's framework-type
key: every cell of one framework, e.g. an IZA net and its CHIC-1 copy, whose environments are nearly the
same; grouping by net instead let them leak across folds and lowered the AB2 test RMSE from 0.083 to
0.059 eV on the full build's first 238 nets), else ``structure_id`` (all rattled copies of one net),
``net`` or ``name``. Groups are shuffled with ``seed`` and dealt to the fold with the fewest environments
so far, so folds are balanced and reproducible. When ``n_train`` is given, that many training environments
are drawn (seeded, per fold) from the training folds, as in the paper.
"""

from __future__ import annotations

from ..metrics import rmse
from .cache import SoapCache
from .cv import (
    TRAIN_RMSE_SAMPLE,
    CVResult,
    Log,
    SampledRows,
    cross_validate,
    fit_fold,
    sampled_vectors,
    shared_kernel_cv,
)
from .environments import GROUP_KEYS, Environments, read_environments, select_structures
from .folds import (
    _training_rows,  # noqa: F401  (used by benchmarks/bench_gpr.py)
    fold_samples,
    group_folds,
    sample_training_rows,
    shared_kernel_rows,
    usable_sizes,
)
from .report import build_report, markdown_to_html
from .studies import PAPER_SIZES, cross_hyper_table, grid_search, learning_curve
from .tables import (
    GRID_FIELDS,
    LC_FIELDS,
    PAPER_FILE_TAG,
    grid_csv_fields,
    grid_setting,
    optimum,
    paper_grid,
    paper_learning_curve,
    read_csv,
    read_predictions,
    save_predictions,
    write_csv,
)

__all__ = [
    "GRID_FIELDS", "GROUP_KEYS", "LC_FIELDS", "PAPER_FILE_TAG", "PAPER_SIZES", "TRAIN_RMSE_SAMPLE", "CVResult",
    "Environments", "Log", "SampledRows", "SoapCache", "build_report", "cross_hyper_table", "cross_validate",
    "fit_fold", "fold_samples", "grid_csv_fields", "grid_search", "grid_setting", "group_folds", "learning_curve",
    "markdown_to_html", "optimum", "paper_grid", "paper_learning_curve", "read_csv", "read_environments",
    "read_predictions", "rmse", "sample_training_rows", "sampled_vectors", "save_predictions", "select_structures",
    "shared_kernel_cv", "shared_kernel_rows", "usable_sizes", "write_csv",
]
