"""Nets -> labelled Zn(Im)2, Zn(mIm)2 or mixed-linker dataset (the hZIF recipe), resumable, one net per task.

For each clean AB2 net:

1. decorate (Zn on A, ideal imidazolate on B; :mod:`.decorate`), with a small seeded
   symmetry-breaking displacement (``pre_rattle``) so relaxations leave symmetric saddles;
2. relax positions and cell with MOF-FF (:func:`ase_cggpr.mofff.relax_mofff`), convergence
   recorded per structure (``relax_converged``);
3. coarse-grain the relaxed structure (Si on Zn, O on ring centroids);
4. make frames: order ``"d"`` (ideal linkers on the relaxed beads, rattle ``"none"``, batch 0)
   and, per batch and rattle level, ``"r-d"`` (rattle beads, then decorate) and ``"d-r"``
   (decorate, then rattle atoms);
5. screen short contacts (:mod:`.screen`), label with MOF-FF per-atom energies using the
   decorator's own connectivity, form per-Zn local energies, drop frames in which any Zn
   local energy exceeds ``max_local_energy`` (1 eV);
   With ``BuildConfig.linker`` "mIm" or "mixed:FRACTION" the linkers are 2-methylimidazolate (or a seeded
   per-site mix, the same for every frame of a net: :func:`linker_seed`), the methyls turned to their
   least-crowded rotamers (:func:`~ase_cggpr.dataset.decorate.choose_methyl_rotamers`); a net whose relaxed
   structure still has a short contact fails with that reason; frames carry the relaxed linkers on the
   (rattled) beads unless ``linker_geometry="ideal"`` (see :class:`BuildConfig`); the energy filter counts from
   each Zn's local energy in the net's relaxed structure (the CH3 parameter set has its own zero), see
   ``max_local_energy``;
6. write ``frames/<net>.atomistic.extxyz`` and ``frames/<net>.cg.extxyz``, then
   ``frames/<net>.json`` (the completion marker). A re-run skips nets with a marker and reuses
   ``relaxed/<net>.extxyz`` when present, so an interrupted build continues where it stopped; a net
   whose marker says ``failed`` is built again by every re-run (its cause may have been fixed).
   Nets run as tasks of :mod:`ase_cggpr.tasks` (local worker processes that die with the build, or a Dask
   cluster); a net whose worker died is built again elsewhere.

:func:`merge` finally collects every finished net into ``atomistic.extxyz`` and ``cg.extxyz``
with a ``structure_id`` per net (in input order) and the net's ``framework_type`` key.
:func:`unique_topologies_first` orders a long build so that every topology is built before any
second cell of it (most CHIC-1 zeolite nets repeat IZA frameworks).

This module runs a net's stages and the build; the settings and file layout are in :mod:`.config`, the frames'
geometry in :mod:`.frames`, the relaxed store in :mod:`.store`, the merged files in :mod:`.merge`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from ..errors import OptionError, StructureError
from ..structure_checks import contact_message, shortest_contact
from ..tasks import Runner, Task, as_runner, run_tasks
from .config import (  # noqa: F401  (BuildError ... safe_name: re-exported, imported from here before the split)
    MANIFEST,
    ZNI_REFERENCE_ENERGY,
    BuildConfig,
    BuildError,
    NetFiles,
    frame_seed,
    linker_seed,
    normalise_linker,
    relaxed_store_folder,
    safe_name,
)
from .decorate import coarse_grain_decorated, linker_shapes
from .frames import (
    align_restored,
    bond_shifts,
    coarse_grained_of,
    core_connectivity,
    decorate_for,
    local_energies_of,
    make_frames,
    unwrap_like,
)
from .merge import merge, summarise  # noqa: F401  (summarise: re-exported)
from .nets import Net
from .store import (  # noqa: F401  (all but _reason, _set_aside: re-exported)
    RELAX_SETTINGS,
    STORE_MANIFEST,
    _reason,
    _set_aside,
    restore_relaxed,
    restore_starts,
    store_relaxed,
)


def relax_net(net: Net, config: BuildConfig, rng_seed: int, start: Atoms | None = None):
    """Decorate and relax one net with the build's labeller (MOF-FF by default); returns (decorated,
    RelaxResult). ``start``: a structure of the decorated net to start from (aligned with
    :func:`align_restored`) instead of the decorated net displaced by ``config.pre_rattle``."""
    dec = decorate_for(net, config)
    if start is None:
        start = dec.atoms.copy()
        rng = np.random.default_rng(rng_seed)
        start.positions = start.positions + config.pre_rattle * rng.standard_normal(start.positions.shape)
    else:
        start = start.copy()
        start.calc = None
    result = config.get_labeller().relax(start, cell=True, fmax=config.fmax, pmax_atm=config.pmax_atm,
                                         bonds=dec.bonds, shifts=bond_shifts(dec, net))
    return dec, result


def build_net(net: Net, out_dir: str | Path, config: BuildConfig) -> dict:
    """Run every stage for one net, skipping stages whose output exists. Returns its summary.

    The summary (also written to ``frames/<net>.json``) has ``status`` ("done", "skipped" or
    "failed"), counts of generated / screened-out / energy-filtered / kept frames, relaxation
    facts and per-level label statistics.
    """
    out_dir = Path(out_dir)
    files = NetFiles.of(out_dir, net.name)
    marker = files.marker
    previous = read_marker(marker)
    if previous is not None and previous.get("status") != "failed":
        return previous
    t0 = time.perf_counter()
    summary: dict = dict(net=net.name, source=net.source, n_zn=net.n_a, status="done")
    if previous is not None:  # failed in an earlier run: the cause may be fixed, so build it again
        summary["retried"] = True
        summary["previous_failure"] = previous.get("reason", "")
    try:
        if config.max_zn is not None and net.n_a > config.max_zn:
            summary.update(status="skipped", reason=f"{net.n_a} Zn > max_zn {config.max_zn}")
            return _finish(marker, summary, t0)
        summary.update(_build_net_frames(net, config, files))
    except Exception as exc:  # noqa: BLE001 - one net failing must not stop the build
        summary.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc(limit=4))
    return _finish(marker, summary, t0)


def _finish(marker: Path, summary: dict, t0: float) -> dict:
    summary["seconds"] = round(summary.get("seconds", 0.0) + time.perf_counter() - t0, 2)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(marker)
    return summary


def _build_net_frames(net: Net, config: BuildConfig, files: NetFiles) -> dict:
    labeller = config.get_labeller()
    provenance = labeller.frame_info()
    relaxed_path = files.relaxed
    info: dict = {}
    relaxed = None
    if relaxed_path.exists():
        try:
            relaxed = read(relaxed_path, format="extxyz")
        except Exception as error:  # noqa: BLE001 - a damaged file: keep it aside, relax again
            aside = _set_aside(relaxed_path)
            info["relax_unreadable"] = f"{relaxed_path.name} moved to {aside.name}: {_reason(error)}"
    if relaxed is not None:
        dec = decorate_for(net, config)
        if relaxed.get_chemical_symbols() != dec.atoms.get_chemical_symbols():
            raise StructureError(f"{relaxed_path} holds {relaxed.get_chemical_formula()}, not the "
                                 f"{config.linker} decoration {dec.atoms.get_chemical_formula()}: a relaxation "
                                 "of other linkers", structure=net.name)
        made_by = {k: relaxed.info[k] for k in ("labeller", "labeller_potential", "labeller_sha256")
                   if k in relaxed.info} or {"labeller": "mofff"}  # files of earlier builds: MOF-FF
        if made_by != provenance:
            raise StructureError(f"{relaxed_path} was relaxed by {made_by}, not by this build's labeller "
                                 f"{provenance}", structure=net.name)
        relaxed = align_restored(relaxed, dec, net.name)
        info["relax_reused"] = True
    else:
        t_relax = time.perf_counter()
        start, start_name = None, "decorated net"
        if config.relax_start == "mofff" and files.start.exists():
            dec = decorate_for(net, config)
            start = read(files.start, format="extxyz")
            if start.get_chemical_symbols() != dec.atoms.get_chemical_symbols():
                raise StructureError(f"{files.start} holds {start.get_chemical_formula()}, not the {config.linker} "
                                     f"decoration {dec.atoms.get_chemical_formula()}", structure=net.name)
            start, start_name = align_restored(start, dec, net.name), "mofff relaxation"
        dec, result = relax_net(net, config, frame_seed(config.seed, net.name, 0, "pre", "relax"), start)
        info["relax_seconds"] = round(time.perf_counter() - t_relax, 2)
        relaxed = unwrap_like(result.atoms, dec.atoms)
        relaxed.calc = None
        relaxed.info.update(net=net.name, relax_converged=result.converged,
                            max_force=result.max_force, max_pressure_atm=result.max_pressure_atm,
                            relax_message=result.message,
                            energy_per_zn=float(result.atoms.get_potential_energy() / net.n_a))
        if labeller.name != "mofff":  # (MOF-FF files stay as they were: no key means MOF-FF)
            relaxed.info.update(provenance)
        if config.relax_start != "decorated":
            relaxed.info["relax_start"] = start_name
        if dec.linker_kinds is not None:
            relaxed.info.update(linker=config.linker, linker_sites=",".join(dec.kinds))
        relaxed_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = relaxed_path.with_suffix(".tmp.extxyz")
        write(tmp, relaxed, format="extxyz")
        tmp.replace(relaxed_path)
        if dec.linker_kinds is not None:  # mIm / mixed: go on from the file as written (its 8 decimals), so a
            # build that restores this relaxation later makes the same frames to the bit (Im: as before)
            relaxed = align_restored(read(relaxed_path, format="extxyz"), dec, net.name)
    converged = bool(relaxed.info.get("relax_converged", False))
    info.update(relax_converged=converged, relax_message=relaxed.info.get("relax_message", ""),
                relaxed_energy_per_zn=float(relaxed.info.get("energy_per_zn", np.nan)))
    linker_info: dict = {}
    if dec.linker_kinds is not None:  # mIm / mixed: the sites, and the contacts before and after relaxation
        linker_info = dict(linker=config.linker, linker_sites=",".join(dec.kinds),
                           mim_fraction=float(dec.atoms.info["mim_fraction"]))
        info.update(linker_info, start_contact=_contact_text(dec.atoms))
        relaxed_contact = shortest_contact(relaxed)
        if relaxed_contact is not None:
            raise StructureError(f"the {labeller.name}-relaxed {config.linker} structure still clashes "
                                 f"({contact_message(relaxed, relaxed_contact)}; before relaxation: "
                                 f"{info['start_contact'] or 'no short contact'})", structure=net.name)
    relaxed_cg = coarse_grain_decorated(dec, relaxed)
    shapes = linker_shapes(dec, relaxed, net) if config.linker_geometry == "relaxed" else None

    frames = make_frames(net, relaxed_cg, config, shapes)
    if config.include_relaxed:  # the relaxed structure itself, labelled like every frame
        itself = relaxed.copy()
        itself.calc = None
        itself.info = {}
        frames.insert(0, (itself, dict(batch=0, rattle="relaxed", order="relaxed",
                                       seed=frame_seed(config.seed, net.name, 0, "relaxed", "relaxed"))))
    connectivity = core_connectivity(dec, net.name)
    calc = labeller.make_calculator(bonds=dec.bonds, shifts=bond_shifts(dec, net))
    # the filter's height above zni: max_local_energy - reference_energy for MOF-FF (1.71 eV), the same 1.71 eV
    # above the labeller's own zni reference for another labeller (its energies have another zero)
    if labeller.name == "mofff":
        height = config.max_local_energy - config.reference_energy
        threshold = np.full(dec.n_zn, config.max_local_energy)  # Im: fixed, as always
    else:
        height = config.max_local_energy - ZNI_REFERENCE_ENERGY
        threshold = np.full(dec.n_zn, config.reference_energy + height)
    energy_key = "mofff_energy" if labeller.name == "mofff" else f"{labeller.name}_energy"
    kept_at, kept_cg = [], []
    counts = dict(generated=len(frames), screened_out=0, energy_filtered=0, kept=0)
    stats: dict[str, list[float]] = {}
    all_stats: dict[str, list[float]] = {}
    screen_log = []
    try:
        if linker_info:  # each Zn's filter threshold counts from its local energy in the relaxed structure
            at_min = relaxed.copy()
            at_min.calc = calc
            at_min.arrays["energies"] = np.array(at_min.get_potential_energies(), dtype=float)
            at_min.calc = None
            e_min = local_energies_of(at_min, connectivity)
            threshold = e_min + height
            info["relaxed_local_energy_mean"] = float(e_min.mean())
        for atoms, meta in frames:
            contact = shortest_contact(atoms)
            if contact is not None:
                counts["screened_out"] += 1
                screen_log.append(f"{meta['rattle']}/{meta['order']}/b{meta['batch']}: "
                                  f"{contact[0]:.3f} Å between atoms {contact[1]}, {contact[2]}")
                continue
            atoms.calc = calc
            energies = np.array(atoms.get_potential_energies(), dtype=float)
            atoms.calc = None
            atoms.arrays["energies"] = energies
            e_local = local_energies_of(atoms, connectivity)
            all_stats.setdefault(meta["rattle"], []).extend(e_local.tolist())
            if (e_local > threshold).any():
                counts["energy_filtered"] += 1
                continue
            stats.setdefault(meta["rattle"], []).extend(e_local.tolist())
            per_atom = np.full(len(atoms), np.nan)
            per_atom[connectivity.metal_indices] = e_local
            atoms.arrays["e_local"] = per_atom
            frame_info = dict(net=net.name, batch=meta["batch"], rattle=meta["rattle"],
                              order=meta["order"], seed=meta["seed"],
                              relax_converged=converged,
                              reference_energy=config.reference_energy,
                              **{energy_key: float(energies.sum())}, **linker_info, **provenance)
            atoms.info.update(frame_info)
            cg = coarse_grained_of(atoms, connectivity)
            cg_local = np.full(len(cg), np.nan)
            cg_local[: dec.n_zn] = e_local
            cg.info = dict(frame_info)
            cg.arrays["e_local"] = cg_local
            kept_at.append(atoms)
            kept_cg.append(cg)
            counts["kept"] += 1
    finally:
        if labeller.name == "mofff":  # a LAMMPS instance per net; other labellers keep theirs for the next net
            calc.close()
    files.marker.parent.mkdir(parents=True, exist_ok=True)
    for path, images in ((files.atomistic, kept_at), (files.cg, kept_cg)):
        tmp = path.with_suffix(".tmp")
        write(tmp, images, format="extxyz")
        tmp.replace(path)
    info.update(counts)
    info["screen_log"] = screen_log[:20]
    info["label_stats"] = {k: _stats(v) for k, v in stats.items()}
    info["label_stats_unfiltered"] = {k: _stats(v) for k, v in all_stats.items()}
    return info


def _contact_text(atoms: Atoms) -> str | None:
    """The shortest contact of ``atoms`` below the screen's limits as "0.70 Å C-C (atoms i, j)", or None."""
    contact = shortest_contact(atoms)
    if contact is None:
        return None
    d, a, b = contact
    symbols = atoms.get_chemical_symbols()
    return f"{d:.3f} Å {symbols[a]}-{symbols[b]} (atoms {a}, {b})"


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return dict(n=int(v.size), mean=float(v.mean()), std=float(v.std()), min=float(v.min()),
                max=float(v.max()), sum=float(v.sum()), sumsq=float((v * v).sum()))


