"""The policies of the GitHub Actions pipeline, read from the workflow files, plus the workflow
audits (zizmor, the GitHub workflow and Dependabot JSON schemas) run as tests.

GitHub's runners cannot be reached from here; these tests pin down the rules the workflows must
keep, not their every line: where and after what publishing happens, pins, permissions, where the
token goes, that the scripts and make targets the steps call exist, and that CI tests and lints
with the commands `.ci/run` uses.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import REPO

WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.y*ml"))
CI = REPO / ".github/workflows/ci.yml"
VENV_BIN = Path(sys.executable).parent
MAIN_ONLY = "github.ref == 'refs/heads/main'"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def steps(workflow: dict[str, Any]):
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load(CI)


def job_text(path: Path, job_id: str) -> str:
    """The raw text of one job (comments included), from `  job_id:` to the next job."""
    match = re.search(
        rf"^  {re.escape(job_id)}:\n(.*?)(?=^  \S|\Z)", path.read_text(), re.MULTILINE | re.DOTALL
    )
    assert match, job_id
    return match.group(1)


def needs(job: dict[str, Any]) -> set[str]:
    value = job.get("needs", [])
    return {value} if isinstance(value, str) else set(value)


def test_there_is_a_workflow():
    assert CI in WORKFLOWS


def test_release_runs_only_for_main_after_every_other_job(ci):
    condition = ci["jobs"]["release"]["if"]
    assert MAIN_ONLY in condition
    assert "github.event_name == 'push'" in condition
    assert "pull_request" not in condition
    # Nothing is released that any check (lint, tests, e2e, ...) did not pass.
    assert needs(ci["jobs"]["release"]) == set(ci["jobs"]) - {"release"}


def test_images_are_pushed_only_from_main(ci):
    build = ci["jobs"]["build"]
    push = build["env"]["PUSH"]
    assert MAIN_ONLY in push
    assert "github.event_name != 'pull_request'" in push
    for step in build["steps"]:
        uses = step.get("uses", "")
        pushes = step.get("with", {}).get("push") is True
        publishes = pushes or uses.startswith("docker/login-action")
        if publishes:
            assert step.get("if") == "env.PUSH == 'true'", step


def test_the_tested_and_the_pushed_build_are_the_same_build(ci):
    builds = [
        step["with"]
        for step in ci["jobs"]["build"]["steps"]
        if step.get("uses", "").startswith("docker/build-push-action@")
    ]
    assert len(builds) == 2
    tested, pushed = builds
    assert tested["outputs"].startswith("type=docker,dest=")
    for key in ("context", "build-args", "tags"):
        assert tested[key] == pushed[key], key
    # The Dockerfile's OCI labels (release version, commit, model version) must not be replaced
    # by metadata-action's branch-derived ones.
    assert "labels" not in tested and "labels" not in pushed
    assert tested["context"] == "."  # the checkout with the downloaded model, not the git context
    # The build arguments come from the one script that computes them for local builds too.
    assert tested["build-args"] == "${{ env.BUILD_ARGS }}"
    runs = [step.get("run", "") for step in ci["jobs"]["build"]["steps"]]
    assert 'scripts/release.sh build-env >> "$GITHUB_ENV"' in runs


def test_the_pipeline_checks_that_it_releases_the_tested_image(ci):
    """Two build calls may differ: the build job compares the pushed image's configuration digest
    with the tarball's that e2e-kind tests, and the release job checks it again before tagging."""
    build = ci["jobs"]["build"]
    names = [step.get("id") or step.get("name") for step in build["steps"]]
    tested = next(s for s in build["steps"] if s.get("id") == "tested")
    assert "scripts/image.sh config-digest" in tested["run"]
    assert names.index("tested") > next(
        i for i, s in enumerate(build["steps"]) if "type=docker" in str(s.get("with", {}))
    )
    verify = next(s for s in build["steps"] if s.get("run") == "scripts/release.sh verify-digest")
    assert names.index(verify["name"]) > names.index("push")
    assert verify["if"] == "env.PUSH == 'true'"
    assert verify["env"] == {
        "DIGEST": "${{ steps.push.outputs.digest }}",
        "TESTED_CONFIG_DIGEST": "${{ steps.tested.outputs.config-digest }}",
    }
    assert build["outputs"]["config-digest"] == "${{ steps.tested.outputs.config-digest }}"
    release = ci["jobs"]["release"]
    assert release["env"]["TESTED_CONFIG_DIGEST"] == "${{ needs.build.outputs.config-digest }}"
    assert release["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    # publish runs verify-digest before it reserves or tags anything (scripts/release.sh).
    assert [s["run"] for s in release["steps"] if "run" in s][-1] == "scripts/release.sh publish"


def test_pushed_images_get_sbom_and_provenance(ci):
    pushes = [s for _, s in steps(ci) if s.get("with", {}).get("push") is True]
    assert pushes
    for step in pushes:
        assert step["with"]["sbom"] is True
        assert step["with"]["provenance"] == "mode=max"


def test_the_build_job_pushes_no_moving_tag(ci):
    # Nothing users pull by a moving name (`latest`, `main`, a version) before the tests, e2e and
    # the champion/challenger gate passed: the release job adds those to the digest build pushed.
    meta = next(s for s in ci["jobs"]["build"]["steps"] if s.get("id") == "meta")
    assert "latest=false" in meta["with"]["flavor"]
    for rule in meta["with"]["tags"].split():
        assert not re.search(r"latest|event=branch|type=semver", rule), rule


def test_the_github_token_reaches_only_the_release_script_steps(ci):
    release = ci["jobs"]["release"]
    assert "GH_TOKEN" not in release.get("env", {})
    for step in release["steps"]:
        runs_release_script = step.get("run", "").startswith("scripts/release.sh ")
        has_token = "GH_TOKEN" in step.get("env", {})
        assert has_token == runs_release_script, step
        if has_token:
            assert step["env"]["GH_TOKEN"] == "${{ github.token }}"


def test_publishing_steps_live_in_the_release_job_only(ci):
    for job_id, step in steps(ci):
        run = step.get("run", "")
        for command in ("publish",):
            if re.search(rf"scripts/release\.sh {command}\b", run):
                assert job_id == "release", (job_id, run)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path):
    lines = path.read_text().splitlines()
    uses_lines = [line for line in lines if re.match(r"\s*(- )?uses:", line)]
    assert uses_lines
    pins: dict[str, set[str]] = {}
    for line in uses_lines:
        reference = line.split("uses:", 1)[1].split("#", 1)[0].strip()
        assert SHA_PIN.match(reference), f"not pinned to a commit SHA: {line.strip()}"
        assert VERSION_COMMENT.search(line), f"no '# vX.Y.Z' comment: {line.strip()}"
        action, sha = reference.split("@")
        pins.setdefault(action, set()).add(f"{sha} {line.split('#', 1)[1].strip()}")
    inconsistent = {action: found for action, found in pins.items() if len(found) > 1}
    assert not inconsistent, f"one action pinned to several commits: {inconsistent}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_expands_inside_a_run_script(path):
    for job_id, step in steps(load(path)):
        assert "${{" not in step.get("run", ""), f"{job_id}: move the expression into env: {step}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_checkouts_do_not_persist_credentials(path):
    checkouts = [
        step
        for _, step in steps(load(path))
        if step.get("uses", "").startswith("actions/checkout@")
    ]
    assert checkouts
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege(path):
    workflow = load(path)
    assert workflow.get("permissions") in ({}, {"contents": "read"}, "read-all")
    for job_id, job in workflow["jobs"].items():
        assert isinstance(job.get("permissions"), dict), f"{job_id} must declare its permissions"
        block = job_text(path, job_id)
        for scope, level in job["permissions"].items():
            # Every permission a job asks for says why, in a comment on its line.
            pattern = rf"^[ ]+{re.escape(scope)}: {level}[ ]+#[ ]*\S"
            assert re.search(pattern, block, re.MULTILINE), f"{job_id}: '{scope}' says not why"
    writers = {
        job_id for job_id, job in workflow["jobs"].items() if "write" in job["permissions"].values()
    }
    assert writers <= {"build", "release"}


