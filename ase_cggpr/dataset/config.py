"""Settings of a dataset build (:class:`BuildConfig`), the per-net file layout and the seeds derived from them."""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from functools import cache
from pathlib import Path

import numpy as np

from ..beads import find_connectivity
from ..errors import CGGPRError
from ..labellers import (
    ZNI_REFERENCE_ENERGY,  # noqa: F401 (defined with the MOF-FF labeller; importable from here)
    Labeller,
    labeller_from_spec,
    relaxed_zni,
)
from .decorate import (
    IDEAL_LINKER,
    IM_GEOMETRY,
    ideal_linker,
    measure_im_geometry,
    normalise_linker,  # noqa: F401 (the one "mixed:F" parser; importable from here)
)
from .rattle import ORDERS, RattleLevel, get_level

MANIFEST = "manifest.json"

#: Each known potential's own ideal imidazolate (``scripts/ideal_linker.py``), keyed by its file's SHA-256.
IDEAL_LINKERS_FILE = Path(__file__).resolve().parents[1] / "data" / "ideal_linkers.json"


@cache
def _known_ideal_linkers() -> dict:
    return json.loads(IDEAL_LINKERS_FILE.read_text())["potentials"]


def im_geometry_of(labeller) -> dict:
    """The ideal imidazolate a build decorates nets with for ``labeller`` (a spec or
    :class:`~ase_cggpr.labellers.Labeller`): ``{"geometry": keyword arguments of
    :func:`~ase_cggpr.dataset.decorate.ideal_linker` (Å, degrees), "source": ...}``.

    MOF-FF: the package's constants (:data:`~ase_cggpr.dataset.decorate.IM_GEOMETRY`, MOF-FF's ideal linker, as
    every MOF-FF build). A potential file listed in ``data/ideal_linkers.json`` (by SHA-256; zif-ace-24: the mean
    imidazolate of zni relaxed with it): the stored geometry. Any other labeller: the mean imidazolate of zni
    relaxed with it (:func:`~ase_cggpr.labellers.relaxed_zni`, the relaxation its zni reference energy uses),
    so frames carry the labeller's own linker, not MOF-FF's (ACE's is 0.038 Å RMS from MOF-FF's).
    """
    chosen = labeller_from_spec(labeller)
    if chosen.name == "mofff":
        return {"geometry": dict(IM_GEOMETRY), "source": "mofff: package constants (decorate.IM_GEOMETRY)"}
    if "_im_geometry" not in chosen.__dict__:  # once per labeller object (one per spec and process)
        sha = chosen.provenance().get("sha256")
        known = _known_ideal_linkers()
        if sha in known:
            found = {"geometry": dict(known[sha]["geometry"]),
                     "source": f"data/ideal_linkers.json ({known[sha]['source']})"}
        else:
            zni = relaxed_zni(chosen)
            measured = measure_im_geometry(zni, find_connectivity(zni, name="zni"))
            found = {"geometry": {k: round(measured[k], 6) for k in IM_GEOMETRY},
                     "source": f"mean over the {measured['n_linkers']} imidazolates of zni relaxed with "
                               f"{chosen.name}"}
        chosen.__dict__["_im_geometry"] = found
    return {"geometry": dict(chosen.__dict__["_im_geometry"]["geometry"]),
            "source": chosen.__dict__["_im_geometry"]["source"]}


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

    Im linkers are placed as the labeller's own ideal imidazolate (:func:`im_geometry_of`, :meth:`ideal_im`):
    MOF-FF's for MOF-FF (frames as before), the labeller's relaxed one for any other; the manifest of a
    non-MOF-FF build records it (``ideal_linker``).
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
        return labeller_from_spec(self.labeller)

    def ideal_im(self) -> np.ndarray:
        """In-plane coordinates (8, 2), Å, of the imidazolate this build places on Im B sites: MOF-FF's
        :data:`~ase_cggpr.dataset.decorate.IDEAL_LINKER` for MOF-FF, the labeller's own (:func:`im_geometry_of`)
        otherwise."""
        if self.get_labeller().name == "mofff":
            return IDEAL_LINKER
        return ideal_linker(**im_geometry_of(self.labeller)["geometry"])

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["labeller"] = self.get_labeller().provenance()
        if self.get_labeller().name != "mofff":  # (MOF-FF manifests as before: no key means MOF-FF's linker)
            d["ideal_linker"] = im_geometry_of(self.labeller)["geometry"]
        if self.relax_start == "decorated":  # as every build before the option: the manifest unchanged
            del d["relax_start"]
        if not self.include_relaxed:
            del d["include_relaxed"]
        d["levels"], d["orders"] = list(self.levels), list(self.orders)
        d["rattle_levels"] = {k: dataclasses.asdict(self.level(k)) for k in self.levels}
        return d


def relaxed_store_folder(linker: str, labeller=None) -> str:
    """The folder of a relaxed store that holds the relaxations of ``linker`` builds: ``relaxed`` for Im (as
    always), ``relaxed-mIm``, ``relaxed-mixed_0.5`` ..., so that relaxations of one linker never stand in for
    another's; for a labeller other than MOF-FF (a spec or :class:`~ase_cggpr.labellers.Labeller`) its name and
    the first 12 hex digits of its potential's SHA-256 follow (``relaxed-ace-1a2b3c4d5e6f``,
    ``relaxed-mIm-ace-...``), so relaxations of one labeller or potential never stand in for another's."""
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


def frame_seed(seed: int, net: str, batch: int, level: str, order: str) -> int:
    """Deterministic 32-bit seed of one frame (independent of worker and run order)."""
    key = [seed, zlib.crc32(net.encode()), batch, zlib.crc32(level.encode()),
           zlib.crc32(order.encode())]
    return int(np.random.SeedSequence(key).generate_state(1)[0])
