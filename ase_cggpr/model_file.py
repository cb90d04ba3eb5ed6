"""The model file: where a model's file is found (a path or a shipped name), how it is written, and how it is
read back with every part checked before it is used.

File format (version 1): one ``.npz`` file, read with ``allow_pickle=False``, holding the fitted arrays
(``X`` training vectors, ``alpha`` weights, optionally ``L`` the Cholesky factor; a compact sparse model its
inducing environments as clusters, :mod:`ase_cggpr.inducing`) and ``metadata``, a JSON string recording the format
version, package version, the full :class:`~ase_cggpr.spec.ModelSpec`, the regression parameters (kernel, noise,
training mean), the reference energy, the metals and linkers seen in training and a training-set summary
(:meth:`ase_cggpr.model.CGGPRModel.metadata`). A model trained from total energies (and forces) is the same file
(weights on inducing environments); only its training summary differs (``labels``, ``energy_key``, ``n_totals``,
``forces_key``, ``n_force_components``, ``force_noise``: optional fields, checked when present), so the version
stays 1.

:func:`read_model_file` checks, in this order, and any problem is one :class:`~ase_cggpr.errors.ModelError` naming
the file: the zip container; every member's ``.npy`` header (dtype, shape, and that the member holds exactly the
bytes the header claims, so nothing is read past a lie); the metadata JSON, field by field; every array's shape
and dtype against the metadata and their total size against this machine's memory, all before any array is read;
then finiteness of every array and the consistency of a saved Cholesky factor with the training vectors.

Shipped models (:mod:`ase_cggpr.pretrained`) live in ``ase_cggpr/models/<name>.npz``; :func:`resolve` turns a
shipped name (case-insensitive, aliases) or a path into the file (an existing path wins).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .descriptors import soap_dimension
from .errors import ModelError
from .inducing import cluster_factor, cluster_vectors, pack_clusters, pack_lower, unpack_clusters, unpack_lower
from .kernels import PolynomialKernel
from .outputs import atomic_output
from .regression import EXACT_VARIANCE_MAX, SELECTIONS, SOLVERS, SparseGPR
from .spec import ModelSpec
from .version import __version__

FORMAT_NAME = "ase-cggpr-model"
FORMAT_VERSION = 1
#: Above this many training environments the exact N x N Cholesky factor is neither kept nor saved: the
#: exact solver keeps the small Nyström variance instead (see ase_cggpr.regression.ExactGPR).
MAX_SAVED_FACTOR = EXACT_VARIANCE_MAX
#: Largest metadata member read from a model file (bytes of its numpy unicode string).
MAX_METADATA_BYTES = 64 * 2**20
#: Most members (arrays) a model file may hold.
MAX_MEMBERS = 64
#: Largest ``block_size`` a model file may ask for (rows of the kernel block held at once).
MAX_BLOCK_SIZE = 1_000_000

#: Where the shipped models' files are.
MODELS_DIR = Path(__file__).resolve().parent / "models"

_ALIASES = {"ab2": "AB2", "cg": "AB2", "a": "A", "a-only": "A", "atomistic": "atomistic"}


# -- finding a model's file -------------------------------------------------------------------------------------
def available() -> list[str]:
    """Names of the shipped models present in this installation."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.stem for p in MODELS_DIR.glob("*.npz"))


def canonical_name(name: str) -> str | None:
    """The shipped model a name refers to (case-insensitive, aliases), or None."""
    key = str(name).strip()
    names = available()
    if key in names:
        return key
    alias = _ALIASES.get(key.lower().replace("_", "-"))
    if alias in names:
        return alias
    lower = {n.lower(): n for n in names}
    return lower.get(key.lower())


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The file of a model given as a path or as a shipped name (an existing path wins)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    name = canonical_name(str(name_or_path)) if isinstance(name_or_path, str) else None
    if name is not None:
        return MODELS_DIR / f"{name}.npz"
    return path


def shadowing(name_or_path: str | os.PathLike) -> str:
    """If ``name_or_path`` is a shipped model's name that an existing path (e.g. a folder ``AB2`` in the working
    directory) shadows, the sentence saying so and how to reach the shipped model; else ``""``."""
    path = Path(name_or_path)
    name = canonical_name(str(name_or_path)) if len(path.parts) == 1 else None
    if name is None or not path.exists():
        return ""
    kind = "folder" if path.is_dir() else "file"
    return (f"the {kind} {os.path.abspath(path)} shadows the shipped model {name} (an existing path wins over a "
            f"shipped name): rename it, run from another folder, or give the shipped file {MODELS_DIR / name}.npz")


