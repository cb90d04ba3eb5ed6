"""ase-cggpr: Gaussian-process regression on SOAP for ZIF energetics, as an ASE calculator.

Public API::

    from ase_cggpr import CGGPRCalculator, CGGPRModel, ModelSpec, RigidLinkers, coarse_grain, local_energies
"""

from .beads import BeadMap, Connectivity, coarse_grain, find_connectivity
from .calculator import CGGPRCalculator
from .errors import CGGPRError, LabelError, ModelError, StructureError
from .labels import local_energies
from .model import CGGPRModel
from .rigid_linkers import RigidLinkers
from .spec import ModelSpec
from .version import __version__

__all__ = ["BeadMap", "CGGPRCalculator", "CGGPRError", "CGGPRModel", "LabelError", "ModelError", "ModelSpec",
           "RigidLinkers", "StructureError", "Connectivity", "coarse_grain", "find_connectivity", "local_energies",
           "__version__"]
