"""`make release-local` against a real OCI registry on loopback (Debian's docker-registry, the CNCF
distribution registry), read back with skopeo and helm: the release steps of the CI job with the
local transport.

Each test runs scripts/release-local.sh in a throw-away git repository holding this working tree
(so it can make commits of its own), with the session's image (`built_image`, version label 0.1.0)
reused where it fits, a registry of its own (scripts/registry.sh) and a release store of its own.
Checked: a first release publishes X.Y.Z, X.Y, main, latest at the tested digest and the chart; a
rerun on a released commit publishes nothing; a failed release leaves a version that no later run
moves; the champion/challenger gate refuses a worse model unless overridden.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from support import REPO, TOOLS_BIN, BuiltImage, require_tool

pytestmark = [pytest.mark.container, pytest.mark.slow]

RELEASE_TAGS = ("0.1.0", "0.1", "main", "latest")


@pytest.fixture
def registry(tmp_path: Path):
    """A registry on a free loopback port, stopped after the test."""
    for tool in ("docker-registry", "skopeo", "helm", "podman"):
        require_tool(tool)
    folder = tmp_path / "registry"
    started = subprocess.run(
        [REPO / "scripts/registry.sh", "start", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    values = dict(line.split("=", 1) for line in started.stdout.split())
    yield values["REGISTRY"]
    subprocess.run([REPO / "scripts/registry.sh", "stop", str(folder)], timeout=60, check=False)


def git(project: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-C",
            str(project),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository holding this working tree (tracked and new files), committed once; the venv
    and the tools are the checkout's."""
    project = tmp_path / "project"
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO / name
        if source.is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, project / name)
    (project / ".venv").symlink_to(REPO / ".venv")
    (project / ".tools").symlink_to(REPO / ".tools")
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "release candidate")
    return project


def release_local(
    project: Path, registry: str, model_dir: Path, image: str, **env: str
) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RELEASE_"))}
    environ.update(
        REGISTRY=registry,
        IMAGE=image,
        MODEL_DIR=str(model_dir),
        RELEASE_STORE=str(project.parent / "store"),
        RELEASE_DIR=str(project.parent / "release"),
        CONTAINERS_CONF=str(REPO / "scripts/podman/containers.conf"),
        PATH=f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}",
        **env,
    )
    return subprocess.run(
        [project / "scripts/release-local.sh"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=900,
        check=False,
    )


def inspect_raw(reference: str, *flags: str) -> bytes:
    """What the registry serves for REFERENCE: its manifest, or with --config its configuration."""
    return subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", *flags, f"docker://{reference}"],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tags(registry: str, repository: str) -> set[str]:
    result = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"docker://{registry}/{repository}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and "404" in result.stderr:
        return set()  # nothing pushed to this repository yet
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout)["Tags"] or [])


def digests(registry: str) -> dict[str, str]:
    """Every image tag with the digest it resolves to (sha256 of the manifest as served)."""
    return {
        tag: sha256(inspect_raw(f"{registry}/wine-quality:{tag}"))
        for tag in tags(registry, "wine-quality")
    }


def state(registry: str, store: Path) -> tuple:
    """All a release can change: image tags and digests, chart versions, the release store."""
    return (
        digests(registry),
        tags(registry, "charts/wine-quality"),
        sorted(str(p.relative_to(store)) for p in store.rglob("*")) if store.exists() else [],
    )


def config_digest(registry: str, digest: str) -> str:
    config = inspect_raw(f"{registry}/wine-quality@{digest}", "--config")
    assert (
        json.loads(config)["config"]["Labels"]["org.opencontainers.image.title"] == "wine-quality"
    )
    return sha256(config)


def image_id(image: str) -> str:
    return "sha256:" + subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CONTAINERS_CONF": str(REPO / "scripts/podman/containers.conf")},
    ).stdout.strip().removeprefix("sha256:")


