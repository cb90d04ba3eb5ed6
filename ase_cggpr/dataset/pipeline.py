"""Nets -> labelled Zn(Im)2, Zn(mIm)2 or mixed-linker dataset (the hZIF recipe), resumable, one net per task.

For each clean AB2 net:

1. decorate (Zn on A, ideal imidazolate on B; :mod:`.decorate`), with a small seeded
   symmetry-breaking displacement (``pre_rattle``) so relaxations leave symmetric saddles;
2. relax positions and cell with MOF-FF (:func:`ase_cggpr.mofff.relax.relax`), convergence
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
import re
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from ..errors import CGGPRError
from ..structure_checks import shortest_contact
from ..tasks import Runner, Task, as_runner, run_tasks
from .decorate import LINKERS, RING, Decorated, coarse_grain_decorated, decorate, linker_shapes
from .nets import Net
from .rattle import ORDERS, RattleLevel, get_level, rattle

#: Mean MOF-FF local energy per Zn (eV) of relaxed zni Zn(Im)2: the reference polymorph.
#: Computed with this package: ``relax()`` (positions + cell, max force < 1e-3 eV/Å,
#: max |P_ii| < 50 atm) of the DFT-optimised zni CIF of Dürholt et al. 2019, then
#: ``local_energies``: -0.711955 eV (std over the 16 Zn 0.006 eV). The paper quotes -0.712.
ZNI_REFERENCE_ENERGY = -0.711955

MANIFEST = "manifest.json"


class BuildError(CGGPRError, ValueError):
    """A build cannot go on (a worker process died, a store or folder holds unusable files)."""


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Settings of a dataset build (all recorded in the output's manifest).

    Attributes:
        batches: rattled batches per level and order (different seeds).
        levels: rattle level names (see :data:`~ase_cggpr.dataset.rattle.RATTLE_LEVELS`).
        orders: rattle orders among ``"d"``, ``"r-d"``, ``"d-r"``.
        seed: master seed; every frame's own seed derives from it, the net name, batch,
            level and order (recorded in ``info['seed']``).
        pre_rattle: std (Å) of the symmetry-breaking displacement before relaxation.
        fmax: relaxation force criterion (eV/Å); pmax_atm: pressure criterion (atm).
        max_local_energy: frames with any Zn local energy above this (eV) are dropped. For a linker other than
            Im, a frame is dropped when any Zn's local energy exceeds its local energy in the net's relaxed
            structure by more than ``max_local_energy - reference_energy`` (1.71 eV by default): the CH3 set's
            energies lie about 7.3 eV per Zn below the H set's, so a fixed threshold would keep everything.
        reference_energy: zni mean local energy per Zn (eV) written to every frame's info; None (default): the
            labeller's (:meth:`~ase_cggpr.labellers.Labeller.reference_energy`; MOF-FF: ``ZNI_REFERENCE_ENERGY``).
            The Im energy filter keeps a frame if every Zn local energy is below ``reference_energy +
            (max_local_energy - ZNI_REFERENCE_ENERGY)`` (MOF-FF: 1 eV, as before; for another labeller the same
            1.71 eV above its own zni reference).
        max_zn: nets with more Zn sites are skipped (None: no limit).
        rattle_levels: widths per level name (default:
            :data:`~ase_cggpr.dataset.rattle.RATTLE_LEVELS`); carried with the config so that
            worker processes use the same values.
        linker: ``"Im"`` (Zn(Im)2, the default), ``"mIm"`` (Zn(mIm)2) or ``"mixed:FRACTION"`` (that fraction of
            each net's B sites mIm, chosen per net from ``seed`` and the net's name; the rest Im). Non-Im frames
            carry ``info['linker']``, ``info['linker_sites']`` (comma-separated, per B site) and
            ``info['mim_fraction']``; Im frames are written as before (no linker keys: absent means Im).
        linker_geometry: how frames place the linkers on the (relaxed, rattled) beads: ``"ideal"`` (the hZIF
            recipe: ideal linkers in the plane of the two B->A vectors) or ``"relaxed"`` (each linker as it is in
            the net's MOF-FF-relaxed structure, carried rigidly in its local frame; the ``d`` frame is then the
            relaxed structure itself). ``"auto"`` (default): ideal for Im, relaxed for mIm and mixed: ideal
            methylated linkers on the relaxed beads of small nets put methyl H of neighbouring linkers 1.0-1.4 Å
            apart (ABW: +1.2 eV per Zn above the relaxed net, EDI +16), so every such frame would be filtered.
        labeller: the calculator that relaxes and labels (:func:`~ase_cggpr.labellers.labeller_from_spec`):
            ``"mofff"`` (default, LAMMPS), ``"ace:PATH"`` (python-ace, optional extra) or a
            :class:`~ase_cggpr.labellers.Labeller` (one worker if it cannot be rebuilt from a spec). The manifest
            records its provenance (name, potential file name, SHA-256), not the path; relaxations of one labeller
            are stored apart from another's (:func:`relaxed_store_folder`).
        relax_start: where each net's relaxation starts: ``"decorated"`` (default: the decorated net displaced by
            ``pre_rattle``) or ``"mofff"``: the net's MOF-FF relaxation when the build folder holds one in
            ``start/`` (:func:`restore_starts` puts a MOF-FF relaxed store's files there), else the decorated net.
            For another labeller than MOF-FF this is 3-5 times fewer optimiser steps (ACE, SOD: 119 LBFGS steps
            from the MOF-FF relaxation, more than 500 from the decorated net, to a lower energy). Each relaxed
            file records its start (``info['relax_start']``).
        include_relaxed: also label the net's relaxed structure itself (a frame with ``rattle`` and ``order``
            "relaxed", batch 0), before the ``d`` frame; off by default (the hZIF recipe has no such frame).
    """

    batches: int = 4
    levels: tuple[str, ...] = ("small", "medium", "large")
    orders: tuple[str, ...] = ORDERS
    seed: int = 0
    pre_rattle: float = 0.02
    fmax: float = 1e-3
    pmax_atm: float = 50.0
    max_local_energy: float = 1.0
    reference_energy: float | None = None
    max_zn: int | None = None
    rattle_levels: dict[str, RattleLevel] | None = None
    linker: str = "Im"
    linker_geometry: str = "auto"
    labeller: object = "mofff"
    relax_start: str = "decorated"
    include_relaxed: bool = False

    def __post_init__(self):
        if self.relax_start not in ("decorated", "mofff"):
            raise ValueError(f"relax_start must be decorated or mofff, got {self.relax_start!r}")
        from ..labellers import Labeller, labeller_from_spec

        chosen = labeller_from_spec(self.labeller)
        object.__setattr__(self, "labeller", chosen.spec if chosen.spec is not None else chosen)
        if self.reference_energy is None:
            object.__setattr__(self, "reference_energy", float(chosen.reference_energy()))
        assert isinstance(self.labeller, str | Labeller)
        object.__setattr__(self, "linker", normalise_linker(self.linker))
        if self.linker_geometry == "auto":
            object.__setattr__(self, "linker_geometry", "ideal" if self.linker == "Im" else "relaxed")
        if self.linker_geometry not in ("ideal", "relaxed"):
            raise ValueError(f"linker_geometry must be auto, ideal or relaxed, got {self.linker_geometry!r}")
        if self.linker == "Im" and self.linker_geometry != "ideal":
            raise ValueError("linker_geometry 'relaxed' is for mIm and mixed builds; Im builds follow the hZIF "
                             "recipe (ideal linkers)")
        for level in self.levels:
            self.level(level)
        bad = [o for o in self.orders if o not in ORDERS]
        if bad:
            raise ValueError(f"unknown rattle orders {bad}; choose from {', '.join(ORDERS)}")
        if self.batches < 0:
            raise ValueError(f"batches must be >= 0, got {self.batches}")

    def level(self, name: str) -> RattleLevel:
        """The widths of rattle level ``name``."""
        if self.rattle_levels is not None and name in self.rattle_levels:
            return self.rattle_levels[name]
        return get_level(name)

    def get_labeller(self):
        """The :class:`~ase_cggpr.labellers.Labeller` of this build (one object per process and spec)."""
        from ..labellers import labeller_from_spec

        return labeller_from_spec(self.labeller)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["labeller"] = self.get_labeller().provenance()
        if self.relax_start == "decorated":  # as every build before the option: the manifest unchanged
            del d["relax_start"]
        if not self.include_relaxed:
            del d["include_relaxed"]
        d["levels"], d["orders"] = list(self.levels), list(self.orders)
        d["rattle_levels"] = {k: dataclasses.asdict(self.level(k)) for k in self.levels}
        return d


