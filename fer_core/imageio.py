"""Turn whatever a user drops in into an upright 8-bit RGB array, or a clear `ImageLoadError`.

Handles EXIF rotation, CMYK, 16-bit, RGBA/LA/P (composited on white), animated images (first
frame), HEIC when pillow-heif is installed, and refuses decompression bombs before decoding.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageFilter, ImageOps, UnidentifiedImageError, features

from fer_core.cli import UserInputError

#: Refuse to decode more pixels than this (a 20000 x 20000 upload is 400 MP): PIL's bomb guard.
MAX_PIXELS = 120_000_000
#: Images are downscaled so their longer side is at most this; detection never needs more.
MAX_SIDE = 4096

Image.MAX_IMAGE_PIXELS = MAX_PIXELS

try:  # optional: HEIC/HEIF photos from phones
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIF_SUPPORTED = False

#: AVIF photos (Android cameras, the web): Pillow's own decoder, present when Pillow was built with libavif (its
#: wheels are, since 11.3). Without it the uploader refused them, and said so only in a tooltip.
AVIF_SUPPORTED = bool(features.check("avif"))

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"}
if HEIF_SUPPORTED:
    IMAGE_SUFFIXES |= {".heic", ".heif"}
if AVIF_SUPPORTED:
    IMAGE_SUFFIXES |= {".avif"}


def iso_image_brands(avif: bool, heif: bool) -> frozenset[bytes]:
    """Brands of the ISO base-media file-type box ("....ftyp<major><version><compatible...>") that name the AVIF and
    HEIF pictures we can decode: a file that names one and fails to open is damaged. Without its decoder a whole file
    is of a kind we cannot read, not "corrupt". The generic "mif1"/"msf1" are left out: an AVIF and a HEIC may both
    name them, and each names its own kind among its compatible brands."""
    brands = [b"avif", b"avis"] if avif else []
    return frozenset(brands + ([b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"] if heif else []))


ISO_IMAGE_BRANDS = iso_image_brands(AVIF_SUPPORTED, HEIF_SUPPORTED)
#: The Pillow decoders we let open a file (`Image.open(..., formats=...)`): the formats above and no others. Pillow
#: knows dozens more, among them EPS, which it hands to Ghostscript, a program no photo upload should reach.
READ_FORMATS = (
    *("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM"),
    *(["HEIF"] if HEIF_SUPPORTED else []),
    *(["AVIF"] if AVIF_SUPPORTED else []),
)

#: Leading bytes of the formats we read: a file that starts like one of them but cannot be identified is damaged,
#: not of an unknown kind (recent Pillow gives up on a truncated JPEG header before trying to decode it).
SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)
TIFF_SIGNATURES = SIGNATURES[-2:]


class ImageLoadError(UserInputError):
    """The input is not a usable image; the message says what is wrong in plain words."""


def load_image(
    source: str | Path | bytes | BinaryIO, *, name: str | None = None, max_side: int = MAX_SIDE
) -> np.ndarray:
    """Decode `source` (path, bytes or file object) to an upright HxWx3 uint8 RGB array."""
    return load_image_sized(source, name=name, max_side=max_side)[0]


def load_image_sized(
    source: str | Path | bytes | BinaryIO, *, name: str | None = None, max_side: int = MAX_SIDE
) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image`, with the (width, height) of the upright picture before any shrinking: what boxes found on the
    returned array are scaled to (`ImageResult.in_pixels_of`) to speak of the file the user has."""
    label = name or (str(source) if isinstance(source, str | Path) else "upload")
    if isinstance(source, bytes | bytearray):
        if not source:
            raise ImageLoadError(f"{label}: the file is empty (0 bytes)")
        source = io.BytesIO(source)
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{label}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=READ_FORMATS) as img:
                img.seek(0)  # animated GIF/WebP/APNG: the first frame
                if img.width * img.height > MAX_PIXELS:  # Pillow's guard below normally speaks first
                    raise too_large(label, img.width * img.height)
                width, height = img.size  # before `draft` shrinks a JPEG as it decodes
                if max(img.size) > max_side:
                    img.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size, cheaply
                img.load()
                # Read after loading: a TIFF is then already upright and its tag consumed. Read from the file as
                # opened (a resized copy has no TIFF tags) and applied to the small copy.
                orientation = exif_orientation(img)
                rgb = to_rgb(turned(shrunk(tiff_as_8bit(img, label), max_side), orientation))
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's guard fires as the header is read, before ours: its text quoted twice our limit above 240 MP
        # and spoke of a "DOS attack" to a user with a big scan
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        raise too_large(label, int(pixels.group(1)) if pixels else None) from err
    except UnidentifiedImageError as err:
        head = file_head(source)
        if head.startswith(TIFF_SIGNATURES):  # valid TIFFs of kinds Pillow lacks: 64-bit float, float RGB, ...
            raise ImageLoadError(
                f"{label}: a TIFF of a kind we cannot read (such as floating-point colour); please save it as an "
                "8- or 16-bit image"
            ) from err
        if looks_like_image(head):
            raise ImageLoadError(f"{label}: the image is corrupt or truncated (its header is unreadable)") from err
        raise ImageLoadError(f"{label}: not an image file, or a format we cannot read") from err
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        if isinstance(err, OSError) and err.filename is not None:  # the file could not be read: no sign of damage
            raise ImageLoadError(f"{label}: cannot read the file ({err.strerror or err})") from err
        raise ImageLoadError(f"{label}: {damage_message(err)}") from err
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    full_size = (height, width) if orientation in QUARTER_TURNS else (width, height)
    return np.asarray(rgb, dtype=np.uint8), full_size


