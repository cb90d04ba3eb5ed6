"""MOF-FF coefficients for Zn(Im)2 with H-imidazolate (LAMMPS ``units real``: kcal/mol, Å, degrees, e).

Source: J. P. Dürholt, G. Fraux, F.-X. Coudert, R. Schmid, "Ab Initio Derived Force Fields for Zeolitic
Imidazolate Frameworks: MOF-FF for ZIFs", J. Chem. Theory Comput. 2019, 15, 2420-2432
(doi:10.1021/acs.jctc.8b01041), supporting information, files ``ZIF8_H.in`` (coefficients) and
``ZIF8_H.data`` (charges); published under CC BY 4.0. The numbers below are those published values.

Type numbers (atoms, bonds, angles, dihedrals, impropers) follow the authors' ``ZIF8_H.data`` so that a
topology built by :mod:`ase_cggpr.mofff.atom_types` can be compared with theirs one to one.

Functional forms (LAMMPS styles): ``pair_style buck6d/coul/gauss/dsf 0.9 12.0``, ``bond_style class2``
(MM3-like quartic), ``angle_style class2/p6`` (sixth-order, bond-bond and bond-angle cross terms zero),
``dihedral_style opls``, ``improper_style inversion/harmonic`` and
``special_bonds lj 0.0 0.0 1.0 coul 1.0 1.0 1.0``.
"""

from __future__ import annotations

CITATION = (
    "Dürholt, Fraux, Coudert, Schmid, J. Chem. Theory Comput. 2019, 15, 2420 "
    "(doi:10.1021/acs.jctc.8b01041), CC BY 4.0"
)

#: atom type names in LAMMPS type order (type id = index + 1)
ATOM_TYPES: tuple[str, ...] = ("zn4_n4", "h1_c1", "h1_c1S", "c3_c1h1n1", "c3_h1n2", "n3_c2zn1")
ATOM_TYPE_ID: dict[str, int] = {name: i + 1 for i, name in enumerate(ATOM_TYPES)}
ELEMENT: dict[str, str] = {
    "zn4_n4": "Zn", "h1_c1": "H", "h1_c1S": "H", "c3_c1h1n1": "C", "c3_h1n2": "C", "n3_c2zn1": "N",
}
MASS: dict[str, float] = {
    "zn4_n4": 65.38, "h1_c1": 1.0079, "h1_c1S": 1.0079,
    "c3_c1h1n1": 12.0107, "c3_h1n2": 12.0107, "n3_c2zn1": 14.0067,
}
#: partial charges (e); neutral per Zn(Im)2 formula unit
CHARGE: dict[str, float] = {
    "zn4_n4": 0.52120, "h1_c1": 0.14200, "h1_c1S": 0.11450,
    "c3_c1h1n1": -0.15040, "c3_h1n2": -0.05190, "n3_c2zn1": -0.15320,
}

