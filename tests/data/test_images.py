"""The image pipeline of end-to-end mode (data/images.py): every kind of bad or unusual image is converted or
rejected with a message naming the file; resizing, normalisation, flip and masking do what the original does."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vlbert_fast.config import VisualConfig
from vlbert_fast.data.formats import FormatError
from vlbert_fast.data.images import (
    CAFFE_MEAN_BGR,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    decode,
    flip_boxes,
    prepare_image,
    resize_and_normalise,
    resized_size,
    swap_left_right,
    zero_regions,
)

CFG = VisualConfig()
SOURCE = "/data/images.zip@/photo_17.jpg"


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)


def test_unreadable_and_truncated_files_name_the_file():
    with pytest.raises(FormatError, match=r"photo_17\.jpg: cannot read the image") as err:
        decode(b"this is not an image", SOURCE, CFG)
    assert err.value.reason == "unreadable image"
    jpeg = encode(Image.new("RGB", (64, 48), (200, 10, 10)), "JPEG")
    with pytest.raises(FormatError, match=r"photo_17\.jpg: cannot (read|decode) the image") as err:
        decode(jpeg[: len(jpeg) // 2], SOURCE, CFG)
    assert err.value.reason == "unreadable image"
    png = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    with pytest.raises(FormatError, match="photo_17"):
        decode(png[:-200], SOURCE, CFG)
    with pytest.raises(FormatError, match="photo_17"):
        decode(b"", SOURCE, CFG)


@pytest.mark.parametrize(
    ("size", "reason"),
    [((9, 50), "image too small"), ((50, 4), "image too small"), ((10001, 12), "image too large")],
)
def test_images_too_small_or_too_large_are_rejected(size, reason):
    with pytest.raises(FormatError, match=rf"photo_17\.jpg: image is {size[0]} x {size[1]}") as err:
        decode(encode(Image.new("L", size)), SOURCE, CFG)
    assert err.value.reason == reason


def test_the_size_limit_is_checked_before_decoding():
    # A 20000 x 20000 PNG header over a few bytes of data: refused from the header, never decoded (400 M pixels)
    huge = encode(Image.new("1", (20000, 20000)))
    with pytest.raises(FormatError, match=r"photo_17\.jpg: the image is too large") as err:
        decode(huge, SOURCE, CFG)
    assert err.value.reason == "image too large"


def test_modes_convert_to_rgb():
    gray = decode(encode(Image.new("L", (20, 12), 77)), SOURCE, CFG)
    assert gray.mode == "RGB" and (rgb_array(gray) == 77).all()
    rgba = decode(encode(Image.new("RGBA", (20, 12), (10, 20, 30, 0))), SOURCE, CFG)
    assert rgba.mode == "RGB" and (rgb_array(rgba) == [10, 20, 30]).all()  # alpha dropped, colour kept
    palette = decode(encode(Image.new("RGB", (20, 12), (0, 0, 255)).convert("P")), SOURCE, CFG)
    assert (rgb_array(palette) == [0, 0, 255]).all()
    cmyk = decode(encode(Image.new("CMYK", (20, 12), (0, 255, 255, 0)), "JPEG", quality=95), SOURCE, CFG)
    assert cmyk.mode == "RGB" and np.abs(rgb_array(cmyk) - [255, 0, 0]).max() <= 3


def test_16_bit_images_are_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535] * 5] * 12, dtype=np.uint16)
    image = decode(encode(Image.fromarray(values)), SOURCE, CFG)
    assert Image.open(io.BytesIO(encode(Image.fromarray(values)))).mode.startswith("I;16")
    got = rgb_array(image)[0, :4, 0]
    assert got.tolist() == [0, 1, 128, 255]  # PIL's own convert would clip everything above 255 to 255
    floats = decode(encode(Image.fromarray(np.full((12, 20), 0.5, dtype=np.float32)), "TIFF"), SOURCE, CFG)
    assert (rgb_array(floats) == 128).all()


def exif_rotated_jpeg() -> bytes:
    """Stored 30 x 20 (landscape), red on the left half; EXIF orientation 6: shown rotated 90 degrees clockwise."""
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:, :15] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied():
    shown = decode(exif_rotated_jpeg(), SOURCE, CFG)
    assert shown.size == (20, 30)
    pixels = rgb_array(shown)
    assert pixels[:12, :, 0].mean() > 200 and pixels[18:, :, 0].mean() < 50  # the left half is now on top


def test_exif_is_ignored_when_the_regions_were_made_on_the_stored_pixels():
    stored = decode(exif_rotated_jpeg(), SOURCE, CFG, expected_size=(30, 20))
    assert stored.size == (30, 20)
    assert decode(exif_rotated_jpeg(), SOURCE, CFG, expected_size=(20, 30)).size == (20, 30)


def test_resize_rules():
    assert resized_size(640, 480, CFG) == (800, 600)  # short side to 600
    assert resized_size(2000, 500, CFG) == (1000, 250)  # the long side would pass 1000
    assert resized_size(480, 640, CFG) == (600, 800)
    small = VisualConfig(short_side=64, long_side=64)
    assert resized_size(64, 64, small) == (64, 64)


def test_normalisation_caffe_and_torchvision():
    image = Image.new("RGB", (12, 10), (10, 20, 30))
    caffe, scale = resize_and_normalise(image, VisualConfig(short_side=10, long_side=12))
    assert scale == (1.0, 1.0) and caffe.shape == (3, 10, 12)
    expected = torch.tensor([30 - CAFFE_MEAN_BGR[0], 20 - CAFFE_MEAN_BGR[1], 10 - CAFFE_MEAN_BGR[2]])
    torch.testing.assert_close(caffe[:, 4, 5], expected)  # BGR order, 0-255, mean subtracted
    tv, _ = resize_and_normalise(image, VisualConfig(short_side=10, long_side=12, normalization="torchvision"))
    rgb = torch.tensor([10.0, 20.0, 30.0]) / 255
    torch.testing.assert_close(tv[:, 0, 0], (rgb - torch.tensor(IMAGENET_MEAN_RGB)) / torch.tensor(IMAGENET_STD_RGB))


def test_prepare_scales_and_clips_boxes():
    data = encode(Image.new("RGB", (320, 240)))
    boxes = np.array([[10, 20, 100, 200], [-5, -5, 50, 400]], dtype=np.float32)  # the second partly outside
    out = prepare_image(data, SOURCE, CFG, (320, 240), boxes)
    assert out.size == (800, 600) and out.scale == (2.5, 2.5)
    np.testing.assert_allclose(out.boxes[0], [25, 50, 250, 500])
    np.testing.assert_allclose(out.boxes[1], [0, 0, 125, 597.5])  # clipped to the 240-row image, then scaled
    # regions made on a copy at half the resolution: same aspect ratio, the boxes are scaled to the image
    half = prepare_image(data, SOURCE, CFG, (160, 120), boxes[:1] / 2)
    np.testing.assert_allclose(half.boxes[0], out.boxes[0], atol=1e-4)


def test_boxes_wholly_outside_and_foreign_sizes_are_rejected():
    data = encode(Image.new("RGB", (320, 240)))
    outside = np.array([[10, 20, 100, 200], [330, 10, 400, 50]], dtype=np.float32)
    with pytest.raises(FormatError, match=r"photo_17\.jpg: box 1 = .* wholly outside the 320 x 240") as err:
        prepare_image(data, SOURCE, CFG, (320, 240), outside)
    assert err.value.reason == "box outside image"
    with pytest.raises(FormatError, match="image is 320 x 240 .* extracted on a 500 x 240 image") as err:
        prepare_image(data, SOURCE, CFG, (500, 240), outside[:1])
    assert err.value.reason == "image size mismatch"


def test_flip_keeps_box_contents():
    rng = np.random.default_rng(1)
    pixels = torch.from_numpy(rng.standard_normal((3, 17, 23)).astype(np.float32))
    boxes = np.array([[0, 0, 22, 16], [3, 2, 9, 11], [15, 4, 22, 5]], dtype=np.float32)
    flipped, fboxes = pixels.flip(-1), flip_boxes(boxes, 23)
    np.testing.assert_array_equal(flip_boxes(fboxes, 23), boxes)
    for (x1, y1, x2, y2), (fx1, fy1, fx2, fy2) in zip(boxes.astype(int), fboxes.astype(int), strict=True):
        inside = pixels[:, y1 : y2 + 1, x1 : x2 + 1]
        assert torch.equal(flipped[:, fy1 : fy2 + 1, fx1 : fx2 + 1], inside.flip(-1))


def test_left_and_right_swap_as_whole_words():
    words = ["a", "red", "circle", "left", "of", "a", "bright", "Right", "LEFT", "rightmost", "copyright"]
    assert swap_left_right(words) == [
        "a", "red", "circle", "right", "of", "a", "bright", "Left", "RIGHT", "leftmost", "copyright",
    ]  # fmt: skip
    assert swap_left_right(swap_left_right(words)) == words


def test_zero_regions_zeroes_the_masked_boxes_only():
    image = torch.ones(3, 10, 12)
    boxes = np.array([[0, 0, 11, 9], [2.7, 1.2, 4.9, 3.0], [8, 8, 11, 9]], dtype=np.float32)
    zero_regions(image, boxes, np.array([False, True, False]))
    expected = torch.ones(3, 10, 12)
    expected[:, 1:4, 2:5] = 0  # int() of each coordinate, inclusive of the last row and column
    assert torch.equal(image, expected)