def frame_count(data: bytes) -> int:
    """Frames of an animation (GIF, WebP, APNG) or pages of a TIFF; 1 for a still or a count that cannot be read.
    `load_image` reads only the first, and a page that finds no face in a fade-in's blank first frame says why."""
    try:
        with Image.open(io.BytesIO(data), formats=READ_FORMATS) as img:
            return max(1, int(getattr(img, "n_frames", 1)))
    except Exception:  # the count is a courtesy: a file that decoded but miscounts is still one picture
        return 1


def damage_message(err: BaseException) -> str:
    """What a decoder's error says of the file, on one line and in words where we know it: Pillow's "image file is
    truncated (19 bytes not processed)" counted bytes a user cannot act on; pillow-heif's ended in a line break."""
    detail = " ".join(str(err).split())
    if detail.startswith("image file is truncated") or "Truncated" in detail or "end of file" in detail:
        return "the image is truncated (the file ends before the picture does: was it fully downloaded or copied?)"
    return f"the image is corrupt or truncated ({detail or type(err).__name__})"


def too_large(label: str, pixels: int | None) -> ImageLoadError:
    """The refusal of a picture over `MAX_PIXELS`, in one wording wherever it is caught."""
    size = f"{pixels / 1e6:.1f} megapixels" if pixels else "the picture"
    return ImageLoadError(f"{label}: {size} is too large (the limit is {MAX_PIXELS / 1e6:g}); please resize it")


#: Modes resized as they are, before conversion: the ones that hold most pixels' bytes (alpha, colour) and that
#: Pillow resamples faithfully. Palette and 1-bit images would be resampled by nearest neighbour and PA loses its
#: palette: those convert first. Deeper modes (`DEEP_MODES`) become 8-bit gray before anything else.
SHRINK_IN_OWN_MODE = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
#: Gray modes of more than 8 bits: 16-bit in either byte order, 32-bit integer and float.
DEEP_MODES = frozenset({"I;16", "I;16B", "I;16L", "I", "F"})
#: Formats whose 32-bit integer ("I") pictures hold 16-bit values (0..65535; Pillow scales a PGM's maxval to it).
SIXTEEN_BIT_I_FORMATS = frozenset({"PNG", "PPM"})
#: Rows of a deep picture converted at a time: converting a 120 MP float TIFF (626 KB of mostly zeros) whole made
#: several full-size float64 copies, 3.8 GB and 11 s for one upload.
CONVERT_ROWS = 512
#: A two-tone gray picture (`is_bilevel`: a dithered scan or fax) is read as gray blurred by this radius: its dots hid
#: every face from the detector (the astronaut dithered: no face; softened: found, with the label of the gray
#: original), and a two-tone drawing loses nothing a face needs.
BILEVEL_BLUR_PX = 1.0
#: EXIF Orientation values that swap width and height.
QUARTER_TURNS = frozenset({5, 6, 7, 8})


