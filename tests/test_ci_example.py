"""The CI example (examples/ci/github-actions.yml) works as written.

It is checked against GitHub's own workflow JSON Schema (the copy check-jsonschema ships),
and its jobs are played here the way GitHub would run them: each job in a fresh clone of a
repository (with a bare "origin" to push the lock to), every `run:` step run by bash
exactly as written but for what only GitHub has (`${{ ... }}` values, the paid provider
swapped for the local one, the `pip install .` of this very checkout), and the few actions
it uses simulated by what they do (cache restore/save, artifact upload/download). A step
another feature adds to the workflow needs a line in `ACTIONS` if it uses a new action.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"
# The same cycle with a shared cache (README "Sharing across machines"): checked against the
# schema here; what its jobs do (push, pull, a --frozen rebuild from the cache alone) is
# tested in tests/test_cache.py against a real S3 server.
CACHE_WORKFLOW = ROOT / "examples" / "ci" / "github-actions-cache.yml"
# One short song: the same chain, a fraction of the ffmpeg work.
ONE = ('tracks=[{title: Sunrise, style: indie folk, theme: first light}]')
QUICK = "provider: {kind: local, take_seconds: 14}\n"
CONTEXT = {"github.run_id": "4242", "github.run_attempt": "1",
           "secrets.SUNO_API_KEY": "sk-ci-example-not-a-real-key"}


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("workflow", [WORKFLOW, CACHE_WORKFLOW], ids=lambda p: p.name)
def test_the_workflow_is_valid_for_github(tmp_path, workflow: Path):
    ok = check_jsonschema(workflow)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The check is real: the same file with a misspelt key is refused.
    broken = tmp_path / "broken.yml"
    broken.write_text(workflow.read_text().replace("runs-on:", "run-on:", 1))
    assert check_jsonschema(broken).returncode != 0


def test_the_workflow_keeps_state_and_lock_whatever_happens():
    flow = yaml.safe_load(WORKFLOW.read_text())
    steps = flow["jobs"]["release"]["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    assert "actions/cache" not in uses  # saves nothing when the job fails
    save = steps[uses.index("actions/cache/save")]
    assert save["if"] == "always()"
    assert uses.index("actions/cache/restore") < uses.index("actions/cache/save")
    runs = [s["run"] for s in steps if "run" in s]
    assert not any("pip install sunoflow" in r for r in runs)  # not on PyPI
    assert any("git push" in r and "album.lock" in r for r in runs)
    assert any("--frozen" in s.get("run", "") for s in flow["jobs"]["rebuild"]["steps"])


# --- playing the jobs ----------------------------------------------------------------------

def expand(text: str) -> str:
    def value(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        assert expr in CONTEXT, f"the test does not know ${{{{ {expr} }}}}"
        return CONTEXT[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", value, text)


def job_runs(job: dict[str, Any], event: str) -> bool:
    cond = job.get("if")
    known = {"github.event_name == 'pull_request'": event == "pull_request",
             "github.event_name != 'pull_request'": event != "pull_request", None: True}
    assert cond in known, f"the test does not know the condition {cond!r}"
    return known[cond]


def shell(ws: Path, step: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    script = expand(step["run"])
    # This checkout is what `pip install .` would install; its interpreter is on PATH below.
    # (Anything else pip would fetch from the network, which a test never reaches.)
    assert re.findall(r"pip install \S+", script) in ([], ["pip install ."]), script
    script = script.replace("pip install .", "python -c 'import runner'")
    # No key and no service here: the paid provider becomes the local one.
    script = script.replace("--provider sunoapi", "--provider local")
    env = {**os.environ, **{k: expand(str(v)) for k, v in step.get("env", {}).items()},
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("NO_COLOR", None)
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


class Actions:
    """What the workflow's actions do, on this machine."""

    def __init__(self, root: Path) -> None:
        self.caches = root / "caches"
        self.artifacts = root / "artifacts"
        self.saved: list[str] = []

    def run(self, ws: Path, name: str, args: dict[str, Any]) -> None:
        args = {k: expand(str(v)) for k, v in args.items()}
        if name in ("actions/checkout", "actions/setup-python"):
            return  # the job's workspace is a fresh clone; this interpreter is the Python
        if name == "actions/cache/restore":
            keys = [args["key"], *args.get("restore-keys", "").split()]
            for key in keys:
                found = sorted(self.caches.glob(f"{key}*")) if self.caches.exists() else []
                if found:
                    shutil.copytree(found[-1], ws / args["path"], dirs_exist_ok=True)
                    return
            return
        if name == "actions/cache/save":
            if (ws / args["path"]).exists():
                shutil.copytree(ws / args["path"], self.caches / args["key"])
                self.saved.append(args["key"])
            return
        if name == "actions/upload-artifact":
            for p in args["path"].split():
                src = ws / p
                dest = self.artifacts / args["name"] / p
                if src.is_dir():
                    shutil.copytree(src, dest, dirs_exist_ok=True)
                elif src.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest)
            return
        if name == "actions/download-artifact":
            shutil.copytree(self.artifacts / args["name"], ws / args.get("path", "."),
                            dirs_exist_ok=True)
            return
        raise AssertionError(f"the test does not know the action {name}: add what it does")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def play(root: Path, flow: dict[str, Any], event: str, actions: Actions) -> dict[str, list]:
    """Run every job of `flow` that `event` starts, in order; per job, the step results."""
    results: dict[str, list] = {}
    for name, job in flow["jobs"].items():
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        if not job_runs(job, event) or any(n not in results for n in needs):
            continue
        # A fresh clone at the same path for every job, as on GitHub's runners (the state
        # directory's journal holds absolute paths of its files).
        ws = root / "work"
        shutil.rmtree(ws, ignore_errors=True)
        git(root, "clone", "-q", "-b", "main", str(root / "origin.git"), ws.name)
        failed = False
        results[name] = []
        for step in job["steps"]:
            if failed and step.get("if") != "always()":
                continue
            if "uses" in step:
                actions.run(ws, step["uses"].split("@")[0], step.get("with", {}))
                continue
            r = shell(ws, step)
            results[name].append((step.get("name", step["run"]), r))
            failed = failed or r.returncode != 0
        assert not failed, [(n, r.stdout, r.stderr) for n, r in results[name]
                            if r.returncode]
    return results


