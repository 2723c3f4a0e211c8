"""The one params loader: fractions, defaults, and a one-line error for every bad value."""

from __future__ import annotations

import copy
import math

import pytest
import yaml

from _params import default_params_raw
from fakeproof.config import (ParamsError, as_dict, default_params, load_params, params_from_dict,
                              parse_fraction)



@pytest.fixture(scope="module")
def raw() -> dict:
    return default_params_raw()


def with_value(raw: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


def test_code_defaults_round_trip_through_yaml(raw) -> None:
    """The defaults every test builds on: dumped to YAML and loaded back, the same Params."""
    p = params_from_dict(raw)
    assert params_from_dict(yaml.safe_load(yaml.safe_dump(raw, sort_keys=False))) == p
    assert p.data.source == "demo" and p.eval.eps[0] == 0.0


@pytest.mark.parametrize("value, expected", [
    ("4/255", 4 / 255), ("8/255", 8 / 255), (" 2 / 255 ", 2 / 255), ("0.5/255", 0.5 / 255),
    (0.03, 0.03), (0, 0.0), (1, 1.0), ("0.25", 0.25), ("1e-3", 1e-3),
])
def test_fraction_strings_and_floats(value, expected) -> None:
    assert math.isclose(parse_fraction(value, "adv.eps"), expected)


def test_dvc_written_fraction_round_trip(raw, tmp_path) -> None:
    # `dvc exp run -S adv.eps=4/255` writes the value unquoted; YAML reads it as a string.
    text = yaml.safe_dump(with_value(raw, "adv.eps", "4/255"), sort_keys=False)
    assert text.count("\n  eps: 4/255\n") == 1
    text = text.replace("\n  eps: 4/255\n", "\n  eps: 2/255\n")
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
    ("train.epochs", 0, "out of range"),
    ("train.epochs", 2.5, "not an integer"),
    ("train.augment", "yes", "not allowed"),
    ("train.grad_accum", 0, "out of range"),
    ("eval.corruptions", ["jpeg", "fog"], "not allowed"),
    ("eval.corruption_severities", [1, 6], "out of range"),
    ("eval.corruption_severities", [0], "out of range"),
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
    del bad["train"]["epochs"]
    assert params_from_dict(bad).train.epochs == 10  # the documented default (config.py)


def test_eval_preset_budgets_and_explicit_overrides(raw) -> None:
    from fakeproof.evaluate import eval_budget

    quick = eval_budget(params_from_dict(raw).eval)
    assert (quick.apgd_steps, quick.square_queries) == (10, 100)
    std = eval_budget(params_from_dict(with_value(raw, "eval.preset", "standard")).eval)
    assert (std.apgd_steps, std.square_queries, std.pgd_steps) == (100, 5000, 50)
    assert std.apgd_restarts > 1 and std.pgd_restarts > 1
    over = with_value(with_value(raw, "eval.preset", "standard"), "eval.square_queries", 77)
    assert eval_budget(params_from_dict(over).eval).square_queries == 77


def test_attacked_videos_come_from_the_preset_unless_set(raw) -> None:
    from fakeproof.errors import EvaluationError
    from fakeproof.evaluate import attack_videos

    def videos(*pairs):
        r = raw
        for k, v in pairs:
            r = with_value(r, k, v)
        return attack_videos(params_from_dict(r).eval)

    assert videos() == 15  # quick: 15 whole videos
    assert videos(("eval.preset", "standard")) is None  # standard: every test video
    assert videos(("eval.preset", "standard"), ("eval.attack_videos", 12)) == 12
    assert videos(("eval.attack_videos", 0)) is None  # 0: every test video under any preset
    with pytest.raises(EvaluationError, match="eval.attack_videos = 1"):
        videos(("eval.attack_videos", 1))


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


def test_unknown_attack_names_are_refused_naming_the_key() -> None:
    """Registry names are checked against the registry itself (not a copy of its names), by the
    stage that uses them: config stays free of the attack code, so editing an attack re-runs
    only the stages that run attacks."""
    from fakeproof.attacks import AttackError, check_attack_names

    with pytest.raises(AttackError, match=r"eval.attacks\[1\] = 'cw': unknown attack; use one of"):
        check_attack_names(["pgd", "cw"])
    check_attack_names(["fgsm", "pgd", "apgd", "square"])


def test_params_check_finds_every_drift_in_a_file_it_is_given(tmp_path, capsys) -> None:
    """The maintainer's check (`make check-params`) that the shipped params.yaml mirrors the code
    defaults, exercised on files the test writes: the suite never reads the project's own
    params.yaml, which a user's experiment or committed tuning is free to change."""
    from fakeproof.params_check import drift, main

    assert drift(default_params_raw()) == []
    assert drift(default_params_raw(adv={"eps": 2 / 255})) == []  # "2/255", spelt as a float
    changed = default_params_raw(adv={"eps": "4/255"})
    del changed["train"]["epochs"]
    lines = drift(changed, "p.yaml")
    assert lines == ["p.yaml: train.epochs: missing (default 10)",
                     f"p.yaml: adv.eps = {4 / 255!r}, default {2 / 255!r}"]
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(changed, sort_keys=False))
    assert main([str(f)]) == 1
    assert "adv.eps" in capsys.readouterr().out
    f.write_text(yaml.safe_dump(default_params_raw(), sort_keys=False))
    assert main([str(f)]) == 0
    assert main([str(tmp_path / "absent.yaml")]) == 2
