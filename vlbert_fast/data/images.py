"""The image pipeline of end-to-end mode: decode, orient, convert, check, resize, normalise, flip, mask.

Legend: N boxes; W0 x H0 the image as decoded, w x h after resizing.

1. Decode with PIL; the size is checked from the header, before any pixel is decoded (an image over
   `max_image_side` is refused without allocating it; under `min_image_side` is refused too). A truncated or
   unreadable file is a FormatError naming it.
2. Orientation: the EXIF orientation is applied (the photo as viewers and cv2-based detectors show it), unless the
   regions' record says the detector saw the stored orientation (its size matches the raw image, not the rotated).
3. Colour: everything becomes 8-bit RGB. 16-bit images (I;16*, I with values > 255) are scaled by 255/65535, not
   clipped as PIL's convert would; float images in [0, 1] are scaled by 255; alpha is dropped (as cv2.imread and
   the original's convert('RGB') do, so the pixels are those the detector saw); CMYK, palette, grayscale and
   YCbCr go through PIL's conversion.
4. Boxes are in the record's pixels: a box wholly outside the image is an error (the boxes belong to another image,
   or another orientation); a box partly outside is clipped. When the record was made on a resized copy (same
   aspect ratio within 1%), boxes are scaled to the decoded image; another size is an error.
5. Resize (bilinear) so the short side is `short_side` unless the long side would pass `long_side`; boxes follow.
6. Normalise: "caffe" = BGR, 0-255, minus (102.98, 115.95, 122.77); "torchvision" = RGB / 255, ImageNet mean/std.
7. Training only: flip horizontally with `flip_prob` (x -> w - 1 - x on boxes, "left" <-> "right" in the words).
8. After the flip: each masked region's pixels are zeroed in the normalised image (the original's
   image[:, y1:y2+1, x1:x2+1] = 0), so nothing of it reaches any region's features through the backbone.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from ..config import VisualConfig
from .formats import FormatError, clip_to_image

CAFFE_MEAN_BGR = (102.9801, 115.9465, 122.7717)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
ASPECT_TOLERANCE = 0.01
# Whole words only: a substring swap would turn "bright" into "bleft". Case is kept ("Left" -> "Right").
LEFT_RIGHT = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}

# PIL warns from 89 M pixels; our own side limit (open_image) decides (10000 x 10000 is 100 M). Set once here: a
# catch_warnings per image resets Python's warnings registry, and every show-once warning would repeat per image.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _error(source: str, message: str, reason: str) -> FormatError:
    return FormatError(source, message=message, reason=reason)


def open_image(data: bytes, source: str, cfg: VisualConfig) -> Image.Image:
    """A PIL image with its header read and size checked; pixels are decoded by `decode`."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _error(source, f"the image is too large to decode ({exc})", "image too large") from None
    except Exception as exc:  # PIL's parsers raise many types on corrupt headers (struct.error, IndexError, ...)
        raise _error(source, f"cannot read the image ({type(exc).__name__}: {exc})", "unreadable image") from None
    w, h = image.size
    if max(w, h) > cfg.max_image_side:
        raise _error(source, f"image is {w} x {h}, over the limit of {cfg.max_image_side} px a side", "image too large")
    if min(w, h) < cfg.min_image_side:
        raise _error(source, f"image is {w} x {h}, under the minimum of {cfg.min_image_side} px", "image too small")
    return image


def to_rgb(image: Image.Image, source: str) -> Image.Image:
    """8-bit RGB from any PIL mode (module docstring, step 3)."""
    mode = image.mode
    try:
        if mode == "RGB":
            return image
        if mode.startswith("I;16") or mode in ("I", "F"):
            values = np.asarray(image, dtype=np.float64)
            if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
                values = values * (255.0 / 65535.0)
            elif mode == "F" and values.max(initial=0) <= 1.0:
                values = values * 255.0
            gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
            return Image.fromarray(gray, mode="L").convert("RGB")
        return image.convert("RGB")
    except Exception as exc:  # a mode PIL cannot convert, or pixels it cannot read
        raise _error(source, f"cannot convert {mode} pixels to RGB ({exc})", "unsupported image mode") from None


def decode(data: bytes, source: str, cfg: VisualConfig, expected_size: tuple[int, int] | None = None) -> Image.Image:
    """Decoded, oriented RGB image (steps 1-3). `expected_size` (W, H) of the regions' record picks the orientation
    when only the stored one matches it."""
    image = open_image(data, source, cfg)
    try:
        image.load()
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:  # truncated data (OSError), corrupt EXIF, and whatever else a broken decoder raises
        raise _error(source, f"cannot decode the image ({type(exc).__name__}: {exc})", "unreadable image") from None
    if expected_size is not None and oriented.size != tuple(expected_size) and image.size == tuple(expected_size):
        oriented = image  # the detector saw the stored pixels, not the EXIF-rotated photo
    return to_rgb(oriented, source)


