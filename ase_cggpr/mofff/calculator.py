"""ASE calculator for MOF-FF (Zn(Im)2, Zn(mIm)2 and mixed Im/mIm cells) evaluated with LAMMPS."""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from .atom_types import MOFFFTyping, mofff_typing
from .driver import MOFFFEngine


class MOFFFCalculator(Calculator):
    """MOF-FF for ZIFs (Dürholt et al., JCTC 2019) through LAMMPS, as an ASE calculator.

    Results: ``energy``/``free_energy`` (eV), ``forces`` (eV/Å), ``energies`` (per atom, eV; LAMMPS
    ``compute pe/atom``), ``stress`` (eV/Å^3, Voigt order).  With ``terms=True`` also ``energies_pair``,
    ``energies_bond``, ``energies_angle``, ``energies_dihedral``, ``energies_improper`` and
    ``energies_kspace`` (per atom, eV; they sum to ``energies``).

    ``bonds`` (``(n_bonds, 2)`` atom indices) and ``shifts`` (their periodic image shifts) fix the
    connectivity; without them it is inferred from distances whenever the atoms (numbers) change.
    One LAMMPS instance is kept and reused while the typing stays the same.
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress"]
    default_parameters: dict[str, Any] = {}

    def __init__(self, *, bonds: np.ndarray | None = None, shifts: np.ndarray | None = None,
                 terms: bool = False, typing: MOFFFTyping | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.bonds = None if bonds is None else np.asarray(bonds, int).reshape(-1, 2)
        self.shifts = None if shifts is None else np.asarray(shifts, int).reshape(-1, 3)
        self.terms = bool(terms)
        self.typing = typing
        self._engine = None
        self._signature: bytes | None = None

    def _engine_for(self, atoms: Atoms, retype: bool):
        if retype or self.typing is None or self.typing.n_atoms != len(atoms):
            self.typing = mofff_typing(atoms, bonds=self.bonds, shifts=self.shifts)
        sig = self.typing.signature()
        if self._engine is None or sig != self._signature:
            self.close()
            self._engine = MOFFFEngine(self.typing, atoms.positions, atoms.cell.array, terms=self.terms)
            self._signature = sig
        return self._engine

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        atoms = self.atoms
        if not atoms.pbc.all():
            raise ValueError("MOFFFCalculator needs a periodic cell (pbc=True in all directions)")
        retype = self.bonds is None and ("numbers" in system_changes or self.typing is None)
        engine = self._engine_for(atoms, retype)
        self.results = engine.evaluate(atoms.positions, atoms.cell.array)

    def close(self) -> None:
        """Free the LAMMPS instance (a new one is made on the next calculation)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
            self._signature = None
