"""engine/files.py: atomic writes, and a full disk as one DiskFullError naming the numbers."""
import errno
import os
import sys
from pathlib import Path

import pytest
import torch

from detection.engine.checkpoint import checkpoint_nbytes, load_checkpoint, save_checkpoint
from detection.engine.files import (DiskFullError, atomic_write, format_size, is_disk_full,
                             temporary_name, write_bytes, write_json)

REPO = Path(__file__).resolve().parents[3]


def test_a_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    write_json(tmp_path / "eval.json", {"mAP": 1.5})
    write_json(tmp_path / "eval.json", {"mAP": 2.5}, indent=1)
    assert (tmp_path / "eval.json").read_text() == '{\n "mAP": 2.5\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]
    assert temporary_name(tmp_path / "clip.mp4").name == f".clip.tmp-{os.getpid()}.mp4"


def test_an_error_inside_the_block_keeps_the_previous_file(tmp_path):
    write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(KeyError):
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"new, half")
            raise KeyError("crash")
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_the_size_is_checked_before_anything_is_written(tmp_path, small_disk):
    small_disk(tmp_path, capacity=1000)
    write_bytes(tmp_path / "a.bin", b"x" * 600)
    with pytest.raises(DiskFullError) as e:
        write_bytes(tmp_path / "b.bin", b"y" * 500)
    assert str(e.value) == (f"cannot write {tmp_path / 'b.bin'}: no space left on device (it "
                            f"needs 500 bytes; 400 bytes are free in {tmp_path})")
    assert (e.value.needed, e.value.free) == (500, 400)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_full_disk_inside_torch_save_is_one_disk_full_error(tmp_path, small_disk):
    """torch.save's zip writer turns the OSError into ``RuntimeError: ... unexpected pos``;
    the error still names the file, the checkpoint's bytes and the free space."""
    old = {"model": {"w": torch.zeros(1000)}, "iteration": 10}
    save_checkpoint(old, tmp_path / "last.pth")
    size = (tmp_path / "last.pth").stat().st_size
    small_disk(tmp_path, capacity=size + 6000)
    new = {"model": {"w": torch.ones(1000), "b": torch.ones(500)}, "iteration": 20}
    assert checkpoint_nbytes(new) == 6000  # 1500 float32
    with pytest.raises(DiskFullError) as e:  # fits the estimate, not the zip headers
        save_checkpoint(new, tmp_path / "last.pth")
    message = str(e.value)
    assert message == (f"cannot write {tmp_path / 'last.pth'}: no space left on device (it "
                       f"needs about 6,000 bytes = 5.9 KiB; 6,000 bytes = 5.9 KiB are free in "
                       f"{tmp_path})")
    assert "\n" not in message
    assert load_checkpoint(tmp_path / "last.pth")["iteration"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_disk_full_is_found_in_the_error_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
    except RuntimeError as e:
        assert is_disk_full(e)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("other"))


def test_sizes_read_as_bytes_and_binary_units():
    assert format_size(999) == "999 bytes"
    assert format_size(148_310_528) == "148,310,528 bytes = 141.4 MiB"
    assert format_size(3 * 2**30) == "3,221,225,472 bytes = 3.0 GiB"


def test_a_real_full_tmpfs(tmp_path, tmpfs):
    """The same on a real 1 MiB tmpfs: the estimate lets a 0.8 MB checkpoint through after a
    0.4 MB one has left 0.6 MB; the kernel's ENOSPC then stops it."""
    script = (
        "import sys, os, torch\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from detection.engine.checkpoint import save_checkpoint, load_checkpoint\n"
        "from detection.engine.files import DiskFullError\n"
        "import detection.engine.files as files\n"
        "d = sys.argv[1]\n"
        "save_checkpoint({'w': torch.zeros(100_000), 'iteration': 1}, d + '/last.pth')\n"
        "files._check_space = lambda *a: None  # let the write itself meet the full disk\n"
        "try:\n"
        "    save_checkpoint({'w': torch.ones(200_000), 'iteration': 2}, d + '/last.pth')\n"
        "except DiskFullError as e:\n"
        "    print(e)\n"
        "print(sorted(os.listdir(d)), load_checkpoint(d + '/last.pth')['iteration'])\n")
    (tmp_path / "script.py").write_text(script)
    mount = tmp_path / "disk"
    proc = tmpfs(mount, "1m", f"{sys.executable} {tmp_path / 'script.py'} {mount}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"cannot write {mount / 'last.pth'}: no space left on device "
                               "(it needs about 800,000 bytes = 781.2 KiB; ")
    assert lines[1] == "['last.pth'] 1"
