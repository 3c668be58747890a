"""Whatever users drop in: decoded upright to RGB, or refused with a message that names the problem."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps
from skimage.data import astronaut

from fer_core import imageio
from fer_core.imageio import (
    AVIF_SUPPORTED,
    HEIF_SUPPORTED,
    MAX_SIDE,
    ImageLoadError,
    finite_range,
    frame_count,
    load_image,
    load_image_sized,
    looks_like_image,
    to_8bit,
)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient_with_orientation(orientation: int, fmt: str = "PNG") -> tuple[Image.Image, bytes]:
    """A picture whose every pixel differs (a wrong turn or mirror shows), saved with that Orientation."""
    image = Image.fromarray(np.arange(20 * 40 * 3, dtype=np.uint8).reshape(20, 40, 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image, encoded(image, fmt, exif=exif)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_rotation_is_applied_as_pillow_reads_it(orientation, fmt):
    """Pillow's own `exif_transpose` is the reference: a phone photo must come out upright, not mirrored."""
    _, data = gradient_with_orientation(orientation, fmt)
    with Image.open(io.BytesIO(data)) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert expected.shape[:2] == ((40, 20) if orientation >= 5 else (20, 40))
    np.testing.assert_array_equal(load_image(data), expected)


def damaged_exif(orientation: int) -> bytes:
    """An EXIF block whose Orientation is fine but whose StripByteCounts holds a string (as some cameras write)."""
    header, ifd_offset, n_entries = b"II*\x00", 8, 2
    string_offset = ifd_offset + 2 + 12 * n_entries + 4
    entries = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)  # SHORT, stored inline
    entries += struct.pack("<HHII", 0x0117, 2, 6, string_offset)  # ASCII "Canon", stored after the IFD
    tiff = header + struct.pack("<IH", ifd_offset, n_entries) + entries + struct.pack("<I", 0) + b"Canon\x00"
    return b"Exif\x00\x00" + tiff


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_rotation_survives_damaged_tags(orientation):
    image, clean = gradient_with_orientation(orientation)
    with Image.open(io.BytesIO(clean)) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    damaged = encoded(image, "PNG", exif=damaged_exif(orientation))
    with Image.open(io.BytesIO(damaged)) as opened, pytest.raises((struct.error, TypeError)):
        ImageOps.exif_transpose(opened)  # what the loader must survive: rewriting the EXIF block fails
    np.testing.assert_array_equal(load_image(damaged), expected)


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG"),
        (Image.new("RGBA", (30, 20), (255, 0, 0, 0)), "PNG"),
        (Image.new("LA", (30, 20)), "PNG"),
        (Image.new("P", (30, 20)), "GIF"),
        (Image.fromarray(np.linspace(0, 65535, 600, dtype=np.uint16).reshape(20, 30)), "PNG"),
    ],
)
def test_odd_modes_become_rgb(image, fmt):
    rgb = load_image(encoded(image, fmt))
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "two-colour PNG"])
def test_a_dithered_1_bit_picture_is_read_as_softened_gray(fmt):
    """Its dots hid every face from the detector: read as they are, the astronaut's dithered photo gave no face.
    Pillow reads a 1-bit GIF as gray ("L") and a two-colour PNG as palette ("P"): their dots were left as they were."""
    gray = Image.fromarray(astronaut()).convert("L")
    dithered = gray.convert("1")  # Floyd-Steinberg
    saved = dithered.convert("P") if fmt == "two-colour PNG" else dithered
    rgb = load_image(encoded(saved, fmt.split()[-1]))
    assert rgb.shape == (512, 512, 3) and len(np.unique(rgb)) > 16  # grays between the dots' black and white
    error = np.abs(rgb[..., 0].astype(int) - np.asarray(gray)).mean()
    dots_error = np.abs(np.asarray(dithered.convert("L"), dtype=int) - np.asarray(gray)).mean()
    assert error < dots_error / 2, (error, dots_error)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_a_two_colour_picture_keeps_its_colours(fmt):
    """Taken for a dithered scan, a red and blue sticker came back gray and blurred."""
    red_blue = np.zeros((20, 40, 3), np.uint8)
    red_blue[:, :20], red_blue[:, 20:] = (255, 0, 0), (0, 0, 255)
    two_colours = Image.fromarray(red_blue).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    np.testing.assert_array_equal(load_image(encoded(two_colours, fmt)), red_blue)


