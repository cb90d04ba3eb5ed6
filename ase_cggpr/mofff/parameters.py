"""MOF-FF coefficients for Zn(Im)2 (H set) and Zn(mIm)2 (CH3 set) (LAMMPS ``units real``: kcal/mol, Å, deg, e).

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

The 2-methylimidazolate set (``CH3_*``, same paper, ``ZIF8_CH3.in``/``ZIF8_CH3.data``) follows below; a
structure's LAMMPS tables come from :func:`force_field_table` (one set, or both for Im and mIm in one cell).
"""

from __future__ import annotations

from dataclasses import dataclass

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


# --- 2-methylimidazolate (mIm, C4H5N2): the CH3 set ----------------------------------------------------------
# Source: the same paper's supporting information, files ``ZIF8_CH3.in`` (coefficients, the same styles as the
# H set; the file's hybrid bond/angle styles use class2 and class2/p6 only) and ``ZIF8_CH3.data`` (charges,
# absent from the ``.in``); CC BY 4.0.  Type numbers follow ``ZIF8_CH3.data``.  It is a complete set of its
# own: the ring and Zn-N terms of mIm differ from those of Im.  Names as the authors' without their ``@imid``
# suffix; the methyl H is ``h1_c1@me`` (the ring H of C4/C5 is ``h1_c1``).

