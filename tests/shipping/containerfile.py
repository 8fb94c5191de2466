"""The Containerfile read as a builder reads it, and the build context .dockerignore leaves."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field

from tests.servers import ROOT


@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name or self.base}"
        return found[0]


def parse_containerfile(text: str) -> list[Stage]:
    """Stages and instructions: continuation lines joined, comments dropped, flags split."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 else None))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return stages


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), text)


def stage_env(stage: Stage, base: dict[str, str]) -> dict[str, str]:
    """The environment a stage's ENV lines build on top of `base`."""
    env = dict(base)
    for instruction in stage.all("ENV"):
        for item in shlex.split(instruction.args):
            name, _, value = item.partition("=")
            env[name] = expand(value, env)
    return env


CONTAINERFILE = (ROOT / "Containerfile").read_text()
STAGES = parse_containerfile(CONTAINERFILE)
BUILD, FINAL = STAGES[0], STAGES[-1]
CMD: list[str] = json.loads(FINAL.one("CMD").args)
ENTRYPOINT: list[str] = json.loads(FINAL.one("ENTRYPOINT").args)
HEALTHCHECK = FINAL.one("HEALTHCHECK")
HEALTHCHECK_CMD: list[str] = json.loads(HEALTHCHECK.args.removeprefix("CMD").strip())
# What the official python image sets before our ENV lines.
IMAGE_BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
PYPROJECT_VERSION = re.search(
    r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
).group(1)  # type: ignore[union-attr]


def cmd_option(argv: list[str], option: str) -> str:
    assert option in argv, f"{option} is missing from {argv}"
    return argv[argv.index(option) + 1]


def uv_sync_command() -> str:
    runs = [i for i in BUILD.all("RUN") if "uv sync" in i.args]
    assert len(runs) == 1, "the build stage installs the dependencies with one `uv sync`"
    return runs[0].args


# The build context (.dockerignore) ---------------------------------------------


def ignore_patterns() -> list[tuple[re.Pattern[str], bool]]:
    """.dockerignore as (regex, negated), with moby's patternmatcher semantics."""
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((re.compile(regex + "$"), negated))
    return patterns


def build_context() -> list[str]:
    """The files `docker build .` sends: every file not excluded by .dockerignore."""
    patterns = ignore_patterns()

    def excluded(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for regex, negated in patterns:
            if any(regex.match(candidate) for candidate in candidates):
                result = not negated
        return result

    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for filename in filenames:
            relative = os.path.relpath(os.path.join(dirpath, filename), ROOT)
            if not excluded(relative):
                files.append(relative)
    return sorted(files)
