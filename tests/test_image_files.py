"""Image files as users' folders hold them: 16-bit scans, phone photos with an EXIF
rotate tag, macOS `._` forks and hidden thumbnail folders, truncated downloads."""
import numpy as np
import pytest
from PIL import Image

from fmctl.data.images import ImageRow, image_files, open_image, scan_image_folder, scan_images, verify_images
from fmctl.errors import DataError


def test_sixteen_bit_greyscale_keeps_its_contrast(tmp_path):
    values = np.tile(np.linspace(0, 65535, 50).astype(np.uint16), (10, 1))
    Image.fromarray(values).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode == "I;16"
    rgb = np.asarray(open_image(tmp_path / "scan.png", "RGB"))
    assert rgb.shape == (10, 50, 3)
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255  # Pillow's own convert would give 255 everywhere
    assert np.array_equal(rgb[0, :, 0], (values[0] >> 8).astype(np.uint8))
    grey = np.asarray(open_image(tmp_path / "scan.png", "L"))
    assert np.array_equal(grey, (values >> 8).astype(np.uint8))
    eight_bit_in_int32 = Image.fromarray(np.full((4, 4), 200, dtype=np.int32), mode="I")
    eight_bit_in_int32.save(tmp_path / "small_values.tif")
    assert np.asarray(open_image(tmp_path / "small_values.tif", "L")).max() == 200


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)  # stored landscape, left half white
    pixels[:, :30] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = np.asarray(open_image(tmp_path / "phone.jpg", "RGB"))
    assert shown.shape == (60, 20, 3)  # portrait, as a photo viewer shows it
    assert shown[:25].mean() > 200 and shown[35:].mean() < 50  # the white half is now on top


def test_hidden_files_and_folders_are_not_examples(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / label / "a photo.png")
    (tmp_path / "cat" / "._a photo.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    (tmp_path / "cat" / ".thumbnails").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / ".thumbnails" / "thumb.png")
    (tmp_path / ".cache").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".cache" / "x.png")
    (tmp_path / "dog" / "nested").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "dog" / "nested" / "b.JPG")
    labelled = scan_image_folder(tmp_path)
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label) for r in labelled] == [
        ("cat/a photo.png", "cat"), ("dog/a photo.png", "dog"), ("dog/nested/b.JPG", "dog")]
    assert [r.path for r in scan_images(tmp_path)] == [r.path for r in labelled]
    assert image_files(tmp_path) == [r.path for r in labelled]
    verify_images(labelled)


def test_a_truncated_jpeg_is_found_before_training(tmp_path):
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (120, 160, 3), dtype=np.uint8)).save(tmp_path / "ok.jpg")
    whole = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    with Image.open(tmp_path / "cut.jpg") as image:
        image.verify()  # the header check alone passes it
    rows = [ImageRow(tmp_path / "ok.jpg", "a"), ImageRow(tmp_path / "cut.jpg", "a")]
    with pytest.raises(DataError, match=r"cut.jpg: cannot read image \(OSError: image file is truncated"):
        verify_images(rows)
    verify_images(rows[:1])


def test_transparent_images_are_laid_on_white(tmp_path):
    """An icon's black glyph on transparency (its transparent pixels black too) must not
    decode as an all-black square, as Pillow's RGBA -> RGB convert makes it."""
    glyph = np.zeros((8, 8, 4), dtype=np.uint8)
    glyph[2:6, 2:6, 3] = 255                      # opaque black square, transparent black around it
    Image.fromarray(glyph, mode="RGBA").save(tmp_path / "icon.png")
    assert np.asarray(Image.open(tmp_path / "icon.png").convert("RGB")).max() == 0
    rgb = np.asarray(open_image(tmp_path / "icon.png", "RGB"))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[3, 3].tolist() == [0, 0, 0]
    half = glyph.copy()
    half[0, 0] = [0, 0, 0, 128]                   # half-transparent black over white: mid grey
    Image.fromarray(half, mode="RGBA").save(tmp_path / "half.png")
    assert 125 <= np.asarray(open_image(tmp_path / "half.png", "L"))[0, 0] <= 129
    palette = Image.fromarray(glyph[:, :, 3]).convert("P")
    palette.info["transparency"] = 0               # a GIF-style palette image with a transparent index
    palette.save(tmp_path / "palette.png", transparency=0)
    assert np.asarray(open_image(tmp_path / "palette.png", "RGB"))[0, 0].tolist() == [255, 255, 255]
