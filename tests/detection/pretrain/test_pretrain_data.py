"""Classification data read from files written in the published formats: ILSVRC-2012's folders
(train in class folders, val flat with a label file), CIFAR-10's binary and python archives."""

import os
import pickle
import tarfile

import cv2
import numpy as np
import pytest
import torch

from detection.pretrain.data import (ArrayDataset, ImageFolderDataset, read_cifar10,
                                     read_label_file)
from backbones.safe_pickle import UnsafePickleError
from detection.data.base import DatasetError

WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.mark.parametrize("kind", ["bin", "py"])
@pytest.mark.parametrize("archive", [True, False])
def test_cifar10_both_versions_archive_or_folder(tmp_path, write_cifar10, kind, archive):
    path, batches = write_cifar10(tmp_path, kind, archive=archive, per_batch=3)
    images, labels, names = read_cifar10(path, train=True)
    expected = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert images.shape == (15, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, expected)  # every pixel where it was written
    assert labels.tolist() == np.concatenate([batches[f"data_batch_{i}"][1]
                                              for i in range(1, 6)]).tolist()
    assert names[:3] == ["airplane", "automobile", "bird"] and len(names) == 10
    test_images, test_labels, _ = read_cifar10(tmp_path, train=False)  # the folder above works
    assert np.array_equal(test_images, batches["test_batch"][0])
    assert test_labels.tolist() == batches["test_batch"][1].tolist()


def test_cifar10_bad_files_are_named(tmp_path, write_cifar10):
    sub, _ = write_cifar10(tmp_path / "a", "bin", archive=False)
    (sub / "data_batch_2.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(DatasetError, match=r"data_batch_2.bin: 3000 bytes is not a whole number"):
        read_cifar10(sub, train=True)
    with pytest.raises(DatasetError, match="no CIFAR-10 data at .*cifar-10-python.tar.gz"):
        read_cifar10(tmp_path / "empty", train=True)
    sub, _ = write_cifar10(tmp_path / "b", "py", archive=False)
    os.remove(sub / "data_batch_4")
    with pytest.raises(DatasetError, match="has no file data_batch_4"):
        read_cifar10(sub, train=True)


def test_cifar10_python_batch_that_runs_code_is_refused(tmp_path, write_cifar10, runs_code):
    marker = tmp_path / "ran"
    sub, _ = write_cifar10(tmp_path, "py", archive=False)
    (sub / "data_batch_3").write_bytes(pickle.dumps(
        {"data": np.zeros((1, 3072), np.uint8), "labels": runs_code(f"touch {marker}")}))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(sub, arcname=sub.name)
    with pytest.raises(UnsafePickleError, match=r"cifar-10-python.tar.gz:data_batch_3: refused"):
        read_cifar10(archive, train=True)
    assert not marker.exists()


def test_imagenet_layout_train_and_flat_val_with_label_files(tmp_path, write_image_folder):
    files = write_image_folder(tmp_path / "train", WNIDS, per_class=2)
    train = ImageFolderDataset(root=tmp_path / "train", transforms=None, train=True)
    assert [c["name"] for c in train.classes] == WNIDS and len(train) == 6
    sample = train[3]
    assert sample["file_name"] == "n01443537/n01443537_1.JPEG" and sample["label"].item() == 1
    decoded = cv2.imread(str(tmp_path / "train" / sample["file_name"]))[:, :, ::-1]
    assert torch.equal(sample["image"], torch.from_numpy(decoded.copy()).permute(2, 0, 1))

    val = tmp_path / "val"
    val.mkdir()
    for i, rel in enumerate(sorted(files)):
        os.replace(tmp_path / "train" / rel, val / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    labels = [files[rel] for rel in sorted(files)]
    (tmp_path / "val.txt").write_text(  # Caffe's val.txt: file and class index
        "".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG {lab}\n" for i, lab in enumerate(labels)))
    (tmp_path / "LOC_val_solution.csv").write_text(  # Kaggle's: stem, then "wnid x y x y ..."
        "ImageId,PredictionString\n" + "".join(
            f"ILSVRC2012_val_{i + 1:08d},{WNIDS[lab]} 1 2 30 40 {WNIDS[lab]} 3 4 20 20\n"
            for i, lab in enumerate(labels)))
    for label_file in ("val.txt", "LOC_val_solution.csv"):
        ds = ImageFolderDataset(root=val, transforms=None, train=False, class_names=WNIDS,
                                label_file=str(tmp_path / label_file))
        assert [ds[i]["label"].item() for i in range(len(ds))] == labels
        assert ds[5]["file_name"] == "ILSVRC2012_val_00000006.JPEG"


def test_image_folder_errors_and_bad_images(tmp_path, write_image_folder, caplog):
    write_image_folder(tmp_path / "train", WNIDS[:2], per_class=2)
    (tmp_path / "train" / WNIDS[0] / "broken.JPEG").write_bytes(b"not a jpeg")
    train = ImageFolderDataset(root=tmp_path / "train", transforms=None, train=True)
    assert train[0]["file_name"] == f"{WNIDS[0]}/{WNIDS[0]}_0.JPEG"  # broken.JPEG sorts first
    assert "broken.JPEG" in caplog.text
    val = ImageFolderDataset(root=tmp_path / "train", transforms=None, train=False,
                             class_names=WNIDS[:2])
    assert val[0] is None  # evaluation leaves a bad image out
    with pytest.raises(DatasetError, match="cannot decode image"):
        ImageFolderDataset(root=tmp_path / "train", transforms=None, train=True,
                           on_bad_image="error")[0]
    with pytest.raises(DatasetError, match=r"class folders the training set lacks: \['n0144"):
        ImageFolderDataset(root=tmp_path / "train", transforms=None, train=False,
                           class_names=WNIDS[:1])
    (tmp_path / "bad.txt").write_text("a.JPEG n01440764\nb.JPEG n99999999\n")
    with pytest.raises(DatasetError, match=r"bad.txt:2: label 'n99999999' is neither"):
        read_label_file(tmp_path / "bad.txt", WNIDS)


def test_array_dataset_applies_transforms_and_holds_out_a_split():
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    ds = ArrayDataset(images=images, labels=np.array([0, 1, 2, 3]), class_names=list("abcd"),
                      transforms=lambda im: im[:, ::-1], indices=np.array([2, 3]))
    assert len(ds) == 2 and ds[1]["index"] == 3 and ds[1]["label"].item() == 3
    assert torch.equal(ds[0]["image"], torch.from_numpy(images[2][:, ::-1].copy()).permute(2, 0, 1))