def test_release_permissions(ci):
    assert ci["jobs"]["release"]["permissions"] == {
        "contents": "write",
        "packages": "write",
        "id-token": "write",
        "pull-requests": "read",
    }
    assert ci["jobs"]["build"]["permissions"] == {"contents": "read", "packages": "write"}


def test_concurrency_tests_every_push_and_never_cancels_a_release(ci):
    concurrency = ci["concurrency"]
    # Pull requests: one group each, a newer push cancels the superseded run. Elsewhere one group
    # per commit: GitHub keeps one pending run per group, so a shared group on main would drop
    # the runs of intermediate pushes.
    assert "github.event.pull_request.number" in concurrency["group"]
    assert "github.sha" in concurrency["group"]
    assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    release = ci["jobs"]["release"]["concurrency"]
    assert release["cancel-in-progress"] is False
    assert "github.sha" not in release["group"] and "github.ref" not in release["group"]


def test_the_release_job_sees_every_release_tag(ci):
    """publish asks whether this commit is released and whether vX.Y.Z exists: it needs the tags."""
    checkout = next(
        s
        for s in ci["jobs"]["release"]["steps"]
        if s.get("uses", "").startswith("actions/checkout@")
    )
    assert checkout["with"]["fetch-depth"] == 0


def test_the_image_tarball_is_kept_one_day(ci):
    upload = next(
        s for s in ci["jobs"]["build"]["steps"] if s.get("with", {}).get("name") == "image"
    )
    assert upload["with"]["retention-days"] == 1