def _check_manifest(out_dir: Path, config: BuildConfig) -> None:
    path = out_dir / MANIFEST
    wanted = config.to_dict()
    if path.exists():
        old = json.loads(path.read_text()).get("config")
        if isinstance(old, dict):  # folders started before the linker options are Im builds, ideal linkers
            old.setdefault("linker", "Im")
            old.setdefault("linker_geometry", "ideal")
            old.setdefault("labeller", {"labeller": "mofff"})  # folders started before labellers: MOF-FF
        if isinstance(old, dict) and "ideal_linker" in wanted and "ideal_linker" not in old:
            raise ValueError(f"{out_dir} holds frames decorated with MOF-FF's ideal imidazolate ({path}); this "
                             f"build decorates with its labeller's own, so give a new output folder (relaxations "
                             f"are restored from the store, frames are remade in seconds per net)")
        if old != json.loads(json.dumps(wanted)):
            raise ValueError(f"{out_dir} holds a build with other settings ({path}); resume it with "
                             "the same settings or choose another output folder")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": wanted}, indent=1))


#: First estimate of a MOF-FF relaxation's wall time per Zn site (s, one core each): the full build's
#: mean over its first 238 nets was 2.9-5.5 s depending on the load beside it.
DEFAULT_SECONDS_PER_ZN = 4.0