def normalise_linker(linker: str) -> str:
    """``"Im"``, ``"mIm"`` or ``"mixed:F"`` with F written as Python writes the float (``mixed:.50`` ->
    ``mixed:0.5``), so that one mix has one name (manifest, store folder). Raises ``OptionError`` (a
    ``ValueError``) for anything else."""
    from ..errors import OptionError

    if not isinstance(linker, str):
        raise OptionError(f"linker must be Im, mIm or mixed:FRACTION, got {linker!r}")
    if linker in LINKERS:
        return linker
    if linker.startswith("mixed:"):
        try:
            fraction = float(linker[len("mixed:"):])
        except ValueError:
            fraction = float("nan")
        if not 0.0 <= fraction <= 1.0:
            raise OptionError(f"linker {linker!r}: the mIm fraction must be a number in [0, 1] (e.g. mixed:0.5)")
        return f"mixed:{fraction!r}"
    raise OptionError(f"unknown linker {linker!r}; use Im, mIm or mixed:FRACTION (FRACTION in [0, 1])")


def relaxed_store_folder(linker: str, labeller=None) -> str:
    """The folder of a relaxed store that holds the relaxations of ``linker`` builds: ``relaxed`` for Im (as
    always), ``relaxed-mIm``, ``relaxed-mixed_0.5`` ..., so that relaxations of one linker never stand in for
    another's; for a labeller other than MOF-FF (a spec or :class:`~ase_cggpr.labellers.Labeller`) its name and
    the first 12 hex digits of its potential's SHA-256 follow (``relaxed-ace-1a2b3c4d5e6f``,
    ``relaxed-mIm-ace-...``), so relaxations of one labeller or potential never stand in for another's."""
    from ..labellers import labeller_from_spec

    linker = normalise_linker(linker)
    folder = "relaxed" if linker == "Im" else "relaxed-" + safe_name(linker.replace(":", "_"))
    chosen = labeller_from_spec(labeller)
    return folder if chosen.name == "mofff" else folder + safe_name(chosen.store_folder_suffix())