def shrunk(img: Image.Image, max_side: int) -> Image.Image:
    """`img` with the longer side at most `max_side`, in its own mode when that is safe (`SHRINK_IN_OWN_MODE`):
    converting a 118 MP RGBA or 16-bit picture first made full-size RGBA or float64 copies (gigabytes) only to
    shrink them. Other modes are returned as they are, for `load_image` to shrink after conversion."""
    width, height = img.size
    if max(width, height) <= max_side or img.mode not in SHRINK_IN_OWN_MODE:
        return img
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def as_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float gray picture (`DEEP_MODES`) as 8-bit gray by `to_8bit`'s rule; others as they are.
    Pillow opens 16-bit PGM (and, in older versions, PNG) as 32-bit "I": those are 16-bit pictures whatever their
    values, as the same pixels in a uint16 array are."""
    if img.mode not in DEEP_MODES:
        return img
    values = np.asarray(img)
    if img.mode == "I" and img.format in SIXTEEN_BIT_I_FORMATS:
        values = values.clip(0, 65535).astype(np.uint16)
    return Image.fromarray(to_8bit(values), mode="L")


def tiff_as_8bit(img: Image.Image, label: str) -> Image.Image:
    """`as_8bit`, after mending or refusing the deep TIFF layouts Pillow decodes wrongly without a word: a 16-bit
    TIFF with separate colour planes came out as garbled stripes, and a 16-bit MinIsWhite one as its negative."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return as_8bit(img)
    bits = tags.get(258, 8)  # BitsPerSample: one number, or one per sample
    deep = max(bits) > 8 if isinstance(bits, tuple) else bits > 8
    # PlanarConfiguration 2 with several samples, uncompressed (libtiff, which reads compressed ones, gets it right)
    if deep and tags.get(284, 1) == 2 and tags.get(277, 1) > 1 and tags.get(259, 1) == 1:
        raise ImageLoadError(
            f"{label}: a TIFF of more than 8 bits with separate colour planes, which we cannot read correctly; "
            "please save it with interleaved pixels or as an 8-bit image"
        )
    flat = as_8bit(img)
    return ImageOps.invert(flat) if deep and tags.get(262) == 0 and flat.mode == "L" else flat  # 0 = MinIsWhite


