"""The main job (``cggpr demo``): screen the real Zn(Im)2 structures that ship with the package with the shipped
models and compare their ranking with MOF-FF's.

Steps (:func:`run_demo`):

1. **Screen** the 7 bundled DFT-optimised Zn(Im)2 CIFs (``ase_cggpr/data/real_zifs``: ZIF-1, ZIF-4, ZIF-6,
   ZIF-8(H), coi, nog, zni; Dürholt et al. 2019, CC BY 4.0) with each shipped model (default AB2, A and
   atomistic; :func:`ase_cggpr.screening.screen`): predicted energy per Zn relative to relaxed zni, the largest
   per-Zn std (the GP std through the card's variance calibration), and the trust flag (every per-Zn std at
   most the card's threshold, and the input within what the model was trained on: the screen's trust_reason).
2. **Compare** with the MOF-FF energy per Zn of the same structures after MOF-FF relaxation, precomputed by
   ``scripts/relax_real_zifs.py`` into ``mofff_reference.json`` (its command is in the file and printed), and
   beside it the ACE (zif-ace-24, fitted to DFT) energy after ACE relaxation (``ace_reference.json``, the same
   script with ``--labeller ace:PATH``): per model a ranking table with both references, the error per
   structure, RMSE, mean error and the Spearman rank correlation against the model's own labeller's
   reference (MOF-FF for the MOF-FF-grade models, ACE for an ACE-grade one such as ``AB2-ace``, as its card's
   ``training.labeller`` says); a figure (predicted vs reference, error bars = largest per-Zn std) when
   matplotlib is installed; and which model to pick for what.
3. **Held-out accuracy** of each model from its card (:func:`ase_cggpr.pretrained.format_card`).
4. **Training on the built-in data** (a small illustration of how a model is made, < 1 min): an AB2 model on
   the built-in coarse-grained frames, tested on held-out framework types. It is *not* one of the shipped
   models (those were trained on the full 566-net dataset; see their cards).

Outputs in ``output_dir`` (:func:`demo_outputs`): ``ranking.csv`` (every model's table), ``real_zifs.png``
(with matplotlib) and ``model_AB2.npz`` (the model of step 4). Every file is checked before any work, written
to a temporary file and moved into place; existing files are kept unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase.io import read
from scipy.stats import spearmanr

from .errors import CGGPRError
from .io import default_dataset_path, iter_structures, load_labelled, reference_energy_from_info, split_by_group
from .metrics import rmse
from .model import CGGPRModel
from .outputs import atomic_output, check_output
from .plots import _finish, _pyplot
from .pretrained import card, format_card
from .screening import default_threshold, screen

#: The bundled real structures and their MOF-FF reference (``scripts/relax_real_zifs.py``).
REAL_ZIFS_DIR = Path(__file__).resolve().parent / "data" / "real_zifs"
#: ACE-grade models the demo adds when they ship (``scripts/ace_models.py --save``; none meets its targets yet).
ACE_MODELS = ("AB2-ace",)
#: The shipped models the demo screens with, by name (:mod:`ase_cggpr.pretrained`): the MOF-FF-grade ones and
#: every ACE-grade model of :data:`ACE_MODELS` present in this installation.
DEFAULT_MODELS = ("AB2", "A", "atomistic") + tuple(
    name for name in ACE_MODELS if (REAL_ZIFS_DIR.parents[1] / "models" / f"{name}.npz").is_file())
REFERENCE_FILE = REAL_ZIFS_DIR / "mofff_reference.json"
#: The same structures relaxed with the ACE potential zif-ace-24 (``scripts/relax_real_zifs.py --labeller``).
ACE_REFERENCE_FILE = REAL_ZIFS_DIR / "ace_reference.json"
ACE_RELAXED_FILE = REAL_ZIFS_DIR / "ace_relaxed.extxyz"
TRAINED_MODEL = "model_AB2.npz"
CSV_COLUMNS = ("model", "rank", "structure", "framework_type", "n_Zn", "predicted_meV_per_Zn", "max_std_meV",
               "trusted", "mofff_relaxed_meV_per_Zn", "mofff_rank", "error_meV", "mofff_cif_meV_per_Zn",
               "trust_reason", "ace_relaxed_meV_per_Zn", "ace_rank", "error_against")


def mofff_reference(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The bundled MOF-FF reference (``mofff_reference.json``): per structure the energy per Zn (eV, relative to
    relaxed zni) of the CIF as given and after MOF-FF relaxation, relax time, convergence; and the command."""
    path = Path(path) if path is not None else REFERENCE_FILE
    if not path.is_file():
        raise CGGPRError(f"{path}: the demo's MOF-FF reference is missing from this installation "
                         "(make it with scripts/relax_real_zifs.py)")
    return json.loads(path.read_text())