def safe_name(name: str) -> str:
    """A file-name-safe version of a net name."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


@dataclasses.dataclass(frozen=True)
class NetFiles:
    """Where a build folder keeps one net's files."""

    marker: Path  #: the net's summary (``frames/<net>.json``); its presence means "finished"
    relaxed: Path  #: its relaxed decorated structure (``relaxed/<net>.extxyz``)
    atomistic: Path  #: its kept atomistic frames
    cg: Path  #: its kept coarse-grained frames
    start: Path  #: the structure its relaxation starts from with ``relax_start="mofff"`` (``start/<net>.extxyz``)

    @classmethod
    def of(cls, out_dir: Path, name: str) -> NetFiles:
        stem = safe_name(name)
        frames = Path(out_dir) / "frames"
        return cls(marker=frames / f"{stem}.json", relaxed=Path(out_dir) / "relaxed" / f"{stem}.extxyz",
                   atomistic=frames / f"{stem}.atomistic.extxyz", cg=frames / f"{stem}.cg.extxyz",
                   start=Path(out_dir) / "start" / f"{stem}.extxyz")


def linker_seed(seed: int, net: str) -> int:
    """Seed (32 bit) of a net's mixed-linker assignment: from the build seed and the net name only, so every
    frame of a net, every worker and every re-run gets the same sites."""
    key = [seed, zlib.crc32(net.encode()), zlib.crc32(b"linker")]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def decorate_for(net: Net, config: BuildConfig, cg: Atoms | None = None,
                 shapes: Sequence[np.ndarray] | None = None) -> Decorated:
    """:func:`decorate` with the build's linker (the net's seeded assignment for a mix), with ``shapes``
    (:func:`~ase_cggpr.dataset.decorate.linker_shapes`) instead of ideal linkers when given."""
    return decorate(net, cg, linker=config.linker, seed=linker_seed(config.seed, net.name), shapes=shapes)