@pytest.mark.slow  # the example album, end to end
def test_the_workflow_shell_steps_build_commit_and_rebuild_frozen(tmp_path):
    flow = yaml.safe_load(WORKFLOW.read_text())
    # The repository: the examples (the album made short) and the stock recipes.
    repo = tmp_path / "src"
    shutil.copytree(ROOT / "examples", repo / "examples",
                    ignore=shutil.ignore_patterns("out", ".sunoflow", "*.lock"))
    shutil.copytree(ROOT / "recipes", repo / "recipes")
    album = (repo / "examples" / "album.yaml").read_text()
    start = album.index("  tracks:\n")
    end = album.index("steps:\n")
    (repo / "examples" / "album.yaml").write_text(
        album[:start] + "  " + ONE.replace("=", ": ", 1) + "\n" + QUICK + album[end:])
    git(tmp_path, "init", "-q", "--bare", "origin.git")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "album")
    git(repo, "push", "-q", str(tmp_path / "origin.git"), "main")
    actions = Actions(tmp_path)

    pr = play(tmp_path, flow, "pull_request", actions)
    assert list(pr) == ["preview"]
    assert (tmp_path / "artifacts" / "preview-album" / "examples" / "out" / "album" /
            "manifest.json").exists()

    push = play(tmp_path, flow, "push", actions)
    assert list(push) == ["release", "rebuild"]
    assert actions.saved == ["sunoflow-state-4242-1"]
    # The lock the release wrote is committed on main, and kept as an artifact.
    log = git(tmp_path / "origin.git", "log", "--format=%s", "main")
    assert log.splitlines()[0] == "album.lock: the album built by run 4242"
    assert "examples/album.lock" in git(tmp_path / "origin.git", "show", "--stat",
                                        "--format=", "main")
    assert (tmp_path / "artifacts" / "album" / "examples" / "album.lock").exists()
    # The rebuild made the same album from the lock, paying for nothing.
    [(_, frozen)] = [x for x in push["rebuild"] if "--frozen" in x[0] or "lock alone" in x[0]]
    assert frozen.returncode == 0, frozen.stderr
    assert (tmp_path / "work" / "frozen.json").exists()
