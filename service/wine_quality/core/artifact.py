"""The model artifact: writing it atomically, and loading it only after verifying it.

An artifact is a directory::

    model.joblib    the scikit-learn pipeline (the reference implementation)
    model.onnx      the same model for onnxruntime (the fast runtime), when it exports exactly
    metadata.json   what the model is, how it was trained and scored, checksums, references
    MODEL_CARD.md   plots/*.png

`load_artifact()` never unpickles a file it has not checked: every file's sha256 must match
metadata.json, the installed scikit-learn must be the one recorded, and the loaded model must
reproduce the recorded reference predictions. Any failure is an `ArtifactError` naming the file
and the problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
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
) -> dict[str, Any]:
    """Write the artifact to `output` and return the completed metadata.

    Adds model_file, model_id, version and versions to `metadata` (and the ONNX checksum when
    `onnx_bytes` is given). Everything is written into a temporary sibling directory which replaces
    `output` only when complete, so a crash never leaves a half-written artifact behind.
    """
    import joblib

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.new-", dir=output.parent))
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
        metadata = _ordered(metadata)
        if write_docs is not None:
            write_docs(staging, metadata)
        # metadata.json last: its presence marks a complete artifact.
        text = json.dumps(metadata, indent=2) + "\n"
        (staging / METADATA_FILE).write_text(text, encoding="utf-8")
        # mkdtemp creates 0700; the service (another user in the image) must read the artifact.
        os.chmod(staging, 0o755)  # noqa: S103
        _replace_directory(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
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


def _replace_directory(staging: Path, output: Path) -> None:
    if not output.exists():
        staging.rename(output)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    retired.rmdir()
    output.rename(retired)
    try:
        staging.rename(output)
    except OSError:
        retired.rename(output)
        raise
    shutil.rmtree(retired, ignore_errors=True)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadedModel:
    """A verified model ready to predict float64 rows [n, 11] in FEATURES order."""

    metadata: dict[str, Any]  # as recorded, for /v1/model
    facts: ModelFacts  # the validated fields everything else reads
    runtime: str  # "onnx" or "sklearn": the predictor actually used
    fallback_reason: str | None
    load_seconds: float
    predictor: Predictor

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
    """Load and verify the artifact in `model_dir`.

    runtime: "sklearn"; "onnx" (an ArtifactError when it cannot be used); or "auto": ONNX when the
    artifact has it, onnxruntime imports and it reproduces the reference predictions, else
    scikit-learn with `fallback_reason` saying why.
    """
    started = time.perf_counter()
    if runtime not in RUNTIMES:
        raise ArtifactError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    facts = model_facts(model_dir, metadata)
    _check_versions(model_dir, metadata)
    sklearn_predictor = SklearnPredictor(_load_sklearn(model_dir, metadata))
    _check_reference(
        model_dir / metadata["model_file"]["path"],
        sklearn_predictor,
        metadata,
        _tolerance(model_dir, metadata["reference"], "reference"),
    )
    predictor: Predictor = sklearn_predictor
    fallback_reason = None
    if runtime != "sklearn":
        onnx_predictor, fallback_reason = _load_onnx(model_dir, metadata)
        if onnx_predictor is not None:
            predictor = onnx_predictor
        elif runtime == "onnx":
            raise ArtifactError(f"{model_dir}: runtime onnx was requested but {fallback_reason}")
        else:
            log.warning("%s: using the scikit-learn runtime: %s", model_dir, fallback_reason)
    return LoadedModel(
        metadata=metadata,
        facts=facts,
        runtime=predictor.name,
        fallback_reason=fallback_reason,
        load_seconds=time.perf_counter() - started,
        predictor=predictor,
    )


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
    installed = importlib_metadata.version("scikit-learn")
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


def _load_sklearn(model_dir: Path, metadata: dict[str, Any]) -> Any:
    import io

    import joblib

    data = _verified_bytes(model_dir, metadata["model_file"], "scikit-learn model")
    try:
        # Unpickling is safe only because the checksum above matched the recorded one.
        estimator = joblib.load(io.BytesIO(data))
    except Exception as error:  # any unpickling failure means an unusable file
        raise ArtifactError(f"{model_dir / MODEL_FILE}: cannot be loaded ({error})") from error
    if not hasattr(estimator, "predict"):
        kind = type(estimator).__name__
        raise ArtifactError(f"{model_dir / MODEL_FILE}: holds a {kind}, not a model")
    return estimator


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


def _load_onnx(model_dir: Path, metadata: dict[str, Any]) -> tuple[Any | None, str | None]:
    """The verified ONNX predictor, or None and the reason it cannot be used.

    A checksum mismatch is an ArtifactError, not a fallback: a modified file is never served.
    """
    entry = metadata["runtimes"].get("onnx") if isinstance(metadata["runtimes"], dict) else None
    if not entry:
        reason = (metadata["runtimes"] or {}).get("reason", "none was exported")
        return None, f"the artifact has no ONNX model ({reason})"
    data = _verified_bytes(model_dir, entry, "ONNX model")
    try:
        predictor = OnnxPredictor(data)
    except ImportError as error:
        return None, f"onnxruntime is not available ({error})"
    except Exception as error:  # onnxruntime rejects the model: fall back to the reference
        return None, f"onnxruntime cannot load {ONNX_FILE} ({error})"
    try:
        _check_reference(
            model_dir / ONNX_FILE,
            predictor,
            metadata,
            _tolerance(model_dir, entry, "runtimes.onnx"),
        )
    except ArtifactError as error:
        return None, str(error)
    return predictor, None
