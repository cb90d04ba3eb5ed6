"""Reading and validating AB2 starting nets (4-connected A sites, 2-connected B sites).

Two kinds of input are understood:

* IZA zeolite frameworks as SiO2 CIFs with symmetry operations (T = Si is the A site, O the B site);
* CHIC-1 coarse-grained nets: multi-block CIFs, one block per structure, A = Ar and B = B, with the
  cell scaled so that the shortest A-B distance is 1.0 Å.

Every net is returned in the coarse-grained convention of this package (Si = A = Zn site,
O = B = linker bead) and can be rescaled so that the mean A-B distance equals the Zn to
imidazolate ring-centroid distance of Zn(Im)2, :data:`ZN_CENTROID` (Å).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from ase.neighborlist import neighbor_list

from ..cachedir import cache_dir
from ..errors import StructureError
from ..metals import FRAMEWORK_METAL

#: Zn to imidazolate ring-centroid distance in Zn(Im)2 frameworks (Å).
ZN_CENTROID: float = FRAMEWORK_METAL.centroid_distance  # 3.24

#: Element symbols read as A (4-connected) and B (2-connected) sites.
A_SYMBOLS = ("Si", "Ar", FRAMEWORK_METAL.symbol)
B_SYMBOLS = ("O", "B")

#: Each B site bonds to its two nearest A sites, searched within this factor times the
#: shortest A-B distance of the net.
SEARCH_FACTOR = 1.6
#: A third A site closer than this factor times the second-nearest makes a B site ambiguous.
GAP_FACTOR = 1.15
#: A-B distances (Å) closer than this are equal when ordering a B site's neighbours (symmetry-equal bonds
#: differ only by rounding, which differs between CPUs and BLAS builds).
TIE_TOLERANCE = 1e-6
#: Grid (fractional) on which a net's site coordinates are snapped, so that a site on a cell face (0 or 1 after
#: rounding in a CIF reader's symmetry expansion) is always in the same cell.
FRACTION_GRID = 1e-9


def canonical_fractions(fractions: np.ndarray) -> np.ndarray:
    """Fractional coordinates wrapped into [0, 1), snapped to :data:`FRACTION_GRID`.

    A CIF reader expands symmetry-equivalent sites with floating-point arithmetic, so a site at x = 0 comes out as
    1e-17 or as 1 - 1e-17 (hence in one cell or the next) depending on the CPU's rounding. Snapping first makes the
    cell each site lies in, and everything that follows (bond image shifts, decoration), machine-independent.
    """
    snapped = np.round(np.asarray(fractions, dtype=float) / FRACTION_GRID) * FRACTION_GRID
    return snapped - np.floor(snapped)


@dataclasses.dataclass
class Net:
    """A validated AB2 net.

    Attributes:
        name: net name (file stem, or ``stem:block`` for multi-block CIFs).
        atoms: the net as Si (A) and O (B) atoms, A sites first, periodic in 3D.
        b_neighbours: (n_B, 2) indices of the two A sites bonded to each B site (indices
            into ``atoms``); B site ``k`` is atom ``n_A + k``.
        b_shifts: (n_B, 2, 3) integer cell shifts: the bonded A site of B site ``k`` sits at
            ``positions[a] + b_shifts[k, m] @ cell``. They stay valid under small
            displacements and cell strains, unlike minimum-image guesses.
        source: path of the file it came from.
    """

    name: str
    atoms: Atoms
    b_neighbours: np.ndarray
    b_shifts: np.ndarray
    source: str = ""

    def bond_vectors(self, atoms: Atoms | None = None) -> np.ndarray:
        """B->A bond vectors (n_B, 2, 3) in Å, for ``atoms`` (default: the net's own)."""
        return bond_vectors(self.atoms if atoms is None else atoms, self.b_neighbours,
                            self.b_shifts)

    @property
    def n_a(self) -> int:
        """Number of A (Zn) sites."""
        return int(np.sum(self.atoms.numbers == 14))

    @functools.cached_property
    def framework_type(self) -> str:
        """:func:`framework_type_key` of the net, computed once (a net is not modified after it is read)."""
        return framework_type_key(self)


class NetError(StructureError):
    """A net is not a clean 4-/2-connected AB2 net."""


def _split_cif_blocks(text: str) -> list[tuple[str, str]]:
    """Split CIF text into (block name, block text) pairs."""
    starts = [m for m in re.finditer(r"^data_(\S*)", text, flags=re.M)]
    if not starts:
        return []
    blocks = []
    for k, m in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(text)
        blocks.append((m.group(1), text[m.start():end]))
    return blocks


def read_net_file(path: str | Path) -> list[tuple[str, Atoms | Exception]]:
    """Read every block of a CIF (or any ASE-readable file) as raw atoms.

    Returns (name, atoms) pairs; a block that cannot be parsed gives (name, exception).
    Names are the file stem for single-structure files, ``stem:block`` otherwise.
    """
    path = Path(path)
    if path.suffix.lower() != ".cif":
        try:
            frames = read(path, index=":")
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return [(path.stem, exc)]
        if len(frames) == 1:
            return [(path.stem, frames[0])]
        return [(f"{path.stem}:{k}", a) for k, a in enumerate(frames)]
    blocks = _split_cif_blocks(path.read_text(errors="replace"))
    out: list[tuple[str, Atoms | Exception]] = []
    for block, text in blocks:
        name = path.stem if len(blocks) == 1 else f"{path.stem}:{block}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                atoms = read(io.StringIO(text), format="cif")
            out.append((name, atoms))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out.append((name, exc))
    return out


def analyse_net(atoms: Atoms, name: str = "net", source: str = "") -> Net:
    """Validate ``atoms`` as a clean AB2 net and return it as a :class:`Net`.

    A sites are Si/Ar/Zn, B sites O/B. Bonds are A-B contacts shorter than
    ``BOND_FACTOR`` times the shortest A-B distance; every A must have exactly four, every
    B exactly two, and no A-B contact may be ambiguous (between ``BOND_FACTOR`` and
    ``GAP_FACTOR`` times the shortest). Raises :class:`NetError` naming the net otherwise.
    """
    if not all(atoms.pbc) or atoms.cell.rank != 3:
        raise NetError("not periodic in three dimensions", structure=name)
    symbols = np.array(atoms.get_chemical_symbols())
    is_a = np.isin(symbols, A_SYMBOLS)
    is_b = np.isin(symbols, B_SYMBOLS)
    other = sorted(set(symbols[~(is_a | is_b)]))
    if other:
        raise NetError(f"unexpected elements {other}; A sites must be {A_SYMBOLS}, "
                       f"B sites {B_SYMBOLS}", structure=name)
    if not is_a.any() or not is_b.any():
        raise NetError("needs both A and B sites", structure=name)
    # reorder: A first, then B; every site in the cell, each fractional coordinate in [0, 1) on a 1e-9 grid
    order = np.concatenate([np.where(is_a)[0], np.where(is_b)[0]])
    net = Atoms(["Si"] * int(is_a.sum()) + ["O"] * int(is_b.sum()),
                scaled_positions=canonical_fractions(atoms.get_scaled_positions(wrap=False)[order]),
                cell=atoms.cell.array, pbc=True)
    n_a = int(is_a.sum())
    n_b = len(net) - n_a
    d0 = _shortest_ab(net, n_a, name)
    i, j, d, shifts = neighbor_list("ijdS", net, SEARCH_FACTOR * d0)
    close = i < j
    if (d[close] < 0.6 * d0).any():
        raise NetError(f"overlapping sites closer than {0.6 * d0:.3f}", structure=name)
    ab = (i >= n_a) & (j < n_a)
    i, j, d, shifts = i[ab] - n_a, j[ab], d[ab], shifts[ab]
    # each B site's A neighbours nearest first; symmetry-equal distances (within TIE_TOLERANCE) by A index,
    # then cell shift, so the order (Na/Nb of a linker, hence the atoms each rattle moves) is the same on
    # every machine: unrounded, it followed the last bits of BLAS (OpenBLAS Haswell vs SkylakeX kernels)
    d_key = np.round(d / TIE_TOLERANCE)
    order_ = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, d_key, i))
    i, j, d, shifts = i[order_], j[order_], d[order_], shifts[order_]
    first = np.searchsorted(i, np.arange(n_b))
    count = np.bincount(i, minlength=n_b)
    b_neighbours = np.zeros((n_b, 2), dtype=int)
    b_shifts = np.zeros((n_b, 2, 3), dtype=int)
    for k in range(n_b):
        if count[k] < 2:
            raise NetError(f"B site {k} is bonded to {count[k]} A sites (need 2): "
                           "not a clean AB2 net (interrupted framework?)", structure=name)
        f = first[k]
        if count[k] > 2 and d[f + 2] < GAP_FACTOR * d[f + 1]:
            raise NetError(f"B site {k} has a third A site at {d[f + 2]:.3f} after "
                           f"{d[f]:.3f} and {d[f + 1]:.3f}: ambiguous connectivity",
                           structure=name)
        b_neighbours[k] = j[f:f + 2]
        b_shifts[k] = shifts[f:f + 2]
    count_a = np.bincount(b_neighbours.ravel(), minlength=n_a)
    if (count_a != 4).any():
        k = int(np.argmax(count_a != 4))
        raise NetError(f"A site {k} is bonded to {count_a[k]} B sites (need 4)", structure=name)
    return Net(name=name, atoms=net, b_neighbours=b_neighbours, b_shifts=b_shifts, source=source)