def test_pictures_of_more_than_two_tones_or_with_transparency_are_not_softened():
    gray = Image.fromarray(astronaut()).convert("L")
    np.testing.assert_array_equal(load_image(encoded(gray, "PNG"))[..., 0], np.asarray(gray))
    three = Image.fromarray(np.repeat(np.array([[0, 128, 255]], np.uint8), 20, axis=0))
    np.testing.assert_array_equal(load_image(encoded(three, "PNG"))[..., 0], np.asarray(three))
    keyed = Image.fromarray(np.repeat(np.array([[0, 255]], np.uint8), 20, axis=0)).convert("P")
    assert set(np.unique(load_image(encoded(keyed, "PNG", transparency=0)))) == {255}  # the key colour on white


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 600, dtype=np.uint16).reshape(20, 30)
    rgb = load_image(encoded(Image.fromarray(ramp), "PNG"))
    assert rgb.min() == 0 and rgb.max() == 255


def test_files_and_arrays_of_a_deep_picture_give_the_same_pixels():
    """Files were stretched over their own range and arrays divided by 257, so a dark 16-bit photo was bright from
    a file and dark as an array (other faces, other emotions), and a white 16-bit PNG decoded black."""
    dark = (np.asarray(Image.fromarray(astronaut()).convert("L"), dtype=np.uint16) * 64).astype(np.uint16)
    from_file = load_image(encoded(Image.fromarray(dark), "PNG"))[..., 0]
    np.testing.assert_array_equal(from_file, to_8bit(dark))
    white = np.full((8, 8), 65535, np.uint16)
    assert (load_image(encoded(Image.fromarray(white), "PNG")) == 255).all() and (to_8bit(white) == 255).all()
    picture = astronaut() / 255.0
    picture[0, 0, 0] = 1.0001  # a resize's overshoot: the whole picture was taken for 0..255 and shown black
    expected = astronaut()
    expected[0, 0, 0] = 255
    np.testing.assert_array_equal(to_8bit(picture), expected)


def test_a_16_bit_pgm_is_a_16_bit_picture_whatever_its_values():
    """Pillow opens a 16-bit PGM as 32-bit "I": judged by its values, one at 256 turned the picture black and all
    under 256 read it as 8-bit, unlike the same pixels in a uint16 array."""
    for values in ([0, 200, 255, 65535], [0, 200, 255, 256], [0, 1, 100, 255]):
        pixels = np.array([values], dtype=np.uint16)
        pgm = b"P5\n4 1\n65535\n" + pixels.astype(">u2").tobytes()
        np.testing.assert_array_equal(load_image(pgm)[..., 0], to_8bit(pixels))


def test_a_huge_float_picture_is_converted_without_full_size_float64_copies():
    """A 120 MP float TIFF (626 KB of mostly zeros) took 3.8 GB and 11 s: one upload could exhaust the server."""
    values = np.zeros((3000, 3000), np.float32)
    values[::7, ::5] = 0.5
    payload = encoded(Image.fromarray(values, mode="F"), "TIFF", compression="tiff_deflate")
    tracemalloc.start()
    try:
        gray = load_image(payload, max_side=512)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert gray.shape == (512, 512, 3) and 0 < gray.mean() < 20
    assert peak < 2.5 * values.nbytes  # the float32 copy numpy needs, not several float64 ones


def test_a_float_image_with_nan_or_inf_pixels_keeps_its_picture():
    ramp = np.linspace(0.0, 1.0, 600, dtype=np.float32).reshape(20, 30)
    ramp[0, 0], ramp[0, 1], ramp[0, 2] = np.nan, np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast" came with the black image
        gray = load_image(encoded(Image.fromarray(ramp, mode="F"), "TIFF"))[..., 0]
    assert gray[-1, -1] == 255 and gray[1, 0] < 20 and 100 < gray[10, 15] < 160
    lowest = round(float(ramp[np.isfinite(ramp)].min()) * 255)
    assert gray[0, 1] == 255 and gray[0, 0] == gray[0, 2] == lowest  # inf the brightest, NaN and -inf the darkest


def test_transparent_pixels_become_white():
    assert load_image(encoded(Image.new("RGBA", (5, 5), (0, 0, 0, 0)), "PNG")).min() == 255


@pytest.mark.parametrize(("mode", "key"), [("RGB", (0, 0, 0)), ("L", 0)])
def test_a_transparent_colour_key_becomes_white(mode, key):
    """PNGs without an alpha channel can still name one colour transparent (tRNS): it is shown as white too."""
    image = Image.new(mode, (6, 4), key)
    image.paste(Image.new(mode, (3, 4), (90, 90, 90) if mode == "RGB" else 90), (3, 0))
    rgb = load_image(encoded(image, "PNG", transparency=key))
    assert (rgb[:, :3] == 255).all() and (rgb[:, 3:] == 90).all()


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    payload = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(load_image(payload)[0, 0]) == (255, 0, 0)
    assert frame_count(payload) == 2