CH3_CITATION = CITATION + "; ZIF8_CH3.in (coefficients), ZIF8_CH3.data (charges)"
CH3_ATOM_TYPES: tuple[str, ...] = ("zn4_n4", "h1_c1@me", "h1_c1", "c3_c1h1n1", "c3_c1n2", "c4_c1h3", "n3_c2zn1")
CH3_ELEMENT: dict[str, str] = {
    "zn4_n4": "Zn", "h1_c1@me": "H", "h1_c1": "H", "c3_c1h1n1": "C", "c3_c1n2": "C", "c4_c1h3": "C",
    "n3_c2zn1": "N",
}
CH3_MASS: dict[str, float] = {
    "zn4_n4": 65.38, "h1_c1@me": 1.0079, "h1_c1": 1.0079, "c3_c1h1n1": 12.0107, "c3_c1n2": 12.0107,
    "c4_c1h3": 12.0107, "n3_c2zn1": 14.0067,
}
#: partial charges (e) from ``ZIF8_CH3.data``; neutral per Zn(mIm)2 formula unit (mIm: -0.3645 e)
CH3_CHARGE: dict[str, float] = {
    "zn4_n4": 0.72900, "h1_c1@me": 0.13730, "h1_c1": 0.16270, "c3_c1h1n1": -0.19230, "c3_c1n2": 0.49380,
    "c4_c1h3": -0.52760, "n3_c2zn1": -0.34170,
}
#: pair_coeff (as :data:`PAIR`); the types the two sets share have the same pair coefficients in both
CH3_PAIR: dict[tuple[str, str], tuple[float, float, float, float, float]] = {
    ("zn4_n4", "zn4_n4"): (139840, 2.6200873, 15782.979, 39.94184, 0.34105377),
    ("zn4_n4", "h1_c1@me"): (22685.044, 3.1662269, 822.12825, 2.8200727, 0.45538243),
    ("zn4_n4", "h1_c1"): (22685.044, 3.1662269, 822.12825, 2.8200727, 0.45538243),
    ("zn4_n4", "c3_c1h1n1"): (37959.338, 2.8235294, 2735.3752, 14.02027, 0.42066187),
    ("zn4_n4", "c3_c1n2"): (37959.338, 2.8235294, 2735.3752, 14.02027, 0.42066187),
    ("zn4_n4", "c4_c1h3"): (26357.639, 2.7713626, 2124.2155, 18.202956, 0.42066187),
    ("zn4_n4", "n3_c2zn1"): (33262.803, 2.8436019, 2297.197, 12.696549, 0.42393446),
    ("h1_c1@me", "h1_c1@me"): (3680, 4, 32.805, 0.10690769, 0.9771554),
    ("h1_c1@me", "h1_c1"): (3680, 4, 32.805, 0.10690769, 0.9771554),
    ("h1_c1@me", "c3_c1h1n1"): (6157.8178, 3.4682081, 129.19572, 0.78772886, 0.73006542),
    ("h1_c1@me", "c3_c1n2"): (6157.8178, 3.4682081, 129.19572, 0.78772886, 0.73006542),
    ("h1_c1@me", "c4_c1h3"): (4275.7736, 3.3898305, 102.89611, 1.0848184, 0.73006542),
    ("h1_c1@me", "n3_c2zn1"): (5395.9392, 3.4985423, 107.44754, 0.69731507, 0.7475861),
    ("h1_c1", "h1_c1"): (3680, 4, 32.805, 0.10690769, 0.9771554),
    ("h1_c1", "c3_c1h1n1"): (6157.8178, 3.4682081, 129.19572, 0.78772886, 0.73006542),
    ("h1_c1", "c3_c1n2"): (6157.8178, 3.4682081, 129.19572, 0.78772886, 0.73006542),
    ("h1_c1", "c4_c1h3"): (4275.7736, 3.3898305, 102.89611, 1.0848184, 0.73006542),
    ("h1_c1", "n3_c2zn1"): (5395.9392, 3.4985423, 107.44754, 0.69731507, 0.7475861),
    ("c3_c1h1n1", "c3_c1h1n1"): (10304, 3.0612245, 457.17971, 4.5218516, 0.60800971),
    ("c3_c1h1n1", "c3_c1n2"): (10304, 3.0612245, 457.17971, 4.5218516, 0.60800971),
    ("c3_c1h1n1", "c4_c1h3"): (7154.7377, 3, 358.35904, 6, 0.60800971),
    ("c3_c1h1n1", "n3_c2zn1"): (9029.1333, 3.0848329, 382.56776, 4.0607457, 0.61801895),
    ("c3_c1n2", "c3_c1n2"): (10304, 3.0612245, 457.17971, 4.5218516, 0.60800971),
    ("c3_c1n2", "c4_c1h3"): (7154.7377, 3, 358.35904, 6, 0.60800971),
    ("c3_c1n2", "n3_c2zn1"): (9029.1333, 3.0848329, 382.56776, 4.0607457, 0.61801895),
    ("c4_c1h3", "c4_c1h3"): (4968, 2.9411765, 280.22525, 7.9168726, 0.60800971),
    ("c4_c1h3", "n3_c2zn1"): (6269.5148, 3.02267, 300.1523, 5.3998098, 0.61801895),
    ("n3_c2zn1", "n3_c2zn1"): (7912, 3.1088083, 320.01829, 3.6436247, 0.62853936),
}
#: bond_style class2 (as :data:`BONDS`)
CH3_BONDS: dict[int, tuple[tuple[str, str], tuple[float, float, float, float]]] = {
    1: (("n3_c2zn1", "zn4_n4"), (1.985134, 113.479176, -289.371899, 430.440700)),
    2: (("c4_c1h3", "h1_c1@me"), (1.100000, 359.700000, -917.235000, 1364.387062)),
    3: (("c3_c1h1n1", "h1_c1"), (1.101557, 381.423764, -972.630597, 1446.788013)),
    4: (("c3_c1h1n1", "c3_c1h1n1"), (1.385677, 532.030116, -1356.676796, 2018.056734)),
    5: (("c3_c1h1n1", "n3_c2zn1"), (1.387373, 441.564555, -1125.989614, 1674.909551)),
    6: (("c3_c1n2", "c4_c1h3"), (1.488754, 380.947410, -971.415895, 1444.981144)),
    7: (("c3_c1n2", "n3_c2zn1"), (1.363136, 461.335493, -1176.405508, 1749.903193)),
}
#: angle_style class2/p6 (as :data:`ANGLES`)
CH3_ANGLES: dict[int, tuple[tuple[str, str, str], tuple[float, float, float, float, float, float]]] = {
    1: (("n3_c2zn1", "zn4_n4", "n3_c2zn1"),
        (109.471200, 15.037858, -12.062481, 2.764517, -1.979939, 3.565325)),
    2: (("c3_c1h1n1", "c3_c1h1n1", "h1_c1"),
        (145.199561, 12.624067, -10.126281, 2.320773, -1.662131, 2.993040)),
    3: (("h1_c1", "c3_c1h1n1", "n3_c2zn1"),
        (127.822879, 29.788731, -23.894760, 5.476276, -3.922093, 7.062610)),
    4: (("c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1"),
        (105.865231, 106.894391, -85.744365, 19.651161, -14.074107, 25.343590)),
    5: (("c4_c1h3", "c3_c1n2", "n3_c2zn1"),
        (124.160000, 43.164000, -34.623610, 7.935147, -5.683130, 10.233752)),
    6: (("n3_c2zn1", "c3_c1n2", "n3_c2zn1"),
        (112.584066, 108.514295, -87.043755, 19.948959, -14.287390, 25.727653)),
    7: (("h1_c1@me", "c4_c1h3", "h1_c1@me"),
        (107.965000, 43.164000, -34.623610, 7.935147, -5.683130, 10.233752)),
    8: (("c3_c1n2", "c4_c1h3", "h1_c1@me"),
        (110.940000, 43.164000, -34.623610, 7.935147, -5.683130, 10.233752)),
    9: (("c3_c1h1n1", "n3_c2zn1", "zn4_n4"),
        (154.547110, 4.681928, -3.755566, 0.860712, -0.616440, 1.110038)),
    10: (("c3_c1n2", "n3_c2zn1", "zn4_n4"),
        (114.814370, 0.004383, -0.003516, 0.000806, -0.000577, 0.001039)),
    11: (("c3_c1h1n1", "n3_c2zn1", "c3_c1n2"),
        (106.202996, 92.314276, -74.049057, 16.970794, -12.154436, 21.886790)),
}
#: dihedral_style opls (as :data:`DIHEDRALS`)
CH3_DIHEDRALS: dict[int, tuple[tuple[str, str, str, str], tuple[float, float, float, float]]] = {
    1: (("c3_c1h1n1", "n3_c2zn1", "zn4_n4", "n3_c2zn1"), (0.000000, 0.000000, -0.153462, 0.000000)),
    2: (("c3_c1n2", "n3_c2zn1", "zn4_n4", "n3_c2zn1"), (0.000000, 0.000000, -0.899915, 0.000000)),
    3: (("h1_c1", "c3_c1h1n1", "c3_c1h1n1", "h1_c1"), (0.000000, 0.203658, 0.000000, 0.000000)),
    4: (("h1_c1", "c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1"), (0.000000, 1.006427, 0.000000, 0.000000)),
    5: (("n3_c2zn1", "c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1"), (0.000000, 25.692190, 0.000000, 0.000000)),
    6: (("h1_c1", "c3_c1h1n1", "n3_c2zn1", "zn4_n4"), (0.000000, 0.026523, 0.000000, 0.000000)),
    7: (("h1_c1", "c3_c1h1n1", "n3_c2zn1", "c3_c1n2"), (0.000000, 15.486819, 0.000000, 0.000000)),
    8: (("c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1", "zn4_n4"), (0.000000, 4.921258, 0.000000, 0.000000)),
    9: (("c3_c1h1n1", "c3_c1h1n1", "n3_c2zn1", "c3_c1n2"), (0.000000, 22.802956, 0.000000, 0.000000)),
    10: (("n3_c2zn1", "c3_c1n2", "c4_c1h3", "h1_c1@me"), (0.000000, 0.000000, 0.000000, 0.000000)),
    11: (("c4_c1h3", "c3_c1n2", "n3_c2zn1", "zn4_n4"), (0.000000, 0.339638, 0.000000, 0.000000)),
    12: (("c4_c1h3", "c3_c1n2", "n3_c2zn1", "c3_c1h1n1"), (0.000000, 7.744819, 0.000000, 0.000000)),
    13: (("n3_c2zn1", "c3_c1n2", "n3_c2zn1", "zn4_n4"), (0.000000, 0.006208, 0.000000, 0.000000)),
    14: (("n3_c2zn1", "c3_c1n2", "n3_c2zn1", "c3_c1h1n1"), (0.000000, 10.009672, 0.000000, 0.000000)),
}
#: improper_style inversion/harmonic, centre first (as :data:`IMPROPERS`)
CH3_IMPROPERS: dict[int, tuple[tuple[str, str, str, str], tuple[float, float]]] = {
    1: (("c3_c1h1n1", "c3_c1h1n1", "h1_c1", "n3_c2zn1"), (0.056858, 0.000000)),
    2: (("c3_c1n2", "c4_c1h3", "n3_c2zn1", "n3_c2zn1"), (149.418986, 0.000000)),
    3: (("n3_c2zn1", "c3_c1h1n1", "c3_c1n2", "zn4_n4"), (0.225981, 0.000000)),
}