def bond_vectors(atoms: Atoms, b_neighbours: np.ndarray, b_shifts: np.ndarray) -> np.ndarray:
    """B->A bond vectors (n_B, 2, 3) in Å of a net-ordered structure (A sites first)."""
    n_a = len(atoms) - len(b_neighbours)
    pos = atoms.positions
    ends = pos[b_neighbours] + b_shifts @ atoms.cell.array
    return ends - pos[n_a:, None, :]


def coordination_sequences(net: Net, depth: int = 10) -> np.ndarray:
    """Coordination sequence of every A site: (n_A, depth) counts of A sites 1..depth A-B-A bonds away.

    A topological invariant of the periodic net (independent of geometry and cell choice); e.g. SOD
    gives 4, 10, 20, 34, 52, 74, 100, 130, 164, 202 for every site.
    """
    n_a = net.n_a
    neighbours: list[list[tuple[int, tuple[int, int, int]]]] = [[] for _ in range(n_a)]
    for (a0, a1), (s0, s1) in zip(net.b_neighbours, net.b_shifts, strict=True):
        d = tuple(int(x) for x in np.asarray(s1) - np.asarray(s0))
        neighbours[int(a0)].append((int(a1), d))
        neighbours[int(a1)].append((int(a0), (-d[0], -d[1], -d[2])))
    out = np.zeros((n_a, depth), dtype=np.int64)
    for start in range(n_a):
        origin = (start, (0, 0, 0))
        seen = {origin}
        shell = [origin]
        for k in range(depth):
            nxt = []
            for a, (x, y, z) in shell:
                for b, (dx, dy, dz) in neighbours[a]:
                    node = (b, (x + dx, y + dy, z + dz))
                    if node not in seen:
                        seen.add(node)
                        nxt.append(node)
            out[start, k] = len(nxt)
            shell = nxt
    return out


