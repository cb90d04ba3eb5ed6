"""ASE plugin registration (entry point group ``ase.plugins``).

ASE's plugin system (``ase._4.plugins``, ASE >= 3.29) is experimental, so it is imported defensively:
with an ASE that lacks it, this module simply registers nothing.
"""

try:
    from ase._4.plugins.plugin import CalculatorPlugin
except ImportError:  # older or newer ASE without the experimental plugin API
    __ase_plugins__: set = set()
else:
    __ase_plugins__ = {
        CalculatorPlugin(
            "cggpr",
            implementation="ase_cggpr.calculator.CGGPRCalculator",
            citation="J. Faure Beaulieu et al., Chem. Commun. 2023 (coarse-grained GPR for ZIF energetics)",
        )
    }
