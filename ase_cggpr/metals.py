"""What the package knows per metal: one table for everything metal-specific below the species check.

The models themselves are metal-agnostic (a model's species are those of its training data), but the data side
is written for Zn(Im)2: MOF-FF for ZIFs has Zn parameters only, the dataset pipeline decorates nets with Zn, and
the zni reference energy is a Zn(Im)2 polymorph's. Every place that assumes Zn is listed, with what would change
for another metal (e.g. Co for ZIF-67), in ``docs/metals.md``; ``tests/test_metals.py`` checks that the list is
complete and that the places agree with this table.

This module imports nothing from the package (every layer may use it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metal:
    """One framework metal.

    Attributes:
        symbol: element symbol.
        atomic_number: Z (the descriptor's species channel of an atomistic model).
        a_bead: element of its A bead in coarse-grained structures (group 14; Zn -> Si is the hZIF convention).
        centroid_distance: metal to imidazolate ring-centroid distance (Å) nets are scaled to before decoration,
            or None when no dataset is built for this metal.
        mofff_type: its MOF-FF atom type, or None when MOF-FF for ZIFs has no parameters for it.
        zni_reference_energy: mean MOF-FF local energy per metal (eV) of the relaxed zni polymorph, the zero of
            the built datasets' labels, or None.
        reference_source: how ``zni_reference_energy`` was obtained.
    """

    symbol: str
    atomic_number: int
    a_bead: str
    centroid_distance: float | None = None
    mofff_type: str | None = None
    zni_reference_energy: float | None = None
    reference_source: str = ""


#: Every metal with a bead element, in the order of :data:`ase_cggpr.beads.A_BEADS`.
METALS: dict[str, Metal] = {
    "Zn": Metal("Zn", 30, "Si", centroid_distance=3.24, mofff_type="zn4_n4", zni_reference_energy=-0.711955,
                reference_source=("DFT-optimised zni CIF of Dürholt et al. 2019 relaxed with "
                                  "ase_cggpr.mofff.relax_mofff "
                                  "(positions and cell, max force < 1e-3 eV/Å, max |P_ii| < 50 atm), then "
                                  "ase_cggpr.labels.local_energies; std over the 16 Zn 0.006 eV; the paper quotes "
                                  "-0.712")),
    "Co": Metal("Co", 27, "Ge"),
    "Cd": Metal("Cd", 48, "Sn"),
    "Fe": Metal("Fe", 26, "Pb"),
}

#: The metal of the package's data side: MOF-FF typing and parameters, the dataset pipeline's decoration, the
#: zni reference, the default descriptor species and the screen's per-metal CSV columns.
FRAMEWORK_METAL: Metal = METALS["Zn"]