def test_pip_cache_only_outside_publishing_jobs(ci):
    cached = {
        job_id
        for job_id, step in steps(ci)
        if step.get("uses", "").startswith("actions/setup-python@")
        and step.get("with", {}).get("cache") == "pip"
    }
    assert {"lint", "test", "train"} <= cached
    assert not cached & {"build", "release"}
    for job_id, step in steps(ci):
        if step.get("with", {}).get("cache") == "pip":
            assert step["with"]["cache-dependency-path"] == "constraints.txt", job_id


def test_every_job_has_a_timeout(ci):
    for job_id, job in ci["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 90, job_id


# The test job runs `make test` as root (apt, debootstrap), as .ci/run does on its machine.
AS_ROOT = ["sudo", "--preserve-env", "env", "PATH=$PATH"]


def run_commands(workflow: dict[str, Any]):
    """The words of every command line of every run: step, without the AS_ROOT wrapper."""
    for job_id, step in steps(workflow):
        for line in step.get("run", "").splitlines():
            if line.strip():
                words = shlex.split(line, comments=True)
                if words[: len(AS_ROOT)] == AS_ROOT:
                    words = words[len(AS_ROOT) :]
                yield job_id, words


def test_every_script_a_step_runs_exists_and_is_executable(ci):
    called = set()
    for _, words in run_commands(ci):
        for word in words:
            if re.fullmatch(r"(scripts/[\w./-]+\.sh|\.ci/run)", word):
                called.add(word)
    assert {
        "scripts/lint.sh",
        "scripts/e2e.sh",
        "scripts/release.sh",
        "scripts/install-helm.sh",
        "scripts/bootstrap.sh",
    } <= called
    for script in sorted(called):
        path = REPO / script
        assert path.is_file(), f"{script} does not exist"
        assert path.stat().st_mode & 0o111, f"{script} is not executable"


def test_every_make_target_a_step_runs_exists(ci):
    makefile = (REPO / "Makefile").read_text()
    targets = {words[1] for _, words in run_commands(ci) if words and words[0] == "make"}
    assert {"test", "train", "data"} <= targets
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), target


def test_every_release_subcommand_a_step_runs_exists(ci):
    script = (REPO / "scripts/release.sh").read_text()
    for _, words in run_commands(ci):
        if words[:1] == ["scripts/release.sh"]:
            assert re.search(rf"^  {re.escape(words[1])}\) ", script, re.MULTILINE), words