def frame_seed(seed: int, net: str, batch: int, level: str, order: str) -> int:
    """Deterministic 32-bit seed of one frame (independent of worker and run order)."""
    key = [seed, zlib.crc32(net.encode()), batch, zlib.crc32(level.encode()),
           zlib.crc32(order.encode())]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------
# the two calls into the core (bead mapping and local energies), isolated here; both are given
# the decorator's connectivity so nothing is guessed from (possibly rattled) distances


def core_connectivity(dec: Decorated, name: str):
    """The core's :class:`ase_cggpr.beads.Connectivity` built from the decorator's connectivity."""
    from ..beads import Connectivity

    n_b = len(dec.linker_zn)
    linkers = tuple(dec.linker_atoms(k) for k in range(n_b))
    ring = np.array(RING)  # the ring atoms lead both linkers (Na, Nb, C2, Ca, Cb)
    return Connectivity(name=name, coarse_grained_input=False,
                    metal_indices=np.arange(dec.n_zn), metal_symbols=("Zn",) * dec.n_zn,
                    linkers=linkers, rings=tuple(lk[ring] for lk in linkers),
                    linker_formulas=dec.linker_formulas, linker_metals=dec.linker_zn.copy())


def local_energies_of(atoms: Atoms, connectivity) -> np.ndarray:
    """Per-Zn local energies (eV) from per-atom ``energies`` (core :func:`local_energies`)."""
    from ..labels import local_energies

    return local_energies(atoms, key="energies", connectivity=connectivity)


def coarse_grained_of(atoms: Atoms, connectivity) -> Atoms:
    """Si/O bead structure (core :func:`coarse_grain`, representation AB2)."""
    from ..beads import coarse_grain

    return coarse_grain(atoms, "AB2", connectivity=connectivity).structure


# ---------------------------------------------------------------------------------------------


def bond_shifts(dec: Decorated, net: Net) -> np.ndarray:
    """Integer image shifts (n_bonds, 3) of the second atom of each bond in ``dec.bonds``.

    Linker atoms are placed unwrapped around their B site, so intra-linker bonds have shift 0;
    a Zn-N bond has minus the B->A shift of the net.
    """
    shifts = np.zeros((len(dec.bonds), 3), dtype=int)
    n_b = len(net.b_neighbours)
    n_intra = len(dec.bonds) - 2 * n_b
    shifts[n_intra:n_intra + n_b] = -net.b_shifts[:, 0]
    shifts[n_intra + n_b:] = -net.b_shifts[:, 1]
    return shifts


def unwrap_like(atoms: Atoms, reference: Atoms) -> Atoms:
    """Copy of ``atoms`` with each atom moved by whole cell vectors to lie nearest to its
    position in ``reference`` (same atom order), undoing any wrapping by a relaxer."""
    out = atoms.copy()
    frac = np.linalg.solve(out.cell.array.T, out.positions.T).T
    ref = np.linalg.solve(reference.cell.array.T, reference.positions.T).T
    frac -= np.round(frac - ref)
    out.positions = frac @ out.cell.array
    return out


