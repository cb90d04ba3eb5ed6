"""ase-cggpr: Gaussian-process regression on SOAP for ZIF energetics, as an ASE calculator.

Public API::

    from ase_cggpr import CGGPRCalculator, CGGPRModel, ModelSpec, RigidLinkers, coarse_grain, local_energies
"""

__version__ = "0.2.0"

from .beads import BeadMap, Connectivity, coarse_grain, find_connectivity  # noqa: E402
from .calculator import CGGPRCalculator  # noqa: E402
from .errors import CGGPRError, LabelError, ModelError, StructureError  # noqa: E402
from .labels import local_energies  # noqa: E402
from .model import CGGPRModel  # noqa: E402
from .rigid_linkers import RigidLinkers  # noqa: E402
from .spec import ModelSpec  # noqa: E402

__all__ = ["BeadMap", "CGGPRCalculator", "CGGPRError", "CGGPRModel", "LabelError", "ModelError", "ModelSpec",
           "RigidLinkers", "StructureError", "Connectivity", "coarse_grain", "find_connectivity", "local_energies",
           "__version__"]