def ace_reference(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The bundled ACE reference (``ace_reference.json``, same layout as :func:`mofff_reference`; energies per
    Zn relative to ACE-relaxed zni), or None when this installation has none."""
    path = Path(path) if path is not None else ACE_REFERENCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def model_labeller(model) -> str:
    """Which labeller a model learnt: its card's ``training.labeller.labeller`` ("ace", ...), else "mofff"."""
    labeller = ((getattr(model, "metadata_", None) or {}).get("training") or {}).get("labeller") or {}
    return str(labeller.get("labeller", "mofff")) if isinstance(labeller, dict) else "mofff"


def real_structures(reference: dict[str, Any] | None = None, folder: str | os.PathLike | None = None, *,
                    relaxed: bool = False, relaxed_file: str = "mofff_relaxed.extxyz") -> list:
    """The bundled real Zn(Im)2 CIFs as Atoms, in the reference's order, with ``info`` name and framework_type;
    with ``relaxed`` their relaxed versions (``relaxed_file``: MOF-FF's, or ``ace_relaxed.extxyz``) instead."""

    reference = reference or mofff_reference()
    folder = Path(folder) if folder is not None else REAL_ZIFS_DIR
    if relaxed:
        by_name = {a.info["name"]: a for a in read(folder / relaxed_file, ":")}
        return [by_name[e["name"]] for e in reference["structures"]]
    out = []
    for entry in reference["structures"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ASE: "crystal system 'triclinic' is not interpreted" for P1
            atoms = read(folder / entry["cif"])
        atoms.info.update(name=entry["name"], framework_type=entry["framework_type"])
        out.append(atoms)
    return out


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long sequences (NaN for fewer than 3 values)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 3:
        return math.nan

    return float(spearmanr(a, b).statistic)


@dataclasses.dataclass
class ModelScreen:
    """One model's screen of the real structures against its labeller's reference (MOF-FF or ACE; energies in eV
    per Zn, relative to zni relaxed with that labeller); ``error``, ``rmse``, ``bias`` and ``spearman`` are
    against ``reference_name``'s numbers."""

    name: str
    representation: str
    threshold: float
    threshold_source: str
    rows: list[dict[str, Any]]  #: per structure, ranked (1, 2, ...) by predicted energy per Zn, trusted or not
    spearman: float
    rmse: float
    bias: float
    seconds: float
    card_text: str
    reference_name: str = "MOF-FF"
    n_nets: int | None = None  #: nets the model was trained on (its card), for the demo's advice

    def table(self) -> str:
        label = self.name if self.name == self.representation else f"{self.name} ({self.representation})"
        head = (f"{label}: screened in {self.seconds:.1f} s; trust threshold "
                f"{1000 * self.threshold:.1f} meV per-Zn std ({self.threshold_source})")
        lines = [head, f"  {'rank':>4} {'structure':<8} {'type':<5} {'predicted E/Zn (meV)':>21} {'trusted':>7} "
                       f"{'MOF-FF E/Zn':>11} {'(rank)':>6} {'ACE E/Zn':>8} {'(rank)':>6} "
                       f"{'error vs ' + self.reference_name:>15} {'MOF-FF of CIF':>13}"]
        for r in self.rows:
            if r["error_message"]:
                lines.append(f"  {'':>4} {r['structure']:<8} {r['framework_type']:<5} failed: {r['error_message']}")
                continue
            pred = f"{1000 * r['predicted']:7.1f} ± {1000 * r['max_std']:5.1f}"
            lines.append(f"  {r['rank']:>4} {r['structure']:<8} {r['framework_type']:<5} {pred:>21} "
                         f"{'yes' if r['trusted'] else 'NO':>7} {1000 * r['mofff']:11.1f} {r['mofff_rank']:>6} "
                         f"{1000 * r['ace'] + 0.0:8.1f} {r['ace_rank'] or '':>6} "  # + 0.0: no "-0.0"
                         f"{1000 * r['error']:+15.1f} {1000 * r['mofff_cif']:13.1f}")
        lines.append(f"  RMSE {1000 * self.rmse:.1f} meV per Zn, mean error {1000 * self.bias:+.1f} meV, Spearman "
                     f"(predicted vs {self.reference_name} ranking) {self.spearman:.2f}")
        return "\n".join(lines)


@dataclasses.dataclass
class TrainingResult:
    """The small training step on the built-in data (eV per Zn)."""

    representation: str
    n_train: int
    n_test: int
    n_test_types: int
    rmse: float
    test_std: float
    seconds: float
    model_path: Path

    def table(self) -> str:
        return (f"{self.representation} model trained on {self.n_train} environments of the built-in coarse-grained "
                f"data in {self.seconds:.1f} s ({self.model_path}); held-out RMSE on {self.n_test} environments of "
                f"{self.n_test_types} framework types never seen in training: {1000 * self.rmse:.0f} meV per Zn "
                f"(test label std {1000 * self.test_std:.0f} meV). An illustration of training only: the "
                "shipped models above were trained on the full dataset (their cards).")


@dataclasses.dataclass
class DemoResult:
    screens: list[ModelScreen]
    training: TrainingResult | None
    reference: dict[str, Any]
    csv_path: Path
    plot_path: Path | None
    seconds: float
    relaxed: bool = False
    ace: dict[str, Any] | None = None  #: the bundled ACE reference, when there is one

    def table(self) -> str:
        ref = self.reference
        screened = "the CIFs as given"
        if self.relaxed:
            screened = "their relaxations with each model's labeller (MOF-FF's, or ACE's for an ACE-grade model)"
        parts = [f"Screening {len(ref['structures'])} real Zn(Im)2 structures (DFT-optimised CIFs bundled in "
                 f"ase_cggpr/data/real_zifs; {ref['source']})",
                 f"screened: {screened}; energies per Zn relative to zni relaxed with the model's labeller; '±' is the "
                 "largest per-Zn std (calibrated on held-out frameworks); MOF-FF E/Zn: the same structures relaxed "
                 "with MOF-FF (positions and cell); ACE E/Zn: relaxed with the ACE potential zif-ace-24 (fitted to "
                 "DFT); each model's error is against its own labeller's; MOF-FF of CIF: a single point on the CIF as "
                 "given; precomputed by:", f"  {ref['command']}"]
        if self.ace is not None:
            parts.append(f"  {self.ace['command']}")
        parts.append("")
        for s in self.screens:
            parts += [s.table(), ""]
        parts += self.advice()
        parts.append("Held-out accuracy (model cards):")
        for s in self.screens:
            parts += [s.card_text, ""]
        if self.training is not None:
            parts += ["Training on the built-in data (illustration):", "  " + self.training.table(), ""]
        parts.append(f"ranking table: {self.csv_path}")
        if self.plot_path is not None:
            parts.append(f"figure: {self.plot_path}")
        parts.append(f"demo took {self.seconds:.0f} s")
        return "\n".join(parts)

    def advice(self) -> list[str]:
        """Which model to pick for what (two lines), from the references and the screens shown."""
        if self.ace is None:
            return []
        mofff = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in self.reference["structures"]}
        ace = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in self.ace["structures"]}
        names = sorted(mofff.keys() & ace.keys())
        rho = spearman([mofff[n] for n in names], [ace[n] for n in names])
        ace_models = [s for s in self.screens if s.reference_name == "ACE"]
        lines = [f"Which model: MOF-FF and ACE (zif-ace-24, fitted to DFT) rank these structures differently (Spearman "
                 f"{rho:.2f}). The MOF-FF-grade models (AB2, A, atomistic) reproduce MOF-FF: pick AB2 (the most "
                 "accurate) to pre-screen for, or stand in for, MOF-FF."]
        if ace_models:
            s = ace_models[0]
            nets = f", trained on {s.n_nets} ACE-relaxed nets, see its card" if s.n_nets else ""
            lines.append(f"  To rank polymorphs as DFT would, pick the ACE-grade {s.name} (Spearman {s.spearman:.2f} "
                         f"against ACE here{nets}); trust its flag on framework types it has not seen.")
        else:
            lines.append("  No ACE-grade model ships yet (AB2-ace misses its accuracy targets on the ACE build so "
                         "far): for a DFT-grade ranking use ACE itself (cggpr label --labeller ace:PATH, on relaxed "
                         "structures) or train on ACE/DFT totals (cggpr train --energy-key).")
        return lines + [""]