def align_restored(atoms: Atoms, dec: Decorated, name: str = "") -> Atoms:
    """A restored relaxation of ``dec`` (the net decorated now) in the net's cell basis and periodic images.

    The frames are decorated on the relaxed beads with the net's image shifts (``b_shifts``), which hold only
    if each Zn and each ring centroid lies at the image nearest its net site and the cell vectors are the net's
    (strained). A stored file that is wrapped, or written in another basis of the same lattice (b -> b + a,
    Niggli-reduced, ...), is brought back: the basis first (the integer matrix relating the two cells), then
    each linker made whole along its bonds, then each Zn and each whole linker moved by cell vectors to the
    image of its net site. Beads are matched, not atoms: a relaxation moves an H atom up to half a cell in a
    small cell, a bead at most a quarter. An aligned file (every one the build stores) comes back bit for bit.
    Raises ``StructureError`` if the atom counts differ or the cells are not bases of one (strained) lattice.
    """
    from ..errors import StructureError
    from .decorate import LINKERS

    reference = dec.atoms
    if len(atoms) != len(reference):
        raise StructureError(f"the stored relaxation has {len(atoms)} atoms, the decorated net {len(reference)}",
                             structure=name or None)
    cell = atoms.cell.array
    m = cell @ np.linalg.inv(reference.cell.array)  # rows: the stored cell vectors in the net's basis
    basis = np.round(m)  # the identity for any strain below 50 % (relaxations reach 32 %)
    if abs(abs(np.linalg.det(basis)) - 1) > 1e-9:
        raise StructureError(f"the stored relaxation's cell {np.round(atoms.cell.cellpar(), 2).tolist()} is not "
                             f"a strained cell of the net's lattice {np.round(reference.cell.cellpar(), 2).tolist()}",
                             structure=name or None)
    out = atoms.copy()
    if (basis != np.eye(3)).any():
        out.set_cell(np.linalg.solve(basis, cell), scale_atoms=False)
    cell = out.cell.array
    pos = out.positions  # edited in place; an atom whose shift is zero keeps its bits

    def frac(v: np.ndarray) -> np.ndarray:
        return np.linalg.solve(cell.T, v.reshape(-1, 3).T).T.reshape(v.shape)

    def move(idx: np.ndarray, k: np.ndarray) -> None:
        moved = k.any(axis=-1)
        pos[idx[moved]] -= k[moved] @ cell

    beads, sites = coarse_grain_decorated(dec, out), coarse_grain_decorated(dec)
    k = np.round(frac(beads.positions) - np.linalg.solve(sites.cell.array.T, sites.positions.T).T)
    move(np.arange(dec.n_zn), k[:dec.n_zn])
    kinds, starts = np.array(dec.kinds), dec.linker_starts()
    for kind in sorted(set(dec.kinds)):  # the linkers of one kind together (Im; mIm)
        of_kind = np.nonzero(kinds == kind)[0]
        base = starts[of_kind]
        symbols, bonds, _ = LINKERS[kind]
        done, todo = {0}, list(bonds)  # whole linkers: each atom at the image of a bonded, placed atom
        while todo:
            for bond in list(todo):
                placed = [a for a in bond if a in done]
                if placed:
                    p, c = placed[0], bond[1] if placed[0] == bond[0] else bond[0]
                    if c not in done:
                        move(base + c, np.round(frac(pos[base + c] - pos[base + p])))
                        done.add(c)
                    todo.remove(bond)
        for j in range(len(symbols)):  # each linker moves as a whole with its bead
            move(base + j, k[dec.n_zn + of_kind])
    return out


