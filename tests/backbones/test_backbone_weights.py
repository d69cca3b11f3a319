"""Backbone weights: checked loading (missing / unexpected / mis-shaped keys), the GN and
FrozenBN rules, the torch hub cache for "imagenet", and the one clear offline error."""

import urllib.error

import pytest
import torch
import torchvision

from backbones import WeightsError, build_backbone
from backbones.weights import imagenet_url

RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture
def resnet18_state(randomized_torchvision):
    return randomized_torchvision("resnet18").state_dict()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty TORCH_HOME and a download that fails as it does without network."""
    calls = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


def test_mismatched_checkpoint_names_every_bad_key(tmp_path, resnet18_state):
    state = dict(resnet18_state)
    del state["layer1.0.conv1.weight"]
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    state["layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", weights=tmp_path / "bad.pth")
    message = str(info.value)
    assert "bad.pth" in message
    assert "missing keys (1): layer1.0.conv1.weight" in message
    assert "unexpected keys (1): layer9.0.conv1.weight" in message
    assert ("layer2.0.conv2.weight: checkpoint (128, 128, 1, 1) vs model (128, 128, 3, 3)"
            in message)


def test_other_depth_checkpoint_lists_keys(tmp_path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"missing keys \(\d+\): layer1\.2\.conv1\.weight"):
        build_backbone("resnet34", weights=str(tmp_path / "r18.pth"))
    with pytest.raises(WeightsError, match="unexpected keys .*layer1.0.downsample.0.weight"):
        torch.save(build_backbone("resnet18", shortcut="C", norm="BN").state_dict(),
                   tmp_path / "r18c.pth")
        build_backbone("resnet18", weights=tmp_path / "r18c.pth")  # B has no such projection


def test_wrapped_checkpoint_and_optional_counters(tmp_path, resnet18_state):
    no_counters = {k: v for k, v in resnet18_state.items() if "num_batches_tracked" not in k}
    torch.save({"model": no_counters, "iteration": 7}, tmp_path / "wrapped.pth")
    for norm in ("FrozenBN", "BN"):
        model = build_backbone("resnet18", weights=tmp_path / "wrapped.pth", norm=norm)
        assert torch.equal(model.layer3[1].bn2.running_var,
                           resnet18_state["layer3.1.bn2.running_var"])
        assert torch.equal(model.conv1.weight, resnet18_state["conv1.weight"])


def test_group_norm_takes_gamma_beta_and_drops_bn_statistics(tmp_path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "r18.pth")
    model = build_backbone("resnet18", weights=tmp_path / "r18.pth", norm="GN")
    assert torch.equal(model.bn1.weight, resnet18_state["bn1.weight"])
    assert torch.equal(model.layer2[0].downsample[1].bias,
                       resnet18_state["layer2.0.downsample.1.bias"])
    assert not any("running_" in k for k in model.state_dict())


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_backbone("resnet18", weights=str(tmp_path / "nowhere.pth"))
    torch.save({"conv1.weight": torch.zeros(1), "note": "text"}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="odd.pth.*note"):
        build_backbone("resnet18", weights=tmp_path / "odd.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        build_backbone("resnet18", weights=tmp_path / "junk.pth")


def test_offline_imagenet_error_names_file_folder_and_url(offline, tmp_path):
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", weights="imagenet")
    error = info.value
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    url = f"https://download.pytorch.org/models/{RESNET18_FILE}"
    assert offline == [url]
    message = str(error)
    assert RESNET18_FILE in message and str(folder) in message and url in message
    assert "Temporary failure in name resolution" in message
    assert error.__cause__ is None and error.__suppress_context__  # `raise ... from None`


def test_imagenet_file_in_hub_cache_is_used_without_download(offline, tmp_path, resnet18_state):
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(resnet18_state, folder / RESNET18_FILE)
    model = build_backbone("resnet18", weights="imagenet")
    assert offline == []  # no download tried
    assert torch.equal(model.layer4[1].conv2.weight, resnet18_state["layer4.1.conv2.weight"])


def test_imagenet_versions_and_urls():
    assert imagenet_url("resnet18", "imagenet").endswith("/" + RESNET18_FILE)
    assert imagenet_url("resnet50", "imagenet").endswith("/resnet50-0676ba61.pth")
    assert imagenet_url("resnet50", "imagenet_v2").endswith("/resnet50-11ad3fa6.pth")
    assert imagenet_url("vgg16", "imagenet").endswith("/vgg16-397923af.pth")
    assert imagenet_url("resnet50", "imagenet") == (
        torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url)
    with pytest.raises(ValueError, match="IMAGENET1K_V2.*available: IMAGENET1K_V1"):
        imagenet_url("resnet18", "imagenet_v2")


@pytest.mark.parametrize("name, options, reason", [
    ("plain18", {}, "plain net"),
    ("plain50", {}, "plain net"),
    ("resnet34", {"shortcut": "A"}, "shortcut 'A'"),
    ("resnet50", {"shortcut": "C"}, "shortcut 'C'"),
    ("resnet50", {"stride_in_1x1": True}, "stride in the 3x3"),
])
def test_imagenet_refused_for_architectures_torchvision_lacks(offline, name, options, reason):
    with pytest.raises(ValueError, match=f"ImageNet weights do not fit.*{reason}"):
        build_backbone(name, weights="imagenet", **options)
    assert offline == []  # refused before looking for any file