def demo_outputs(output_dir: str | os.PathLike, *, train: bool = True) -> list[Path]:
    """The files :func:`run_demo` writes into ``output_dir`` (ranking CSV, the trained model, the figure)."""
    output_dir = Path(output_dir)
    paths = [output_dir / "ranking.csv"]
    if train:
        paths.append(output_dir / TRAINED_MODEL)
    if importlib.util.find_spec("matplotlib") is not None:
        paths.append(output_dir / "real_zifs.png")
    return paths


def screen_real_zifs(model_name: str, reference: dict[str, Any] | None = None, *, structures=None,
                     workers: int = 1, ace: dict[str, Any] | None = None, ace_structures=None) -> ModelScreen:
    """Screen the bundled real structures with one model (a shipped name or a path) and compare with its
    labeller's reference: MOF-FF's (``reference``), or ACE's (``ace``, default the bundled one) for a model
    whose card says it learnt ACE labels; such a model screens ``ace_structures`` when given (the ACE-relaxed
    structures), else ``structures``."""
    reference = reference or mofff_reference()
    ace = ace if ace is not None else ace_reference()
    structures = structures if structures is not None else real_structures(reference)
    t0 = time.perf_counter()
    model = CGGPRModel.load(model_name)
    learnt = model_labeller(model)
    if learnt == "ace" and ace is None:
        raise CGGPRError(f"{model_name} learnt ACE labels, but this installation has no {ACE_REFERENCE_FILE.name}")
    if learnt not in ("ace", "mofff"):
        raise CGGPRError(f"{model_name} learnt {learnt!r} labels: the demo has references for MOF-FF and ACE only")
    if learnt == "ace" and ace_structures is not None:
        structures = ace_structures
    threshold, source = default_threshold(model)
    result = screen(model, structures, threshold=threshold, workers=workers)
    seconds = time.perf_counter() - t0
    mofff = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in reference["structures"]}
    ace_e = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in ace["structures"]} if ace is not None else {}
    own = ace_e if learnt == "ace" else mofff
    single = {e["name"]: e["energy_per_zn_cif_eV"] for e in reference["structures"]}
    mofff_rank = {name: k + 1 for k, name in enumerate(sorted(mofff, key=mofff.get))}
    ace_rank = {name: k + 1 for k, name in enumerate(sorted(ace_e, key=ace_e.get))}
    rows = []
    for row in result.rows:
        e_ref = own.get(row.id, math.nan)
        rows.append(dict(structure=row.id, framework_type=row.framework_type, n_Zn=row.n_Zn, rank=row.rank,
                         predicted=row.energy_per_Zn, max_std=row.max_std, trusted=row.trusted,
                         trust_reason=row.trust_reason, mofff=mofff.get(row.id, math.nan),
                         mofff_cif=single.get(row.id, math.nan), mofff_rank=mofff_rank.get(row.id),
                         ace=ace_e.get(row.id, math.nan), ace_rank=ace_rank.get(row.id), reference=e_ref,
                         error=row.energy_per_Zn - e_ref, error_message=row.error))
    # rank every screened structure by predicted energy (the screen ranks trusted ones only; here the trust
    # flag is a column beside the rank, so the whole ranking can be compared with MOF-FF's)
    rows.sort(key=lambda r: (bool(r["error_message"]), r["predicted"] if not r["error_message"] else 0.0))
    for k, r in enumerate(rows):
        r["rank"] = None if r["error_message"] else k + 1
    ok = [r for r in rows if not r["error_message"] and math.isfinite(r["reference"])]
    errors = np.array([r["error"] for r in ok])
    nets = (model.metadata_.get("training") or {}).get("nets") if learnt == "ace" else None
    return ModelScreen(
        name=Path(model_name).stem if Path(model_name).suffix == ".npz" else str(model_name),
        representation=model.spec.representation, threshold=float(threshold), threshold_source=source, rows=rows,
        spearman=spearman([r["predicted"] for r in ok], [r["reference"] for r in ok]),
        rmse=float(np.sqrt(np.mean(errors**2))) if errors.size else math.nan,
        bias=float(errors.mean()) if errors.size else math.nan, seconds=seconds, card_text=_card_text(model_name),
        reference_name="ACE" if learnt == "ace" else "MOF-FF", n_nets=int(nets) if nets else None)


