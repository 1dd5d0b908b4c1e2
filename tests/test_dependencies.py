"""The dependency lock: every installed distribution is pinned in constraints.txt at the
version installed, so `make install` on a new machine gets what CI tested."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parents[1] / "constraints.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line!r} is not an exact pin"
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_every_installed_distribution_is_pinned_at_its_version() -> None:
    pins = _pins()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    ignored = {"whatart", "pip", "setuptools", "wheel"}
    unpinned = sorted(name for name in installed if name not in pins and name not in ignored)
    assert not unpinned, f"installed but not in constraints.txt (run `make lock`): {unpinned}"
    drifted = {name: (pins[name], version) for name, version in installed.items() if name in pins and pins[name] != version}
    assert not drifted, f"constraints.txt pins other versions than installed (pin, installed): {drifted}"
