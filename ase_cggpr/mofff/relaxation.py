"""MOF-FF relaxation of positions and (optionally) cell lengths with LAMMPS, with an explicit convergence check.

Stage 1 follows the dataset authors: ``fix box/relax aniso 0.0`` (target zero pressure, box lengths only)
alternating with fixed-cell minimisations.  On framework cells, and on non-orthogonal ones in particular,
``box/relax`` often stops at once ("linesearch alpha is zero") far from zero pressure once the atoms are
relaxed.  Stage 2 then solves ``P_ii(eps) = 0`` for three homogeneous diagonal strains (LAMMPS frame) by
quasi-Newton (finite-difference Jacobian, Broyden updates), each pressure evaluated on atoms minimised at
fixed cell.  Convergence is always decided by a final single-point check: max |P_ii| < ``pmax_atm`` and
max atomic force < ``fmax``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .atom_types import mofff_typing
from .driver import KCAL_MOL, MOFFFEngine


@dataclass
class LabellerRelaxResult:
    """Outcome of :func:`relax_mofff` (and of the other labellers' relaxations, :func:`ase_cggpr.labellers.ase_relax`);
    ``atoms`` carries a :class:`~ase.calculators.singlepoint.SinglePointCalculator`
    with energy (eV), per-atom energies, forces (eV/Å) and stress (eV/Å^3) of the final state."""

    atoms: Atoms
    converged: bool
    max_force: float  #: eV/Å, largest atomic force norm
    max_pressure_atm: float  #: largest |P_ii| (atm, LAMMPS frame), 0 for fixed-cell relaxations
    n_steps: int  #: LAMMPS minimiser iterations in total
    message: str


def relax_mofff(atoms: Atoms, *, cell: bool = True, fmax: float = 1e-3, pmax_atm: float = 50.0,
          max_cycles: int = 12, bonds: np.ndarray | None = None, shifts: np.ndarray | None = None,
          max_strain_step: float = 0.02, box_relax_maxiter: int = 500,
          verbose: bool = False) -> LabellerRelaxResult:
    """Relax a Zn(Im)2 structure with MOF-FF: positions, and with ``cell=True`` the cell lengths at zero pressure.

    ``fmax``: force criterion (eV/Å, atom force norm); ``pmax_atm``: pressure criterion on the diagonal
    pressure components (atm); ``max_cycles``: cycles of each stage; ``bonds``/``shifts``: explicit
    connectivity (see :func:`~ase_cggpr.mofff.atom_types.mofff_typing`); ``max_strain_step``: largest
    diagonal strain per quasi-Newton step; ``box_relax_maxiter``: iterations per ``box/relax`` minimisation.
    The input is not modified; ``LabellerRelaxResult.converged`` comes from a final single-point check.
    """
    t0 = time.perf_counter()
    top = mofff_typing(atoms, bonds=bonds, shifts=shifts)
    eng = MOFFFEngine(top, atoms.positions, atoms.cell.array)
    ftol = 0.5 * fmax / KCAL_MOL / np.sqrt(3.0)  # max component, so that the force norm is < fmax
    log: list[str] = []

    def say(msg: str) -> None:
        log.append(msg)
        if verbose:
            print(f"[relax {top.name} {time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    def check() -> tuple[float, float]:
        eng.run0()
        res = eng.results()
        f = float(np.linalg.norm(res["forces"], axis=1).max())
        p = float(np.abs(eng.pressure_atm()).max()) if cell else 0.0
        return f, p

    def relax_atoms() -> float:
        f = np.inf
        for _ in range(4):  # CG can stop on a failed line search: restart it a few times
            eng.minimize(ftol)
            f, _ = check()
            if f < fmax:
                break
        return f

    f = relax_atoms()
    p = check()[1]
    say(f"fixed-cell minimisation: max force {f:.2e} eV/Å, max |P_ii| {p:.0f} atm")
    stage = "positions"
    if cell:
        stage = "box/relax"
        for cycle in range(max_cycles):
            if f < fmax and p < pmax_atm:
                break
            p_before = p
            eng.minimize(ftol, box_relax=True, maxiter=box_relax_maxiter)
            f = relax_atoms()
            f, p = check()
            say(f"box/relax cycle {cycle}: max force {f:.2e} eV/Å, max |P_ii| {p:.0f} atm")
            if p > 0.5 * p_before:
                say("box/relax stalls: switching to quasi-Newton diagonal strains")
                break
        if not (f < fmax and p < pmax_atm):
            stage = "strain quasi-Newton"
            f, p = _strain_newton(eng, relax_atoms, check, pmax_atm, fmax, max_cycles, max_strain_step, say)

    f, p = check()
    converged = bool(f < fmax and p < pmax_atm)
    res = eng.results()
    positions, new_cell = eng.get_frame()
    n_steps = eng.n_steps()
    eng.close()
    out = atoms.copy()
    out.calc = None
    out.set_cell(new_cell, scale_atoms=False)
    out.positions = positions
    out.calc = SinglePointCalculator(out, energy=res["energy"], free_energy=res["energy"],
                                     forces=res["forces"], stress=res["stress"], energies=res["energies"])
    status = "converged" if converged else "NOT converged"
    message = (f"{status} after {stage} in {time.perf_counter() - t0:.1f} s: max force {f:.2e} eV/Å "
               f"(< {fmax:g}), max |P_ii| {p:.1f} atm (< {pmax_atm:g})")
    say(message)
    return LabellerRelaxResult(atoms=out, converged=converged, max_force=f, max_pressure_atm=p,
                       n_steps=n_steps, message=message)


def _strain_newton(eng, relax_atoms, check, pmax_atm, fmax, max_cycles, max_step, say):
    """Solve P_ii(eps) = 0 (relaxed ions) for diagonal strains eps of the LAMMPS cell."""
    L0 = eng.box()

    def pressure_at(eps: np.ndarray) -> tuple[np.ndarray, float]:
        eng.set_box(L0 @ np.diag(1.0 + eps))
        f = relax_atoms()
        return eng.pressure_atm(), f

    eps = np.zeros(3)
    eng.run0()
    P = eng.pressure_atm()
    f, _ = check()
    # Jacobian dP/deps by finite differences (relaxed ions; much softer than clamped ions)
    J = np.zeros((3, 3))
    h = 2e-3
    for i in range(3):
        e = eps.copy()
        e[i] += h if P[i] > 0 else -h  # probe in the direction the pressure pushes
        Pi, _ = pressure_at(e)
        J[:, i] = (Pi - P) / (e[i] - eps[i])
    say(f"relaxed-ion dP/deps diagonal {np.diag(J).round(0)} atm")
    for cycle in range(max_cycles):
        try:
            step = -np.linalg.solve(J, P)
        except np.linalg.LinAlgError:
            step = -P / np.where(np.abs(np.diag(J)) > 0, np.diag(J), -1e5)
        big = np.abs(step).max()
        if big > max_step:
            step *= max_step / big
        new = eps + step
        P_new, f = pressure_at(new)
        dP = P_new - P
        J += np.outer(dP - J @ step, step) / float(step @ step)  # Broyden update
        eps, P = new, P_new
        p = float(np.abs(P).max())
        say(f"strain cycle {cycle}: eps {eps.round(5)}, P {P.round(1)} atm, max force {f:.2e} eV/Å")
        if p < pmax_atm and f < fmax:
            break
    f, p = check()
    return f, p