# -- writing ----------------------------------------------------------------------------------------------------
def saved_arrays(regressor, clusters, *, include_factor: bool) -> dict[str, np.ndarray]:
    """The arrays of a model file: the regressor's state (``get_state``), or with inducing ``clusters`` the compact
    format (the clusters, the weights and the variance factor ``La`` packed in float32: std to ~1e-7 relative; the
    mean's weights stay float64)."""
    _, arrays = regressor.get_state(include_factor=include_factor)
    if clusters:
        arrays = {"alpha": arrays["alpha"], "La_packed": pack_lower(regressor.La_).astype(np.float32),
                  **pack_clusters(clusters)}
    return arrays


def write_model_file(path: Path, record: dict[str, Any], arrays: dict[str, np.ndarray], *,
                     overwrite: bool) -> Path:
    """Write ``record`` (the metadata, JSON) and ``arrays`` to ``path`` through a hidden temporary file removed on
    any exit (error, Ctrl-C) and published in one step. Metadata holding NaN or inf is refused (ModelError)."""
    try:
        metadata = json.dumps(record, indent=1, allow_nan=False)
    except ValueError:
        raise ModelError(f"cannot save {path}: the model's metadata holds NaN or inf "
                         f"(training summary {record.get('training')})") from None
    with atomic_output(path, force=overwrite) as tmp:
        np.savez(tmp, metadata=np.array(metadata), **arrays)
    return path


# -- reading: everything is checked before it is used -----------------------------------------------------------
class ModelFileNotFoundError(ModelError, FileNotFoundError):
    """A model path that does not exist (both a ModelError and a FileNotFoundError)."""


def _bad(path: Path, problem: str) -> ModelError:
    return ModelError(f"cannot load model {path}: {problem}")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _field(path: Path, section: dict, key: str, where: str) -> Any:
    if key not in section:
        raise _bad(path, f"the metadata has no field {where}")
    return section[key]


def _number(path: Path, value: Any, where: str, *, positive: bool = False, low: float | None = None) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and not (positive and value <= 0) and not (low is not None and value < low)
    if not ok:
        kind = ("a positive finite number" if positive else "a finite number" if low is None
                else f"a finite number >= {low}")
        raise _bad(path, f"metadata field {where} must be {kind}, got {_shown(value)}")
    return float(value)