#: pair_style buck6d/coul/gauss/dsf global settings: smoothing factor, cutoff (Å)
PAIR_SMOOTHING = 0.9
PAIR_CUTOFF = 12.0
#: pair_coeff: (A kcal/mol, B 1/Å, C6 kcal/mol Å^6, C8-like damping coefficient D, alpha_ij 1/Å)
PAIR: dict[tuple[str, str], tuple[float, float, float, float, float]] = {
    ("zn4_n4", "zn4_n4"): (139840, 2.6200873, 15782.979, 39.94184, 0.34105377),
    ("zn4_n4", "h1_c1"): (22685.044, 3.1662269, 822.12825, 2.8200727, 0.45538243),
    ("zn4_n4", "h1_c1S"): (22685.044, 3.1662269, 822.12825, 2.8200727, 0.45538243),
    ("zn4_n4", "c3_c1h1n1"): (37959.338, 2.8235294, 2735.3752, 14.02027, 0.42066187),
    ("zn4_n4", "c3_h1n2"): (37959.338, 2.8235294, 2735.3752, 14.02027, 0.42066187),
    ("zn4_n4", "n3_c2zn1"): (33262.803, 2.8436019, 2297.197, 12.696549, 0.42393446),
    ("h1_c1", "h1_c1"): (3680, 4, 32.805, 0.10690769, 0.9771554),
    ("h1_c1", "h1_c1S"): (3680, 4, 32.805, 0.10690769, 0.9771554),
    ("h1_c1", "c3_c1h1n1"): (6157.8178, 3.4682081, 129.19572, 0.78772886, 0.73006542),
    ("h1_c1", "c3_h1n2"): (6157.8178, 3.4682081, 129.19572, 0.78772886, 0.73006542),
    ("h1_c1", "n3_c2zn1"): (5395.9392, 3.4985423, 107.44754, 0.69731507, 0.7475861),
    ("h1_c1S", "h1_c1S"): (3680, 4, 32.805, 0.10690769, 0.9771554),
    ("h1_c1S", "c3_c1h1n1"): (6157.8178, 3.4682081, 129.19572, 0.78772886, 0.73006542),
    ("h1_c1S", "c3_h1n2"): (6157.8178, 3.4682081, 129.19572, 0.78772886, 0.73006542),
    ("h1_c1S", "n3_c2zn1"): (5395.9392, 3.4985423, 107.44754, 0.69731507, 0.7475861),
    ("c3_c1h1n1", "c3_c1h1n1"): (10304, 3.0612245, 457.17971, 4.5218516, 0.60800971),
    ("c3_c1h1n1", "c3_h1n2"): (10304, 3.0612245, 457.17971, 4.5218516, 0.60800971),
    ("c3_c1h1n1", "n3_c2zn1"): (9029.1333, 3.0848329, 382.56776, 4.0607457, 0.61801895),
    ("c3_h1n2", "c3_h1n2"): (10304, 3.0612245, 457.17971, 4.5218516, 0.60800971),
    ("c3_h1n2", "n3_c2zn1"): (9029.1333, 3.0848329, 382.56776, 4.0607457, 0.61801895),
    ("n3_c2zn1", "n3_c2zn1"): (7912, 3.1088083, 320.01829, 3.6436247, 0.62853936),
}

# Bonded terms: {type id: (atom type names, coefficients)}.  The name tuples are the authors' keys;
# the topology code matches them up to reversal (bonds, angles, dihedrals) or up to permutation of the
# three outer atoms (impropers, centre first).

#: bond_style class2: r0 (Å), K2, K3, K4 (kcal/mol/Å^n)
BONDS: dict[int, tuple[tuple[str, str], tuple[float, float, float, float]]] = {
    1: (("n3_c2zn1", "zn4_n4"), (2.000666, 102.206847, -260.627460, 387.683347)),
    2: (("c3_c1h1n1", "h1_c1"), (1.099702, 387.353267, -987.750831, 1469.279361)),
    3: (("c3_h1n2", "h1_c1S"), (1.098870, 395.222152, -1007.816487, 1499.127025)),
    4: (("c3_c1h1n1", "c3_c1h1n1"), (1.412688, 434.003560, -1106.709078, 1646.229753)),
    5: (("c3_c1h1n1", "n3_c2zn1"), (1.394538, 416.087696, -1061.023624, 1578.272641)),
    6: (("c3_h1n2", "n3_c2zn1"), (1.342398, 549.703117, -1401.742949, 2085.092637)),
}