# --- parameter sets and the force-field table of a structure --------------------------------------------------

@dataclass(frozen=True, eq=False)
class ParameterSet:
    """One published MOF-FF parameter set (one linker): type names, charges, pair and bonded coefficients.

    Bonded-term dictionaries map the authors' type id to (type names, coefficients), as :data:`BONDS` etc.
    """

    name: str  #: "H" (imidazolate) or "CH3" (2-methylimidazolate)
    linker: str  #: "Im" or "mIm"
    formula: str  #: linker formula, Hill order: "C3H3N2", "C4H5N2"
    source: str
    atom_types: tuple[str, ...]
    element: dict[str, str]
    mass: dict[str, float]
    charge: dict[str, float]
    pair: dict[tuple[str, str], tuple[float, ...]]
    bonds: dict[int, tuple[tuple[str, ...], tuple[float, ...]]]
    angles: dict[int, tuple[tuple[str, ...], tuple[float, ...]]]
    dihedrals: dict[int, tuple[tuple[str, ...], tuple[float, ...]]]
    impropers: dict[int, tuple[tuple[str, ...], tuple[float, ...]]]

    def pair_coeff(self, a: str, b: str) -> tuple[float, ...]:
        return self.pair[(a, b)] if (a, b) in self.pair else self.pair[(b, a)]


