"""Fuzzing (hypothesis): random configs, overrides and command lines end in a Config or a
one-line ConfigError / CLI message, never in a traceback from deep inside."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factordiff import cli
from factordiff.config import Config, _valid_keys, load_config, save_config
from factordiff.errors import ConfigError

KEYS = sorted(_valid_keys())
JUNK = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    JUNK,
)
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(JUNK, SCALARS, max_size=3)
)
KEY = st.one_of(st.sampled_from(KEYS), JUNK, st.sampled_from(KEYS).map(lambda k: k + ".x"))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _as_text(value: object) -> str:
    if isinstance(value, list | dict):
        import json

        return json.dumps(value, default=str)
    return str(value)


def _accepts_or_explains(make) -> None:
    try:
        cfg = make()
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), str(exc)
    else:
        assert isinstance(cfg, Config)


@FUZZ
@given(st.lists(st.tuples(KEY, VALUES), max_size=4))
def test_random_overrides_load_or_raise_config_error(pairs) -> None:
    overrides = [f"{k}={_as_text(v)}" for k, v in pairs]
    _accepts_or_explains(lambda: load_config("quickstart", overrides))


@FUZZ
@given(st.lists(JUNK, max_size=3))
def test_malformed_override_strings(overrides) -> None:
    _accepts_or_explains(lambda: load_config("quickstart", overrides))


@FUZZ
@given(st.one_of(JUNK, st.dictionaries(KEY, VALUES, max_size=4), st.lists(VALUES, max_size=3)))
def test_random_yaml_files(tmp_path_factory, content) -> None:
    import yaml

    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    text = content if isinstance(content, str) else yaml.safe_dump(content)
    path.write_text(text)
    _accepts_or_explains(lambda: load_config(path))


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3))
def test_nested_yaml_with_real_keys(tmp_path_factory, values) -> None:
    import yaml

    tree: dict = {}
    for key, value in values.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[leaf] = value
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    _accepts_or_explains(lambda: load_config(path))


def test_valid_config_round_trips_after_fuzzing(tmp_path: Path) -> None:
    cfg = load_config("quickstart", ["train.max_steps=7"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


COMMANDS = st.sampled_from(
    [["config", "show"], ["eval"], ["data", "show"], ["data", "list"], ["metrics"], ["train"],
     ["bogus"], []]
)  # fmt: skip
ARG = st.one_of(
    JUNK,
    st.sampled_from(
        [
            "quickstart",
            "shapes3d",
            "--out",
            "--scale",
            "--metrics",
            "-1",
            "nan",
            "train.max_steps=0",
            "model.encoder.kind=vae",
            "--help=3",
            "--device",
            "cuda:9",
            "x.png",
            "/nonexistent/run",
        ]
    ),  # fmt: skip
)


@pytest.fixture(scope="module")
def scratch_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cwd")


@settings(max_examples=120, deadline=None)
@given(command=COMMANDS, args=st.lists(ARG, max_size=4))
def test_random_command_lines_end_in_a_message_not_a_traceback(
    scratch_dir: Path, command: list[str], args: list[str]
) -> None:
    if command == ["train"]:  # a valid config would start training: make it invalid
        command = ["train", "quickstart", "train.max_steps=-1"]
    argv, cwd = sys.argv, os.getcwd()
    sys.argv = ["factordiff", *command, *args]
    os.chdir(scratch_dir)
    try:
        with pytest.raises(SystemExit) as exit_info:  # any other exception fails the test
            cli.main()
    finally:
        sys.argv = argv
        os.chdir(cwd)
    assert exit_info.value.code in (0, 1, 2, None)
