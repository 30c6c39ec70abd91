"""The lock files pin every dependency pyproject.toml names, within its bounds.

`./oee` installs from them; a dependency added without locking again would be missing
on a fresh clone. Regenerate with the commands in README "Dependencies".
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(lock: str) -> dict[str, str]:
    """Return the version each package of a lock file is pinned to."""
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", (ROOT / lock).read_text(), re.M)
    return {canonicalize_name(name): version for name, version in found}


def requirements(*extras: str, runtime: bool = True) -> list[Requirement]:
    names = list(PROJECT["dependencies"]) if runtime else []
    for extra in extras:
        names += PROJECT["optional-dependencies"][extra]
    ours = canonicalize_name(PROJECT["name"])
    return [r for r in map(Requirement, names) if canonicalize_name(r.name) != ours]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [
        ("requirements.lock", ("embedded",)),
        ("requirements-dev.lock", ("embedded", "test", "lint", "dev")),
        ("requirements-image.lock", ()),
    ],
)
def test_every_dependency_is_pinned_within_its_bounds(lock: str, extras: tuple[str, ...]) -> None:
    pinned = pins(lock)
    for requirement in requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in {lock}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name} {pinned[name]}, outside {requirement.specifier}"
        )


def test_the_runtime_lock_holds_no_test_tools() -> None:
    runtime = pins("requirements.lock")
    for requirement in requirements("test", "lint", runtime=False):
        assert canonicalize_name(requirement.name) not in runtime, requirement.name


def test_the_image_lock_holds_no_embedded_server() -> None:
    # The Docker image runs PostgreSQL in a container of its own (docker-images/postgres);
    # the wheel's 40 MB of server binaries have no place in the services' image.
    image = pins("requirements-image.lock")
    for requirement in requirements("embedded", "test", "lint", runtime=False):
        assert canonicalize_name(requirement.name) not in image, requirement.name


def test_the_image_lock_pins_what_the_runtime_lock_pins() -> None:
    # One set of versions: the containers run what `./oee up` runs.
    runtime = pins("requirements.lock")
    for name, version in pins("requirements-image.lock").items():
        assert runtime.get(name) == version, f"{name}: image {version}, runtime {runtime.get(name)}"
