"""Models that ship with the package, one name away (as ``mace_mp()``): ``CGGPRModel.load("AB2")``,
``CGGPRCalculator("AB2")`` or ``CGGPRCalculator.pretrained("AB2")``, and ``cggpr screen AB2 ...``.

The files live in ``ase_cggpr/models/<name>.npz`` in the compact format (inducing environments as clusters,
:mod:`ase_cggpr.inducing`), each with its model card in the metadata (``training``: data, recipe, frame kinds,
held-out validation; ``spec``; ``regression``; ``calibration``). ``scripts/shipped_models.py train`` made
them; the command that made each is in its card (``training.command``). Names are case-insensitive, and
``"A-only"`` is ``"A"``. A path that exists always wins over a shipped name (finding the file:
:mod:`ase_cggpr.model_file`, which :meth:`CGGPRModel.load` uses; re-exported here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import CGGPRModel
from .model_file import MODELS_DIR, available, canonical_name, resolve, shadowing

__all__ = ["CITATION", "LICENCE", "MODELS_DIR", "available", "calibration_lines", "canonical_name", "card",
           "format_card", "resolve", "shadowing"]

CITATION = ("Faure Beaulieu, Z. et al., 'A coarse-grained Gaussian-process model of zeolitic imidazolate "
            "frameworks', Chem. Commun. 2023 (method); MOF-FF for ZIFs: Dürholt et al. 2019 (labels)")
LICENCE = "MIT (models and code, ase-cggpr); training labels computed here with MOF-FF"


def card(name: str) -> dict[str, Any]:
    """The model card of a shipped model: what it is, what it was trained on, how well it does."""
    model = CGGPRModel.load(name)
    meta = model.metadata_
    training = meta["training"]
    validation = training.get("held_out_validation", {})
    return {
        "name": Path(model.source_).stem,
        "file": model.source_,
        "bytes": Path(model.source_).stat().st_size,
        "representation": model.spec.representation,
        "package_version": meta.get("package_version"),
        "created": meta.get("created"),
        "labeller": training.get("labeller"),  # None: MOF-FF (the citation line names it)
        "training_data": {k: training.get(k) for k in ("dataset", "recipe", "frame_kinds", "rattle_levels",
                                                       "nets", "framework_types", "frames", "n_environments",
                                                       "data_files")},
        "hyperparameters": meta["spec"],
        "solver": {"kind": meta["solver"], "n_inducing": meta["regression"].get("n_inducing"),
                   "storage": meta["regression"].get("inducing_storage", "vectors")},
        "held_out": validation,
        "calibration": meta.get("calibration"),
        "reference_energy_eV_per_Zn": meta["reference_energy"],
        "command": training.get("command"),
        "use": training.get("use"),  # what the model is good for, when its held-out table limits it
        "training_cost": training.get("cost"),  # CPU / wall seconds, peak GB (None: not recorded)
        "citation": training.get("citation", CITATION),  # a model labelled by another potential names it
        "licence": training.get("licence", LICENCE),
    }


def format_card(c: dict[str, Any]) -> str:
    """A model card as text (eV per Zn; meV in the held-out lines)."""
    data = c["training_data"]
    spec = c["hyperparameters"]
    lines = [f"{c['name']}: {c['representation']} model, {c['bytes'] / 1e6:.1f} MB, ase-cggpr "
             f"{c['package_version']} ({c['created']})",
             f"  training data: {data['nets']} nets, {data['framework_types']} framework types, {data['frames']} "
             f"frames, {data['n_environments']} Zn environments; recipe {data['recipe']} (frame kinds "
             f"{', '.join(data['frame_kinds'] or [])}; rattle levels {', '.join(data['rattle_levels'] or [])})",
             *([f"  labels: {c['labeller'].get('potential')} ({c['labeller'].get('labeller')}); {data['dataset']}"]
               if isinstance(c.get("labeller"), dict) else []),
             f"  SOAP cutoff {spec['cutoff']} Å, atom_sigma {spec['atom_sigma']} Å, n_max {spec['n_max']}, l_max "
             f"{spec['l_max']}; kernel (offset {spec['offset']} + x.x')^{spec['zeta']}; noise {spec['noise']} eV; "
             f"{c['solver']['kind']} GPR, M = {c['solver']['n_inducing']} inducing environments",
             ]
    held = c["held_out"] or {}
    metrics = held.get("metrics", {})
    if metrics:
        lines.append(f"  held out ({held.get('framework_types')} framework types never seen in training, seed "
                     f"{held.get('seed')}):")
        for kind, m in metrics.items():
            extra = ""
            if "rmse_per_framework" in m:
                extra = (f"; energy per Zn of each framework RMSE {1000 * m['rmse_per_framework']:.0f} meV, "
                         f"Spearman {m['spearman']:.2f}")
            lines.append(f"    {kind:8s} {m['frames']:5d} frames: RMSE {1000 * m['rmse']:.0f} meV per Zn, mean error "
                         f"{1000 * m['bias']:+.0f} meV{extra}")
    cal = c.get("calibration") or {}
    variance = cal.get("variance") if isinstance(cal.get("variance"), dict) else None
    if variance:
        lines.extend(calibration_lines(cal))
    elif cal:
        lines.append(f"  calibration (held out): trust threshold {cal.get('threshold', 0):.3f} eV; "
                     f"{cal.get('within_1sigma', 0):.0%} of errors within 1 sigma, "
                     f"{cal.get('within_2sigma', 0):.0%} within 2")
    if c.get("use"):
        lines.append(f"  use: {c['use']}")
    lines.append(f"  training cost: {cost_line(c.get('training_cost'))}")
    lines.append(f"  made by: {c['command']}")
    lines.append(f"  cite: {c['citation']}; licence: {c['licence']}")
    return "\n".join(lines)


def cost_line(cost: dict[str, Any] | None) -> str:
    """What training a model cost (``training.cost``), as one line; "unknown" for what was not recorded."""
    if not isinstance(cost, dict):
        return "unknown (not recorded when the model was trained)"

    def value(key: str, unit: str, digits: int = 0) -> str:
        v = cost.get(key)
        return "unknown" if v is None else f"{v:,.{digits}f} {unit}"

    load = f", machine load {cost['load_average']}" if cost.get("load_average") is not None else ""
    what = f" ({cost['includes']})" if cost.get("includes") else ""
    return (f"{value('cpu_seconds', 'CPU s')}, {value('wall_seconds', 's wall')}, peak memory "
            f"{value('peak_memory_gb', 'GB', 2)}{load}{what}")


def _share(value: float | None) -> str:
    """A fraction as a percentage; "n/a" when it is undefined (a share of no frames is stored as null)."""
    return "n/a" if value is None else f"{value:.0%}"


def calibration_lines(cal: dict[str, Any]) -> list[str]:
    """The card's lines for a variance calibration and applicability rule (issue 31; meV per Zn)."""
    variance = cal["variance"]
    checked = variance.get("checked_on", {})
    fitted = variance.get("fitted_on", {})
    term = f" + ({1000 * variance['strain']:.0f} meV x (T/10 deg)^4)^2" if variance.get("strain") else ""
    term += f" + ({variance['bead']:.3g} eV/Å x B)^2" if variance.get("bead") else ""
    term += f" + ({variance['distortion']:.3g} eV/Å^2 x D^2)^2" if variance.get("distortion") else ""
    factor = variance.get("ideal_linkers", 1.0)
    lines = [f"  uncertainty: std = {'m x ' if factor != 1.0 else ''}sqrt(({variance['scale']:.3g} x GP latent std)^2 "
             f"+ ({1000 * variance['floor']:.1f} meV)^2{term})" + (
                 f", m = {factor:.2f} when the Zn's linkers are at the ideal geometry (decorated, not relaxed) or "
                 "unknown (bead input), else 1" if factor != 1.0 else "")]
    legend = [text for key, text in (
        ("strain", "T: the structure's mean RMS deviation of bead-Zn-bead angles from 109.47 deg"),
        ("bead", "B: RMS deviation of the Zn's Zn-linker-bead distances from the relaxed 3.186 Å"),
        ("distortion", "D: the Zn's linker distortion (Å)")) if variance.get(key)]
    if legend:
        lines.append("    " + "; ".join(legend))
    if checked.get("protocol", "").startswith("fitted on every"):  # k-fold cross-validation by framework type
        where = (f"    fitted on {fitted.get('framework_types', '?')} held-out framework types; checked by "
                 f"cross-validation by framework type (each type against a calibration fitted without it); per "
                 "frame kind, pooled over the types:")
    else:
        where = (f"    fitted on {fitted.get('framework_types', '?')} held-out framework types, checked on "
                 f"{checked.get('framework_types', '?')} others (never used for any fit); per frame kind on those:")
    lines += [where,
              f"    {'kind':8s} {'frames':>6s} {'RMSE':>5s} {'mean err':>8s} {'Spearman':>8s} "
              f"{'within 1 std':>15s} {'within 2 std':>15s}  (latent -> calibrated; Gaussian 68%, 95%)"]
    for kind, m in (cal.get("held_out_table") or {}).items():
        lines.append(f"    {kind:8s} {m['frames']:6d} {1000 * m['rmse']:5.0f} {1000 * m['bias']:+8.0f} "
                     f"{m['spearman']:8.2f} {m['within_1sigma_latent']:6.0%} -> {m['within_1sigma']:4.0%} "
                     f"{m['within_2sigma_latent']:6.0%} -> {m['within_2sigma']:4.0%}")
    for split in cal.get("other_splits") or []:
        what = "fitted on its own half" if cal.get("split", {}).get("protocol", "halves") == "halves" else \
            "another draw of the folds"
        lines.append(f"    other split (seed {split['seed']}, {what}): within 1/2 std " + ", ".join(
            f"{kind} {w[0]:.0%}/{w[1]:.0%}" for kind, w in split.get("within", {}).items()))
    for label, before in (("previous calibration (scale, floor)", (cal.get("previous") or {}).get("held_out_table")),):
        if before:
            lines.append(f"    {label}: within 1/2 std " + ", ".join(
                f"{kind} {w[0]:.0%}/{w[1]:.0%}" for kind, w in before.items() if None not in w))
    original = cal.get("before_issue_31") or {}
    if original.get("within_1sigma") is not None:
        lines.append(f"    before issue 31 (latent std, all kinds): {original['within_1sigma']:.0%} within 1 std, "
                     f"{original['within_2sigma']:.0%} within 2")
    diagram = cal.get("reliability") or {}
    if diagram:
        ks = [p["k"] for p in next(iter(diagram.values()))]
        lines.append("    reliability (fraction of |error| <= k std): k = " + " ".join(f"{k:g}" for k in ks))
        lines.append(f"      {'Gaussian':8s} " + " ".join(f"{p['gaussian']:.2f}" for p in next(iter(diagram.values()))))
        for kind, points in diagram.items():
            lines.append(f"      {kind:8s} " + " ".join(f"{q['observed']:.2f}" for q in points))
    lines.append(f"  trust: every Zn's calibrated std <= {1000 * cal['threshold']:.0f} meV "
                 f"({cal.get('threshold_rule')})")
    rule = cal.get("applicability")
    if isinstance(rule, dict):
        if rule.get("measure") == "linker_strain_energy":
            margin = rule.get("std_margin") or 0.0
            plus = f" + {margin:g} x its calibrated std" if margin else ""
            lines.append(f"  applicability (atomistic input): not trusted when a Zn's unseen linker strain energy > "
                         f"{1000 * rule['threshold']:.0f} meV{plus} (MOF-FF harmonic estimate of the energy in its "
                         "linkers' internal distortion from the relaxed imidazolate, half of each linker's): energy "
                         "the beads cannot see")
        else:
            lines.append(f"  applicability (atomistic input): not trusted when a Zn's linker distortion > "
                         f"{rule['threshold']:.4f} Å (RMS difference of its linkers' intra-linker distances from the "
                         "ideal imidazolate): energy in linker distortions the beads cannot see")
        checked = rule.get("checked_on", {})
        for what, key in (("structure (the screen's prediction)", "per_frame"), ("Zn", "per_Zn")):
            numbers = checked.get(key, {})
            if numbers:
                lines.append(f"    atom-rattled frames of framework types the threshold was not chosen on, per {what}: "
                             f"{_share(numbers.get('flagged_error_above_100meV'))} of "
                             f"{numbers.get('n_error_above_100meV')} with |error| > 100 meV per Zn flagged, "
                             f"{_share(numbers.get('flagged_error_below_30meV'))} of "
                             f"{numbers.get('n_error_below_30meV')} with |error| < 30 meV")
    return lines
