"""detection.data.integrity: cut JPEG / PNG / WebP files found from their bytes, whole files with
padding, appended data or an EXIF thumbnail left alone."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from detection.data import DatasetError, decode_image
from detection.data.integrity import check_image_file, truncation


def _encoded(suffix: str, size=(120, 160)) -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def test_a_jpeg_cut_to_3000_bytes_decodes_in_opencv_but_is_refused(tmp_path):
    data = _encoded(".jpg")
    assert len(data) > 20_000
    (tmp_path / "cut.jpg").write_bytes(data[:3000])
    assert cv2.imread(str(tmp_path / "cut.jpg")) is not None  # the fault: grey rows, no error
    with pytest.raises(DatasetError) as e:
        decode_image(str(tmp_path / "cut.jpg"))
    assert str(e.value) == ("truncated image (JPEG without its end-of-image marker FF D9; the "
                            f"file stops after 3,000 bytes): {tmp_path / 'cut.jpg'}")
    assert check_image_file(tmp_path / "cut.jpg") == str(e.value)


@pytest.mark.parametrize("suffix, what", [(".jpg", "JPEG without its end-of-image marker"),
                                          (".png", "PNG without its IEND chunk"),
                                          (".webp", "WebP of ")])
def test_every_cut_is_found_and_the_whole_file_passes(suffix, what):
    data = _encoded(suffix)
    assert truncation(data) is None
    for cut in (len(data) // 3, len(data) - 1, 100):
        assert truncation(data[:cut]).startswith(what), cut
        assert truncation(data[:cut]).endswith(f"the file stops after {cut:,} bytes")


def test_padding_and_data_appended_after_a_whole_image_are_not_truncation(tmp_path):
    jpeg, png = _encoded(".jpg"), _encoded(".png")
    assert truncation(jpeg + b"\x00" * 1000) is None  # padded to a block size
    assert truncation(jpeg + b"\xff\xff\r\n") is None
    appended = np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    assert truncation(jpeg + appended) is None  # a phone's trailer, a video after the image
    assert truncation(png + appended) is None
    (tmp_path / "padded.jpg").write_bytes(jpeg + b"\x00" * 1000)
    assert decode_image(str(tmp_path / "padded.jpg")).shape == (120, 160, 3)


def test_an_exif_thumbnails_end_marker_does_not_hide_a_cut_image():
    """A JPEG carrying a whole thumbnail (with its own FF D9) in an APP1 segment, cut inside
    its own image data: the thumbnail's marker is skipped with its segment."""
    main, thumb = _encoded(".jpg"), _encoded(".jpg", size=(16, 16))
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_thumb = main[:2] + app1 + main[2:]
    assert cv2.imdecode(np.frombuffer(with_thumb, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (
        120, 160)
    assert truncation(with_thumb) is None
    cut = with_thumb[:len(app1) + 3000]
    assert b"\xff\xd9" in cut  # a check for the marker anywhere would pass this file
    assert truncation(cut).startswith("JPEG without its end-of-image marker FF D9")


def test_check_image_file_names_every_problem(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "ok.png").write_bytes(_encoded(".png"))
    assert check_image_file(tmp_path / "nope.jpg") == f"image file not found: {tmp_path}/nope.jpg"
    assert check_image_file(tmp_path / "empty.png") == f"empty image file: {tmp_path}/empty.png"
    assert check_image_file(tmp_path / "bad.jpg") is None  # not decoded: no format to check
    assert check_image_file(tmp_path / "bad.jpg", decode=True).startswith("cannot decode")
    assert check_image_file(tmp_path / "ok.png", decode=True) is None
