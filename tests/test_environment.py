"""environment.yml must install what pyproject.toml installs."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(requirement: str) -> str:
    return requirement.replace(" ", "").lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_norm(r) for r in pip if not r.startswith("-e")}
    assert listed == wanted, (
        f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    )
    assert "python=3.11" in env["dependencies"]


def test_toolkit_pins_are_in_force():
    from importlib.metadata import version

    assert version("rknn-toolkit2") == "2.5.0"
    assert tuple(int(v) for v in version("numpy").split(".")[:2]) <= (1, 26)
    assert tuple(int(v) for v in version("setuptools").split(".")[:1]) < (81,)