H_SET = ParameterSet(
    name="H", linker="Im", formula="C3H3N2", source=CITATION + "; ZIF8_H.in (coefficients), ZIF8_H.data (charges)",
    atom_types=ATOM_TYPES, element=ELEMENT, mass=MASS, charge=CHARGE, pair=PAIR,
    bonds=BONDS, angles=ANGLES, dihedrals=DIHEDRALS, impropers=IMPROPERS)
CH3_SET = ParameterSet(
    name="CH3", linker="mIm", formula="C4H5N2", source=CH3_CITATION,
    atom_types=CH3_ATOM_TYPES, element=CH3_ELEMENT, mass=CH3_MASS, charge=CH3_CHARGE, pair=CH3_PAIR,
    bonds=CH3_BONDS, angles=CH3_ANGLES, dihedrals=CH3_DIHEDRALS, impropers=CH3_IMPROPERS)
PARAMETER_SETS: dict[str, ParameterSet] = {"H": H_SET, "CH3": CH3_SET}
#: linker formula (Hill order) -> parameter set name
SET_FOR_FORMULA: dict[str, str] = {s.formula: s.name for s in PARAMETER_SETS.values()}
#: H-set type -> CH3-set type with the same pair coefficients (the sets share their vdW and Gaussian-charge
#: parameters per element environment; :func:`force_field_table` checks every pair).  Pairs between an Im atom
#: and an mIm-only type (the methyl C and H) take the CH3 set's coefficients through this map.
PAIR_EQUIVALENT: dict[str, str] = {
    "zn4_n4": "zn4_n4", "h1_c1": "h1_c1", "h1_c1S": "h1_c1", "c3_c1h1n1": "c3_c1h1n1", "c3_h1n2": "c3_c1n2",
    "n3_c2zn1": "n3_c2zn1",
}
#: the Zn type, shared by all sets (type id 1 in every table)
ZN_TYPE = "zn4_n4"


@dataclass(frozen=True, eq=False)
class ForceFieldTable:
    """The LAMMPS type tables for a structure using the parameter sets ``sets``.

    One set: its own type numbers and names (the authors' data file, one to one).  Im and mIm in one cell
    (``key`` "H+CH3"): one Zn type, then the H set's linker types, then the CH3 set's (names qualified
    ``name|H``, ``name|CH3``); bonded types of the H set, then the CH3 set's, then one mixed N-Zn-N angle
    (the mean of the two sets' coefficients: both have theta0 = 109.4712°, so its energy is the mean of
    theirs).  ``atom_id[(set, name)]``, ``bond_id[(set, authors' id)]`` etc. give the LAMMPS type ids.
    """

    key: str
    sets: tuple[str, ...]
    atom_types: tuple[str, ...]
    masses: tuple[float, ...]
    atom_id: dict[tuple[str, str], int]
    pair: tuple[tuple[int, int, tuple[float, ...]], ...]  #: (i, j, coefficients), LAMMPS order
    bonds: dict[int, tuple[float, ...]]
    angles: dict[int, tuple[float, ...]]
    dihedrals: dict[int, tuple[float, ...]]
    impropers: dict[int, tuple[float, ...]]
    bond_id: dict[tuple[str, int], int]
    angle_id: dict[tuple[str, int], int]
    dihedral_id: dict[tuple[str, int], int]
    improper_id: dict[tuple[str, int], int]
    mixed_angle_id: int | None = None  #: N-Zn-N between an Im and an mIm linker


_TABLES: dict[tuple[str, ...], ForceFieldTable] = {}