def test_the_test_job_runs_what_ci_run_runs(ci):
    test_commands = [words for job_id, words in run_commands(ci) if job_id == "test"]
    assert ["make", "test"] in test_commands
    # As root, like .ci/run: exactly `make test` inside the sudo wrapper, nothing else.
    last = ci["jobs"]["test"]["steps"][-1]["run"]
    assert shlex.split(last) == [*AS_ROOT, "make", "test"]
    ci_run = (REPO / ".ci/run").read_text()
    assert re.search(r"^make test\b", ci_run, re.MULTILINE)
    assert "WINE_QUALITY_DATA_SOURCE" in ci["jobs"]["test"]["steps"][-1]["env"]


def make_dry_run(target: str) -> str:
    """The commands `make TARGET` would run, prerequisites included (make -n runs none of them)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ci_lints_once(ci):
    """.ci/run lints with `make lint`, then runs the test command; `make test` itself does not lint,
    so neither .ci/run nor the CI test job (beside the lint job) runs the linters twice."""
    ci_run = (REPO / ".ci/run").read_text()
    lint = re.search(r"^make lint$", ci_run, re.MULTILINE)
    test = re.search(r"^make test\b", ci_run, re.MULTILINE)
    assert lint and test and lint.start() < test.start()
    assert "scripts/lint.sh" in make_dry_run("lint")
    assert "scripts/lint.sh" not in make_dry_run("test")
    lint_job = " ".join(step.get("run", "") for step in ci["jobs"]["lint"]["steps"])
    assert "scripts/lint.sh" in lint_job


def test_e2e_job_uses_the_image_of_this_run(ci):
    e2e = ci["jobs"]["e2e-kind"]
    assert e2e["env"]["IMAGE"] == "${{ needs.build.outputs.image }}"
    uploads = [s for s in ci["jobs"]["build"]["steps"] if s.get("with", {}).get("name") == "image"]
    downloads = [s for s in e2e["steps"] if s.get("with", {}).get("name") == "image"]
    assert uploads and downloads
    assert any(s.get("uses", "").startswith("helm/kind-action@") for s in e2e["steps"])


def test_model_artifact_flows_from_train_to_build_and_release(ci):
    # artifacts/model is a link to a hidden version directory: train uploads a dereferenced copy.
    steps = ci["jobs"]["train"]["steps"]
    upload = next(i for i, s in enumerate(steps) if s.get("with", {}).get("name") == "model")
    copied = steps[upload]["with"]["path"].replace("${{ runner.temp }}", "$RUNNER_TEMP")
    assert f'cp -RL artifacts/model "{copied}"' in steps[upload - 1]["run"]
    for job_id in ("build", "release"):
        named = [s for s in ci["jobs"][job_id]["steps"] if s.get("with", {}).get("name") == "model"]
        assert named, job_id
        assert named[0]["with"]["path"] == "artifacts/model"


def test_ct_config_points_at_the_chart():
    config = yaml.safe_load((REPO / "ct.yaml").read_text())
    assert config["chart-dirs"] == ["chart"]
    assert (REPO / "chart/wine-quality/Chart.yaml").is_file()


def test_dependabot_watches_actions_and_pip():
    config = yaml.safe_load((REPO / ".github/dependabot.yml").read_text())
    assert {u["package-ecosystem"] for u in config["updates"]} == {"github-actions", "pip"}


# --------------------------------------------------------------------------- audits


def tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {VENV_BIN} (scripts/bootstrap.sh installs it)")
    return str(path)


def test_zizmor_finds_nothing():
    result = subprocess.run(
        [
            tool("zizmor"),
            "--offline",
            "--no-progress",
            "--strict-collection",
            "--format",
            "plain",
            str(REPO / ".github"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_workflows_match_githubs_schema():
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, WORKFLOWS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_config_matches_its_schema():
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.dependabot",
            str(REPO / ".github/dependabot.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_audits_catch_a_bad_workflow(tmp_path):
    """The audits above can fail: an unpinned action with an expression in run: is caught."""
    bad = tmp_path / ".github/workflows/bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request\n"
        "jobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", str(tmp_path / ".github")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "unpinned-uses" in result.stdout
    assert "template-injection" in result.stdout