def _integer(path: Path, value: Any, where: str, *, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"between {low} and {high}"
        raise _bad(path, f"metadata field {where} must be an integer {span}, got {_shown(value)}")
    return value


def _strings(path: Path, value: Any, where: str, *, non_empty: bool) -> list[str]:
    if (not isinstance(value, list) or (non_empty and not value)
            or not all(isinstance(v, str) and v for v in value)):
        kind = "a non-empty list" if non_empty else "a list"
        raise _bad(path, f"metadata field {where} must be {kind} of names, got {_shown(value)}")
    return value


#: Spec fields a model file must record (``backend`` may be missing: both backends give the same vectors).
_SPEC_TYPES = {"representation": str, "cutoff": float, "atom_sigma": float, "n_max": int, "l_max": int,
               "cutoff_transition_width": float, "zeta": int, "offset": float, "noise": float, "backend": str}


def _check_spec(path: Path, data: Any) -> ModelSpec:
    if not isinstance(data, dict):
        raise _bad(path, f"metadata field spec must be an object, got {_json_type(data)}")
    for key, kind in _SPEC_TYPES.items():
        if key not in data:
            if key == "backend":
                continue
            raise _bad(path, f"the metadata has no field spec.{key}")
        value = data[key]
        if kind is float:
            _number(path, value, f"spec.{key}")
        elif kind is int:
            _integer(path, value, f"spec.{key}")
        elif not isinstance(value, str):
            raise _bad(path, f"metadata field spec.{key} must be a string, got {_shown(value)}")
    try:
        return ModelSpec.from_dict(data)
    except ModelError as error:
        raise _bad(path, f"metadata field spec: {error}") from None
    except (TypeError, ValueError, KeyError) as error:
        raise _bad(path, f"metadata field spec: {type(error).__name__}: {error}") from None


def _check_regression(path: Path, data: Any, spec: ModelSpec) -> dict:
    if not isinstance(data, dict):
        raise _bad(path, f"metadata field regression must be an object, got {_json_type(data)}")
    kind = data.get("kind")
    if kind not in SOLVERS:
        raise _bad(path, f"metadata field regression.kind is {_shown(kind)}; known solvers: {sorted(SOLVERS)}")
    for key in ("zeta", "offset", "noise"):
        value = _field(path, data, key, f"regression.{key}")
        _number(path, value, f"regression.{key}")
        if not math.isclose(float(value), float(getattr(spec, key)), rel_tol=1e-12, abs_tol=1e-300):
            raise _bad(path, f"metadata field regression.{key} = {_shown(value)} differs from spec.{key} = "
                             f"{getattr(spec, key)!r}")
    if spec.zeta * math.log10(spec.offset + 1.0) > 300:
        raise _bad(path, f"zeta {spec.zeta} with offset {spec.offset}: the kernel (offset + x.x')^zeta reaches "
                         f"10^{spec.zeta * math.log10(spec.offset + 1.0):.0f}, beyond float64 (10^308)")
    _number(path, _field(path, data, "mean", "regression.mean"), "regression.mean")
    if "block_size" in data:
        _integer(path, data["block_size"], "regression.block_size", low=1, high=MAX_BLOCK_SIZE)
    if kind == "exact":
        precisions = SOLVERS["exact"].PRECISIONS
        if data.get("precision", "float64") not in precisions:
            raise _bad(path, f"metadata field regression.precision must be one of {list(precisions)}, "
                             f"got {_shown(data['precision'])}")
    else:
        _integer(path, _field(path, data, "n_inducing", "regression.n_inducing"), "regression.n_inducing", low=1)
        if data.get("selection", "fps") not in SELECTIONS:
            raise _bad(path, f"metadata field regression.selection must be one of {list(SELECTIONS)}, "
                             f"got {_shown(data['selection'])}")
        if "jitter" in data:
            _number(path, data["jitter"], "regression.jitter", low=0.0)
        storage = data.get("inducing_storage", "vectors")
        if storage not in ("vectors", "clusters"):
            raise _bad(path, f"metadata field regression.inducing_storage must be 'vectors' or 'clusters', "
                             f"got {_shown(storage)}")
        if storage == "clusters":
            _integer(path, _field(path, data, "cluster_atoms", "regression.cluster_atoms"),
                     "regression.cluster_atoms", low=1, high=10**9)
        if "seed" in data:
            _integer(path, data["seed"], "regression.seed")
    return data


def _check_training(path: Path, data: Any) -> dict:
    if not isinstance(data, dict):
        raise _bad(path, f"metadata field training must be an object, got {_json_type(data)}")
    _integer(path, _field(path, data, "n_environments", "training.n_environments"), "training.n_environments",
             low=1)
    if data.get("n_structures") is not None:
        _integer(path, data["n_structures"], "training.n_structures", low=1)
    for key in ("label_mean", "label_min", "label_max"):
        if key in data:
            _number(path, data[key], f"training.{key}")
    if "label_std" in data:
        _number(path, data["label_std"], "training.label_std", low=0.0)
    for key in ("n_totals", "n_force_components"):  # trained from total energies (and forces)
        if data.get(key) is not None:
            _integer(path, data[key], f"training.{key}", low=1)
    if data.get("force_noise") is not None:
        _number(path, data["force_noise"], "training.force_noise", positive=True)
    return data


def _check_metadata(path: Path, meta: Any) -> ModelSpec:
    """Check every metadata field the model uses (types, ranges, agreement of spec and regression)."""
    if not isinstance(meta, dict):
        raise _bad(path, f"the metadata is {_json_type(meta)}, not an object: not an ase-cggpr model file")
    if meta.get("format") != FORMAT_NAME:
        raise _bad(path, f"metadata field format is {_shown(meta.get('format'))}, not {FORMAT_NAME!r}: "
                         "not an ase-cggpr model file")
    version = _field(path, meta, "format_version", "format_version")
    _integer(path, version, "format_version", low=1)
    if version > FORMAT_VERSION:
        raise _bad(path, f"it has model format version {version}; this ase-cggpr ({__version__}) reads up to "
                         f"version {FORMAT_VERSION}: please upgrade")
    for key in ("package_version", "created"):
        if key in meta and not isinstance(meta[key], str):
            raise _bad(path, f"metadata field {key} must be a string, got {_shown(meta[key])}")
    spec = _check_spec(path, _field(path, meta, "spec", "spec"))
    _check_regression(path, _field(path, meta, "regression", "regression"), spec)
    _number(path, _field(path, meta, "reference_energy", "reference_energy"), "reference_energy")
    _strings(path, _field(path, meta, "metals", "metals"), "metals", non_empty=True)
    _strings(path, _field(path, meta, "linkers", "linkers"), "linkers", non_empty=False)
    _check_training(path, _field(path, meta, "training", "training"))
    options = meta.get("solver_options")
    if options is not None and not isinstance(options, dict):
        raise _bad(path, f"metadata field solver_options must be an object, got {_json_type(options)}")
    calibration = meta.get("calibration")
    if calibration is not None:
        if not isinstance(calibration, dict):
            raise _bad(path, f"metadata field calibration must be an object or null, got {_json_type(calibration)}")
        _number(path, _field(path, calibration, "threshold", "calibration.threshold"), "calibration.threshold",
                positive=True)
        # issue 31 (optional: older files have neither): the variance calibration and the applicability rule
        variance = calibration.get("variance")
        if variance is not None:
            if not isinstance(variance, dict):
                raise _bad(path, f"metadata field calibration.variance must be an object, got {_json_type(variance)}")
            _number(path, _field(path, variance, "scale", "calibration.variance.scale"), "calibration.variance.scale",
                    positive=True)
            _number(path, _field(path, variance, "floor", "calibration.variance.floor"), "calibration.variance.floor",
                    low=0.0)
            for key in ("distortion", "bead", "strain"):
                if key in variance:
                    _number(path, variance[key], f"calibration.variance.{key}", low=0.0)
            if "ideal_linkers" in variance:
                _number(path, variance["ideal_linkers"], "calibration.variance.ideal_linkers", positive=True)
        rule = calibration.get("applicability")
        if rule is not None:
            if not isinstance(rule, dict):
                raise _bad(path, f"metadata field calibration.applicability must be an object, got {_json_type(rule)}")
            if not isinstance(rule.get("measure"), str):
                raise _bad(path, "metadata field calibration.applicability.measure must be a string, got "
                                 f"{_shown(rule.get('measure'))}")
            _number(path, _field(path, rule, "threshold", "calibration.applicability.threshold"),
                    "calibration.applicability.threshold", positive=True)
            if "std_margin" in rule:
                _number(path, rule["std_margin"], "calibration.applicability.std_margin", low=0.0)
    return spec


def _expected_arrays(meta: dict, spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], tuple[str, ...], bool]]:
    """name -> (shape, allowed dtypes, required) of the arrays a model with this metadata holds."""
    regression = meta["regression"]
    d = soap_dimension(spec)
    if regression["kind"] == "exact":
        n = meta["training"]["n_environments"]
        factor = ("<f8", "<f4") if regression.get("precision") == "mixed" else ("<f8",)
        return {"X": ((n, d), ("<f8",), True), "alpha": ((n,), ("<f8",), True), "L": ((n, n), factor, False)}
    m = regression["n_inducing"]
    if regression.get("inducing_storage") == "clusters":
        n = regression["cluster_atoms"]
        return {"cluster_sizes": ((m,), ("<i8",), True), "cluster_numbers": ((n,), ("<i8",), True),
                "cluster_positions": ((n, 3), ("<f8",), True), "alpha": ((m,), ("<f8",), True),
                "La_packed": ((m * (m + 1) // 2,), ("<f4", "<f8"), True)}
    return {"X": ((m, d), ("<f8",), True), "alpha": ((m,), ("<f8",), True),
            "Lm": ((m, m), ("<f8",), False), "La": ((m, m), ("<f8",), False)}


def _open_archive(path: Path) -> zipfile.ZipFile:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise _bad(path, f"cannot read the file ({error.strerror or error})") from None
    if path.is_dir():
        raise _bad(path, "it is a directory, not a model file")
    if size == 0:
        raise _bad(path, "the file is empty (0 bytes), not an ase-cggpr model (.npz) file")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise _bad(path, f"not a valid .npz (zip) archive ({size:,} bytes): the file is truncated, corrupt or "
                         "not a model file") from None
    except (OSError, ValueError, EOFError) as error:
        raise _bad(path, f"cannot read the archive ({type(error).__name__}: {error})") from None


_MEMBER_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                  RuntimeError)


def _npy_header(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype, bool]:
    """(shape, dtype, fortran_order) from a member's .npy header, checking the member holds exactly its data."""
    name = info.filename
    try:
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise _bad(path, f"member {name} has unsupported .npy format version {version}")
            offset = handle.tell()
    except ModelError:
        raise
    except _MEMBER_ERRORS as error:
        raise _bad(path, f"member {name} has no valid .npy header ({type(error).__name__}: {error})") from None
    if dtype.hasobject:
        raise _bad(path, f"member {name} holds Python objects; model files never do (they are read without "
                         "pickle)")
    claimed = math.prod(shape) * dtype.itemsize
    held = info.file_size - offset
    if claimed != held:
        raise _bad(path, f"member {name}: its header claims shape {shape} of {dtype} ({claimed:,} bytes) but it "
                         f"holds {held:,} bytes: truncated or tampered")
    return shape, dtype, fortran


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    try:
        with archive.open(info) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except MemoryError:
        raise _bad(path, f"not enough memory to read member {info.filename}") from None
    except _MEMBER_ERRORS as error:
        raise _bad(path, f"member {info.filename} is corrupt ({type(error).__name__}: {error})") from None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _all_finite(array: np.ndarray, step: int = 1 << 22) -> bool:
    flat = array.ravel(order="K")
    return all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step))