def framework_type_key(net: Net, depth: int = 10) -> str:
    """A short key that is equal for nets of the same topology (their distinct A-site coordination
    sequences and the fraction of sites with each), whatever cell or geometry they come in.

    Coordination sequences to ``depth`` shells tell the known zeolite topologies apart with few exceptions
    (ABW and ATN share theirs: 4 10 21 36 54 78 106 136 173 214); equal keys mean "same net or a rare
    look-alike" for grouping (cross-validation folds, build order), not a proof of identity.
    """
    cs = coordination_sequences(net, depth)
    rows, counts = np.unique(cs, axis=0, return_counts=True)
    g = np.gcd.reduce(counts)
    text = ";".join(f"{c // g}x" + ",".join(map(str, r)) for r, c in zip(rows, counts, strict=True))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _shortest_ab(net: Atoms, n_a: int, name: str) -> float:
    """Shortest A-B distance in ``net`` (Å)."""
    # a small start, doubled until some A-B pair is found
    cutoff = 1.2
    for _ in range(8):
        i, j, d = neighbor_list("ijd", net, cutoff)
        m = (i >= n_a) & (j < n_a)
        if m.any():
            return float(d[m].min())
        cutoff *= 1.5
    raise NetError("no A-B contacts found", structure=name)


def scale_net(net: Net, a_b: float = ZN_CENTROID) -> Net:
    """Return a copy of ``net`` scaled uniformly so that its mean A-B bond length is ``a_b`` (Å)."""
    atoms = net.atoms
    d = np.linalg.norm(net.bond_vectors(), axis=-1)
    factor = a_b / d.mean()
    scaled = atoms.copy()
    scaled.set_cell(atoms.cell.array * factor, scale_atoms=True)
    return dataclasses.replace(net, atoms=scaled)


def read_nets(paths: Iterable[str | Path], *, scale: float | None = ZN_CENTROID, cache: bool = False
              ) -> tuple[list[Net], dict[str, str]]:
    """Read, validate and (by default) rescale every net in ``paths``.

    Args:
        paths: CIF files (multi-block files give one net per block) or directories of them.
        scale: target mean A-B distance (Å), or None to keep the file's scale.
        cache: keep the result (with each net's framework type) in the package's cache directory
            (:func:`ase_cggpr.cachedir.cache_dir`, ``nets/``), keyed by the path and SHA-256 of every input file,
            ``scale`` and this module's source, and read it from there when nothing changed: reading the 566
            shared nets takes 5 min on an idle machine (CIF symmetry expansion, neighbour lists, coordination
            sequences), the cache well under a second.

    Returns:
        (nets, rejected): the clean AB2 nets in input order and, for every block that was
        not usable, its name mapped to the reason.
    """
    files = _expand(paths)
    if cache:
        key = _nets_cache_key(files, scale)
        cached = _load_nets_cache(key)
        if cached is not None:
            return cached
    nets, rejected = _read_nets(files, scale)
    if cache:
        _save_nets_cache(key, nets, rejected)
    return nets, rejected