def relax_wall_seconds(marker: Mapping) -> float | None:
    """Wall time (s) of a finished net's MOF-FF relaxation, read from its ``relax_message``; unlike
    ``relax_seconds`` (set only by the run that relaxed it) this survives later runs."""
    found = re.search(r" in ([0-9.]+) s:", marker.get("relax_message", ""))
    return float(found.group(1)) if found else None


def relax_rate(markers: Iterable[Mapping]) -> float | None:
    """Relaxation wall seconds per Zn site (one core each) over the finished nets among ``markers``
    (net summaries), including those relaxed in earlier runs; None if none records its time."""
    seconds = [(m["n_zn"], t) for m in markers
               if m.get("status") == "done" and (t := relax_wall_seconds(m)) is not None]
    zn = sum(z for z, _ in seconds)
    return sum(t for _, t in seconds) / zn if zn else None


def read_marker(path: Path) -> dict | None:
    """A net's marker (summary), or None if there is none or it is unreadable (then the net is built again)."""
    try:
        marker = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def failed_before(path: Path) -> bool:
    """Whether the marker at ``path`` records a failed build (a re-run retries it)."""
    marker = read_marker(path)
    return marker is None or marker.get("status") == "failed"


def read_markers(out_dir: str | Path) -> list[dict]:
    """The summaries (markers) of every net a build folder has finished, failed or skipped."""
    markers = (read_marker(p) for p in sorted((Path(out_dir) / "frames").glob("*.json")))
    return [m for m in markers if m is not None]


