"""The one params loader: fractions, defaults, and a one-line error for every bad value."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from fakeproof.config import ParamsError, load_params, params_from_dict, parse_fraction

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(raw: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


def test_project_params_load() -> None:
    p = load_params(ROOT / "params.yaml")
    assert p.data.source == "demo"
    assert math.isclose(p.adv.eps, 4 / 255)
    assert math.isclose(p.adv.alpha, 1 / 255)
    assert p.eval.eps[0] == 0.0 and math.isclose(p.eval.eps[-1], 4 / 255)


@pytest.mark.parametrize("value, expected", [
    ("4/255", 4 / 255), ("8/255", 8 / 255), (" 2 / 255 ", 2 / 255), ("0.5/255", 0.5 / 255),
    (0.03, 0.03), (0, 0.0), (1, 1.0), ("0.25", 0.25), ("1e-3", 1e-3),
])
def test_fraction_strings_and_floats(value, expected) -> None:
    assert math.isclose(parse_fraction(value, "adv.eps"), expected)


def test_dvc_written_fraction_round_trip(raw, tmp_path) -> None:
    # `dvc exp run -S adv.eps=4/255` writes the value unquoted; YAML reads it as a string.
    text = (ROOT / "params.yaml").read_text().replace("\n  eps: 4/255", "\n  eps: 2/255", 1)
    assert yaml.safe_load(text)["adv"]["eps"] == "2/255"
    f = tmp_path / "params.yaml"
    f.write_text(text)
    assert math.isclose(load_params(f).adv.eps, 2 / 255)


@pytest.mark.parametrize("key, value, fragment", [
    ("adv.eps", "4/0", "division by zero"),
    ("adv.eps", "-1", "out of range"),
    ("adv.eps", -1, "out of range"),
    ("adv.eps", "abc", "not a number"),
    ("adv.eps", 1.5, "out of range"),
    ("adv.eps", "300/255", "out of range"),
    ("adv.eps", True, "not a number"),
    ("adv.alpha", "1/0", "division by zero"),
    ("eval.eps", ["0", "x/255"], "not a number"),
    ("eval.eps", "4/255", "not a list"),
    ("eval.attacks", ["pgd", "cw"], "not allowed"),
    ("train.epochs", 0, "out of range"),
    ("train.epochs", 2.5, "not an integer"),
    ("train.augment", "yes", "true or false"),
    ("model.name", "", "non-empty"),
    ("data.source", "youtube", "not allowed"),
])
def test_bad_values_name_the_key(raw, key, value, fragment) -> None:
    with pytest.raises(ParamsError) as e:
        params_from_dict(with_value(raw, key, value))
    msg = str(e.value)
    assert "\n" not in msg
    assert key.split(".")[0] in msg and key.split(".")[-1] in msg
    assert fragment in msg


def test_missing_section(raw) -> None:
    bad = copy.deepcopy(raw)
    del bad["adv"]
    with pytest.raises(ParamsError, match=r"adv: missing section"):
        params_from_dict(bad)


def test_unknown_key_and_section(raw) -> None:
    with pytest.raises(ParamsError, match=r"adv\.epsilon: unknown key; allowed keys in adv: eps"):
        params_from_dict(with_value(raw, "adv.epsilon", "4/255"))
    bad = copy.deepcopy(raw)
    bad["training"] = {}
    with pytest.raises(ParamsError, match=r"training: unknown section"):
        params_from_dict(bad)


def test_defaults_fill_missing_keys(raw) -> None:
    bad = copy.deepcopy(raw)
    del bad["eval"]["square_queries"]
    assert params_from_dict(bad).eval.square_queries == 300


def test_split_ratios_must_sum_to_one(raw) -> None:
    with pytest.raises(ParamsError, match="must sum to 1"):
        params_from_dict(with_value(raw, "split.train", 0.9))


def test_file_errors(tmp_path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    f = tmp_path / "params.yaml"
    f.write_text("adv: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML at line"):
        load_params(f)