def test_a_file_we_may_not_read_is_not_called_corrupt(tmp_path, monkeypatch):
    """A permission error read "the image is corrupt or truncated ([Errno 13] Permission denied)"."""
    path = tmp_path / "locked.png"
    path.write_bytes(encoded(Image.new("RGB", (4, 4)), "PNG"))

    def denied(fp, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(Image, "open", denied)  # as root, chmod 000 would not stop the read
    with pytest.raises(ImageLoadError, match=r"locked\.png: cannot read the file \(Permission denied\)$"):
        load_image(path)


def test_frame_count_of_stills_pages_and_damage():
    pages = [Image.new("L", (8, 8), level) for level in (0, 128, 255)]
    assert frame_count(encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])) == 3
    assert frame_count(encoded(pages[0], "PNG")) == 1
    assert frame_count(b"not an image") == 1  # only ever asked of a decoded file; a count it cannot read is one


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "empty"), (b"hello world", "not an image"), (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|corrupt")],
)
def test_bad_bytes_have_clear_messages(payload, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(payload, name="upload.png")


def test_formats_pillow_knows_but_we_do_not_read_never_reach_their_decoders():
    """EPS went to Ghostscript (here: 'corrupt or truncated (Unable to locate Ghostscript)'); PCX decoded."""
    pcx = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pcx, "PCX")
    for payload in (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", pcx.getvalue()):
        with pytest.raises(ImageLoadError, match=r"^upload\.jpg: not an image file, or a format we cannot read$"):
            load_image(payload, name="upload.jpg")


@pytest.mark.skipif(not AVIF_SUPPORTED, reason="this Pillow was built without libavif")
def test_an_avif_photo_is_read_upright():
    """AVIF (Android cameras, the web) was refused by the uploader. Lossy: compared with the PNG it came from."""
    image, data = gradient_with_orientation(6, "AVIF")
    rgb = load_image(encoded(image, "AVIF", quality=100))
    assert np.abs(rgb.astype(int) - np.asarray(image)).mean() < 4
    assert load_image(data).shape == (40, 20, 3)  # its EXIF turn applied
    assert ".avif" in imageio.IMAGE_SUFFIXES


@pytest.mark.parametrize(
    "fmt", [pytest.param(fmt, marks=pytest.mark.skipif(not ok, reason=f"no {fmt} decoder"))
            for fmt, ok in (("AVIF", AVIF_SUPPORTED), ("HEIF", HEIF_SUPPORTED))]
)  # fmt: skip
def test_a_truncated_avif_or_heic_is_corrupt_not_of_an_unknown_kind(fmt):
    """A cut AVIF was "not an image file, or a format we cannot read", which sends the user to convert it."""
    payload = encoded(Image.fromarray(astronaut()), fmt)
    for cut in (40, len(payload) // 2):
        with pytest.raises(ImageLoadError, match=r"^upload: the image is (corrupt or )?truncated \("):
            load_image(payload[:cut])


@pytest.mark.skipif(not (AVIF_SUPPORTED and HEIF_SUPPORTED), reason="needs both decoders to make the files")
def test_a_whole_avif_or_heic_without_its_decoder_is_not_called_corrupt(monkeypatch):
    """With the brands known whatever decoders were present (and the generic "mif1" taken for either kind), a whole
    HEIC on a machine without pillow-heif read "the image is corrupt or truncated"."""
    heic, avif = encoded(Image.fromarray(astronaut()), "HEIF"), encoded(Image.fromarray(astronaut()), "AVIF")
    monkeypatch.setattr(imageio, "READ_FORMATS", tuple(f for f in imageio.READ_FORMATS if f != "HEIF"))
    monkeypatch.setattr(imageio, "ISO_IMAGE_BRANDS", imageio.iso_image_brands(avif=True, heif=False))
    for whole in (heic, heic[:8] + b"mif1" + heic[12:]):  # the second names the generic brand first, "heic" after
        with pytest.raises(ImageLoadError, match=r"^phone\.heic: not an image file, or a format we cannot read$"):
            load_image(whole, name="phone.heic")
    generic = avif[:8] + b"mif1" + avif[12:]  # an AVIF naming the generic brand first, its own among the rest
    with pytest.raises(ImageLoadError, match=r"^cut\.avif: the image is (corrupt or )?truncated"):
        load_image(generic[:200], name="cut.avif")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", *(["HEIF"] if HEIF_SUPPORTED else [])])
def test_a_truncated_picture_is_called_truncated_in_words(fmt):
    """It read "corrupt or truncated (image file is truncated (19 bytes not processed))", and pillow-heif's reason
    ended in a line break inside the brackets."""
    payload = encoded(Image.fromarray(astronaut()), fmt)
    with pytest.raises(ImageLoadError) as raised:
        load_image(payload[: len(payload) // 2], name="cut.jpg")
    assert str(raised.value) == (
        "cut.jpg: the image is truncated (the file ends before the picture does: was it fully downloaded or copied?)"
    )


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    """121 MP: over our 120 MP limit but under Pillow's own error threshold (2 x 89.5 MP), so our guard decides."""
    payload = encoded(Image.new("1", (11_000, 11_000)), "PNG")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded before the size check"))
    with pytest.raises(ImageLoadError) as refused:
        load_image(payload, name="bomb.png")
    assert str(refused.value) == "bomb.png: 121.0 megapixels is too large (the limit is 120); please resize it"


def test_a_picture_past_pillow_s_own_error_threshold_is_refused_with_our_limit(monkeypatch):
    """Over 2 x the limit Pillow raises its own error, whose text quoted 240 MP and spoke of a DOS attack."""
    monkeypatch.setattr(imageio, "MAX_PIXELS", 1_000_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(ImageLoadError) as refused:
        load_image(encoded(Image.new("L", (2_000, 1_500)), "PNG"), name="scan.png")
    assert str(refused.value) == "scan.png: 3.0 megapixels is too large (the limit is 1); please resize it"


def test_deep_tiff_layouts_pillow_misreads_are_mended_or_refused():
    """Pillow decoded a 16-bit MinIsWhite TIFF as its negative and a 16-bit planar RGB one as garbled stripes,
    without an error: wrong faces from a picture that looked fine in any viewer."""
    gray = np.asarray(Image.fromarray(astronaut()).convert("L"))
    negative = io.BytesIO()
    tifffile.imwrite(negative, ((255 - gray.astype(np.uint16)) * 257).astype(np.uint16), photometric="miniswhite")
    np.testing.assert_array_equal(load_image(negative.getvalue())[..., 0], gray)
    planar = io.BytesIO()
    tifffile.imwrite(planar, np.moveaxis(astronaut().astype(np.uint16) * 257, 2, 0), planarconfig="separate")
    with pytest.raises(ImageLoadError, match=r"scan\.tif: a TIFF of more than 8 bits with separate colour planes"):
        load_image(planar.getvalue(), name="scan.tif")
    compressed = io.BytesIO()  # libtiff decodes these, and gets them right
    tifffile.imwrite(compressed, np.moveaxis(astronaut().astype(np.uint16) * 257, 2, 0), planarconfig="separate",
                     compression="zlib")  # fmt: skip
    np.testing.assert_array_equal(load_image(compressed.getvalue()), astronaut())
    eight_bit = io.BytesIO()
    tifffile.imwrite(eight_bit, np.moveaxis(astronaut(), 2, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(load_image(eight_bit.getvalue()), astronaut())  # Pillow reads this one right


def test_a_valid_tiff_of_a_kind_pillow_lacks_is_not_called_corrupt():
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, astronaut() / 255.0, photometric="rgb")  # 64-bit float RGB
    with pytest.raises(ImageLoadError) as refused:
        load_image(buffer.getvalue(), name="scan.tif")
    assert str(refused.value) == (
        "scan.tif: a TIFF of a kind we cannot read (such as floating-point colour); please save it as an 8- or "
        "16-bit image"
    )


def test_huge_side_is_downscaled():
    rgb = load_image(encoded(Image.new("RGB", (MAX_SIDE * 2, 100), "white"), "PNG"))
    assert max(rgb.shape) == MAX_SIDE


def astronaut_in(mode: str) -> Image.Image:
    """A real 512x512 photo (fine detail and smooth areas) in the given Pillow mode."""
    rgb = Image.fromarray(astronaut())
    if mode == "I;16":
        return Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    if mode == "I;16B":
        big_endian = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(">u2")
        return Image.frombytes("I;16B", rgb.size, big_endian.tobytes())
    return rgb.convert(mode)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("I;16B", "TIFF"),
     ("CMYK", "TIFF"), ("P", "PNG"), ("1", "PNG")],
)  # fmt: skip
def test_a_large_picture_is_shrunk_as_faithfully_as_after_conversion(mode, fmt):
    """Shrinking in the file's own mode saves gigabytes on a 118 MP RGBA or 16-bit PNG, but only where Pillow
    resamples that mode faithfully: palette and 1-bit images were resampled by nearest neighbour and big-endian
    16-bit became noise. Each must match shrinking after conversion to RGB."""
    data = encoded(astronaut_in(mode), fmt)
    reference = Image.fromarray(load_image(data))  # full size, converted: the old order
    reference.thumbnail((128, 128), Image.Resampling.LANCZOS)
    shrunk = load_image(data, max_side=128)
    assert shrunk.shape == (128, 128, 3)
    assert np.abs(shrunk.astype(int) - np.asarray(reference, dtype=int)).mean() < 2.0


def jpeg_exif(orientation: int) -> bytes:
    return b"Exif\x00\x00" + struct.pack("<2sHIHHHIHHI", b"II", 42, 8, 1, 0x0112, 3, 1, orientation, 0, 0)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("JPEG", {"exif": jpeg_exif(6)}), ("PNG", {"exif": jpeg_exif(8)}), ("TIFF", {"tiffinfo": {274: 6}}),
     ("JPEG", {})],
)  # fmt: skip
def test_the_full_size_is_the_upright_picture_s_however_the_format_stores_its_turn(fmt, options):
    """Pillow turns a TIFF itself as it loads it (and reports it upright); JPEG and PNG keep the tag for us. The
    size returned beside a shrunk array is the upright file's: what `predict` and the Photos downloads scale to."""
    rgb, size = load_image_sized(encoded(Image.new("RGB", (300, 120), "white"), fmt, **options), max_side=100)
    turned = bool(options)
    assert size == ((120, 300) if turned else (300, 120))
    assert rgb.shape == ((100, 40, 3) if turned else (40, 100, 3))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32])
