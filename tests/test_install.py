"""The README's install steps, followed literally in a scratch folder standing in for `/`.

Every path under /opt and /etc is prefixed with the scratch folder; the steps that
change the machine itself (users, sysctl, systemctl) are the only ones left out.
The units that come out, and every other unit in systemd/ (the journal backup's service
and timer), must satisfy `systemd-analyze verify`.
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


def shipped_units() -> list[Path]:
    """Return the unit files the repository ships in systemd/ (services and timers)."""
    return sorted(p for p in (REPO / "systemd").iterdir() if p.suffix in (".service", ".timer"))


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
    installed = {p.name for p in units.iterdir()}
    assert {"reka-sync.service", "reka-sync-backfill.service"} <= installed
    for shipped in shipped_units():  # every unit in systemd/ is verified, installed or not
        if shipped.name not in installed:
            shutil.copy(shipped, units / shipped.name)
    for path in sorted(units.iterdir()):
        path.write_text(prefixed(path.read_text(), root))  # ExecStart, LoadCredential
        if path.suffix == ".service":
            assert f"{root}/opt/reka-sync/venv/bin/reka-sync" in path.read_text()
    (root / "etc/reka-sync/api-key").write_text("key-from-the-operator")
    names = sorted(p.name for p in units.iterdir())
    assert {"reka-sync-journal-backup.service", "reka-sync-journal-backup.timer"} <= set(names)
    verified = subprocess.run(
        ["systemd-analyze", "verify", *names],
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


def unit_settings(text: str) -> dict[str, list[str]]:
    """Given the text of (part of) a unit file, return each key's values in order."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_journal_backup_units_keep_seven_daily_copies_sandboxed_like_the_service() -> None:
    main = (REPO / "systemd/reka-sync.service").read_text()
    service = unit_settings(main)
    backup = unit_settings((REPO / "systemd/reka-sync-journal-backup.service").read_text())
    timer = unit_settings((REPO / "systemd/reka-sync-journal-backup.timer").read_text())
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"]
    assert timer["RandomizedDelaySec"] and timer["WantedBy"] == ["timers.target"]
    assert backup["Type"] == ["oneshot"]
    [command] = backup["ExecStart"]
    assert " journal backup --keep 7 " in command
    assert command.endswith(" /var/lib/reka-sync/backups")
    for key in ("User", "Group", "StateDirectory", "StateDirectoryMode", "UMask"):
        assert backup[key] == service[key], key
    # Every hardening line of the service, but the two a copy needs less of: it reads no
    # media (no roots to list) and talks to no one (fewer kinds of socket, no network).
    hardening = unit_settings(main.split("# --- Hardening", 1)[1].split("[Install]", 1)[0])
    for key in hardening.keys() - {"ReadOnlyPaths", "RestrictAddressFamilies"}:
        assert backup.get(key) == hardening[key], key
    families = set(backup["RestrictAddressFamilies"][0].split())
    assert families < set(hardening["RestrictAddressFamilies"][0].split())
    assert backup["PrivateNetwork"] == ["yes"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_journal_backup_unit_is_rated_at_least_as_safe_as_the_service() -> None:
    def exposure(unit: str) -> float:
        done = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", unit],
            cwd=REPO / "systemd",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        found = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
        if found is None:
            pytest.skip(f"this systemd-analyze cannot rate units offline: {done.stderr}")
        return float(found.group(1))

    assert exposure("reka-sync-journal-backup.service") <= exposure("reka-sync.service")
