"""engine/run.py: the run folder, a resume, images per process."""
import pytest

from detection.engine.run import RUN_FILES, images_per_process, prepare_output_dir, read_resume
from detection.engine.checkpoint import save_checkpoint


def test_a_folder_holding_a_run_is_refused_naming_both_ways_on(tmp_path):
    prepare_output_dir(tmp_path / "new", resume=False, force=False)  # nothing there: fine
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError) as info:
        prepare_output_dir(tmp_path, resume=False, force=False)
    message = str(info.value)
    assert str(tmp_path) in message and "--resume" in message and "--force" in message
    prepare_output_dir(tmp_path, resume=True, force=False)
    assert (tmp_path / "metrics.jsonl").is_file()


def test_force_deletes_the_previous_runs_files_and_nothing_else(tmp_path):
    for name in RUN_FILES:
        (tmp_path / name).write_text("old")
    for name in ("vis", "tensorboard"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    assert prepare_output_dir(tmp_path, resume=False, force=True, delete=False) == []  # rank 1
    assert (tmp_path / "last.pth").is_file()
    deleted = prepare_output_dir(tmp_path, resume=False, force=True)
    assert deleted == [*RUN_FILES, "vis", "tensorboard"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_read_resume_finds_last_pth_only_when_asked(tmp_path):
    assert read_resume(tmp_path, resume=True) is None  # nothing yet: a fresh run
    save_checkpoint({"iteration": 7, "model": {}}, tmp_path / "last.pth")
    assert read_resume(tmp_path, resume=False) is None
    assert read_resume(tmp_path, resume=True)["iteration"] == 7


def test_images_per_process_splits_the_global_batch(monkeypatch):
    assert images_per_process(16, "solver.ims_per_batch") == 16  # one process
    monkeypatch.setattr("detection.engine.distributed.get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="solver.ims_per_batch 16 is not divisible by the 3"):
        images_per_process(16, "solver.ims_per_batch")
    assert images_per_process(12, "test.ims_per_batch") == 4
