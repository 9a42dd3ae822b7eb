"""The README's install steps, followed literally in a scratch folder standing in for `/`.

Every path under /opt and /etc is prefixed with the scratch folder; the steps that
change the machine itself (users, sysctl, systemctl) are the only ones left out.
The units that come out must satisfy `systemd-analyze verify`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reka_sync import __version__
from tests.conftest import REPO

MACHINE_WIDE = ("useradd", "usermod", "sysctl", "systemctl", "journalctl", "userdel")


def install_steps() -> list[str]:
    """Return the shell lines of the README's install block, comments left out."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- install:begin -->", 1)[1].split("<!-- install:end -->", 1)[0]
    body = block.split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in body.splitlines() if line.strip() and not line.startswith("#")]


def prefixed(text: str, root: Path) -> str:
    """Given a command or unit file, return it with /opt/ and /etc/ moved under `root`."""
    return re.sub(r"(?<![\w.])/(opt|etc)/", rf"{root}/\1/", text)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_readme_install_steps_give_units_that_systemd_accepts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for folder in ("etc/systemd/system", "etc/sysctl.d", "opt"):  # there on any machine
        (root / folder).mkdir(parents=True)
    steps = install_steps()
    assert any(s.startswith("systemctl enable --now reka-sync") for s in steps)
    for step in steps:
        if step.split()[0] in MACHINE_WIDE:
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", prefixed(step, root)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
    units = root / "etc/systemd/system"
    for unit in ("reka-sync.service", "reka-sync-backfill.service"):
        path = units / unit
        path.write_text(prefixed(path.read_text(), root))  # ExecStart, LoadCredential
        assert f"{root}/opt/reka-sync/venv/bin/reka-sync" in path.read_text()
    (root / "etc/reka-sync/api-key").write_text("key-from-the-operator")
    verified = subprocess.run(
        ["systemd-analyze", "verify", "reka-sync.service", "reka-sync-backfill.service"],
        cwd=units,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert "reka-sync" not in verified.stderr, verified.stderr
    assert (root / "etc/sysctl.d/60-reka-sync.conf").read_text().count("max_user_watches") == 1


def test_the_wheel_installs_beside_python_daemon(tmp_path: Path) -> None:
    """The import name is reka_sync: python-daemon's `daemon` package can live beside it."""
    source = tmp_path / "source"  # a clean copy: no build/ left over from an older layout
    shutil.copytree(
        REPO / "daemon", source / "daemon", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("reka_sync-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet"]
    for packages in ([str(wheel), "python-daemon"], ["--force-reinstall", "--no-deps", str(wheel)]):
        installed = subprocess.run(
            [*pip, *packages], capture_output=True, text=True, timeout=600, check=False
        )
        assert installed.returncode == 0, installed.stderr
    version = subprocess.run(
        [str(venv / "bin/reka-sync"), "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"reka-sync {__version__}"
    both = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import daemon, reka_sync.cli; print(daemon.DaemonContext)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert both.returncode == 0 and "DaemonContext" in both.stdout, both.stderr