def make_frames(net: Net, relaxed_cg: Atoms, config: BuildConfig,
                shapes: Sequence[np.ndarray] | None = None) -> list[tuple[Atoms, dict]]:
    """Unlabelled frames (atoms, info) of one net from its relaxed bead structure (linkers: ideal, or
    ``shapes`` when given)."""
    frames = []
    if "d" in config.orders:
        dec = decorate_for(net, config, relaxed_cg, shapes)
        frames.append((dec.atoms, dict(batch=0, rattle="none", order="d",
                                       seed=frame_seed(config.seed, net.name, 0, "none", "d"))))
    for batch in range(1, config.batches + 1):
        for level_name in config.levels:
            level = config.level(level_name)
            for order in config.orders:
                if order == "d":
                    continue
                seed = frame_seed(config.seed, net.name, batch, level_name, order)
                rng = np.random.default_rng(seed)
                if order == "r-d":
                    cg = rattle(relaxed_cg, level.beads, level.length, level.angle, rng)
                    atoms = decorate_for(net, config, cg, shapes).atoms
                else:
                    atoms = rattle(decorate_for(net, config, relaxed_cg, shapes).atoms, level.atoms, level.length,
                                   level.angle, rng)
                frames.append((atoms, dict(batch=batch, rattle=level_name, order=order,
                                           seed=seed)))
    return frames


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
            from ..errors import StructureError

            raise StructureError(f"{relaxed_path} holds {relaxed.get_chemical_formula()}, not the "
                                 f"{config.linker} decoration {dec.atoms.get_chemical_formula()}: a relaxation "
                                 "of other linkers", structure=net.name)
        made_by = {k: relaxed.info[k] for k in ("labeller", "labeller_potential", "labeller_sha256")
                   if k in relaxed.info} or {"labeller": "mofff"}  # files of earlier builds: MOF-FF
        if made_by != provenance:
            from ..errors import StructureError

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
                from ..errors import StructureError

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
            from ..errors import StructureError
            from ..structure_checks import contact_message

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
        from ..errors import OptionError

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


#: BuildConfig fields that decide a net's relaxed structure (recorded with stored relaxations).
RELAX_SETTINGS = ("seed", "pre_rattle", "fmax", "pmax_atm")
STORE_MANIFEST = "store.json"


def store_relaxed(out_dir: str | Path, store: str | Path, config: BuildConfig) -> int:
    """Copy the relaxed structures of build folder ``out_dir`` that ``store`` lacks into it, gzipped.

    MOF-FF relaxation is nearly all of a build's cost; a store outlives a build folder (e.g. kept in a
    repository) and :func:`restore_relaxed` puts its relaxations into a new folder, so a build can be
    continued elsewhere or later. ``store/store.json`` records the relaxation settings. Each linker has its
    own folder in the store (:func:`relaxed_store_folder`: ``relaxed/`` for Im, ``relaxed-mIm/``, ...), so one
    store serves Im and mIm builds and never restores one into the other. Returns the number of structures
    added.
    """
    out_dir, store = Path(out_dir), Path(store)
    built = out_dir / "manifest.json"
    if built.exists():
        made = json.loads(built.read_text())["config"]
        made_with = {k: made.get(k) for k in RELAX_SETTINGS}
        if made_with != json.loads(json.dumps(_relax_settings(config))):
            raise ValueError(f"{out_dir} was built with relaxation settings {made_with}, not "
                             f"{_relax_settings(config)}")
        if made.get("linker", "Im") != config.linker:
            raise ValueError(f"{out_dir} was built with linker {made.get('linker', 'Im')}, not {config.linker}")
        made_by = made.get("labeller", {"labeller": "mofff"})
        if made_by != config.get_labeller().provenance():
            raise ValueError(f"{out_dir} was built with labeller {made_by}, not {config.get_labeller().provenance()}")
    manifest = store / STORE_MANIFEST
    if manifest.exists():
        _check_store(store, config)
    else:
        store.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"relax_settings": _relax_settings(config)}, indent=1) + "\n")
    folder = store / relaxed_store_folder(config.linker, config.labeller)
    folder.mkdir(parents=True, exist_ok=True)
    added = 0
    for path in sorted((out_dir / "relaxed").glob("*.extxyz")):
        if path.name.endswith(".tmp.extxyz"):
            continue
        dest = folder / (path.name + ".gz")
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))  # same input, same bytes
            tmp.replace(dest)
            added += 1
    return added


