"""Configuration: the example loads, problems come with key paths, keys stay secret."""

from __future__ import annotations

import re
import subprocess
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from reka_sync.config import load_config, parse_config
from reka_sync.credentials import Secret, require_api_key, resolve_api_key
from reka_sync.errors import ConfigError
from tests.conftest import PYTHON, REPO, cli_env, write_config


def problems_of(data: dict, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "c.toml", data))
    return caught.value.problems


def test_example_config_loads_and_documents_every_key(tmp_path: Path, clean_env: None) -> None:
    config = load_config(REPO / "config.example.toml")
    assert config.watch.settle_seconds == 15
    assert [r.match for r in config.groups.rules] == [
        "cameras/{camera}/**",
        "projects/{project}/**",
    ]
    text = (REPO / "config.example.toml").read_text()
    assert "[[groups.rules]]" in text
    assert config.upload.schedule == (), "the example must not put windows in force"
    # The commented example windows load, and document every key of a window.
    example = re.sub(r"^# ((?:\[\[upload\.schedule\]\]|[a-z_]+ = ).*)$", r"\1", text, flags=re.M)
    example = example.split("[[upload.schedule]]", 1)
    windows = "[[upload.schedule]]" + re.split(r"\n\[(?!\[upload\.schedule)", example[1])[0]
    schedule = load_config(
        write_config(tmp_path / "w.toml", {"upload": tomllib.loads(windows)["upload"]})
    ).upload.schedule
    assert [w.name for w in schedule] == ["mon-fri 08:00-19:00", "mon-sun 19:00-23:00"]
    assert schedule[0].max_rate == 5 * 1024 * 1024 and schedule[1].workers == 0
    for key in ("days", "hours", "max_rate", "workers", "abort_in_flight"):
        assert f"\n# {key} = " in text, f"upload.schedule[].{key} is not documented"
    for section in ("api", "journal", "watch", "upload", "groups", "index", "metrics"):
        for name in fields(getattr(config, section)):
            if name.name in ("rules", "schedule"):
                continue
            assert re.search(rf"^{name.name} = ", text, re.M), (
                f"{section}.{name.name} is not documented in config.example.toml"
            )


def test_defaults_when_sections_are_absent(tmp_path: Path, clean_env: None) -> None:
    config = load_config(write_config(tmp_path / "c.toml", {}))
    assert config.upload.workers == 4
    assert config.api.base_url == "https://vision-agent.api.reka.ai"
    assert config.watch.observer == "auto"


def test_every_problem_is_reported_at_once_with_its_key_path(
    tmp_path: Path, clean_env: None
) -> None:
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    found = problems_of(
        {
            "api": {"base_url": "ftp://x", "api_key_file": str(tmp_path / "nope")},
            "watch": {
                "roots": [str(tmp_path), str(not_a_dir), 7],
                "settle_seconds": "soon",
                "observer": "magic",
                "extensions": [],
            },
            "upload": {"workers": 0, "max_attempts": True},
            "groups": {
                "rules": [{"match": "cams/{cam}/**", "group": "Cam {camera}"}, {"group": "x"}]
            },
            "surprise": {"a": 1},
        },
        tmp_path,
    )
    expected_prefixes = [
        "api.base_url:",
        "api.api_key_file:",
        "watch.roots[1]:",
        "watch.roots[2]:",
        "watch.settle_seconds:",
        "watch.observer:",
        "watch.extensions:",
        "upload.workers:",
        "upload.max_attempts:",
        "groups.rules[0].group:",
        "groups.rules[1].match:",
        "surprise:",
    ]
    for prefix in expected_prefixes:
        assert any(p.startswith(prefix) for p in found), f"{prefix} missing from {found}"
    assert len(found) == len(expected_prefixes)


def test_unknown_keys_are_errors_at_every_level(tmp_path: Path, clean_env: None) -> None:
    found = problems_of(
        {
            "watch": {"rootz": []},
            "groups": {"rules": [{"match": "a/**", "group": "A", "extra": 1}]},
        },
        tmp_path,
    )
    assert found == [
        "watch.rootz: unknown key; see config.example.toml for the keys there are",
        "groups.rules[0].extra: unknown key; see config.example.toml for the keys there are",
    ]


