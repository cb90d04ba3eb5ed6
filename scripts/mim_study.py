"""What limits the Zn(mIm)2 AB2 models on held-out framework types (issue 33 item 2): a fast study harness.

``scripts/mim_models.py`` trains one model per run (minutes of SOAP each time). This script describes every
environment of the AB2 training/test frames once (Im + mIm, the mIm bead at the ring centroid or at the centre of
mass), keeps only their SOAP dot products with a fixed seeded pool of candidate inducing environments (``prepare``),
and then refits the projected-process (DTC) sparse GPR of :class:`ase_cggpr.regression.SparseGPR` (kernel
``(1 + x.x')**4``, FPS inducing environments drawn from the pool's training-type part) in seconds per variant
(``study``): held-out split seeds, noise, the relaxed frames' weight (their noise divided by ``sqrt(w)``, what
repeating them ``w`` times does), the share of Im training data, inducing count, and leaving nets out.

It is a proxy (the inducing environments come from a pool of ``--pool`` environments of ``--pool-frames`` random
frames, not from the package's reservoir), so a chosen recipe is then trained and checked with
``scripts/mim_models.py``.

    python scripts/mim_study.py prepare --build RUN/build --im-build runs/full --centre ring -o RUN/cache_ring.npz
    python scripts/mim_study.py study RUN/cache_ring.npz -o RUN/study_ring.json
    python scripts/mim_study.py spread RUN/cache_ring.npz --study RUN/study_ring.json   # same-type spread

``prepare --rep atomistic`` does the same for the atomistic model (Zn-centred SOAP of the relaxed, Im none and r-d
frames; labels unshifted: recipe ``rd+none+relaxed``), ``--rd-share`` thinning the r-d frames. ZIF-8 (MOF-FF
relaxed, ``ase_cggpr/data/real_zifs``) is kept as a test-only frame: every fit predicts it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def read_study_frames(args) -> list:
    """The relaxed and r-d frames of both linkers (atomistic: also the Im ``none`` frames; a mIm ``d`` frame is its
    relaxation, kept once as ``relaxed``), r-d frames thinned to ``--rd-share`` (seeded, whole frames), and the
    extra test-only frames (``info['extra']``: ZIF-8 relaxed with MOF-FF, for ``--rep atomistic`` or ring beads)."""
    from ase.io import iread, read
    from mim_models import REAL_ZIFS, mass_centred, read_im_frames, read_mim_frames

    from ase_cggpr import recipes

    if args.rep == "atomistic" or args.centre == "ring":
        mim = read_mim_frames(args.build, args.rep)
    else:
        atomistic = [a for a in iread(args.build / "atomistic.extxyz", index=":") if a.info.get("order") != "d-r"]
        relaxed = []
        for a in atomistic:
            if a.info.get("order") == "d":
                r = a.copy()
                r.info.update(order="relaxed", rattle="relaxed")
                relaxed.append(r)
        mim = recipes.prepare_frames(mass_centred(recipes.prepare_frames(atomistic + relaxed)))
    nets = sorted({a.info["net"] for a in mim})
    im = read_im_frames(args.im_build, nets, args.rep)
    for linker, fr in (("mIm", mim), ("Im", im)):
        for net, d in recipes.linker_relaxation_shift(fr).items():
            args.shifts[(linker, net)] = d
    kinds = {"Im": {"relaxed", "r-d", "none"} if args.rep == "atomistic" else {"relaxed", "r-d"},
             "mIm": {"relaxed", "r-d"}}
    frames = [a for a in mim if a.info["kind"] in kinds["mIm"]] + [a for a in im if a.info["kind"] in kinds["Im"]]
    if args.rd_share < 1:
        rng = np.random.default_rng([args.seed, 5])
        frames = [a for a in frames if a.info["kind"] != "r-d" or rng.random() < args.rd_share]
    if args.rep == "atomistic" or args.centre == "ring":
        zif8 = read(REAL_ZIFS / "zif8_mofff_relaxed.extxyz")
        if args.rep != "atomistic":
            from ase_cggpr.beads import coarse_grain

            cg = coarse_grain(zif8, "AB2").structure
            e = np.full(len(cg), np.nan)
            e[: int(np.sum(zif8.numbers == 30))] = zif8.arrays["e_local"][zif8.numbers == 30]
            cg.info = dict(zif8.info)
            cg.arrays["e_local"] = e
            zif8 = cg
        zif8.info.update(net="ZIF-8", order="relaxed", rattle="relaxed", framework_type="ZIF-8", extra=True)
        frames += recipes.prepare_frames([zif8])
    return frames


def prepare(args) -> None:
    """Describe the study's frames (:func:`read_study_frames`); save labels, metadata and dot products (float32)
    with a seeded pool of candidate inducing environments (drawn from non-extra frames)."""
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.recipes import site_labels

    t0 = time.perf_counter()
    args.shifts = {}
    frames = read_study_frames(args)
    shifts = args.shifts
    print(f"{len(frames)} frames read in {time.perf_counter() - t0:.0f} s", flush=True)
    basis = {k: v for k, v in (("cutoff", args.cutoff), ("atom_sigma", args.atom_sigma)) if v is not None}
    model = CGGPRModel(representation=args.rep, **basis)
    maps = [model.bead_map(a, name=f"{a.info['net']}/{a.info['kind']}") for a in frames]
    model._training_species_of(maps)
    meta: dict[str, list] = {k: [] for k in ("frame", "label", "shifted")}
    finfo: dict[str, list] = {k: [] for k in ("net", "type", "linker", "kind", "converged", "n_zn", "rattle",
                                              "extra")}
    for k, a in enumerate(frames):
        y = site_labels(a)
        linker = str(a.info.get("linker", "Im"))
        delta = shifts.get((linker, a.info["net"]))
        if args.rep == "atomistic":  # each frame's label is the energy of its own atoms: nothing to shift
            shifted = y
        else:
            shifted = y - delta if a.info["kind"] == "r-d" and delta is not None and delta.shape == y.shape else \
                (y if a.info["kind"] == "relaxed" else np.full_like(y, np.nan))
        meta["frame"].append(np.full(len(y), k))
        meta["label"].append(y)
        meta["shifted"].append(shifted)
        finfo["net"].append(str(a.info["net"]))
        finfo["type"].append(str(a.info["framework_type"]))
        finfo["linker"].append(linker)
        finfo["kind"].append(a.info["kind"])
        finfo["converged"].append(bool(a.info.get("relax_converged", True)))
        finfo["n_zn"].append(len(y))
        finfo["rattle"].append(str(a.info.get("rattle", "")))
        finfo["extra"].append(bool(a.info.get("extra", False)))
    counts = np.array([len(m.centre_indices) for m in maps])
    starts = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng([args.seed, 33])
    regular = np.flatnonzero(~np.array(finfo["extra"]))
    pool_frames = np.sort(rng.choice(regular, size=min(args.pool_frames, len(regular)), replace=False))
    rows = np.concatenate([np.arange(starts[f], starts[f + 1]) for f in pool_frames])
    pool = np.sort(rng.choice(rows, size=min(args.pool, len(rows)), replace=False))
    t = time.perf_counter()
    Xc = model.selected_vectors(maps, pool).astype(np.float32)
    print(f"pool: {len(pool)} environments of {len(pool_frames)} frames, D = {Xc.shape[1]} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    dots = np.empty((starts[-1], len(pool)), dtype=np.float32)
    t = time.perf_counter()
    for s in range(0, len(maps), args.chunk):
        X = model.vectors(maps[s:s + args.chunk]).astype(np.float32)
        dots[starts[s]:starts[s] + len(X)] = X @ Xc.T
        if (s // args.chunk) % 10 == 0:
            print(f"  {s + len(maps[s:s + args.chunk])}/{len(maps)} frames ({time.perf_counter() - t:.0f} s)",
                  flush=True)
    np.savez(args.output, dots=dots, Xc=Xc, pool=pool, G=Xc @ Xc.T,
             frame=np.concatenate(meta["frame"]), label=np.concatenate(meta["label"]),
             shifted=np.concatenate(meta["shifted"]), reference_energy=float(frames[0].info["reference_energy"]),
             **{f"f_{k}": np.array(v) for k, v in finfo.items()})
    print(f"wrote {args.output}: {starts[-1]} environments ({time.perf_counter() - t0:.0f} s)", flush=True)


class Cache:
    """A prepared cache: per-environment dot products with the pool, labels and per-frame metadata."""

    def __init__(self, path: Path):
        z = np.load(path)
        self.dots, self.Xc, self.pool, self.G = z["dots"], z["Xc"], z["pool"], z["G"]
        self.frame, self.label, self.shifted = z["frame"], z["label"], z["shifted"]
        self.f = {k[2:]: z[k] for k in z.files if k.startswith("f_")}
        self.pool_frame = self.frame[self.pool]
        self.im_shift = np.full(len(self.label), np.nan)

    def add_im_shift(self, im_build: Path) -> None:
        """Per mIm r-d environment, the same net's Im linker-relaxation shift (``e_none - e_relaxed``, eV)."""
        from mim_models import read_im_frames

        from ase_cggpr import recipes

        nets = sorted(set(self.f["net"].tolist()))
        shifts = recipes.linker_relaxation_shift(read_im_frames(im_build, nets, "AB2"))
        for k in np.flatnonzero((self.f["kind"] == "r-d") & (self.f["linker"] == "mIm")):
            d = shifts.get(self.f["net"][k])
            r = np.flatnonzero(self.frame == k)
            if d is not None and len(d) == len(r):
                self.im_shift[r] = d

    def split(self, seed: int, n_held: int = 50) -> set[str]:
        """The package's split (:func:`ase_cggpr.recipes.split_types` on the union of framework types)."""
        from ase_cggpr.io import held_out_groups

        extra = self.f["extra"] if "extra" in self.f else np.zeros(len(self.f["type"]), dtype=bool)
        types = sorted(set(self.f["type"][~extra].tolist()))
        return set(held_out_groups(types, min(n_held, len(types) // 5), seed=seed).tolist())


def kernel(d: np.ndarray, zeta: int = 4) -> np.ndarray:
    return (1.0 + d.astype(np.float64)) ** zeta


def fit_eval(c: Cache, held: set[str], *, noise: float = 0.2, relaxed_weight: float = 1.0, im_share: float = 1.0,
             inducing: int = 1000, exclude_nets: set[str] = frozenset(), rd_levels: set[str] | None = None,
             unshifted: bool = False, train_linkers: tuple[str, ...] = ("mIm", "Im"), seed: int = 0,
             mim_shift: str = "none", offsets: str | None = None, net_share: float = 1.0,
             test_exclude: set[str] = frozenset(), block: int = 8192) -> dict:
    """Fit on the frames of the types not in ``held`` (r-d labels shifted, relaxed frames weighted), evaluate the
    held-out relaxed frames per linker: per-framework RMSE, mean error, Spearman (eV per Zn) and per-net errors."""
    from scipy.linalg import cho_factor, cho_solve
    from scipy.stats import spearmanr

    from ase_cggpr.regression.selection import farthest_point_sampling

    f = c.f
    extra = f["extra"] if "extra" in f else np.zeros(len(f["type"]), dtype=bool)
    is_held = np.isin(f["type"], list(held)) & ~extra
    ok_frame = ~is_held & ~extra & ~np.isin(f["net"], list(exclude_nets)) & np.isin(f["linker"], train_linkers)
    if rd_levels is not None:
        ok_frame &= (f["kind"] == "relaxed") | np.isin(f["rattle"], list(rd_levels))
    if im_share < 1:
        rng = np.random.default_rng([seed, 7])
        im_nets = sorted(set(f["net"][f["linker"] == "Im"].tolist()))
        keep = set(rng.choice(im_nets, size=int(round(im_share * len(im_nets))), replace=False).tolist())
        ok_frame &= (f["linker"] != "Im") | np.isin(f["net"], list(keep))
    if net_share < 1:  # a seeded share of the training framework types (both linkers): a learning curve
        rng = np.random.default_rng([seed, 11])
        types = sorted(set(f["type"][ok_frame].tolist()))
        keep = set(rng.choice(types, size=int(round(net_share * len(types))), replace=False).tolist())
        ok_frame &= np.isin(f["type"], list(keep))
    y_all = c.label if unshifted else c.shifted
    if mim_shift == "im":  # mIm r-d labels lowered by the same net's Im linker-relaxation shift
        y_all = np.where(np.isfinite(c.im_shift), c.label - c.im_shift, y_all)
    elif mim_shift.startswith("const"):  # a constant (meV) off every mIm r-d label
        rd_mim = (f["kind"] == "r-d")[c.frame] & (f["linker"] == "mIm")[c.frame]
        y_all = np.where(rd_mim, c.label - float(mim_shift[5:]) / 1000, y_all)
    train = ok_frame[c.frame] & np.isfinite(y_all)
    rows = np.flatnonzero(train)
    y = y_all[rows]
    H = None
    if offsets is not None:  # a free constant per r-d group (fitted with the GP; not used in prediction)
        key = {"linker": f["linker"], "level": np.char.add(np.char.add(f["linker"], "/"), f["rattle"])}[offsets]
        groups = np.where(f["kind"] == "r-d", key, "")[c.frame[rows]]
        names = sorted(set(groups.tolist()) - {""})
        H = np.stack([(groups == g).astype(float) for g in names], axis=1)
    sigma = np.where(f["kind"][c.frame[rows]] == "relaxed", noise / np.sqrt(relaxed_weight), noise)
    cand = np.flatnonzero(ok_frame[c.pool_frame])
    S = cand[np.sort(farthest_point_sampling(c.Xc[cand], min(inducing, len(cand)), seed=seed))]
    Kmm = kernel(c.G[np.ix_(S, S)])
    Kmm.flat[:: len(S) + 1] += 1e-6 * float(np.mean(np.diag(Kmm)))  # float32 dot products
    mean = float(y.mean())
    m = len(S) + (0 if H is None else H.shape[1])
    A = np.zeros((m, m))
    A[: len(S), : len(S)] = Kmm
    if H is not None:
        A.flat[len(S) * (m + 1):: m + 1] = 1e-6
    b = np.zeros(m)
    for s in range(0, len(rows), block):
        K = kernel(c.dots[rows[s:s + block]][:, S])
        if H is not None:
            K = np.hstack([K, H[s:s + block]])
        K /= sigma[s:s + block, None]
        A += K.T @ K
        b += K.T @ ((y[s:s + block] - mean) / sigma[s:s + block])
    try:
        alpha = cho_solve(cho_factor(A, lower=True), b)
    except np.linalg.LinAlgError:  # float32 dot products: an inducing set nearly degenerate; clip its spectrum
        w, v = np.linalg.eigh(A)
        alpha = v @ ((v.T @ b) / np.maximum(w, 1e-8 * w.max()))
    out: dict = {"n_train_env": int(len(rows)), "inducing": int(len(S)), "mean": mean}
    if H is not None:
        out["offsets"] = dict(zip(names, (1000 * alpha[len(S):]).round(1).tolist(), strict=True))
        alpha = alpha[: len(S)]
    test_frames = np.flatnonzero(is_held & (f["kind"] == "relaxed") & ~np.isin(f["net"], list(test_exclude)))
    per_net = {}
    for linker in ("mIm", "Im"):
        fr = [k for k in test_frames if f["linker"][k] == linker]
        if not fr:
            continue
        pred, true = [], []
        for k in fr:
            r = np.flatnonzero(c.frame == k)
            p = mean + kernel(c.dots[r][:, S]) @ alpha
            pred.append(p.mean())
            true.append(c.label[r].mean())
            per_net[f"{linker}:{f['net'][k]}"] = float(p.mean() - c.label[r].mean())
        pred, true = np.array(pred), np.array(true)
        err = pred - true
        out[linker] = {"n": len(fr), "rmse": float(np.sqrt(np.mean(err**2))), "bias": float(err.mean()),
                       "spearman": float(spearmanr(pred, true).statistic)}
    out["per_net"] = per_net
    named = {}  # ZIF-8 (an extra frame) and the sod / dia nets, whether held out or not: (predicted, MOF-FF) eV/Zn
    for k in np.flatnonzero((f["kind"] == "relaxed") & (f["linker"] == "mIm")
                            & np.isin(f["net"], list(NAMED))):
        r = np.flatnonzero(c.frame == k)
        named[str(f["net"][k])] = (float((mean + kernel(c.dots[r][:, S]) @ alpha).mean()), float(c.label[r].mean()))
    out["named"] = named
    return out


#: The frames :func:`fit_eval` always predicts: ZIF-8 (MOF-FF relaxed; an extra frame), the build's SOD net and the
#: converged dia net.
NAMED = ("ZIF-8", "SOD", "ZIFs:46_XASGON")


def named_summary(rows: list[dict]) -> str:
    """ZIF-8's error and dia - ZIF-8 (meV per Zn; model vs MOF-FF), mean over the rows (splits)."""
    out = []
    z = [1000 * (r["named"]["ZIF-8"][0] - r["named"]["ZIF-8"][1]) for r in rows if "ZIF-8" in r.get("named", {})]
    if z:
        out.append(f"ZIF-8 err {np.mean(z):+.1f} [{min(z):+.0f}..{max(z):+.0f}]")
    gaps = [(1000 * (r["named"]["ZIFs:46_XASGON"][0] - r["named"]["ZIF-8"][0]),
             1000 * (r["named"]["ZIFs:46_XASGON"][1] - r["named"]["ZIF-8"][1])) for r in rows
            if {"ZIF-8", "ZIFs:46_XASGON"} <= set(r.get("named", {}))]
    if gaps:
        out.append(f"dia-ZIF8 {np.mean([g[0] for g in gaps]):+.0f} (MOF-FF {gaps[0][1]:+.0f})")
    return "; ".join(out)


def summary(rows: list[dict], linker: str = "mIm") -> str:
    r = np.array([x[linker]["rmse"] for x in rows]) * 1000
    b = np.array([x[linker]["bias"] for x in rows]) * 1000
    s = np.array([x[linker]["spearman"] for x in rows])
    return (f"{linker} RMSE {r.mean():5.1f} [{r.min():.1f}-{r.max():.1f}]  bias {b.mean():+5.1f} "
            f"[{b.min():+.1f}..{b.max():+.1f}]  Spearman {s.mean():.2f} [{s.min():.2f}-{s.max():.2f}]")


VARIANTS = {
    "baseline": {},
    "mim_shift_im": {"mim_shift": "im"},
    "mim_const40": {"mim_shift": "const40"},
    "mim_const60": {"mim_shift": "const60"},
    "offsets_linker": {"offsets": "linker"},
    "offsets_level": {"offsets": "level"},
    "noise0.1": {"noise": 0.1},
    "noise0.05": {"noise": 0.05},
    "noise0.4": {"noise": 0.4},
    "relaxed_w4": {"relaxed_weight": 4},
    "relaxed_w16": {"relaxed_weight": 16},
    "relaxed_w64": {"relaxed_weight": 64},
    "im_share0": {"im_share": 0.0},
    "im_share0.5": {"im_share": 0.5},
    "inducing500": {"inducing": 500},
    "inducing2000": {"inducing": 2000},
    "unshifted": {"unshifted": True},
    "rd_small_medium": {"rd_levels": {"small", "medium"}},
}


def parse_variant(text: str, unconverged: set[str]) -> dict:
    """``key=value,key=value`` (fit_eval options; ``exclude_nets=unconverged`` names the unconverged nets,
    ``rd_levels=small+medium``)."""
    opts: dict = {}
    for item in text.split(","):
        key, value = item.split("=", 1)
        if key in ("exclude_nets", "test_exclude"):
            opts[key] = unconverged if value == "unconverged" else set(value.split("+"))
        elif key == "rd_levels":
            opts[key] = set(value.split("+"))
        elif key in ("mim_shift", "offsets"):
            opts[key] = value
        elif key == "unshifted":
            opts[key] = value == "1"
        elif key == "train_linkers":
            opts[key] = tuple(value.split("+"))
        else:
            opts[key] = float(value) if key in ("noise", "relaxed_weight", "im_share", "net_share") else int(value)
    return opts


def study(args) -> None:
    c = Cache(args.cache)
    if args.im_build is not None:
        c.add_im_shift(args.im_build)
    report: dict = {"cache": str(args.cache), "variants": {}}
    names = args.variants or list(VARIANTS)
    unconverged = set(c.f["net"][(c.f["kind"] == "relaxed") & ~c.f["converged"]].tolist())
    variants = dict(VARIANTS)
    variants["no_unconverged"] = {"exclude_nets": unconverged}
    for name in names:
        opts = variants[name] if name in variants else parse_variant(name, unconverged)
        rows = []
        t = time.perf_counter()
        for seed in args.seeds:
            held = c.split(seed)
            rows.append(fit_eval(c, held, seed=seed, **opts) | {"seed": seed, "held_types": sorted(held)})
        line = (f"{name:18s} {summary(rows)} | {summary(rows, 'Im')} | {named_summary(rows)} "
                f"({time.perf_counter() - t:.0f} s)")
        print(line, flush=True)
        report["variants"][name] = {"options": {k: (sorted(v) if isinstance(v, set) else v) for k, v in opts.items()},
                                    "rows": rows, "line": line}
        args.output.write_text(json.dumps(report, indent=1))


def spread(args) -> None:
    """Nets of one framework type: the spread of their relaxed energies per Zn per linker (meV; std and range), and,
    with ``--study`` (a study report), how much of the held-out mIm per-framework error is within-type (each
    type's mean error removed): the part a model that sees only what nets of one type share cannot remove."""
    c = Cache(args.cache)
    f = c.f
    energy = {}
    for k in np.flatnonzero(f["kind"] == "relaxed"):
        if "extra" in f and f["extra"][k]:
            continue
        energy[(str(f["linker"][k]), str(f["net"][k]))] = float(c.label[c.frame == k].mean())
    nets_of: dict[str, list[str]] = {}
    for k in np.flatnonzero((f["kind"] == "relaxed") & (f["linker"] == "mIm")):
        nets_of.setdefault(str(f["type"][k]), []).append(str(f["net"][k]))
    report: dict = {"types": {}}
    for t, nets in sorted(nets_of.items(), key=lambda kv: -len(kv[1])):
        if len(nets) < 2:
            continue
        row = {"nets": len(nets)}
        for linker in ("Im", "mIm"):
            e = np.array([energy[(linker, n)] for n in nets if (linker, n) in energy])
            if len(e) > 1:
                row[linker] = {"n": len(e), "std_meV": 1000 * float(e.std()), "range_meV": 1000 * float(np.ptp(e))}
        report["types"][t] = row
        row["example_nets"] = sorted(nets)[:3]
        print(f"{t:12s} {len(nets):2d} nets (e.g. {', '.join(sorted(nets)[:2])}): " + "; ".join(
            f"{lk} std {row[lk]['std_meV']:5.1f} range {row[lk]['range_meV']:5.1f} meV" for lk in ("Im", "mIm")
            if lk in row), flush=True)
    if args.study is not None:
        study = json.loads(args.study.read_text())
        for name, v in study["variants"].items():
            total, within, truth = [], [], []
            for r in v["rows"]:
                err = {n.split(":", 1)[1]: e for n, e in r["per_net"].items() if n.startswith("mIm:")}
                by_type: dict[str, list[tuple[float, float]]] = {}
                for k in np.flatnonzero((f["kind"] == "relaxed") & (f["linker"] == "mIm")):
                    if str(f["net"][k]) in err:
                        by_type.setdefault(str(f["type"][k]), []).append(
                            (err[str(f["net"][k])], energy[("mIm", str(f["net"][k]))]))
                groups = [np.array(v_) for v_ in by_type.values()]
                n = sum(len(g) for g in groups)
                total.append(float(np.sqrt(sum(np.sum(g[:, 0] ** 2) for g in groups) / n)))
                within.append(float(np.sqrt(sum(np.sum((g[:, 0] - g[:, 0].mean()) ** 2) for g in groups) / n)))
                truth.append(float(np.sqrt(sum(np.sum((g[:, 1] - g[:, 1].mean()) ** 2) for g in groups) / n)))
            report[name] = {"rmse_meV": 1000 * np.array(total), "within_type_error_meV": 1000 * np.array(within),
                            "within_type_spread_meV": 1000 * np.array(truth)}
            print(f"{name}: held-out mIm RMSE {1000 * np.mean(total):.1f} meV per Zn, of it within-type "
                  f"{1000 * np.mean(within):.1f}; MOF-FF's own within-type spread of those nets "
                  f"{1000 * np.mean(truth):.1f} (each sqrt(sum over types of squares / N), mean over splits)",
                  flush=True)
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=1, default=lambda a: np.asarray(a).tolist()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--build", type=Path, required=True, help="labelled mIm build folder (mim_models.py OUT/build)")
    p.add_argument("--im-build", type=Path, required=True)
    p.add_argument("--centre", choices=["ring", "mass"], default="ring")
    p.add_argument("--rep", choices=["AB2", "atomistic"], default="AB2")
    p.add_argument("--rd-share", type=float, default=1.0, help="keep this share of the r-d frames (seeded)")
    p.add_argument("--pool", type=int, default=3000, help="candidate inducing environments")
    p.add_argument("--pool-frames", type=int, default=600, help="frames the pool is drawn from")
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--cutoff", type=float, default=None, help="SOAP cutoff (Å; default the AB2 model's, 9)")
    p.add_argument("--atom-sigma", type=float, default=None, help="SOAP atom_sigma (Å; default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, required=True)
    s = sub.add_parser("study")
    s.add_argument("cache", type=Path)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    s.add_argument("--variants", nargs="*", default=None)
    s.add_argument("--im-build", type=Path, default=None, help="for the mim_shift=im variants")
    s.add_argument("-o", "--output", type=Path, required=True)
    d = sub.add_parser("spread")
    d.add_argument("cache", type=Path)
    d.add_argument("--study", type=Path, default=None, help="a study report: split its errors within / between types")
    d.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args(argv)
    {"prepare": prepare, "study": study, "spread": spread}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
