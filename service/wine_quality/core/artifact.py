"""The model artifact: writing it with one atomic switch, and loading it only after verifying it.

An artifact is a directory::

    model.joblib    the scikit-learn pipeline (the reference implementation, for training)
    model.onnx      the same model for onnxruntime: what the service runs
    metadata.json   what the model is, how it was trained and scored, checksums, references
    MODEL_CARD.md   plots/*.png

`save_artifact()` writes a new version beside the current one and switches a symbolic link to it
in one `rename`, so the output path always names a complete artifact, whenever the writer dies.

`load_artifact()` runs the ONNX export, never the pickle: every file it reads must match the
sha256 in metadata.json, every metadata field the service reads is validated, and the model must
reproduce the recorded reference predictions. Parsing an ONNX graph runs no code of the file's
author. Only the explicit `sklearn` runtime unpickles model.joblib (after the same checks), which
trusts whoever can write the directory (docs/security.md). Any failure is an `ArtifactError`
naming the file and the problem.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from wine_quality import __version__
from wine_quality.core import explain
from wine_quality.core.facts import MetadataError, ModelFacts
from wine_quality.core.features import FEATURES
from wine_quality.core.runtime import RUNTIMES, OnnxPredictor, Predictor, SklearnPredictor

log = logging.getLogger(__name__)

MODEL_FILE = "model.joblib"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
RECORDED_PACKAGES = ("numpy", "scikit-learn", "joblib", "onnxruntime", "skl2onnx")
REQUIRED_KEYS = ("name", "version", "algorithm", "versions", "model_file", "reference", "runtimes")


class ArtifactError(Exception):
    """The artifact is missing, incomplete, modified or incompatible; the message says which."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """Python's version and each installed package's (None when it is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


# --------------------------------------------------------------------------- writing


def save_artifact(
    output: Path,
    estimator: Any,
    metadata: dict[str, Any],
    onnx_bytes: bytes | None = None,
    write_docs: Callable[[Path, dict[str, Any]], None] | None = None,
    files: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Write the artifact to `output` and return the completed metadata.

    Adds model_file, model_id, version and versions to `metadata` (and the ONNX checksum when
    `onnx_bytes` is given). The files go into a staging directory beside `output`, which becomes
    a version directory; `output` is then a symbolic link switched to it in one atomic rename
    (see `_publish`). Killed at any instant, the writer leaves `output` naming the previous
    artifact or the new one, never neither; its leftovers are removed by the next write.
    """
    import joblib

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(output):
        remove_leftovers(output)
        staging = Path(tempfile.mkdtemp(prefix=_sibling_prefix(output, "new"), dir=output.parent))
        try:
            joblib.dump(estimator, staging / MODEL_FILE)
            model_sha = sha256_of(staging / MODEL_FILE)
            metadata = {**metadata}
            metadata["model_id"] = model_sha[:8]
            metadata["version"] = model_version(model_sha, metadata.get("git_commit"))
            metadata["versions"] = package_versions()
            metadata["model_file"] = {"path": MODEL_FILE, "sha256": model_sha}
            if onnx_bytes is not None:
                (staging / ONNX_FILE).write_bytes(onnx_bytes)
                onnx_meta = metadata["runtimes"]["onnx"]
                metadata["runtimes"]["onnx"] = {
                    **onnx_meta,
                    "file": ONNX_FILE,
                    "sha256": sha256_bytes(onnx_bytes),
                }
            for name, data in (files or {}).items():  # checksums: the caller's, in metadata
                (staging / name).write_bytes(data)
            metadata = _ordered(metadata)
            if write_docs is not None:
                write_docs(staging, metadata)
            text = json.dumps(metadata, indent=2) + "\n"
            (staging / METADATA_FILE).write_text(text, encoding="utf-8")
            _sync_tree(staging)
            # mkdtemp creates 0700; the service (another user in the image) must read the artifact.
            os.chmod(staging, 0o755)  # noqa: S103
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _publish(staging, output, metadata["model_id"])
    return metadata


def model_version(model_sha: str, commit: str | None) -> str:
    """Project version plus a local part derived from the model's content (and the commit)."""
    local = f"m{model_sha[:8]}"
    if commit:
        local += f".g{commit[:8]}"
    return f"{__version__.split('+')[0]}+{local}"


def _ordered(metadata: dict[str, Any]) -> dict[str, Any]:
    first = ("name", "version", "model_id", "git_commit", "trained_at", "algorithm")
    return {
        **{k: metadata[k] for k in first if k in metadata},
        **{k: v for k, v in metadata.items() if k not in first},
    }


# Siblings of the output path `model`: `.model.new-*` (a version being written), `.model.v-*`
# (complete versions; `model` links to one), `.model.link-*` (the next link, before the switch),
# `.model.old-*` (a plain directory that `model` was before its first switch), `.model.lock`.
_SIBLINGS = ("new", "v", "link", "old")


def _sibling_prefix(output: Path, kind: str) -> str:
    return f".{output.name}.{kind}-"


def live_version_dir(output: Path) -> Path | None:
    """The version directory `output` links to (None when it is no link of ours)."""
    if not output.is_symlink():
        return None
    target = os.readlink(output)
    if os.sep in target or not target.startswith(_sibling_prefix(output, "v")):
        return None
    return output.parent / target


def remove_leftovers(output: Path, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Remove what killed or earlier writes left beside `output`: staging directories, unused
    links and every version directory except the live one and `keep`. Returns what went."""
    live = live_version_dir(output)
    spared = {path.name for path in (live, *keep) if path is not None}
    removed = []
    for kind in _SIBLINGS:
        for path in output.parent.glob(f"{_sibling_prefix(output, kind)}*"):
            if path.name in spared:
                continue
            if path.is_symlink() or not path.is_dir():
                path.unlink()
            else:
                shutil.rmtree(path)
            removed.append(path)
    if removed:
        log.info("removed %d leftover(s) of earlier writes beside %s", len(removed), output)
    return removed


class _writer_lock:
    """An exclusive lock on `.NAME.lock` beside the output: two writers never clean up or switch
    each other's files. The kernel releases it when the writer dies."""

    def __init__(self, output: Path) -> None:
        self.path = output.parent / f".{output.name}.lock"

    def __enter__(self) -> None:
        self.handle = self.path.open("a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise ArtifactError(
                f"{self.path}: another process is writing this artifact; try again when it ends"
            ) from None

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _sync_tree(directory: Path) -> None:
    """Flush the staged files to disk before they are published (a power cut must not publish
    empty files)."""
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _sync_dir(directory)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(staging: Path, output: Path, model_id: str) -> None:
    """Make the complete `staging` directory the artifact at `output`, in three steps of which
    only the last changes what `output` names: rename it to a version directory, make a new link
    to that, rename the link over `output` (atomic). The replaced version stays until the next
    write, so a loader that resolved `output` just before the switch still finds its files."""
    token = secrets.token_hex(4)
    version_dir = output.parent / f"{_sibling_prefix(output, 'v')}{model_id}-{token}"
    link = output.parent / f"{_sibling_prefix(output, 'link')}{token}"
    previous = live_version_dir(output)
    os.rename(staging, version_dir)
    os.symlink(version_dir.name, link)
    if output.is_symlink() or not output.exists():
        os.replace(link, output)
    else:
        _replace_plain_directory(link, output)
    _sync_dir(output.parent)
    remove_leftovers(output, keep=(previous,) if previous else ())


def _replace_plain_directory(link: Path, output: Path) -> None:
    """`output` is a plain directory (written before versions existed, or copied there): swap it
    with the link atomically (Linux renameat2 RENAME_EXCHANGE), then remove it."""
    retired = output.parent / f"{_sibling_prefix(output, 'old')}{secrets.token_hex(4)}"
    if _exchange(link, output):
        os.rename(link, retired)
    else:  # no atomic exchange here: a moment without `output`, once, on the first switch
        log.warning("%s: no atomic exchange on this system; replacing it in two renames", output)
        os.rename(output, retired)
        os.replace(link, output)
    shutil.rmtree(retired, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two paths; False where the system cannot."""
    rename_exchange, at_fdcwd = 2, -100
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadedModel:
    """A verified model ready to predict float64 rows [n, 11] in FEATURES order."""

    metadata: dict[str, Any]  # as recorded, for /v1/model
    facts: ModelFacts  # the validated fields everything else reads
    runtime: str  # "onnx" or "sklearn": the predictor actually used
    load_seconds: float
    predictor: Predictor
    explainer: explain.Explainer | None = None  # verified like the predictors

    @property
    def version(self) -> str:
        return self.facts.version

    @property
    def algorithm(self) -> str:
        return self.facts.algorithm

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predicted quality, float64 [n]."""
        return self.predictor.predict(rows)


def load_artifact(model_dir: Path, runtime: str = "auto") -> LoadedModel:
    """Load and verify the artifact in `model_dir`: `open_artifact(read_artifact(...))`.

    runtime: "onnx" (and "auto", its synonym): the verified ONNX export; model.joblib is never
    read. "sklearn": the explicit fallback that unpickles model.joblib after checking its sha256
    and the exact scikit-learn version; it needs scikit-learn installed (the image has none).
    Either way the model must reproduce the reference predictions recorded in the metadata.
    """
    return open_artifact(read_artifact(model_dir, runtime))


@dataclass(frozen=True)
class ReadArtifact:
    """An artifact read and checked without running its model: the metadata's fields, the
    model's bytes (sha256-checked: the ONNX graph, or the pickle for the sklearn runtime) and the
    explainer. `open_artifact` needs no file again, so every process that opens one ReadArtifact
    serves the very same model, whichever runtime it uses."""

    model_dir: Path
    runtime: str
    metadata: dict[str, Any]
    facts: ModelFacts
    model_bytes: bytes  # model.onnx, or model.joblib for the sklearn runtime
    explainer: explain.Explainer | None
    started: float


def read_artifact(model_dir: Path, runtime: str = "auto") -> ReadArtifact:
    """Every check that runs no model code; an ArtifactError says what is wrong."""
    started = time.perf_counter()
    if runtime not in RUNTIMES:
        raise ArtifactError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    # One version directory for every file read, even if a writer switches the link meanwhile.
    model_dir = Path(model_dir).resolve()
    metadata = read_metadata(model_dir)
    facts = model_facts(model_dir, metadata)
    if runtime == "sklearn":
        _check_versions(model_dir, metadata)
        model_bytes = _verified_bytes(model_dir, metadata["model_file"], "scikit-learn model")
    else:
        model_bytes = _onnx_bytes(model_dir, metadata)
    explainer = _load_explainer(model_dir, metadata)
    return ReadArtifact(model_dir, runtime, metadata, facts, model_bytes, explainer, started)


def open_artifact(read: ReadArtifact) -> LoadedModel:
    """The model of a read artifact, ready to predict once it reproduces its references."""
    if read.runtime == "sklearn":
        predictor: Predictor = _load_sklearn(read.model_dir, read.metadata, read.model_bytes)
    else:
        predictor = _onnx_predictor(read.model_dir, read.metadata, read.model_bytes)
    return LoadedModel(
        metadata=read.metadata,
        facts=read.facts,
        runtime=predictor.name,
        load_seconds=time.perf_counter() - read.started,
        predictor=predictor,
        explainer=read.explainer,
    )


def _load_explainer(model_dir: Path, metadata: dict[str, Any]) -> explain.Explainer | None:
    """The verified explainer (core/explain.py): its sha256 matches the metadata and its
    explanations sum to the recorded reference predictions. None when the metadata names none
    (the model is served, `explain` requests are refused)."""
    entry = metadata.get("explainer")
    if entry is None:
        return None
    data = _verified_bytes(model_dir, entry, "explainer")
    path = model_dir / entry["file"]
    try:
        explainer = explain.from_bytes(data)
    except explain.ExplainerError as error:
        raise ArtifactError(f"{path}: {error}") from None
    tolerance = _tolerance(model_dir, metadata["reference"], "reference")
    _check_reference(path, explain.SumPredictor(explainer), metadata, tolerance)
    return explainer


def model_facts(model_dir: Path, metadata: dict[str, Any]) -> ModelFacts:
    """The validated facts of the metadata, or an ArtifactError naming the bad field."""
    try:
        return ModelFacts.from_metadata(metadata)
    except MetadataError as error:
        raise ArtifactError(f"{model_dir / METADATA_FILE}: {error}") from None


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model directory not found (run `wine-quality train`)")
    if not path.is_file():
        raise ArtifactError(f"{path}: metadata file is missing; the artifact is incomplete")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(metadata).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ArtifactError(f"{path}: missing key(s) {', '.join(missing)}")
    return metadata


def _check_versions(model_dir: Path, metadata: dict[str, Any]) -> None:
    recorded = (metadata.get("versions") or {}).get("scikit-learn")
    try:
        installed = importlib_metadata.version("scikit-learn")
    except importlib_metadata.PackageNotFoundError:
        raise ArtifactError(
            f"{model_dir}: runtime sklearn needs scikit-learn {recorded}, which is not installed "
            "(the service image runs the ONNX export only; use runtime onnx)"
        ) from None
    if recorded != installed:
        raise ArtifactError(
            f"{model_dir / METADATA_FILE}: the model was trained with scikit-learn {recorded} but "
            f"scikit-learn {installed} is installed; a pickled model is only trusted with the "
            "exact version it was trained with (install that version or retrain)"
        )


def _verified_bytes(model_dir: Path, entry: Any, what: str) -> bytes:
    """The bytes of the file an entry {"file"|"path", "sha256"} names, after checking its sha256."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise ArtifactError(f"{model_dir / METADATA_FILE}: no sha256 recorded for the {what}")
    name = entry.get("path") or entry.get("file")
    if not isinstance(name, str) or Path(name).name != name:
        raise ArtifactError(
            f"{model_dir / METADATA_FILE}: invalid file name {name!r} for the {what}"
        )
    path = model_dir / name
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = error.strerror or error
        raise ArtifactError(f"{path}: cannot read the {what} ({reason})") from error
    actual = sha256_bytes(data)
    if actual != entry["sha256"]:
        raise ArtifactError(
            f"{path}: sha256 mismatch: the file has {actual}, {METADATA_FILE} records "
            f"{entry['sha256']}; the {what} is truncated, corrupt or was modified; "
            "refusing to load it"
        )
    return data


def _load_sklearn(model_dir: Path, metadata: dict[str, Any], data: bytes) -> SklearnPredictor:
    """The explicit fallback: unpickle model.joblib's verified bytes. A checksum in an unsigned
    metadata file only catches accidents; this runs whatever code the pickle holds, so it is never
    chosen automatically (docs/security.md)."""
    import io

    import joblib

    log.warning(
        "%s: runtime sklearn unpickles %s: it trusts whoever can write this directory",
        model_dir,
        MODEL_FILE,
    )
    try:
        estimator = joblib.load(io.BytesIO(data))
    except Exception as error:  # any unpickling failure means an unusable file
        raise ArtifactError(f"{model_dir / MODEL_FILE}: cannot be loaded ({error})") from error
    if not hasattr(estimator, "predict"):
        kind = type(estimator).__name__
        raise ArtifactError(f"{model_dir / MODEL_FILE}: holds a {kind}, not a model")
    predictor = SklearnPredictor(estimator)
    _check_reference(
        model_dir / MODEL_FILE,
        predictor,
        metadata,
        _tolerance(model_dir, metadata["reference"], "reference"),
    )
    return predictor


def _reference(metadata: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        inputs = np.asarray(metadata["reference"]["inputs"], dtype=np.float64)
        outputs = np.asarray(metadata["reference"]["outputs"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"{path}: reference predictions are malformed ({error})") from error
    shape_ok = inputs.ndim == 2 and inputs.shape[1] == len(FEATURES)
    if not shape_ok or len(inputs) != len(outputs) or not len(inputs):
        raise ArtifactError(
            f"{path}: reference inputs must be rows of {len(FEATURES)} numbers with one output each"
        )
    return inputs, outputs


def _tolerance(model_dir: Path, entry: Any, where: str) -> float:
    """The `tolerance` recorded under `where` in the metadata, or ArtifactError naming it."""
    value = entry.get("tolerance") if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ArtifactError(
            f"{model_dir / METADATA_FILE}: {where}.tolerance is missing or not a "
            f"non-negative number ({value!r})"
        )
    return float(value)


def _check_reference(
    path: Path, predictor: Any, metadata: dict[str, Any], tolerance: float
) -> float:
    """Largest deviation from the recorded reference outputs; ArtifactError beyond `tolerance`."""
    inputs, expected = _reference(metadata, path.parent / METADATA_FILE)
    try:
        actual = np.asarray(predictor.predict(inputs), dtype=np.float64).reshape(-1)
    except Exception as error:  # a model that cannot predict is unusable, whatever the reason
        raise ArtifactError(f"{path}: predicting the reference inputs failed ({error})") from error
    error = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else np.inf
    if not error <= tolerance:
        raise ArtifactError(
            f"{path}: does not reproduce the reference predictions in {METADATA_FILE} "
            f"(largest difference {error:.3g}, tolerance {tolerance:g})"
        )
    return error


def _onnx_bytes(model_dir: Path, metadata: dict[str, Any]) -> bytes:
    """The sha256-checked bytes of the ONNX export; an ArtifactError says why there are none.
    There is no automatic fallback to the pickle: an attacker who can only write the model
    directory must not be able to switch the server to a file format that runs code."""
    runtimes = metadata["runtimes"]
    entry = runtimes.get("onnx") if isinstance(runtimes, dict) else None
    if not entry:
        reason = runtimes.get("reason") if isinstance(runtimes, dict) else None
        raise ArtifactError(
            f"{model_dir / METADATA_FILE}: the artifact has no ONNX model "
            f"({reason or 'none was exported'}); the service runs only a verified ONNX export "
            f"and never unpickles {MODEL_FILE} unless runtime sklearn is chosen explicitly"
        )
    _tolerance(model_dir, entry, "runtimes.onnx")
    return _verified_bytes(model_dir, entry, "ONNX model")


def _onnx_predictor(model_dir: Path, metadata: dict[str, Any], data: bytes) -> OnnxPredictor:
    """The ONNX predictor of verified bytes, once it reproduces the reference predictions."""
    try:
        predictor = OnnxPredictor(data)
    except ImportError as error:
        raise ArtifactError(f"{model_dir}: onnxruntime is not available ({error})") from error
    except Exception as error:  # onnxruntime rejects the graph
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ArtifactError(
            f"{model_dir / ONNX_FILE}: onnxruntime cannot load it ({first_line})"
        ) from error
    tolerance = _tolerance(model_dir, metadata["runtimes"]["onnx"], "runtimes.onnx")
    _check_reference(model_dir / ONNX_FILE, predictor, metadata, tolerance)
    return predictor