#: angle_style class2/p6: theta0 (deg), K2..K6 (kcal/mol/rad^n); bb and ba cross terms are zero
ANGLES: dict[int, tuple[tuple[str, str, str], tuple[float, float, float, float, float, float]]] = {
    1: (("n3_c2zn1", "zn4_n4", "n3_c2zn1"),
        (109.471200, 13.115225, -10.520259, 2.411066, -1.726799, 3.109489)),
    2: (("c3_c1h1n1", "c3_c1h1n1", "h1_c1"),
        (142.558595, 13.870059, -11.125742, 2.549832, -1.826183, 3.288452)),
    3: (("h1_c1", "c3_c1h1n1", "n3_c2zn1"),
        (126.753415, 31.225453, -25.047213, 5.740398, -4.111258, 7.403242)),
    4: (("c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1"),
        (121.016885, 64.976103, -52.119991, 11.945022, -8.554992, 15.405183)),
    5: (("h1_c1S", "c3_h1n2", "n3_c2zn1"),
        (121.416607, 35.465568, -28.448383, 6.519889, -4.669527, 8.408531)),
    6: (("n3_c2zn1", "c3_h1n2", "n3_c2zn1"),
        (110.195548, 118.587164, -95.123616, 21.800727, -15.613620, 28.115829)),
    7: (("c3_c1h1n1", "n3_c2zn1", "zn4_n4"),
        (126.654579, 17.835855, -14.306869, 3.278893, -2.348334, 4.228703)),
    8: (("c3_h1n2", "n3_c2zn1", "zn4_n4"),
        (125.511738, 4.922672, -3.948677, 0.904970, -0.648137, 1.167116)),
    9: (("c3_c1h1n1", "n3_c2zn1", "c3_h1n2"),
        (107.648493, 84.449242, -67.740192, 15.524908, -11.118897, 20.022070)),
}

#: dihedral_style opls: K1..K4 (kcal/mol)
DIHEDRALS: dict[int, tuple[tuple[str, str, str, str], tuple[float, float, float, float]]] = {
    1: (("c3_c1h1n1", "n3_c2zn1", "zn4_n4", "n3_c2zn1"), (0.0, 0.0, 0.575661, 0.0)),
    2: (("c3_h1n2", "n3_c2zn1", "zn4_n4", "n3_c2zn1"), (0.0, 0.0, 0.746143, 0.0)),
    3: (("h1_c1", "c3_c1h1n1", "c3_c1h1n1", "h1_c1"), (0.0, 0.669064, 0.0, 0.0)),
    4: (("h1_c1", "c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1"), (0.0, 2.761801, 0.0, 0.0)),
    5: (("n3_c2zn1", "c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1"), (0.0, 14.398838, 0.0, 0.0)),
    6: (("h1_c1", "c3_c1h1n1", "n3_c2zn1", "zn4_n4"), (0.0, 0.093831, 0.0, 0.0)),
    7: (("h1_c1", "c3_c1h1n1", "n3_c2zn1", "c3_h1n2"), (0.0, 13.351879, 0.0, 0.0)),
    8: (("c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1", "zn4_n4"), (0.0, 12.659552, 0.0, 0.0)),
    9: (("c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1", "c3_h1n2"), (0.0, 10.524033, 0.0, 0.0)),
    10: (("h1_c1S", "c3_h1n2", "n3_c2zn1", "zn4_n4"), (0.0, 0.198315, 0.0, 0.0)),
    11: (("h1_c1S", "c3_h1n2", "n3_c2zn1", "c3_c1h1n1"), (0.0, 9.688948, 0.0, 0.0)),
    12: (("n3_c2zn1", "c3_h1n2", "n3_c2zn1", "zn4_n4"), (0.0, 7.164862, 0.0, 0.0)),
    13: (("n3_c2zn1", "c3_h1n2", "n3_c2zn1", "c3_c1h1n1"), (0.0, 23.699680, 0.0, 0.0)),
}

#: improper_style inversion/harmonic (centre atom first): K (kcal/mol), omega0 (deg)
IMPROPERS: dict[int, tuple[tuple[str, str, str, str], tuple[float, float]]] = {
    1: (("c3_c1h1n1", "c3_c1h1n1", "h1_c1", "n3_c2zn1"), (0.000490, 0.0)),
    2: (("c3_h1n2", "h1_c1S", "n3_c2zn1", "n3_c2zn1"), (0.000127, 0.0)),
    3: (("n3_c2zn1", "c3_c1h1n1", "c3_h1n2", "zn4_n4"), (0.000149, 0.0)),
}

#: special_bonds: 1-2, 1-3, 1-4 scaling of LJ-like (buck6d) and Coulomb terms
SPECIAL_LJ = (0.0, 0.0, 1.0)
SPECIAL_COUL = (1.0, 1.0, 1.0)