def _card_text(model_name: str) -> str:
    """The model card's text; for a model file without a full card, what its metadata has."""
    try:
        return format_card(card(model_name))
    except (KeyError, TypeError, AttributeError) as error:
        return f"{model_name}: no full model card in this file ({type(error).__name__}: {error})"


def train_on_builtin(output: Path, *, seed: int = 0, n_train: int | None = 1000, test_fraction: float = 0.25,
                     overwrite: bool = False, progress: bool = False) -> TrainingResult:
    """A small AB2 model on the built-in coarse-grained data, tested on held-out framework types."""
    t0 = time.perf_counter()
    frames = list(iter_structures([default_dataset_path("cg")]))
    reference = reference_energy_from_info(frames) or 0.0
    labelled = load_labelled(frames, representation="AB2", label_key="e_local")
    train_idx, test_idx = split_by_group(labelled.structure_groups, test_fraction, seed=seed)
    train, test = labelled.subset(train_idx), labelled.subset(test_idx)
    model = CGGPRModel(representation="AB2", reference_energy=reference)
    model.fit_maps(train.maps(), train.structure_labels, n_train=n_train, seed=seed, progress=progress)
    predicted = np.concatenate(model.predict_maps(test.maps(), progress=progress))
    truth = test.labels - reference
    with atomic_output(output, force=overwrite) as tmp:
        model.save(tmp, overwrite=True)
    return TrainingResult("AB2", int(model.training_["n_environments"]), int(truth.size),
                          len(np.unique(test.structure_groups)), float(rmse(predicted, truth)), float(truth.std()),
                          time.perf_counter() - t0, output)