def force_field_table(sets: tuple[str, ...] | list[str] | set[str]) -> ForceFieldTable:
    """The :class:`ForceFieldTable` for the parameter sets ``sets`` (names in :data:`PARAMETER_SETS`)."""
    key_sets = tuple(sorted(set(sets), key=list(PARAMETER_SETS).index)) or ("H",)
    if key_sets in _TABLES:
        return _TABLES[key_sets]
    unknown = [s for s in key_sets if s not in PARAMETER_SETS]
    if unknown:
        raise ValueError(f"unknown MOF-FF parameter set(s) {unknown}; known: {list(PARAMETER_SETS)}")
    if len(key_sets) == 1:
        ps = PARAMETER_SETS[key_sets[0]]
        ids = {name: i + 1 for i, name in enumerate(ps.atom_types)}
        pair = tuple((*sorted((ids[a], ids[b])), c) for (a, b), c in ps.pair.items())
        table = ForceFieldTable(
            key=ps.name, sets=key_sets, atom_types=ps.atom_types,
            masses=tuple(ps.mass[n] for n in ps.atom_types),
            atom_id={(ps.name, n): i for n, i in ids.items()}, pair=pair,
            bonds={t: c for t, (_, c) in ps.bonds.items()}, angles={t: c for t, (_, c) in ps.angles.items()},
            dihedrals={t: c for t, (_, c) in ps.dihedrals.items()},
            impropers={t: c for t, (_, c) in ps.impropers.items()},
            bond_id={(ps.name, t): t for t in ps.bonds}, angle_id={(ps.name, t): t for t in ps.angles},
            dihedral_id={(ps.name, t): t for t in ps.dihedrals},
            improper_id={(ps.name, t): t for t in ps.impropers})
    else:
        table = _mixed_table(key_sets)
    _TABLES[key_sets] = table
    return table


def _mixed_table(key_sets: tuple[str, ...]) -> ForceFieldTable:
    if key_sets != ("H", "CH3"):
        raise ValueError(f"no mixed MOF-FF table for the sets {key_sets}")
    h, m = H_SET, CH3_SET
    for (a, b), c in h.pair.items():  # the two sets must agree on the pairs they share
        if tuple(c) != tuple(m.pair_coeff(PAIR_EQUIVALENT[a], PAIR_EQUIVALENT[b])):
            raise RuntimeError(f"MOF-FF H and CH3 pair coefficients differ for {a}-{b}")
    names = [ZN_TYPE]
    owner: list[tuple[str, str]] = [("CH3", ZN_TYPE)]
    atom_id = {("H", ZN_TYPE): 1, ("CH3", ZN_TYPE): 1}
    for ps in (h, m):
        for n in ps.atom_types:
            if n == ZN_TYPE:
                continue
            names.append(f"{n}|{ps.name}")
            owner.append((ps.name, n))
            atom_id[(ps.name, n)] = len(names)
    masses = tuple(PARAMETER_SETS[s].mass[n] for s, n in owner)

    def as_ch3(s: str, n: str) -> str:
        return n if s == "CH3" else PAIR_EQUIVALENT[n]

    pair = []
    for i in range(len(names)):
        for j in range(i, len(names)):
            (si, ni), (sj, nj) = owner[i], owner[j]
            if si == sj == "H" or (si == "H" and nj == ZN_TYPE) or (sj == "H" and ni == ZN_TYPE):
                c = h.pair_coeff(ni, nj)
            else:
                c = m.pair_coeff(as_ch3(si, ni), as_ch3(sj, nj))
            pair.append((i + 1, j + 1, tuple(c)))
    tables: dict[str, dict] = {}
    ids: dict[str, dict] = {}
    for term in ("bonds", "angles", "dihedrals", "impropers"):
        coeffs, idmap, offset = {}, {}, 0
        for ps in (h, m):
            spec = getattr(ps, term)
            for t, (_, c) in spec.items():
                coeffs[offset + t] = c
                idmap[(ps.name, t)] = offset + t
            offset += len(spec)
        tables[term], ids[term] = coeffs, idmap
    (h_nzn,) = [c for k, c in h.angles.values() if k == ("n3_c2zn1", ZN_TYPE, "n3_c2zn1")]
    (m_nzn,) = [c for k, c in m.angles.values() if k == ("n3_c2zn1", ZN_TYPE, "n3_c2zn1")]
    if h_nzn[0] != m_nzn[0]:
        raise RuntimeError("MOF-FF H and CH3 N-Zn-N angles have different theta0")
    mixed = len(tables["angles"]) + 1
    tables["angles"][mixed] = (h_nzn[0], *((a + b) / 2 for a, b in zip(h_nzn[1:], m_nzn[1:], strict=True)))
    return ForceFieldTable(
        key="+".join(key_sets), sets=key_sets, atom_types=tuple(names), masses=masses, atom_id=atom_id,
        pair=tuple(pair), bonds=tables["bonds"], angles=tables["angles"], dihedrals=tables["dihedrals"],
        impropers=tables["impropers"], bond_id=ids["bonds"], angle_id=ids["angles"],
        dihedral_id=ids["dihedrals"], improper_id=ids["impropers"], mixed_angle_id=mixed)