def test_wide_integer_arrays_of_16_bit_values_are_read_as_16_bit(dtype: type[np.integer]) -> None:
    """numpy and OpenCV users (and Pillow's 32-bit "I" mode) hand over 16-bit values in wider integers: stretched
    over their own range, a dark 0..4000 picture came out full-contrast, other faces than the same uint16 array."""
    values = np.array([[0, 1000, 4000]])
    np.testing.assert_array_equal(to_8bit(values.astype(dtype)), to_8bit(values.astype(np.uint16)))
    np.testing.assert_array_equal(to_8bit(values.astype(dtype)), [[0, 4, 16]])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_full_size_swaps_its_sides_for_every_quarter_turn(orientation: int) -> None:
    """Orientations 5 and 7 (mirrored and turned: front cameras, editors) turn the picture too: the (width, height)
    boxes are scaled back to must be the upright picture's, or the downloaded boxes land on the wrong axes."""
    data = encoded(Image.new("RGB", (300, 120), "white"), "JPEG", exif=jpeg_exif(orientation))
    rgb, size = load_image_sized(data, max_side=100)
    turned = orientation >= 5
    assert size == ((120, 300) if turned else (300, 120))
    assert rgb.shape == ((100, 40, 3) if turned else (40, 100, 3))


def test_a_damaged_webp_is_called_corrupt_not_of_an_unknown_kind() -> None:
    """A WebP whose header is cut or damaged read "not an image file, or a format we cannot read", which sends the
    user to convert a file that only needs uploading again."""
    whole = encoded(Image.fromarray(astronaut()[:64, :64]), "WEBP")
    assert whole[:4] == b"RIFF" and whole[8:12] == b"WEBP"
    for damaged in (whole[:14], whole[:12] + b"\x00" * 4 + whole[16:]):
        with pytest.raises(ImageLoadError, match=r"^cut\.webp: the image is corrupt or truncated"):
            load_image(damaged, name="cut.webp")
    assert looks_like_image(b"RIFF\0\0\0\0WEBPVP8 ") and not looks_like_image(b"RIFF\0\0\0\0WAVEfmt ")


def test_a_constant_picture_keeps_its_level() -> None:
    """A flat picture has no range to stretch over: taken as 0..0, a constant 16-bit 1000 became white (255, not 4)
    and a constant float 5.0 white (not 5), as a white 16-bit PNG once came out black."""
    assert finite_range(np.full((2, 2), 7.0)) == (7.0, 7.0)
    assert (to_8bit(np.full((3, 3), 1000, np.int32)) == 4).all()
    assert (to_8bit(np.full((3, 3), 5.0)) == 5).all()