#: Version of the cached-nets file layout (:func:`read_nets` with ``cache=True``).
NETS_CACHE_FORMAT = 1


def _nets_cache_key(files: list[Path], scale: float | None) -> str:
    digest = hashlib.sha256(f"nets-cache {NETS_CACHE_FORMAT} scale={scale!r}\n".encode())
    digest.update(Path(__file__).read_bytes())  # any change to the analysis invalidates the cache
    for path in files:
        digest.update(f"{path}\0".encode())  # the path as given: each net's ``source`` is cached
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _nets_cache_path(key: str) -> Path:
    return cache_dir() / "nets" / f"{key[:32]}.npz"


def _save_nets_cache(key: str, nets: list[Net], rejected: dict[str, str]) -> None:
    """Write the analysed nets as plain arrays (no pickle), atomically; a cache that cannot be written is skipped."""
    path = _nets_cache_path(key)
    sizes = np.array([len(n.atoms) for n in nets], dtype=np.int64)
    n_b = np.array([len(n.b_neighbours) for n in nets], dtype=np.int64)
    arrays = dict(
        key=np.array(key), names=np.array([n.name for n in nets], dtype=str),
        sources=np.array([n.source for n in nets], dtype=str),
        framework_types=np.array([n.framework_type for n in nets], dtype=str),
        sizes=sizes, n_b=n_b, cells=np.array([n.atoms.cell.array for n in nets]).reshape(-1, 3, 3),
        positions=np.concatenate([n.atoms.positions for n in nets]) if nets else np.zeros((0, 3)),
        b_neighbours=np.concatenate([n.b_neighbours for n in nets]) if nets else np.zeros((0, 2), int),
        b_shifts=np.concatenate([n.b_shifts for n in nets]) if nets else np.zeros((0, 2, 3), int),
        rejected_names=np.array(list(rejected), dtype=str),
        rejected_reasons=np.array(list(rejected.values()), dtype=str))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        return


def _load_nets_cache(key: str) -> tuple[list[Net], dict[str, str]] | None:
    """The cached result of :func:`read_nets` for ``key``, or None when absent, foreign or unreadable."""
    path = _nets_cache_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != key:
                return None
            data = {name: f[name] for name in f.files}
    except (OSError, ValueError, KeyError):
        return None
    nets: list[Net] = []
    start_atom = start_b = 0
    for k, name in enumerate(data["names"]):
        size, n_b = int(data["sizes"][k]), int(data["n_b"][k])
        atoms = Atoms(["Si"] * (size - n_b) + ["O"] * n_b, positions=data["positions"][start_atom:start_atom + size],
                      cell=data["cells"][k], pbc=True)
        net = Net(name=str(name), atoms=atoms, b_neighbours=data["b_neighbours"][start_b:start_b + n_b].copy(),
                  b_shifts=data["b_shifts"][start_b:start_b + n_b].copy(), source=str(data["sources"][k]))
        net.__dict__["framework_type"] = str(data["framework_types"][k])  # the cached_property's value
        nets.append(net)
        start_atom += size
        start_b += n_b
    rejected = {str(n): str(r) for n, r in zip(data["rejected_names"], data["rejected_reasons"], strict=True)}
    return nets, rejected


def _read_nets(files: list[Path], scale: float | None) -> tuple[list[Net], dict[str, str]]:
    nets: list[Net] = []
    rejected: dict[str, str] = {}
    seen: set[str] = set()
    for path in files:
        for name, atoms in read_net_file(path):
            if name in seen:
                rejected[name] = f"duplicate name (also in an earlier file; skipped {path})"
                continue
            seen.add(name)
            if isinstance(atoms, Exception):
                rejected[name] = f"unreadable: {atoms}"
                continue
            try:
                net = analyse_net(atoms, name=name, source=str(path))
            except NetError as exc:
                rejected[name] = str(exc)
                continue
            nets.append(scale_net(net, scale) if scale else net)
    return nets, rejected


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in (".cif", ".extxyz", ".xyz")))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such net file or directory: {p}")
    return out