def restore_starts(store: str | Path, out_dir: str | Path, config: BuildConfig, *,
                   on_skip: Callable[[Path, str], None] | None = None) -> int:
    """Unpack the MOF-FF relaxations of ``store`` (a MOF-FF relaxed store made with the same relaxation settings
    and linker) into ``out_dir/start``, where a build with ``relax_start="mofff"`` starts its relaxations.
    Returns the number unpacked."""
    mofff = dataclasses.replace(config, labeller="mofff", reference_energy=None)
    return restore_relaxed(store, out_dir, mofff, on_skip=on_skip, into="start")


def restore_relaxed(store: str | Path, out_dir: str | Path, config: BuildConfig, *,
                    on_skip: Callable[[Path, str], None] | None = None, into: str = "relaxed") -> int:
    """Unpack the relaxations kept in ``store`` into build folder ``out_dir`` (those it lacks).

    Refuses (``ValueError``) a store made with other relaxation settings. Only the folder of the build's linker
    is read (:func:`relaxed_store_folder`). Returns the number restored;
    :func:`build_dataset` then labels those nets without relaxing them again.

    A store file that cannot be used (not gzip, truncated, not an extxyz structure) is skipped: it is moved
    aside to ``NAME.unreadable`` (kept for inspection, and so that the net's new relaxation is stored in its
    place), ``on_skip(path, reason)`` is called (default: a warning), and its net is relaxed anew.
    """
    store, out_dir = Path(store), Path(out_dir)
    if not (store / STORE_MANIFEST).exists():
        return 0
    _check_store(store, config)
    target = out_dir / into
    target.mkdir(parents=True, exist_ok=True)
    restored = 0
    for path in sorted((store / relaxed_store_folder(config.linker, config.labeller)).glob("*.extxyz.gz")):
        dest = target / path.name.removesuffix(".gz")
        if not dest.exists():
            try:
                text = gzip.decompress(path.read_bytes())
                read(io.StringIO(text.decode("utf-8")), format="extxyz")  # a whole structure, or refused
            except Exception as error:  # noqa: BLE001 - BadGzipFile, EOFError, zlib.error, parse errors
                aside = _set_aside(path)
                why = f"{_reason(error)}; moved to {aside.name}, its net is relaxed anew"
                if on_skip is None:
                    warnings.warn(f"unreadable relaxed structure {path}: {why}", stacklevel=2)
                else:
                    on_skip(path, why)
                continue
            tmp = dest.with_name(dest.stem + ".tmp.extxyz")
            tmp.write_bytes(text)
            tmp.replace(dest)
            restored += 1
    return restored


def _reason(error: BaseException) -> str:
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _set_aside(path: Path) -> Path:
    """Move an unusable file to ``NAME.unreadable`` (replacing an older one); returns the new path."""
    aside = path.with_name(path.name + ".unreadable")
    os.replace(path, aside)
    return aside


def _relax_settings(config: BuildConfig) -> dict:
    return {k: getattr(config, k) for k in RELAX_SETTINGS}


