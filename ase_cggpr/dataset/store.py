"""The relaxed store: a build's MOF-FF (or other labeller's) relaxations kept gzipped between builds.

Relaxation is nearly all of a build's cost; :func:`store_relaxed` copies a build folder's relaxations into a store
(one folder per linker and labeller, :func:`~ase_cggpr.dataset.config.relaxed_store_folder`), and
:func:`restore_relaxed` / :func:`restore_starts` put them into a new build folder.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from ase.io import read

from .config import (
    BuildConfig,
    BuildError,
    relaxed_store_folder,
)

#: BuildConfig fields that decide a net's relaxed structure (recorded with stored relaxations).
RELAX_SETTINGS = ("seed", "pre_rattle", "fmax", "pmax_atm")


STORE_MANIFEST = "store.json"


def store_relaxed(out_dir: str | Path, store: str | Path, config: BuildConfig) -> int:
    """Copy the relaxed structures of build folder ``out_dir`` that ``store`` lacks into it, gzipped.

    MOF-FF relaxation is nearly all of a build's cost; a store outlives a build folder (e.g. kept in a
    repository) and :func:`restore_relaxed` puts its relaxations into a new folder, so a build can be
    continued elsewhere or later. ``store/store.json`` records the relaxation settings. Each linker has its
    own folder in the store (:func:`relaxed_store_folder`: ``relaxed/`` for Im, ``relaxed-mIm/``, ...), so one
    store serves Im and mIm builds and never restores one into the other. Returns the number of structures
    added.
    """
    out_dir, store = Path(out_dir), Path(store)
    built = out_dir / "manifest.json"
    if built.exists():
        made = json.loads(built.read_text())["config"]
        made_with = {k: made.get(k) for k in RELAX_SETTINGS}
        if made_with != json.loads(json.dumps(_relax_settings(config))):
            raise ValueError(f"{out_dir} was built with relaxation settings {made_with}, not "
                             f"{_relax_settings(config)}")
        if made.get("linker", "Im") != config.linker:
            raise ValueError(f"{out_dir} was built with linker {made.get('linker', 'Im')}, not {config.linker}")
        made_by = made.get("labeller", {"labeller": "mofff"})
        if made_by != config.get_labeller().provenance():
            raise ValueError(f"{out_dir} was built with labeller {made_by}, not {config.get_labeller().provenance()}")
    manifest = store / STORE_MANIFEST
    if manifest.exists():
        _check_store(store, config)
    else:
        store.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"relax_settings": _relax_settings(config)}, indent=1) + "\n")
    folder = store / relaxed_store_folder(config.linker, config.labeller)
    folder.mkdir(parents=True, exist_ok=True)
    added = 0
    for path in sorted((out_dir / "relaxed").glob("*.extxyz")):
        if path.name.endswith(".tmp.extxyz"):
            continue
        dest = folder / (path.name + ".gz")
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))  # same input, same bytes
            tmp.replace(dest)
            added += 1
    return added


def restore_starts(store: str | Path, out_dir: str | Path, config: BuildConfig, *,
                   on_skip: Callable[[Path, str], None] | None = None) -> int:
    """Unpack the MOF-FF relaxations of ``store`` (a MOF-FF relaxed store made with the same relaxation settings
    and linker) into ``out_dir/start``, where a build with ``relax_start="mofff"`` starts its relaxations.
    Returns the number unpacked."""
    mofff = dataclasses.replace(config, labeller="mofff", reference_energy=None)
    return restore_relaxed(store, out_dir, mofff, on_skip=on_skip, into="start")


def restore_relaxed(store: str | Path, out_dir: str | Path, config: BuildConfig, *,
                    on_skip: Callable[[Path, str], None] | None = None, into: str = "relaxed") -> int:
    """Unpack the relaxations kept in ``store`` into build folder ``out_dir`` (those it lacks).

    Refuses (``ValueError``) a store made with other relaxation settings. Only the folder of the build's linker
    is read (:func:`relaxed_store_folder`). Returns the number restored;
    :func:`build_dataset` then labels those nets without relaxing them again.

    A store file that cannot be used (not gzip, truncated, not an extxyz structure) is skipped: it is moved
    aside to ``NAME.unreadable`` (kept for inspection, and so that the net's new relaxation is stored in its
    place), ``on_skip(path, reason)`` is called (default: a warning), and its net is relaxed anew.
    """
    store, out_dir = Path(store), Path(out_dir)
    if not (store / STORE_MANIFEST).exists():
        return 0
    _check_store(store, config)
    target = out_dir / into
    target.mkdir(parents=True, exist_ok=True)
    restored = 0
    for path in sorted((store / relaxed_store_folder(config.linker, config.labeller)).glob("*.extxyz.gz")):
        dest = target / path.name.removesuffix(".gz")
        if not dest.exists():
            try:
                text = gzip.decompress(path.read_bytes())
                read(io.StringIO(text.decode("utf-8")), format="extxyz")  # a whole structure, or refused
            except Exception as error:  # noqa: BLE001 - BadGzipFile, EOFError, zlib.error, parse errors
                aside = _set_aside(path)
                why = f"{_reason(error)}; moved to {aside.name}, its net is relaxed anew"
                if on_skip is None:
                    warnings.warn(f"unreadable relaxed structure {path}: {why}", stacklevel=2)
                else:
                    on_skip(path, why)
                continue
            tmp = dest.with_name(dest.stem + ".tmp.extxyz")
            tmp.write_bytes(text)
            tmp.replace(dest)
            restored += 1
    return restored


def _reason(error: BaseException) -> str:
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _set_aside(path: Path) -> Path:
    """Move an unusable file to ``NAME.unreadable`` (replacing an older one); returns the new path."""
    aside = path.with_name(path.name + ".unreadable")
    os.replace(path, aside)
    return aside


def _relax_settings(config: BuildConfig) -> dict:
    return {k: getattr(config, k) for k in RELAX_SETTINGS}


def _check_store(store: Path, config: BuildConfig) -> None:
    wanted = _relax_settings(config)
    try:
        manifest = json.loads((store / STORE_MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise BuildError(f"cannot read {store / STORE_MANIFEST}: {_reason(error)}") from None
    stored = manifest.get("relax_settings") if isinstance(manifest, dict) else None
    if stored != json.loads(json.dumps(wanted)):
        raise ValueError(f"{store} holds relaxations made with {stored}; this build uses {wanted}")