def record_to_image_scale(
    image_size: tuple[int, int], record_size: tuple[int, int], source: str
) -> tuple[float, float]:
    """(sx, sy) taking the record's pixel coordinates to the decoded image's (step 4)."""
    (w, h), (w0, h0) = image_size, record_size
    if (w, h) == (w0, h0):
        return 1.0, 1.0
    if abs((w / h) / (w0 / h0) - 1.0) > ASPECT_TOLERANCE:
        raise _error(
            source,
            f"image is {w} x {h} (after EXIF orientation) but its regions were extracted on a {w0} x {h0} image",
            "image size mismatch",
        )
    return w / w0, h / h0


def check_boxes(boxes_N4: np.ndarray, record_size: tuple[int, int], source: str) -> np.ndarray:
    """Boxes clipped to the record's image; a box wholly outside it is an error (step 4: the rule of every mode,
    data/formats/regions.py `clip_to_image`)."""
    return clip_to_image(boxes_N4, record_size[0], record_size[1], source)


def resized_size(width: int, height: int, cfg: VisualConfig) -> tuple[int, int]:
    """(w, h) with the short side at short_side, unless the long side would pass long_side (step 5)."""
    scale = cfg.short_side / min(width, height)
    if max(width, height) * scale > cfg.long_side:
        scale = cfg.long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def normalise(image: Image.Image, normalization: str) -> torch.Tensor:  # [3, h, w] float32
    pixels = np.asarray(image, dtype=np.float32)  # [h, w, 3] RGB, 0-255
    if normalization == "caffe":
        pixels = pixels[:, :, ::-1] - np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)
    else:
        pixels = (pixels / 255.0 - np.asarray(IMAGENET_MEAN_RGB, dtype=np.float32)) / np.asarray(
            IMAGENET_STD_RGB, dtype=np.float32
        )
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def resize_and_normalise(image: Image.Image, cfg: VisualConfig) -> tuple[torch.Tensor, tuple[float, float]]:
    """The normalised [3, h, w] tensor and the (sx, sy) scale from the decoded image to it (steps 5-6)."""
    w, h = image.size
    nw, nh = resized_size(w, h, cfg)
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BILINEAR)
    return normalise(image, cfg.normalization), (nw / w, nh / h)


def flip_boxes(boxes_N4: np.ndarray, width: int) -> np.ndarray:
    """Horizontal flip of (x1, y1, x2, y2) in an image `width` pixels wide: x -> width - 1 - x."""
    out = boxes_N4.copy()
    out[:, 0] = width - 1 - boxes_N4[:, 2]
    out[:, 2] = width - 1 - boxes_N4[:, 0]
    return out


def swap_left_right(words: list[str]) -> list[str]:
    """The words of a flipped image's caption: "left" <-> "right" (whole words, case kept)."""
    out = []
    for word in words:
        swap = LEFT_RIGHT.get(word.lower())
        if swap is None:
            out.append(word)
        elif word.isupper() and len(word) > 1:
            out.append(swap.upper())
        elif word[:1].isupper():
            out.append(swap.capitalize())
        else:
            out.append(swap)
    return out


def zero_regions(image_3HW: torch.Tensor, boxes_N4: np.ndarray | torch.Tensor, masked_N) -> torch.Tensor:
    """Zeroes, in place, the pixels of each masked box: rows int(y1)..int(y2), columns int(x1)..int(x2) (step 8)."""
    for (x1, y1, x2, y2), hide in zip(np.asarray(boxes_N4).tolist(), np.asarray(masked_N).tolist(), strict=True):
        if hide:
            image_3HW[:, int(y1) : int(y2) + 1, int(x1) : int(x2) + 1] = 0
    return image_3HW


@dataclass
class PreparedImage:
    pixels: torch.Tensor
    """[3, h, w] float32 normalised, resized (not yet flipped or masked)."""
    boxes: np.ndarray
    """[N, 4] float32 the record's boxes, checked and clipped, in the resized image's pixels."""
    scale: tuple[float, float]
    """(sx, sy) from the record's pixels to the resized image's."""
    decoded_size: tuple[int, int]
    """(W0, H0) of the decoded, oriented image."""

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of the resized image."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[1])


def prepare_image(
    data: bytes, source: str, cfg: VisualConfig, record_size: tuple[int, int] | None, boxes_N4: np.ndarray
) -> PreparedImage:
    """Steps 1-6 for one image and its record's boxes (module docstring); FormatError naming `source` on a bad
    image or boxes. `record_size` (W, H) is the frame of the boxes; None: the decoded image's."""
    image = decode(data, source, cfg, expected_size=record_size)
    record_size = image.size if record_size is None else record_size
    sx0, sy0 = record_to_image_scale(image.size, record_size, source)
    boxes = check_boxes(np.asarray(boxes_N4, dtype=np.float32).reshape(-1, 4), record_size, source)
    pixels, (sx1, sy1) = resize_and_normalise(image, cfg)
    sx, sy = sx0 * sx1, sy0 * sy1
    h, w = pixels.shape[1:]
    resized = np.clip(boxes * np.array([sx, sy, sx, sy], dtype=np.float32), 0.0, [w - 1, h - 1, w - 1, h - 1])
    return PreparedImage(pixels, resized.astype(np.float32), (sx, sy), image.size)