def unique_topologies_first(nets: Sequence[Net]) -> list[Net]:
    """``nets`` reordered for a long build: the smallest cell of every topology first (by Zn sites, then
    name), then the other cells of topologies already present (same order).

    A build stopped part-way (see ``time_budget``) then covers as many distinct topologies as its time
    allows; nets of one topology from different sources give nearly the same environments.
    """
    ordered = sorted(nets, key=lambda n: (n.n_a, n.name))
    seen: set[str] = set()
    first, repeats = [], []
    for net in ordered:
        key = net.framework_type
        (repeats if key in seen else first).append(net)
        seen.add(key)
    return first + repeats


def build_dataset(nets: Sequence[Net], out_dir: str | Path, config: BuildConfig | None = None, *,
                  workers: int | Runner = 1, progress: Callable[[int], None] | None = None,
                  compress: bool = False, time_budget: float | None = None,
                  seconds_per_zn: float | None = None,
                  on_net_done: Callable[[dict], None] | None = None) -> dict:
    """Build (or resume) a labelled dataset from ``nets`` into ``out_dir``.

    Args:
        nets: validated, scaled nets (:func:`ase_cggpr.dataset.nets.read_nets`).
        out_dir: output folder; per-net files go to ``relaxed/`` and ``frames/``.
        config: build settings; a folder keeps the settings it was started with.
        workers: processes (one net per task; LAMMPS runs serially inside each), or a
            :class:`~ase_cggpr.tasks.Runner` (a Dask cluster: its workers must see ``out_dir``, a shared
            filesystem). A net whose worker died is built again on another worker (at most
            :data:`~ase_cggpr.tasks.RETRIES` times; it resumes from its relaxation if that was saved), then it
            gets a ``failed`` marker (built again by a re-run) and the build goes on.
        progress: called with 1 after each net finishes or is deferred (e.g. a progress bar's update).
        compress: write the merged files gzip-compressed (``.extxyz.gz``).
        time_budget: wall seconds the build may take. A net that still needs its MOF-FF relaxation is
            started only if its estimated time (``seconds_per_zn`` x its Zn sites, x 1.5) fits in what is
            left; the others are *deferred*: not started, and built by a later run of the same command.
            Nets whose relaxation exists are always labelled (seconds). ``None``: no limit.
        seconds_per_zn: first estimate of a relaxation's wall time per Zn site (s); replaced by the
            mean rate of this run's relaxations once three have finished. ``None``: the rate of the
            relaxations already finished in ``out_dir`` (earlier runs), else ``DEFAULT_SECONDS_PER_ZN``.
        on_net_done: called in the main process with each finished net's summary, which has
            ``relaxed_in_this_run`` True if its relaxation is new (e.g. to store it at once).

    Returns:
        The merge summary (see :func:`merge`), with per-net summaries under ``"nets"``, the names of
        the deferred nets under ``"deferred"``, and under ``"retried"`` the nets whose build had failed in
        an earlier run (a re-run builds them again: the cause may be fixed) with their status now.
    """
    config = config or BuildConfig()
    out_dir = Path(out_dir)
    config.get_labeller().check_available()  # stop at once, with the install hint, if LAMMPS (pyace) is missing
    if as_runner(workers).parallel and not isinstance(config.labeller, str):
        raise OptionError("a labeller given as a Python calculator object runs in this process only: use workers=1")
    _check_manifest(out_dir, config)
    progress = progress or (lambda n: None)
    on_net_done = on_net_done or (lambda summary: None)
    names = [n.name for n in nets]
    if len(set(names)) != len(names):
        raise ValueError("net names must be unique")
    if time_budget is not None and time_budget < 0:
        raise ValueError(f"time_budget must be >= 0 s, got {time_budget}")
    if seconds_per_zn is None:  # only a time budget needs the rate
        measured = None if time_budget is None else relax_rate(read_markers(out_dir))
        seconds_per_zn = measured or DEFAULT_SECONDS_PER_ZN
    clock = _RelaxClock(time_budget, seconds_per_zn, config.max_zn)
    deferred: list[str] = []
    retried: dict[str, str] = {}  # nets that had failed in an earlier run -> their status now
    failed_earlier = {n.name for n in nets if (m := NetFiles.of(out_dir, n.name).marker).exists() and failed_before(m)}

    def runnable(net: Net) -> bool:
        if clock.fits(net, out_dir):
            return True
        deferred.append(net.name)
        progress(1)
        return False

    def finished(summary: dict) -> None:
        if summary["net"] in failed_earlier:
            retried[summary["net"]] = summary.get("status", "")
        on_net_done({**summary, "relaxed_in_this_run": clock.record(summary)})
        progress(1)

    runner = as_runner(workers)

    def to_build() -> Iterator[Task]:  # each net decided when it would start (the time budget)
        for net in nets:
            if runnable(net):
                yield Task(net, net)

    def warn(task: Task, message: str, retried: bool) -> None:
        if runner.parallel:
            warnings.warn(f"{message} while building net {task.key.name}"
                          f"{'; building it again' if retried else '; recorded as failed'}", stacklevel=2)

    with contextlib.closing(run_tasks(_build_task, to_build(), runner, context=(str(out_dir), config),
                                      on_death=warn)) as outcomes:
        for outcome in outcomes:
            if outcome.ok:
                finished(outcome.value)
                continue
            net = outcome.task.key  # its workers died (or the task itself broke): a failed net, built again by a re-run
            reason = outcome.error or f"{type(outcome.exception).__name__}: {outcome.exception}"
            summary = dict(net=net.name, source=net.source, n_zn=net.n_a, status="failed", reason=reason)
            finished(_finish(NetFiles.of(out_dir, net.name).marker, summary, time.perf_counter()))
    summary = merge(out_dir, names, compress=compress, framework_types={n.name: n.framework_type for n in nets})
    summary["deferred"] = deferred
    summary["retried"] = retried
    return summary


