import os
import random

import numpy as np
import pytest
import torch

from detection.engine import checkpoint as ckpt_mod
from detection.engine.checkpoint import (get_rng_state, load_checkpoint, save_checkpoint,
                                         seed_all, set_rng_state)


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3, 3), value)}, "iteration": int(value),
            "classes": [{"id": 1, "name": "a"}], "config": {"solver": {"base_lr": 0.1}},
            "rng": [get_rng_state()]}


def test_round_trip_loads_with_weights_only(tmp_path):
    path = tmp_path / "last.pth"
    save_checkpoint(_state(2.0), path)
    data = torch.load(path, weights_only=True)
    assert data["iteration"] == 2 and torch.equal(data["model"]["w"], torch.full((3, 3), 2.0))
    assert data["classes"] == [{"id": 1, "name": "a"}]
    assert os.listdir(tmp_path) == ["last.pth"]  # no temp file left behind


def test_rng_state_round_trip_restores_every_generator():
    seed_all(123)
    state = get_rng_state()
    first = (torch.rand(3), random.random(), np.random.rand(2), torch.randn(2))
    seed_all(7)  # move every generator elsewhere
    set_rng_state(torch.load(_save_load_bytes({"rng": state}), weights_only=True)["rng"])
    second = (torch.rand(3), random.random(), np.random.rand(2), torch.randn(2))
    assert torch.equal(first[0], second[0]) and first[1] == second[1]
    assert np.array_equal(first[2], second[2]) and torch.equal(first[3], second[3])


def _save_load_bytes(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_non_plain_values_are_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\['arr'\] is a ndarray"):
        save_checkpoint({"extra": {"arr": np.zeros(2)}}, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.parametrize("where", ["torch.save", "os.replace"])
def test_crash_during_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch, where):
    path = tmp_path / "last.pth"
    save_checkpoint(_state(1.0), path)
    before = path.read_bytes()

    if where == "torch.save":
        real_save = torch.save

        def crashing_save(obj, f, *a, **k):  # write half a file, then die
            real_save(obj, f, *a, **k)
            f.truncate(f.tell() // 2)
            raise OSError("disk full")
        monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    else:
        def crashing_replace(src, dst):
            raise OSError("power cut")
        monkeypatch.setattr(ckpt_mod.os, "replace", crashing_replace)

    with pytest.raises(OSError):
        save_checkpoint(_state(5.0), path)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["iteration"] == 1
    assert os.listdir(tmp_path) == ["last.pth"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(RuntimeError, match="broken.pth"):
        load_checkpoint(bad)