def to_8bit(values: np.ndarray) -> np.ndarray:
    """Pixels of any numeric type as uint8, by one rule for files and arrays (the same picture must give the same
    faces either way), converted `CONVERT_ROWS` rows at a time (a few MB of float64, never a full-size copy):
    - 16-bit is divided by 257, as viewers show it; floats up to 2 are [0, 1] pictures (scikit-image's convention:
      a resize's overshoot is clipped, not taken for a 0..255 picture and shown black); other floats and ints up to
      255 are 8-bit values, ints up to 65535 16-bit ones;
    - anything else (HDR floats, negative or 32-bit values) is stretched over its finite range;
    - NaN counts as the lowest finite value and infinities as the ends of the range.
    A constant picture keeps its level (a white 16-bit PNG was stretched to black)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.ndim == 0:
        return to_8bit(values.reshape(1)).reshape(())
    low, high = finite_range(values)
    sixteen_bit = values.dtype.kind == "u" and values.dtype.itemsize == 2
    if sixteen_bit or (values.dtype.kind in "iu" and low >= 0 and 255 < high <= 65535):
        offset, gain = 0.0, 1 / 257
    elif values.dtype.kind == "f" and low >= -1.0 and high <= 2.0:
        offset, gain = 0.0, 255.0
    elif low >= -1.0 and high <= 256.0:
        offset, gain = 0.0, 1.0
    else:
        offset, gain = low, (255.0 / (high - low) if high > low else 0.0)
    out = np.empty(values.shape, np.uint8)
    for start in range(0, max(len(values), 1), CONVERT_ROWS):
        block = values[start : start + CONVERT_ROWS].astype(np.float64)  # exact for int64 and huge floats
        if values.dtype.kind == "f":
            block = np.nan_to_num(block, nan=low, posinf=high, neginf=low)
        out[start : start + CONVERT_ROWS] = np.clip(np.rint((block - offset) * gain), 0, 255)
    return out


def finite_range(values: np.ndarray) -> tuple[float, float]:
    """(lowest, highest) finite value, read in row blocks (0, 0 when there is none)."""
    low, high = np.inf, -np.inf
    for start in range(0, len(values), CONVERT_ROWS):
        block = values[start : start + CONVERT_ROWS]
        if block.dtype.kind == "f":
            block = block[np.isfinite(block)]
        if block.size:
            low, high = min(low, float(block.min())), max(high, float(block.max()))
    return (low, high) if low <= high else (0.0, 0.0)


#: EXIF Orientation value -> the transpose that makes the image upright (values 1 and unknown ones: none).
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(img: Image.Image) -> int | None:
    """The EXIF (or XMP) Orientation value, or None when it is absent or unreadable.

    Only this tag is read: `ImageOps.exif_transpose` also rewrites the EXIF block, and a tag stored with an
    unexpected type (a camera's string where TIFF wants a number) made that raise although the pixels are fine.
    """
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # damaged metadata: the image stays as decoded
        return None
    return orientation if isinstance(orientation, int) else None


def turned(img: Image.Image, orientation: int | None) -> Image.Image:
    """`img` transposed as an Orientation value says; the same object when there is nothing to turn."""
    method = ORIENTATION_TRANSPOSE.get(orientation) if orientation is not None else None
    return img.transpose(method) if method is not None else img


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF Orientation says, even when other EXIF tags are damaged.

    Loads first: Pillow turns a TIFF itself as it loads it and then drops the tag, so a tag read before loading
    turned a TIFF twice."""
    img.load()
    return turned(img, exif_orientation(img))


def file_head(source: str | Path | BinaryIO) -> bytes:
    """The first `HEAD_BYTES` of a file or stream (empty when it cannot be read)."""
    try:
        if isinstance(source, str | Path):
            with open(source, "rb") as handle:
                return handle.read(HEAD_BYTES)
        source.seek(0)
        return source.read(HEAD_BYTES)
    except (OSError, ValueError):
        return b""


#: Bytes read to recognise a damaged picture: the longest signature is an ISO file-type box's brands.
HEAD_BYTES = 64


def looks_like_image(head: bytes) -> bool:
    """Whether data starting with `head` (`file_head`) has the signature of a format we read (WebP: RIFF....WEBP;
    AVIF and HEIC: an ISO file-type box naming a brand we decode, as its major or a compatible one)."""
    return (
        head.startswith(SIGNATURES)
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (head[4:8] == b"ftyp" and not ISO_IMAGE_BRANDS.isdisjoint(file_type_brands(head)))
    )


def file_type_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of the ISO file-type box `head` begins with (as far as `head` holds it)."""
    size = int.from_bytes(head[:4], "big")
    box = head[: min(max(size, 16), len(head))]
    return {box[8:12], *(box[i : i + 4] for i in range(16, len(box) - 3, 4))}


def is_bilevel(img: Image.Image) -> bool:
    """A gray picture of two tones and no transparency: 1-bit, or gray or a gray palette holding two values only, as
    a dithered GIF or a two-colour PNG does (Pillow reads those as "L" or "P"; counted from the histogram, so cheap).
    A palette of two colours is a logo or a sticker, left in its colours."""
    if img.mode == "1":
        return True
    if img.mode not in ("L", "P") or "transparency" in img.info:
        return False
    colors = img.getcolors(maxcolors=2)
    if colors is None or len(colors) != 2:
        return False
    if img.mode == "L":
        return True
    palette, indices = img.getpalette() or [], [index for _, index in colors if isinstance(index, int)]
    return len(indices) == 2 and all(len(set(palette[3 * i : 3 * i + 3])) == 1 for i in indices)  # gray entries


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha over white, 16-bit and float scaled (`to_8bit`), CMYK converted, two-tone
    gray softened (`is_bilevel`, `BILEVEL_BLUR_PX`)."""
    img = as_8bit(img)
    if is_bilevel(img):
        img = img.convert("L").filter(ImageFilter.GaussianBlur(BILEVEL_BLUR_PX))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:  # P, L or RGB with a transparent colour
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def over_white(pixels: np.ndarray) -> np.ndarray:
    """An HxWx2 (gray + alpha) or HxWx4 (RGBA) uint8 array without its alpha, laid over white as `to_rgb` lays a
    transparent file: arrays and files of the same picture must give the same faces and probabilities."""
    alpha = pixels[:, :, -1:].astype(np.float32) / 255.0
    return np.round(pixels[:, :, :-1] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def encode_png(image_rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB array (downloads of annotated images)."""
    buffer = io.BytesIO()
    Image.fromarray(image_rgb).save(buffer, format="PNG")
    return buffer.getvalue()