def _check_rows_normalised(path: Path, X: np.ndarray, step: int = 4096) -> None:
    """SOAP vectors are stored normalised to unit length (or all zero)."""
    for start in range(0, X.shape[0], step):
        norms = np.einsum("ij,ij->i", X[start:start + step], X[start:start + step])
        wrong = ~((np.abs(norms - 1.0) < 1e-5) | (norms == 0.0))
        if wrong.any():
            row = start + int(np.argmax(wrong))
            raise _bad(path, f"training vector {row} of X has squared norm {norms[row - start]:.6g}; SOAP vectors "
                             "are stored normalised to 1: the array is tampered or corrupt")


def _check_factor(path: Path, name: str, L: np.ndarray, X: np.ndarray, *, kernel: PolynomialKernel,
                  diagonal_shift: float | None) -> None:
    """A lower-triangular factor with a positive diagonal; with ``diagonal_shift``, a few of its rows must
    reproduce ``K(X, X) + shift I`` (that it is the factor of this model's kernel)."""
    n = L.shape[0]
    diagonal = np.diagonal(L)
    if n and not (diagonal > 0).all():
        raise _bad(path, f"the Cholesky factor {name} has a non-positive diagonal entry: tampered or corrupt")
    tol = 1e-6 if L.dtype == np.float64 else 2e-3
    for j in sorted({0, n // 2, n - 1} if n else set()):
        if L[j, j + 1:].any():
            raise _bad(path, f"the Cholesky factor {name} is not lower-triangular (row {j}): tampered or corrupt")
        if diagonal_shift is None:
            continue
        product = (L[j:, :j + 1] @ L[j, :j + 1]).astype(np.float64)
        column = kernel(X[j:], X[j:j + 1])[:, 0]
        column[0] += diagonal_shift
        if np.abs(product - column).max() > tol * np.abs(column).max():
            raise _bad(path, f"the Cholesky factor {name} does not factor the kernel of the training vectors "
                             f"X (column {j} differs): tampered or corrupt")


def read_model_file(path: Path) -> tuple[dict, ModelSpec, dict[str, np.ndarray]]:
    """(metadata, spec, arrays) of a model file, every part checked before the next is read."""
    with _open_archive(path) as archive:
        members: dict[str, zipfile.ZipInfo] = {}
        if len(archive.infolist()) > MAX_MEMBERS:
            raise _bad(path, f"the archive holds {len(archive.infolist()):,} members; a model holds a few arrays")
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else ""
            if not key.isidentifier() or key in members:
                raise _bad(path, f"unexpected member {info.filename!r} in the archive: not an ase-cggpr model file")
            members[key] = info
        if "metadata" not in members:
            raise _bad(path, "the archive holds no metadata: not an ase-cggpr model file")
        headers = {key: _npy_header(path, archive, info) for key, info in members.items()}
        shape, dtype, _ = headers.pop("metadata")
        if shape != () or dtype.kind != "U":
            raise _bad(path, f"the metadata member is a {dtype} array of shape {shape}, not a JSON string")
        if dtype.itemsize > MAX_METADATA_BYTES:
            raise _bad(path, f"the metadata member is {dtype.itemsize:,} bytes; more than "
                             f"{MAX_METADATA_BYTES:,} is not a model's metadata")
        try:
            meta = json.loads(str(_read_member(path, archive, members.pop("metadata"))))
        except (json.JSONDecodeError, RecursionError) as error:
            raise _bad(path, f"the metadata is not valid JSON ({error})") from None
        spec = _check_metadata(path, meta)
        expected = _expected_arrays(meta, spec)
        for key, (shape, dtypes, required) in expected.items():
            if key not in headers:
                if required:
                    raise _bad(path, f"the archive has no array {key}")
                continue
            got_shape, got_dtype, _ = headers[key]
            if got_shape != shape:
                why = f" (descriptor dimension {shape[1]} of the spec)" if key == "X" else ""
                raise _bad(path, f"array {key} has shape {got_shape}; the metadata implies {shape}{why}")
            if got_dtype.str not in dtypes:
                raise _bad(path, f"array {key} has dtype {got_dtype}; expected {' or '.join(dtypes)}")
        for key, (_, got_dtype, _) in headers.items():
            if key not in expected and got_dtype.kind not in "fiub":
                raise _bad(path, f"array {key} has dtype {got_dtype}, not a number")
        if ("Lm" in headers) != ("La" in headers):
            raise _bad(path, "the sparse model holds only one of its factors Lm and La")
        total = sum(math.prod(s) * t.itemsize for s, t, _ in headers.values())
        memory = _physical_memory()
        if memory and total > memory:
            raise _bad(path, f"its arrays need {total / 1e9:.1f} GB, more than this machine's memory "
                             f"({memory / 1e9:.1f} GB)")
        arrays = {key: _read_member(path, archive, info) for key, info in members.items()}
    for key, array in arrays.items():
        if not _all_finite(array):
            raise _bad(path, f"array {key} contains NaN or inf")
    regression = meta["regression"]
    if regression.get("inducing_storage") == "clusters":
        arrays = _arrays_from_clusters(path, arrays, spec, regression)
    _check_rows_normalised(path, arrays["X"])
    kernel = PolynomialKernel(spec.zeta, spec.offset)
    if "L" in arrays:
        _check_factor(path, "L", arrays["L"], arrays["X"], kernel=kernel,
                      diagonal_shift=spec.noise**2)
    if "Lm" in arrays:
        Z = arrays["X"]
        prior = float(np.mean(kernel.diagonal(Z)))
        _check_factor(path, "Lm", arrays["Lm"], Z, kernel=kernel,
                      diagonal_shift=float(regression.get("jitter", 1e-10)) * prior)
        _check_factor(path, "La", arrays["La"], Z, kernel=kernel, diagonal_shift=None)
    return meta, spec, arrays


def _arrays_from_clusters(path: Path, arrays: dict, spec: ModelSpec, regression: dict) -> dict:
    """X (the clusters' centre vectors), Lm (recomputed from X) and La (unpacked) of a compact model file."""
    m = int(regression["n_inducing"])
    try:
        clusters = unpack_clusters(arrays, spec, m)
        X = cluster_vectors(clusters, spec)
        gpr = SparseGPR(zeta=spec.zeta, offset=spec.offset, noise=spec.noise,
                        jitter=float(regression.get("jitter", 1e-10)))
        Lm = cluster_factor(clusters, spec, X, gpr)  # = regression.inducing_factor(gpr, X), cached on disk
        La = unpack_lower(arrays["La_packed"], m)
    except ModelError as error:
        raise _bad(path, f"its inducing clusters are invalid: {error}") from None
    return {"X": X, "alpha": arrays["alpha"], "Lm": Lm, "La": La, "clusters": clusters}
