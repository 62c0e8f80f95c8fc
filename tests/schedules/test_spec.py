"""Spec files (TOML, YAML, JSON), --set overrides and their one-line errors; the shipped examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosanneal import Cosine, SpecError
from cosanneal.schedules.lint import lint
from cosanneal.schedules.spec import apply_overrides, load_spec, parse_value, read_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "schedules"
SGDR = Cosine(0.1, min_lr=1e-4, warmup_steps=200, cycle_steps=400, cycle_mult=2, peak_decay=0.7, max_cycles=3)

TOML = """
kind = "cosine"
peak_lr = 0.1
min_lr = 1e-4
warmup_steps = 200
cycle_steps = 400
cycle_mult = 2
peak_decay = 0.7
max_cycles = 3
"""
YAML = """
kind: cosine
peak_lr: 0.1
min_lr: 1.0e-4
warmup_steps: 200
cycle_steps: 400
cycle_mult: 2
peak_decay: 0.7
max_cycles: 3
"""
JSON = """{"kind": "cosine", "peak_lr": 0.1, "min_lr": 1e-4, "warmup_steps": 200, "cycle_steps": 400,
 "cycle_mult": 2, "peak_decay": 0.7, "max_cycles": 3, "_comment": "notes are ignored"}"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def spec_error(path: Path | None, sets: list[str] | None = None) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, sets or [])
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- reading ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text"), [("s.toml", TOML), ("s.yaml", YAML), ("s.yml", YAML), ("s.json", JSON)]
)
def test_three_formats_give_the_same_schedule(tmp_path: Path, name: str, text: str) -> None:
    s = load_spec(write(tmp_path, name, text))
    assert s == SGDR
    steps = np.arange(3001)
    np.testing.assert_array_equal(s(steps), SGDR(steps))


def test_schedule_table_of_a_training_config(tmp_path: Path) -> None:
    text = '[optimizer]\nname = "sgd"\n\n[schedule]\n' + TOML.replace("\nkind", "kind", 1)
    assert load_spec(write(tmp_path, "train.toml", text)) == SGDR


def test_schedule_mapping_of_a_yaml_config(tmp_path: Path) -> None:
    text = "model: resnet\nschedule:\n" + "".join(f"  {line}\n" for line in YAML.strip().splitlines())
    assert load_spec(write(tmp_path, "train.yaml", text)) == SGDR


def test_read_spec_strips_notes(tmp_path: Path) -> None:
    assert "_comment" not in read_spec(write(tmp_path, "s.json", JSON))


# ---- overrides ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.1", 0.1),
        ("1e-3", 0.001),
        (".5", 0.5),
        ("5", 5),
        ("true", True),
        ("false", False),
        ("null", None),
        ("none", None),
        ("cosine", "cosine"),
        ('"3ep"', "3ep"),
        ("3ep", "3ep"),
        ("[100, 200]", [100, 200]),
        (" 7 ", 7),
    ],
)
def test_parse_value(text: str, value: object) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_overrides_change_the_file_values(tmp_path: Path) -> None:
    s = load_spec(write(tmp_path, "s.toml", TOML), ["peak_lr=0.2", "max_cycles=none", "warmup_steps=3ep"])
    assert isinstance(s, Cosine)
    assert (s.peak_lr, s.max_cycles, s.warmup_steps) == (0.2, None, "3ep")


def test_overrides_alone_build_a_spec() -> None:
    s = load_spec(
        None, ["kind=cosine", "peak_lr=0.1", "cycle_steps=100", "warmup_prefix=false", "warmup_steps=5"]
    )
    assert s == Cosine(0.1, cycle_steps=100, warmup_steps=5, warmup_prefix=False)


def test_dotted_override_reaches_a_join_piece(tmp_path: Path) -> None:
    text = """
kind = "join"
boundaries = [100]
[[schedules]]
kind = "linear"
start_lr = 0.0
end_lr = 0.1
total_steps = 100
[[schedules]]
kind = "cosine"
peak_lr = 0.1
cycle_steps = 900
"""
    s = load_spec(write(tmp_path, "join.toml", text), ["schedules.1.peak_lr=0.2", "schedules.0.end_lr=0.2"])
    assert s(100) == 0.2 and s(99) == pytest.approx(0.198)


def test_schedule_prefix_is_accepted_for_config_files(tmp_path: Path) -> None:
    text = "[schedule]\n" + TOML.replace("\nkind", "kind", 1)
    s = load_spec(write(tmp_path, "train.toml", text), ["schedule.peak_lr=0.3"])
    assert isinstance(s, Cosine) and s.peak_lr == 0.3


