"""Exceptions raised for bad input: each names the structure and what is wrong."""


class CGGPRError(Exception):
    """Base class of all ase-cggpr errors."""


class StructureError(CGGPRError, ValueError):
    """A structure cannot be mapped or described (no metal, broken linker, wrong coordination, ...)."""

    def __init__(self, message: str, *, structure: str | None = None):
        self.structure = structure
        prefix = f"structure {structure!r}: " if structure else ""
        super().__init__(prefix + message)


class LabelError(CGGPRError, KeyError):
    """A label array is missing or malformed."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ModelError(CGGPRError, ValueError):
    """A model file or specification is invalid, or a structure holds what the model never saw."""


class OptionError(CGGPRError, ValueError):
    """An option value is invalid (a screen's threshold, symprec or workers, a calibration file, ...)."""


class DefectWarning(UserWarning):
    """A structure has coordination defects: its defective sites (and those near them) were predicted as the
    model's extrapolation and are flagged untrusted (see :mod:`ase_cggpr.defects`)."""