def _build_task(context: tuple, net: Net) -> dict:
    """One net on a worker; ``context`` (output folder, build settings) is sent once per worker."""
    out_dir, config = context
    return build_net(net, out_dir, config)


class _RelaxClock:
    """Decides whether a net's relaxation fits in what is left of a time budget (see build_dataset)."""

    SAFETY = 1.5

    def __init__(self, budget: float | None, seconds_per_zn: float, max_zn: int | None):
        self.budget, self.default_rate, self.max_zn = budget, float(seconds_per_zn), max_zn
        self.start = time.perf_counter()
        self.relax_seconds, self.relax_zn, self.n_relaxed = 0.0, 0, 0
        self.to_relax: set[str] = set()  # nets started in this run that had no relaxation yet

    def rate(self) -> float:
        return self.relax_seconds / self.relax_zn if self.n_relaxed >= 3 else self.default_rate

    def fits(self, net: Net, out_dir: Path) -> bool:
        if self.max_zn is not None and net.n_a > self.max_zn:
            return True  # build_net marks it skipped at once
        files = NetFiles.of(out_dir, net.name)
        if files.relaxed.exists() or (files.marker.exists() and not failed_before(files.marker)):
            return True
        left = None if self.budget is None else self.budget - (time.perf_counter() - self.start)
        if left is not None and self.SAFETY * self.rate() * net.n_a > left:
            return False
        self.to_relax.add(net.name)
        return True

    def record(self, summary: dict) -> bool:
        """Count a finished net; True if it was relaxed in this run."""
        seconds = summary.get("relax_seconds")
        if summary["net"] in self.to_relax and seconds is not None:
            self.relax_seconds += float(seconds)
            self.relax_zn += int(summary["n_zn"])
            self.n_relaxed += 1
            return True
        return False


