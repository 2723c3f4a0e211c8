"""The model registry: names, [0,1] input with normalisation inside, one fake logit, checkpoints."""

from __future__ import annotations

import pytest
import torch

from fakeproof.models import (IMAGENET_MEAN, IMAGENET_STD, ModelError, create_model, list_models,
                              load_checkpoint, model_config, save_checkpoint)


def test_registry_has_required_backbones() -> None:
    assert {"smallcnn", "mobilenet_v3_small"} <= set(list_models())
    assert model_config("mobilenet_v3_small").mean == IMAGENET_MEAN
    with pytest.raises(ModelError, match="model.name = 'xception': unknown; use one of"):
        create_model("xception")


@pytest.mark.parametrize("name", ["smallcnn", "mobilenet_v3_small"])
def test_single_logit_and_normalisation_inside(name: str) -> None:
    torch.manual_seed(0)
    m = create_model(name).eval()
    x = torch.rand(2, 3, 64, 64)
    assert m(x).shape == (2, 1)
    # The first layer sees normalised pixels: (x - mean) / std.
    seen = {}
    m.backbone.register_forward_pre_hook(lambda mod, inp: seen.setdefault("x", inp[0]))
    m(x)
    cfg = model_config(name)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    torch.testing.assert_close(seen["x"], (x - mean) / std)


def test_checkpoint_round_trip_is_exact_and_deterministic(tmp_path) -> None:
    torch.manual_seed(1)
    m = create_model("smallcnn").eval()
    save_checkpoint(tmp_path / "a.pt", m, {"stage": "test", "image_size": 64})
    first = (tmp_path / "a.pt").read_bytes()
    save_checkpoint(tmp_path / "a.pt", m, {"stage": "test", "image_size": 64})
    assert (tmp_path / "a.pt").read_bytes() == first
    m2, meta = load_checkpoint(tmp_path / "a.pt")
    assert meta["image_size"] == 64 and not m2.training
    x = torch.rand(3, 3, 64, 64)
    torch.testing.assert_close(m(x), m2(x))


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ModelError, match="not a fakeproof checkpoint"):
        load_checkpoint(bad)


def test_pretrained_from_local_file_and_clear_offline_errors(tmp_path, monkeypatch) -> None:
    torch.manual_seed(2)
    src = create_model("smallcnn")
    f = tmp_path / "w.pt"
    torch.save(src.backbone.state_dict(), f)
    m = create_model("smallcnn", pretrained=str(f))
    conv = next(k for k in src.backbone.state_dict() if k.endswith("weight"))
    torch.testing.assert_close(m.backbone.state_dict()[conv], src.backbone.state_dict()[conv])
    with pytest.raises(ModelError, match="no such file"):
        create_model("smallcnn", pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(ModelError, match="has no ImageNet weights"):
        create_model("smallcnn", pretrained="imagenet")
    # No network here and an empty TORCH_HOME: a one-line error that says what to do.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(ModelError, match=r"could not load .*TORCH_HOME"):
        create_model("mobilenet_v3_small", pretrained="imagenet")
