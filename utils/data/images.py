"""Reading images and masks (docs/QUIRKS.md, A3).

Images become 3-channel BGR uint8 (grey replicated, alpha dropped, palette expanded, 16-bit reduced to its high
byte, all as ``cv2.imread`` does; a 12-bit image stored as 16-bit is scaled from its own depth, with a warning);
masks become single-channel uint8 in which every non-zero pixel stays non-zero (a 16-bit mask of 0/1 would read
as all zero through ``cv2.imread(path, 0)``). Errors raise :class:`utils.data.records.DatasetError` naming the file.

One file must not exhaust the machine: the width and height are read from the file's header before it is decoded
(Pillow reads headers without decoding) and a file over ``max_pixels`` (``Config.max_image_pixels``) is refused;
so is one over Pillow's own limit (178,956,970 pixels), whatever ``max_pixels`` says.
A format whose header Pillow cannot read but OpenCV decodes (Radiance HDR, OpenEXR, ...) is checked after decoding, so
the limit still holds, but the memory of that one decode is not bounded.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.config import Config
from utils.data.records import DatasetError

logger = logging.getLogger(__name__)
MAX_IMAGE_PIXELS = Config.max_image_pixels  # the default limit; the config field raises it


def header_size(path: Path):
    """``(width, height)`` from the file's header, without decoding its pixels; None when Pillow does not know
    the format. Raises DatasetError for a file Pillow refuses as a decompression bomb (over its own limit)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError as error:
        # Pillow refuses to open a header over twice its own limit (178,956,970 pixels): so do we, whatever
        # max_pixels says; an image that large must be shrunk or tiled before it is used here.
        raise DatasetError(f"{path} is refused before decoding: {error} Shrink or tile the image") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # Not a format Pillow reads (or a damaged header): OpenCV decodes it or says it cannot, below.
        return None


def image_size(path: Path, max_pixels: int = MAX_IMAGE_PIXELS):
    """``(width, height)`` of an image file: from its header, or for a format Pillow does not read, by decoding it
    (:func:`read_mask`'s checks apply)."""
    size = header_size(path)
    if size is not None:
        return size
    height, width = _decode(path, max_pixels).shape[:2]
    return width, height


def _refuse_large(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DatasetError(f"{path} is {width}x{height} (WxH), {width * height:,} pixels, over the limit of "
                           f"{max_pixels:,} (decoding it would take about {width * height * 4 / 2**30:.1f} GiB or "
                           "more); shrink the image, or raise the limit with --set max_image_pixels=N")


def _decode(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file as stored (any depth and channels). Raises DatasetError for a missing, empty,
    undecodable or too large file (over ``max_pixels``, from the header when Pillow reads it)."""
    size = header_size(path) if path.is_file() else None
    if size is not None:
        _refuse_large(path, size[0], size[1], max_pixels)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise DatasetError(f"{path} cannot be read ({error.strerror or error}); check that it exists and is "
                           "readable") from error
    if data.size == 0:
        raise DatasetError(f"{path} is empty (0 bytes); replace it with the original file")
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise DatasetError(f"{path} is not an image OpenCV can decode ({data.size} bytes); replace it or convert it "
                           "to PNG")
    _refuse_large(path, array.shape[1], array.shape[0], max_pixels)
    return array


def _to_uint8(array: np.ndarray, keep_nonzero: bool, path: Optional[Path] = None) -> np.ndarray:
    """Bring any pixel type to uint8: 16-bit keeps its high byte (as ``cv2.imread`` does), floats in [0, 1] are
    scaled by 255, floats in [0, 255] kept, larger floats scaled by 255 / their maximum (with a warning naming
    ``path``, since clipping them would turn every bright value white), negative ones clipped to 0. With
    ``keep_nonzero`` (masks), a non-zero pixel never becomes 0."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        out = (array >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64))
        top = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if top <= 1.0 else 1.0 if top <= 255.0 else 255.0 / top
        if top > 255.0:
            logger.warning("%s holds floating-point values up to %g: scaled by 255/%g to 8 bits (cutting them at 255 "
                           "would make every value above it the same)", path or "an array", top, top)
        out = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    else:
        out = np.clip(array, 0, 255).astype(np.uint8)
    if keep_nonzero:
        out[(out == 0) & (array != 0)] = 1
    return out


def to_bgr_uint8(array: np.ndarray, path: Optional[Path] = None) -> np.ndarray:
    """A decoded image as ``[H, W, 3]`` BGR uint8: grey is replicated, grey+alpha and BGRA lose their alpha.

    This is what the authors' ``cv2.imread(path)`` returns for 8- and 16-bit PNG, JPEG and TIFF files.
    """
    array = _to_uint8(array, keep_nonzero=False, path=path)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(array[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, :3])
    return array


def to_gray_uint8(array: np.ndarray, path: Optional[Path] = None) -> np.ndarray:
    """A decoded mask as ``[H, W]`` uint8 in which every non-zero pixel stays non-zero.

    Grey masks keep their values (what ``cv2.imread(path, 0)`` gives, so the bilinear resize then ``> 0`` matches
    the authors'); a colour mask takes the maximum over its colour channels (alpha ignored), so no coloured
    pixel rounds to 0 as it can in a luminance conversion.
    """
    array = _to_uint8(array, keep_nonzero=True, path=path)
    if array.ndim == 3:
        colour = array[:, :, :1] if array.shape[2] <= 2 else array[:, :, :3]
        array = colour.max(axis=2)
    return np.ascontiguousarray(array)


_LOW_DEPTH_WARNED: set = set()


def read_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image as ``[H, W, 3]`` BGR uint8 (see :func:`to_bgr_uint8`). Raises DatasetError naming the file.

    A 16-bit image whose values use fewer bits (a 12-bit radiograph stored as 16-bit PNG, say) would be almost
    black with the high byte alone (what ``cv2.imread`` gives): it is scaled from its own bit depth instead, with
    a warning naming the file (once per file). A file over ``max_pixels`` is refused before it is decoded.
    """
    array = _decode(path, max_pixels)
    bits = _used_bits(array)
    if bits is not None:
        if str(path) not in _LOW_DEPTH_WARNED:
            _LOW_DEPTH_WARNED.add(str(path))
            logger.warning("%s is a 16-bit image whose values use %d bits (max %d): scaled by 2^-%d to 8 bits, not "
                           "cut to its high byte, which would be almost black", path, bits, int(array.max()), bits - 8)
        array = (array >> (bits - 8)).astype(np.uint8)
    return to_bgr_uint8(array, path)


def _used_bits(array: np.ndarray):
    """For a 16-bit array whose high byte would be at most 15 (12 bits or fewer in use), the bits in use (>= 8);
    otherwise None."""
    if array.dtype != np.uint16 or not array.size:
        return None
    top = int(array.max())
    return max(8, top.bit_length()) if top < 1 << 12 else None


def read_mask(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read a mask as ``[H, W]`` uint8, non-zero = foreground (see :func:`to_gray_uint8`). Raises DatasetError,
    also for a file over ``max_pixels``."""
    return to_gray_uint8(_decode(path, max_pixels), path)