def test_features_are_checked_offline_against_the_documented_list(
    tmp_path: Path, clean_env: None
) -> None:
    found = problems_of(
        {
            "index": {"features": ["transcript", "summary"], "max_per_day": -1},
            "groups": {
                "rules": [
                    {"match": "a/**", "group": "A", "features": ["embeddings", "caption"]},
                    {"match": "b/**", "group": "B", "features": "transcript"},
                ]
            },
        },
        tmp_path,
    )
    assert found == [
        "groups.rules[0].features[1]: 'caption' is not a feature; use transcript, captions, "
        "embeddings, objects",
        "groups.rules[1].features: must be a list, not a string",
        "index.features[1]: 'summary' is not a feature; use transcript, captions, embeddings, "
        "objects",
        "index.max_per_day: must be 0 or more",
    ]
    config = load_config(
        write_config(
            tmp_path / "ok.toml",
            {
                "index": {"features": ["captions"]},
                "groups": {"rules": [{"match": "a/**", "group": "A", "features": ["objects"]}]},
            },
        )
    )
    rules = config.rules()
    assert rules.features("a/x.mp4") == ("objects",)
    assert rules.features("elsewhere/x.mp4") == ("captions",)


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[watch]\nsettle_seconds = 1\nroots = [1,,]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "line 3" in caught.value.problems[0] and "column" in caught.value.problems[0]


def test_missing_root_is_a_warning_not_an_error(tmp_path: Path, clean_env: None) -> None:
    config = load_config(
        write_config(tmp_path / "c.toml", {"watch": {"roots": [str(tmp_path / "share")]}})
    )
    assert config.warnings and "does not exist" in config.warnings[0]
    assert config.watch.roots == (tmp_path / "share",)


def test_bad_globs_and_templates(tmp_path: Path, clean_env: None) -> None:
    found = problems_of(
        {
            "watch": {"ignore": ["a**b"]},
            "groups": {
                "rules": [{"match": "x/{a}/{a}", "group": "G"}, {"match": "x/{a}", "group": "G {a"}]
            },
        },
        tmp_path,
    )
    assert found[0].startswith("watch.ignore[0]:")
    assert found[1].startswith("groups.rules[0].match:") and "twice" in found[1]
    assert found[2].startswith("groups.rules[1].group:")


def test_plain_http_allowed_only_to_loopback_or_when_asked(tmp_path: Path, clean_env: None) -> None:
    ok = parse_config({"api": {"base_url": "http://127.0.0.1:9000"}})
    assert ok.api.base_url == "http://127.0.0.1:9000"
    assert parse_config({"api": {"base_url": "http://nas.lan", "allow_insecure_http": True}})
    assert problems_of({"api": {"base_url": "http://nas.lan"}}, tmp_path)[0].startswith(
        "api.base_url"
    )


def test_key_resolution_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "reka-api-key").write_text("from-credential")
    config = parse_config({"api": {"api_key_file": str(key_file)}})
    bare = parse_config({})
    assert resolve_api_key(bare) is None
    with pytest.raises(ConfigError, match="no API key found"):
        require_api_key(bare)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_api_key(bare) == Secret("from-credential")
    assert resolve_api_key(config) == Secret("from-file")
    monkeypatch.setenv("REKA_API_KEY", "from-env")
    assert resolve_api_key(config) == Secret("from-env")


def test_unreadable_or_empty_key_file(tmp_path: Path, clean_env: None) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("  \n")
    config = parse_config({"api": {"api_key_file": str(key_file)}})
    with pytest.raises(ConfigError, match="is empty"):
        resolve_api_key(config)


def test_secret_never_shows_itself() -> None:
    secret = Secret("sk-very-secret")
    assert "sk-very-secret" not in repr(secret)
    assert "sk-very-secret" not in str(secret)
    assert "sk-very-secret" not in f"{secret} {secret!r} {[secret]}"
    assert secret.reveal() == "sk-very-secret"


def test_check_config_exits_78_listing_every_problem(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml",
        {"watch": {"settle_seconds": -1, "rootz": 1}, "upload": {"workers": "many"}},
    )
    done = subprocess.run(
        [PYTHON, "-m", "reka_sync", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 78
    assert "watch.settle_seconds: must be 0 or more" in done.stderr
    assert "watch.rootz: unknown key" in done.stderr
    assert "upload.workers: must be an integer, not a string" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_from_environment_variable(tmp_path: Path, config_file: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "reka_sync", "check-config"],
        capture_output=True,
        text=True,
        env=cli_env(REKA_SYNC_CONFIG=str(config_file), REKA_API_KEY="k"),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ok (1 roots, 1 rules" in done.stdout


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "reka_sync", "status", "--config", str(tmp_path / "no.toml")],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 78
    assert "no such file" in done.stderr


def test_list_problems_keep_their_own_index_and_order(tmp_path: Path, clean_env: None) -> None:
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    found = problems_of({"watch": {"roots": [3, str(not_a_dir)], "ignore": [1, "a**b"]}}, tmp_path)
    assert [p.split(":")[0] for p in found] == [
        "watch.roots[0]",
        "watch.roots[1]",
        "watch.ignore[0]",
        "watch.ignore[1]",
    ]