def run_demo(output_dir: str | os.PathLike = "cggpr-demo", *, models: tuple[str, ...] | list[str] = DEFAULT_MODELS,
             train: bool = True, seed: int = 0, n_train: int | None = 1000, workers: int = 1,
             overwrite: bool = False, progress: bool = False, reference: str | os.PathLike | None = None,
             relaxed: bool = False) -> DemoResult:
    """Screen the bundled real Zn(Im)2 structures with ``models`` (shipped names or model files), compare with
    MOF-FF, print-ready; with ``train`` also the small training step on the built-in data (``n_train``
    environments). ``relaxed``: screen the MOF-FF-relaxed structures instead of the CIFs as given (the
    MOF-FF reference is then the energy of exactly the structures screened). Existing output files are
    refused unless ``overwrite`` (checked before any work). A model that learnt ACE labels is compared with the
    bundled ACE reference (and with ``relaxed`` screens the ACE-relaxed structures)."""
    t0 = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in demo_outputs(output_dir, train=train):  # refuse before any work, not after it
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --force (overwrite=True) to replace it")
        check_output(path, force=overwrite)
    if not models:
        raise CGGPRError("the demo needs at least one model")
    ref = mofff_reference(reference)
    folder = Path(reference).parent if reference is not None else None
    structures = real_structures(ref, folder, relaxed=relaxed)
    ace = ace_reference((folder or REAL_ZIFS_DIR) / ACE_REFERENCE_FILE.name)
    ace_structures = None
    if relaxed and ace is not None:
        ace_structures = real_structures(ace, folder, relaxed=True, relaxed_file=ACE_RELAXED_FILE.name)
    screens = [screen_real_zifs(name, ref, structures=structures, workers=workers, ace=ace,
                                ace_structures=ace_structures) for name in models]
    csv_path = output_dir / "ranking.csv"
    _write_csv(csv_path, screens, overwrite=overwrite)
    plot_path = _figure(output_dir / "real_zifs.png", screens, overwrite=overwrite)
    training = None
    if train:
        training = train_on_builtin(output_dir / TRAINED_MODEL, seed=seed, n_train=n_train, overwrite=overwrite,
                                    progress=progress)
    return DemoResult(screens, training, ref, csv_path, plot_path, time.perf_counter() - t0, relaxed, ace)