def _check_store(store: Path, config: BuildConfig) -> None:
    wanted = _relax_settings(config)
    try:
        manifest = json.loads((store / STORE_MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise BuildError(f"cannot read {store / STORE_MANIFEST}: {_reason(error)}") from None
    stored = manifest.get("relax_settings") if isinstance(manifest, dict) else None
    if stored != json.loads(json.dumps(wanted)):
        raise ValueError(f"{store} holds relaxations made with {stored}; this build uses {wanted}")


def merge(out_dir: str | Path, names: Sequence[str], *, compress: bool = False,
          framework_types: Mapping[str, str] | None = None) -> dict:
    """Collect the finished nets ``names`` (in order) into ``atomistic.extxyz`` and ``cg.extxyz``.

    Each net gets ``structure_id`` = its position in ``names`` among nets with frames, and with
    ``framework_types`` (net name -> :func:`~ase_cggpr.dataset.nets.framework_type_key`) ``info['framework_type']``, so
    that cross-validation can keep nets of one topology from different sources in one fold
    (``--group-key framework_type``, the default). Returns a summary: counts, per-level label statistics (eV, raw local
    energies of kept frames) and per-net summaries; it is also written to ``summary.json``.
    """
    out_dir = Path(out_dir)
    suffix = ".extxyz.gz" if compress else ".extxyz"
    summaries = []
    all_at, all_cg = [], []
    sid = 0
    for name in names:
        files = NetFiles.of(out_dir, name)
        if not files.marker.exists():
            summaries.append(dict(net=name, status="missing"))
            continue
        s = json.loads(files.marker.read_text())
        summaries.append(s)
        if s.get("status") != "done" or not s.get("kept"):
            continue
        at = read(files.atomistic, index=":")
        cg = read(files.cg, index=":")
        for a in (*at, *cg):
            a.info["structure_id"] = sid
            if framework_types is not None:
                a.info["framework_type"] = framework_types[name]
        all_at.extend(at)
        all_cg.extend(cg)
        sid += 1
    _write_all(out_dir / f"atomistic{suffix}", all_at)
    _write_all(out_dir / f"cg{suffix}", all_cg)
    summary = summarise(summaries)
    if framework_types is not None:
        summary["n_topologies"] = len({framework_types[s["net"]] for s in summaries if s.get("kept")})
    summary["files"] = [f"atomistic{suffix}", f"cg{suffix}"]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_all(path: Path, images: list[Atoms]) -> None:
    for a in images:
        # ASE's reader moves a per-atom 'energies' column into a calculator: put it back
        results = getattr(a.calc, "results", {}) if a.calc is not None else {}
        if "energies" not in a.arrays and "energies" in results:
            a.arrays["energies"] = np.asarray(results["energies"], dtype=float)
        a.calc = None
    tmp = path.parent / (path.name + ".tmp")
    if path.suffix == ".gz":
        import gzip
        import io

        buf = io.StringIO()
        write(buf, images, format="extxyz")
        with gzip.open(tmp, "wt", compresslevel=9) as fh:
            fh.write(buf.getvalue())
    else:
        write(tmp, images, format="extxyz")
    tmp.replace(path)


def summarise(summaries: Sequence[dict]) -> dict:
    """Totals and per-level label statistics over per-net summaries."""
    out: dict = dict(n_nets=len(summaries))
    for status in ("done", "failed", "skipped", "missing"):
        out[f"n_{status}"] = sum(1 for s in summaries if s.get("status") == status)
    for key in ("generated", "screened_out", "energy_filtered", "kept"):
        out[f"frames_{key}"] = int(sum(s.get(key, 0) for s in summaries))
    out["n_nets_with_frames"] = sum(1 for s in summaries if s.get("kept"))
    out["n_relax_not_converged"] = sum(1 for s in summaries
                                       if s.get("status") == "done" and not s.get("relax_converged"))
    for which in ("label_stats", "label_stats_unfiltered"):
        pooled: dict[str, dict] = {}
        for s in summaries:
            for level, st in s.get(which, {}).items():
                p = pooled.setdefault(level, dict(n=0, sum=0.0, sumsq=0.0, min=np.inf, max=-np.inf))
                p["n"] += st["n"]
                p["sum"] += st["sum"]
                p["sumsq"] += st["sumsq"]
                p["min"] = min(p["min"], st["min"])
                p["max"] = max(p["max"], st["max"])
        out[which] = {lvl: dict(n=p["n"], mean=p["sum"] / p["n"],
                                std=float(np.sqrt(max(p["sumsq"] / p["n"] - (p["sum"] / p["n"]) ** 2, 0))),
                                min=p["min"], max=p["max"]) for lvl, p in pooled.items() if p["n"]}
    out["zn_environments"] = int(sum(v["n"] for v in out["label_stats"].values()))
    out["failures"] = {s["net"]: s.get("reason", "") for s in summaries
                       if s.get("status") in ("failed", "skipped")}  # "missing": not built yet (n_missing)
    out["seconds"] = round(sum(s.get("seconds", 0.0) for s in summaries), 1)
    out["nets"] = list(summaries)
    return out
