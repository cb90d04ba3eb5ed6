"""ase-cggpr: Gaussian-process regression on SOAP for ZIF energetics, as an ASE calculator."""

__version__ = "0.1.0"