def test_apply_overrides_copies() -> None:
    data = {"kind": "join", "schedules": [{"peak_lr": 1}]}
    out = apply_overrides(data, ["schedules.0.peak_lr=2"])
    assert data["schedules"] == [{"peak_lr": 1}] and out["schedules"] == [{"peak_lr": 2}]


# ---- errors: one line naming the file, the key and the fix ------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    message = spec_error(tmp_path / "nope.toml")
    assert "nope.toml: cannot read the file" in message


def test_unknown_suffix(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, "s.txt", TOML))
    assert "must end in .toml, .yaml, .yml, .json" in message and "'.txt'" in message


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, "s.toml", 'kind = "cosine"\npeak_lr 0.1\n'))
    assert message.startswith(f"{tmp_path / 's.toml'}: invalid TOML") and "line 2" in message


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, "s.yaml", "kind: cosine\npeak_lr: [0.1\ncycle_steps: 3\n"))
    assert "invalid YAML at line" in message


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, "s.json", '{"kind": "cosine",\n "peak_lr": }'))
    assert "invalid JSON at line 2, column 13" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "must hold a mapping of keys, got list" in spec_error(write(tmp_path, "s.json", "[1, 2]"))


def test_missing_kind(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, "s.toml", "peak_lr = 0.1\n"))
    assert "no 'kind' key" in message and "cosine" in message
    assert "pass --set kind=" in spec_error(None, ["peak_lr=0.1"])


def test_unknown_kind_suggests_the_close_one() -> None:
    message = spec_error(None, ["kind=cosin", "peak_lr=0.1"])
    assert message.startswith("--set: kind 'cosin' is not a schedule kind; did you mean 'cosine'?")


def test_unknown_key_names_it_and_the_allowed_ones(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, "s.toml", TOML), ["peak=0.1"])
    assert message.startswith(f"{tmp_path / 's.toml'}: unknown parameter 'peak'") and "peak_lr" in message


def test_wrong_type(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, "s.toml", TOML.replace("peak_lr = 0.1", 'peak_lr = "high"')))
    assert message == f"{tmp_path / 's.toml'}: peak_lr must be a number, got 'high'"


def test_bad_value(tmp_path: Path) -> None:
    message = spec_error(write(tmp_path, "s.yaml", YAML), ["cycle_steps=0"])
    assert message == f"{tmp_path / 's.yaml'}: cycle_steps must be > 0, got 0"


def test_missing_required_parameter() -> None:
    assert spec_error(None, ["kind=cosine", "peak_lr=0.1"]) == (
        "--set: cycle_steps is required (length of the first decay in steps, > 0)"
    )


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        ("peak_lr", "--set expects key=value (like peak_lr=0.1), got 'peak_lr'"),
        ("=3", "--set expects key=value"),
        ("schedules..peak_lr=3", "empty part in the dotted key"),
        ("schedules.5.peak_lr=3", "'5' is not an index of a list of 2"),
        ("boundaries.x=3", "'x' is not an index of a list of 1"),
        ("boundaries.0.x=3", "'0' is not a table or a list"),
    ],
)
def test_bad_overrides(pair: str, expected: str) -> None:
    base = [
        "kind=join",
        'schedules=[{kind="constant", lr=0.1}, {kind="constant", lr=0.2}]',
        "boundaries=[10]",
    ]
    assert expected in spec_error(None, [*base, pair])


# ---- the shipped examples -----------------------------------------------------------------------
def test_examples_all_load() -> None:
    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in {".toml", ".yaml", ".json"})
    assert {p.suffix for p in files} == {".toml", ".yaml", ".json"}
    for path in files:
        assert load_spec(path).kind


def test_sgdr_example_ends_exactly_at_its_budget() -> None:
    s = load_spec(EXAMPLES / "sgdr.toml")
    assert s == SGDR and s.horizon == 3000 and s.restarts(3000) == [600, 1400]
    assert lint(s, 3000) == []


@pytest.mark.parametrize(
    ("name", "steps", "codes"),
    [
        ("warmup_cosine.toml", 3000, []),
        ("wsd.toml", 3000, []),
        ("one_cycle.toml", 3000, []),
        ("sgdr_endless.json", 5000, []),
        ("train_config.yaml", 1000, ["CA006"]),
    ],
)
def test_examples_lint_as_documented(name: str, steps: int, codes: list[str]) -> None:
    s = load_spec(EXAMPLES / name)
    assert [w.code for w in lint(s, steps, steps_per_epoch=100)] == codes