def _write_csv(path: Path, screens: list[ModelScreen], *, overwrite: bool) -> None:

    with atomic_output(path, force=overwrite) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for s in screens:
            for r in s.rows:
                ok = not r["error_message"]
                writer.writerow([s.name, r["rank"] if ok else "", r["structure"], r["framework_type"], r["n_Zn"],
                                 f"{1000 * r['predicted']:.2f}" if ok else "", f"{1000 * r['max_std']:.2f}" if ok
                                 else "", r["trusted"] if ok else "", f"{1000 * r['mofff']:.2f}", r["mofff_rank"],
                                 f"{1000 * r['error']:.2f}" if ok else r["error_message"],
                                 f"{1000 * r['mofff_cif']:.2f}", r["trust_reason"] if ok else "",
                                 f"{1000 * r['ace']:.2f}" if math.isfinite(r["ace"]) else "", r["ace_rank"] or "",
                                 s.reference_name])


def _figure(path: Path, screens: list[ModelScreen], *, overwrite: bool) -> Path | None:
    """Predicted vs reference (MOF-FF or ACE, the model's labeller) energy per Zn, one panel per model, error
    bars = largest per-Zn std."""
    if importlib.util.find_spec("matplotlib") is None:
        return None

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(screens), figsize=(4.2 * len(screens), 4.2), squeeze=False)
    for ax, s in zip(axes[0], screens, strict=True):
        ok = [r for r in s.rows if not r["error_message"]]
        x = np.array([1000 * r["reference"] for r in ok])
        y = np.array([1000 * r["predicted"] for r in ok])
        e = np.array([1000 * r["max_std"] for r in ok])
        if x.size:
            low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            pad = 0.12 * (high - low) + 10
            low, high = low - pad, high + pad
            ax.plot([low, high], [low, high], color="0.6", lw=1)
            for r, xi, yi, ei in zip(ok, x, y, e, strict=True):
                colour = "tab:blue" if r["trusted"] else "tab:red"
                ax.errorbar(xi, yi, yerr=ei, fmt="o", color=colour, ms=5, capsize=3)
                ax.annotate(r["structure"], (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
        ax.set_title(f"{s.name}: RMSE {1000 * s.rmse:.0f} meV, Spearman {s.spearman:.2f}\n"
                     "(blue: trusted, red: std above the threshold)", fontsize=9)
        ax.set_xlabel(f"{s.reference_name} relaxed E/Zn - zni (meV)")
        ax.set_ylabel("predicted E/Zn - zni (meV)")
        ax.set_aspect("equal")
    with atomic_output(path, force=overwrite) as tmp:
        _finish(fig, tmp)
    plt.close(fig)
    return path


# -- Zn(mIm)2 (ZIF-8 family, issue 33): ``cggpr demo --linker mIm`` ------------------------------------------------

#: Zn(mIm)2 models the mIm demo uses when they ship (``scripts/mim_models.py --save-dir ase_cggpr/models``, written
#: only when the held-out and ZIF-8 targets are met).
MIM_MODELS = ("AB2-mIm", "atomistic-mIm")
#: ZIF-8 relaxed with MOF-FF (CH3 set) and its reference energy (``scripts/relax_zif8.py --store-reference``).
ZIF8_RELAXED_FILE = REAL_ZIFS_DIR / "zif8_mofff_relaxed.extxyz"
ZIF8_REFERENCE_FILE = REAL_ZIFS_DIR / "zif8_mofff_reference.json"
#: Relaxed Zn(mIm)2 nets of the mIm build (sod, dia, qtz, crb, abw, gis; ``scripts/mim_models.py --demo-data``).
MIM_POLYMORPHS_FILE = REAL_ZIFS_DIR / "mim_polymorphs_mofff.extxyz"
MIM_CSV = "ranking_mIm.csv"
MIM_CSV_COLUMNS = ("model", "rank", "structure", "framework_type", "n_Zn", "predicted_meV_per_Zn", "max_std_meV",
                   "trusted", "mofff_relaxed_meV_per_Zn", "mofff_rank", "error_meV", "trust_reason")
#: What to run when no Zn(mIm)2 model ships.
MIM_TRAIN_COMMAND = ("python scripts/mim_models.py -o OUT --im-build BUILD --save-dir ase_cggpr/models "
                     "(datasets/mim-build/README.md)")


def shipped_mim_models() -> tuple[str, ...]:
    """The Zn(mIm)2 models of :data:`MIM_MODELS` present in this installation."""
    return tuple(name for name in MIM_MODELS if (REAL_ZIFS_DIR.parents[1] / "models" / f"{name}.npz").is_file())


def mim_structures() -> list:
    """ZIF-8 and the bundled relaxed Zn(mIm)2 nets (all relaxed with MOF-FF), each with ``info`` name,
    framework_type and ``mofff_energy_per_zn`` (eV per Zn, relative to the Im-relaxed zni as the labels are)."""
    for path in (ZIF8_RELAXED_FILE, ZIF8_REFERENCE_FILE, MIM_POLYMORPHS_FILE):
        if not path.is_file():
            raise CGGPRError(f"{path}: the mIm demo's data is missing from this installation")
    zif8 = read(ZIF8_RELAXED_FILE)
    zif8.info.update(name="ZIF-8", framework_type="sod",
                     mofff_energy_per_zn=json.loads(ZIF8_REFERENCE_FILE.read_text())["energy_per_zn_relaxed_eV"])
    return [zif8] + list(read(MIM_POLYMORPHS_FILE, ":"))


@dataclasses.dataclass
class MimScreen:
    """One model's screen of ZIF-8 and the relaxed Zn(mIm)2 nets against MOF-FF (eV per Zn)."""

    name: str
    rows: list[dict[str, Any]]
    spearman: float
    zif8_error: float
    dia_minus_sod: tuple[float, float]  #: (model, MOF-FF): the dia net minus ZIF-8
    seconds: float

    def table(self) -> str:
        lines = [f"{self.name}: screened in {self.seconds:.1f} s",
                 f"  {'rank':>4} {'structure':<15} {'type':<4} {'predicted E/Zn (meV)':>21} {'trusted':>7} "
                 f"{'MOF-FF E/Zn':>11} {'(rank)':>6} {'error':>7}"]
        for r in self.rows:
            if r["error_message"]:
                lines.append(f"  {'':>4} {r['structure']:<15} {r['framework_type']:<4} failed: {r['error_message']}")
                continue
            pred = f"{1000 * r['predicted']:7.1f} ± {1000 * r['max_std']:5.1f}"
            lines.append(f"  {r['rank']:>4} {r['structure']:<15} {r['framework_type']:<4} {pred:>21} "
                         f"{'yes' if r['trusted'] else 'NO':>7} {1000 * r['mofff']:11.1f} {r['mofff_rank']:>6} "
                         f"{1000 * r['error']:+7.1f}")
        model, mofff = self.dia_minus_sod
        lines.append(f"  ZIF-8 error {1000 * self.zif8_error:+.1f} meV per Zn; Spearman (predicted vs MOF-FF ranking) "
                     f"{self.spearman:.2f}; dia - ZIF-8: model {1000 * model:+.1f}, MOF-FF {1000 * mofff:+.1f} meV per "
                     "Zn (calorimetry: -48 ± 23)")
        return "\n".join(lines)


def screen_mim(model_name: str, structures: list | None = None) -> MimScreen:
    """Screen ZIF-8 and the bundled relaxed Zn(mIm)2 nets with one model (a shipped name or a path)."""
    structures = structures if structures is not None else mim_structures()
    t0 = time.perf_counter()
    model = CGGPRModel.load(model_name)
    threshold, _ = default_threshold(model)
    result = screen(model, structures, threshold=threshold)
    mofff = {a.info["name"]: float(a.info["mofff_energy_per_zn"]) for a in structures}
    types = {a.info["name"]: str(a.info["framework_type"]) for a in structures}
    mofff_rank = {name: k + 1 for k, name in enumerate(sorted(mofff, key=mofff.get))}
    rows = [dict(structure=row.id, framework_type=types.get(row.id, row.framework_type), n_Zn=row.n_Zn,
                 predicted=row.energy_per_Zn, max_std=row.max_std, trusted=row.trusted, trust_reason=row.trust_reason,
                 mofff=mofff.get(row.id, math.nan), mofff_rank=mofff_rank.get(row.id),
                 error=row.energy_per_Zn - mofff.get(row.id, math.nan), error_message=row.error)
            for row in result.rows]
    rows.sort(key=lambda r: (bool(r["error_message"]), r["predicted"] if not r["error_message"] else 0.0))
    for k, r in enumerate(rows):
        r["rank"] = None if r["error_message"] else k + 1
    ok = {r["structure"]: r for r in rows if not r["error_message"]}
    dia = next((n for n, t in types.items() if t == "dia"), None)
    gap = ((ok[dia]["predicted"] - ok["ZIF-8"]["predicted"], mofff[dia] - mofff["ZIF-8"])
           if dia in ok and "ZIF-8" in ok else (math.nan, math.nan))
    return MimScreen(name=Path(model_name).stem if Path(model_name).suffix == ".npz" else str(model_name), rows=rows,
                     spearman=spearman([r["predicted"] for r in ok.values()], [r["mofff"] for r in ok.values()]),
                     zif8_error=ok["ZIF-8"]["error"] if "ZIF-8" in ok else math.nan, dia_minus_sod=gap,
                     seconds=time.perf_counter() - t0)


@dataclasses.dataclass
class MimDemoResult:
    screens: list[MimScreen]
    csv_path: Path
    seconds: float

    def table(self) -> str:
        parts = ["Screening ZIF-8 (Zn(mIm)2 sod; DFT-optimised CIF of Dürholt et al. 2019, CC BY 4.0, relaxed with "
                 "MOF-FF's CH3 set) and 6 relaxed Zn(mIm)2 nets of the mIm build (MOF-FF); energies per Zn relative to "
                 "Im-relaxed zni (the labels' zero); '±' the largest per-Zn std", ""]
        for s in self.screens:
            parts += [s.table(), ""]
        parts += [f"ranking table: {self.csv_path}", f"demo took {self.seconds:.0f} s"]
        return "\n".join(parts)


def run_mim_demo(output_dir: str | os.PathLike = "cggpr-demo", *, models: tuple[str, ...] | list[str] = (),
                 overwrite: bool = False) -> MimDemoResult:
    """``cggpr demo --linker mIm``: screen ZIF-8 and the bundled relaxed Zn(mIm)2 nets with ``models`` (default:
    the shipped Zn(mIm)2 models) against MOF-FF; writes ``ranking_mIm.csv``. Raises :class:`CGGPRError` (one
    line, with what to run) when no Zn(mIm)2 model ships and none is given; existing output is refused unless
    ``overwrite`` (checked before any work)."""
    t0 = time.perf_counter()
    models = tuple(models) or shipped_mim_models()
    if not models:
        raise CGGPRError(f"no Zn(mIm)2 model ships in this installation (none of {', '.join(MIM_MODELS)} meets its "
                         f"targets yet); train one with {MIM_TRAIN_COMMAND}")
    output_dir = Path(output_dir)
    csv_path = output_dir / MIM_CSV
    if csv_path.exists() and not overwrite:
        raise FileExistsError(f"{csv_path} exists; pass --force (overwrite=True) to replace it")
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_output(csv_path, force=overwrite)
        structures = mim_structures()
        screens = [screen_mim(name, structures) for name in models]
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                output_dir.rmdir()  # only if still empty
        raise
    with atomic_output(csv_path, force=overwrite) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MIM_CSV_COLUMNS)
        for s in screens:
            for r in s.rows:
                ok = not r["error_message"]
                writer.writerow([s.name, r["rank"] or "", r["structure"], r["framework_type"], r["n_Zn"],
                                 f"{1000 * r['predicted']:.3f}" if ok else "",
                                 f"{1000 * r['max_std']:.3f}" if ok else "",
                                 r["trusted"], f"{1000 * r['mofff']:.3f}", r["mofff_rank"],
                                 f"{1000 * r['error']:.3f}" if ok else "", r["trust_reason"] or r["error_message"]])
    return MimDemoResult(screens=screens, csv_path=csv_path, seconds=time.perf_counter() - t0)