def test_first_release_publishes_the_tested_image_and_a_rerun_nothing(
    project, registry, model_dir, built_image: BuiltImage, tmp_path
):
    result = release_local(project, registry, model_dir, built_image.name)
    assert result.returncode == 0, result.stderr[-4000:]
    published = digests(registry)
    head = git(project, "rev-parse", "HEAD")
    assert set(published) == {*RELEASE_TAGS, f"sha-{head[:7]}"}
    assert len(set(published.values())) == 1, published  # one digest under every name
    digest = published["0.1.0"]
    # The released digest holds the image the smoke test ran.
    assert config_digest(registry, digest) == image_id(built_image.name)
    assert "PASSED: " + built_image.name in result.stderr
    assert "skipped: cosign keyless signing" in result.stderr
    assert "skipped: the GitHub release (GitHub only)" in result.stderr

    # The chart, as a user pulls it, points at this registry's image and says the version.
    assert tags(registry, "charts/wine-quality") == {"0.1.0"}
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    subprocess.run(
        [
            "helm",
            "pull",
            f"oci://{registry}/charts/wine-quality",
            "--version",
            "0.1.0",
            "--plain-http",
            "--destination",
            str(pulled),
        ],
        env={**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    with tarfile.open(pulled / "wine-quality-0.1.0.tgz") as chart:
        values = yaml.safe_load(chart.extractfile("wine-quality/values.yaml").read())
        meta = yaml.safe_load(chart.extractfile("wine-quality/Chart.yaml").read())
    assert values["image"]["repository"] == f"{registry}/wine-quality"
    assert (meta["version"], meta["appVersion"]) == ("0.1.0", "0.1.0")

    # The release store keeps what the next gate compares against.
    record = tmp_path / "store/v0.1.0"
    assert (record / "released").is_file()
    assert (record / "commit").read_text().strip() == head
    assert (record / "digest").read_text().strip() == digest
    assert json.loads((record / "metadata.json").read_text()) == json.loads(
        (model_dir / "metadata.json").read_text()
    )

    before = state(registry, tmp_path / "store")
    again = release_local(project, registry, model_dir, built_image.name)
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"commit {head} is already released as 0.1.0: nothing to publish" in again.stderr
    assert state(registry, tmp_path / "store") == before


def test_a_failed_release_leaves_a_version_no_later_run_moves(
    project, registry, model_dir, built_image: BuiltImage, tmp_path
):
    failed = release_local(
        project, registry, model_dir, built_image.name, RELEASE_FAIL_AFTER="image"
    )
    assert failed.returncode == 1
    assert "stopping after step 'image'" in failed.stderr
    after_failure = digests(registry)
    # Only the reserved version was tagged: nothing moving, no chart, no finished release.
    assert {"0.1", "main", "latest"}.isdisjoint(after_failure)
    assert "0.1.0" in after_failure
    assert tags(registry, "charts/wine-quality") == set()
    assert not (tmp_path / "store/v0.1.0/released").exists()

    good = release_local(project, registry, model_dir, built_image.name)
    assert good.returncode == 0, good.stderr[-4000:]
    published = digests(registry)
    # Version tags never move (sha-<commit>, the build's staging tag, names the newest build).
    versions = {tag: digest for tag, digest in after_failure.items() if tag[0].isdigit()}
    assert versions
    for tag, digest in versions.items():
        assert published[tag] == digest, f"{tag} moved"
    # The next version, built anew (its label says 0.1.1), so a moved tag would show.
    assert "building" in good.stderr
    new = published["0.1.1"]
    assert new != after_failure["0.1.0"]
    assert {published[tag] for tag in ("0.1", "main", "latest")} == {new}
    assert tags(registry, "charts/wine-quality") == {"0.1.1"}

    # Publishing a new commit under the taken version directly is refused, and nothing moves.
    git(project, "commit", "--quiet", "--allow-empty", "-m", "next")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RELEASE_"))}
    forced = subprocess.run(
        [project / "scripts/release.sh", "publish"],
        env={
            **environ,
            "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}",
            "REGISTRY": registry,
            "RELEASE_STORE": str(tmp_path / "store"),
            "RELEASE_DIR": str(tmp_path / "release"),
            "VERSION": "0.1.0",
            "DIGEST": new,
            "TESTED_CONFIG_DIGEST": config_digest(registry, new),
            "MODEL_DIR": str(model_dir),
        },
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert forced.returncode == 1
    assert "version 0.1.0 is taken" in forced.stderr
    assert digests(registry) == published


def test_the_gate_refuses_a_worse_model_unless_overridden(
    project, registry, model_dir, small_model_dir, built_image: BuiltImage, tmp_path
):
    def rmse(folder: Path) -> float:
        return json.loads((folder / "metadata.json").read_text())["metrics"]["test"]["rmse"]

    assert rmse(small_model_dir) > rmse(model_dir), "the small ridge model must be the worse one"
    champion = release_local(project, registry, model_dir, built_image.name)
    assert champion.returncode == 0, champion.stderr[-4000:]
    git(project, "commit", "--quiet", "--allow-empty", "-m", "a worse model")
    before = state(registry, tmp_path / "store")

    refused = release_local(project, registry, small_model_dir, built_image.name)
    assert refused.returncode == 1
    assert "**Not released.**" in refused.stdout
    assert "is worse than champion" in refused.stderr
    assert state(registry, tmp_path / "store") == before

    overridden = release_local(
        project,
        registry,
        small_model_dir,
        built_image.name,
        ALLOW_WORSE_MODEL="true",
        RELEASE_FAIL_AFTER="compare",
    )
    assert "**Release (override).**" in overridden.stdout
    assert "stopping after step 'compare'" in overridden.stderr
    assert state(registry, tmp_path / "store") == before
