"""FER-2013 loading from generated CSVs and folders, including malformed ones."""

from __future__ import annotations

import errno
import gzip
import logging
import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from fer_core.data import (
    FerDataError,
    FerDataset,
    FerSplit,
    class_weights,
    folder_usage,
    load_fer2013,
    parse_emotion,
    parse_pixels,
    read_csv_records,
    read_gray_face,
)
from fer_core.labels import EMOTIONS
from tests.fer_fixtures import synthetic_faces, write_fer_csv, write_fer_folder


@pytest.mark.parametrize("name", ["fer.csv", "fer.csv.gz", "fer.csv.xz", "fer.csv.zip"])
def test_csv_in_every_compression_loads_three_splits(tmp_path, name):
    dataset = load_fer2013(write_fer_csv(tmp_path / name))
    assert {k: len(v) for k, v in dataset.splits.items()} == {"Training": 42, "PublicTest": 14, "PrivateTest": 14}
    images, labels = synthetic_faces(70)
    np.testing.assert_array_equal(dataset["Training"].images, images[:42])
    np.testing.assert_array_equal(dataset["PrivateTest"].labels, labels[56:])
    assert dataset["Training"].images.dtype == np.uint8
    assert dataset["Training"].sources[0].endswith("line 2")


def test_folder_layout_uses_file_name_prefixes(tmp_path):
    dataset = load_fer2013(write_fer_folder(tmp_path / "fer"))
    counts = {k: len(v) for k, v in dataset.splits.items()}
    assert counts == {"Training": 28, "PublicTest": 14, "PrivateTest": 14}
    assert all("PrivateTest_" in s for s in dataset["PrivateTest"].sources)
    for split in dataset.splits.values():  # each face keeps its folder's class and its own pixels
        for source, label, image in zip(split.sources, split.labels, split.images, strict=True):
            assert EMOTIONS[label] == Path(source).parent.name, source
            np.testing.assert_array_equal(image, np.asarray(Image.open(source).convert("L")))


def test_folder_without_prefixes_gets_a_seeded_validation_split(tmp_path):
    root = write_fer_folder(tmp_path / "fer", per_class=10, prefixes=False)
    first = load_fer2013(root, seed=3, val_fraction=0.2)
    again = load_fer2013(root, seed=3, val_fraction=0.2)
    other = load_fer2013(root, seed=4, val_fraction=0.2)
    assert len(first["PublicTest"]) == 14 and len(first["Training"]) == 56 and len(first["PrivateTest"]) == 70
    assert first["PublicTest"].sources == again["PublicTest"].sources
    assert first["PublicTest"].sources != other["PublicTest"].sources
    assert set(first["PublicTest"].sources).isdisjoint(first["Training"].sources)


def test_a_source_of_training_rows_only_loses_none_to_the_validation_split(tmp_path):
    """All-Training usages made a '<U8' array, and 'PublicTest' written into it became 'PublicTe': 10 % vanished."""
    root = write_fer_folder(tmp_path / "fer", per_class=10, prefixes=False)
    shutil.rmtree(root / "test")
    by_folder = load_fer2013(root, val_fraction=0.2)
    assert {k: len(v) for k, v in by_folder.splits.items()} == {"Training": 56, "PublicTest": 14}
    images, labels = synthetic_faces(49)
    no_usage = tmp_path / "no_usage.csv"
    rows = [f"{label},{' '.join(map(str, image.ravel()))}" for image, label in zip(images, labels, strict=True)]
    no_usage.write_text("emotion,pixels\n" + "\n".join(rows) + "\n")
    by_csv = load_fer2013(no_usage)
    assert len(by_csv["Training"]) + len(by_csv["PublicTest"]) == 49 and len(by_csv["PublicTest"]) > 0


def test_split_folders_without_prefixes_keep_their_role(tmp_path):
    root = write_fer_folder(tmp_path / "fer", per_class=2, prefixes=False)
    (root / "test").rename(root / "val")
    shutil.copytree(root / "val", root / "test")
    dataset = load_fer2013(root)
    assert {k: len(v) for k, v in dataset.splits.items()} == {"Training": 14, "PublicTest": 14, "PrivateTest": 14}
    (root / "extras" / "happy").mkdir(parents=True)
    with pytest.raises(FerDataError, match="extras: split folder name is not"):
        load_fer2013(root)
    assert len(load_fer2013(root, skip_bad=True).skipped) == 1


def test_sixteen_bit_faces_in_folders_are_scaled_not_clipped(tmp_path):
    root = write_fer_folder(tmp_path / "fer", per_class=1)
    ramp = np.linspace(0, 65535, 48 * 48).astype(np.uint16).reshape(48, 48)
    Image.fromarray(ramp).save(root / "train" / "happy" / "Training_ramp.png")
    dataset = load_fer2013(root)
    face = dataset["Training"].images[dataset["Training"].sources.index(str(root / "train/happy/Training_ramp.png"))]
    assert face.min() == 0 and face.max() == 255 and 120 < face.mean() < 135  # a full ramp, not 99 % white


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3,1 2 3,Training", "expected 2304 pixel values, got 3"),
        ("3," + " ".join(["7"] * 2303) + " x,Training", "pixel value 'x' is not an integer"),
        ("3," + " ".join(["300"] * 2304) + ",Training", "must lie in 0..255"),
        ("9," + " ".join(["7"] * 2304) + ",Training", "emotion '9' is not one of"),
        ("3," + " ".join(["7"] * 2304) + ",Validation", "Usage 'Validation' is not one of"),
        ("3," + " ".join(["7"] * 2303) + " 99999999999999999999,Training", "must lie in 0..255"),
        ("3," + " ".join(["7"] * 2303) + " --5,Training", "pixel value '--5' is not an integer"),
        ("3," + " ".join(["7"] * 2303) + " \u00b2,Training", "is not an integer"),
        ("\u00b2," + " ".join(["7"] * 2304) + ",Training", "emotion '\u00b2' is not one of"),  # '²'.isdigit()
        ("\u0663," + " ".join(["7"] * 2304) + ",Training", "emotion '\u0663' is not one of"),  # Arabic-Indic 3
    ],
)
def test_malformed_csv_row_names_line_and_problem(tmp_path, row, message):
    path = write_fer_csv(tmp_path / "fer.csv")
    lines = path.read_text().splitlines()
    lines.insert(3, row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FerDataError, match=message) as err:
        load_fer2013(path)
    assert "line 4" in str(err.value)
    dataset = load_fer2013(path, skip_bad=True)
    assert len(dataset.skipped) == 1 and message.split("'")[0] in dataset.skipped[0]
    assert sum(len(s) for s in dataset.splits.values()) == 70


def test_row_with_extra_fields_is_an_error_unless_skipped(tmp_path):
    path = write_fer_csv(tmp_path / "fer.csv")
    path.write_text(path.read_text() + "1,2,3,4\n")
    with pytest.raises(FerDataError, match="4 fields"):
        load_fer2013(path)
    assert len(load_fer2013(path, skip_bad=True).skipped) == 1


def test_a_non_utf8_byte_costs_its_row_only(tmp_path):
    """An Excel export's Latin-1 "é" in one cell stopped the read there: every later row was lost."""
    path = write_fer_csv(tmp_path / "fer.csv", n_train=6, n_public=0, n_private=0)
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"Training", b"Training\xe9")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(FerDataError, match=r"fer\.csv line 4"):
        load_fer2013(path)
    kept = load_fer2013(path, skip_bad=True)
    assert len(kept["Training"]) == 5 and kept.skipped_count == 1


def test_a_face_crop_in_a_16_bit_min_is_white_tiff_is_read_as_the_app_reads_it(tmp_path):
    """The folder loader took Pillow's decoding as it came: the negative of the face the app and CLIs see."""
    face = synthetic_faces(1, seed=4)[0][0]
    tifffile.imwrite(tmp_path / "face.tif", ((255 - face.astype(np.uint16)) * 257).astype(np.uint16),
                     photometric="miniswhite")  # fmt: skip
    np.testing.assert_array_equal(read_gray_face(tmp_path / "face.tif"), face)


def test_a_csv_that_is_not_utf8_text_is_named_so(tmp_path):
    """Excel's "Unicode text" (UTF-16) gave a header of replacement characters listed as missing columns."""
    path = write_fer_csv(tmp_path / "fer.csv", n_train=2, n_public=0, n_private=0)
    path.write_bytes(path.read_text().encode("utf-16"))
    with pytest.raises(FerDataError, match="its first line is not UTF-8 text"):
        load_fer2013(path)


def test_a_csv_without_its_header_row_says_so_in_one_short_line(tmp_path):
    path = write_fer_csv(tmp_path / "fer.csv", n_train=3, n_public=0, n_private=0)
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(FerDataError) as refused:
        load_fer2013(path)
    assert str(refused.value) == (
        f"{path}: the first line is a data row, not a header; add the line emotion,pixels,Usage above it"
    )
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"column_{i}_{'x' * 50}" for i in range(20)) + "\n1\n")
    with pytest.raises(FerDataError) as refused:
        load_fer2013(wide)
    assert "and 12 more" in str(refused.value) and len(str(refused.value)) < 600


def test_missing_columns_and_wrong_file_types(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,data\n1,2\n")
    with pytest.raises(FerDataError, match="missing column"):
        load_fer2013(bad)
    with pytest.raises(FerDataError, match="no such file"):
        load_fer2013(tmp_path / "absent.csv")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(FerDataError, match="not a FER-2013 source"):
        load_fer2013(other)


def test_unreadable_image_in_folder_is_named(tmp_path):
    root = write_fer_folder(tmp_path / "fer")
    broken = root / "train" / "happy" / "Training_broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(FerDataError, match=r"Training_broken\.jpg: unreadable image"):
        load_fer2013(root)
    dataset = load_fer2013(root, skip_bad=True)
    assert len(dataset.skipped) == 1 and len(dataset["Training"]) == 28


def test_stray_entries_in_a_folder_dataset_are_named_not_ignored(tmp_path):
    root = write_fer_folder(tmp_path / "fer")
    nested = root / "test" / "happy" / "more"
    nested.mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(nested / "PrivateTest_x.png")
    (root / "test" / "notes.txt").write_text("labels checked by hand")
    (root / "train" / "sad" / "Training_gone.png").symlink_to(tmp_path / "nowhere.png")
    problems = ("test/happy/more: a folder inside", "test/notes.txt: a file beside", "gone.png: not a readable")
    with pytest.raises(FerDataError, match="|".join(problems)):
        load_fer2013(root)
    skipped = load_fer2013(root, skip_bad=True).skipped
    assert len(skipped) == 3 and all(any(problem in message for message in skipped) for problem in problems)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])  # Pillow turns a TIFF itself as it loads: not twice
def test_folder_faces_are_upright_and_bomb_guarded(tmp_path, monkeypatch, suffix):
    root = write_fer_folder(tmp_path / "fer", per_class=1)
    face = np.zeros((48, 48), np.uint8)
    face[:8] = 255  # a bright band at the top of the upright face
    turned = Image.fromarray(np.rot90(face, 1).copy())  # stored turned, with EXIF saying how to turn it back
    exif = Image.Exif()
    exif[0x0112] = 6
    turned.save(root / "train" / "happy" / f"Training_turned{suffix}", exif=exif, quality=100)
    dataset = load_fer2013(root)
    training = dataset["Training"]
    loaded = training.images[training.sources.index(str(root / f"train/happy/Training_turned{suffix}"))]
    assert loaded[:8].mean() > 200 and loaded[-8:].mean() < 50
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 48x48 face is now "a bomb" (warning level)
    with pytest.raises(FerDataError, match="unreadable image"):
        load_fer2013(root)


def test_damaged_or_locked_zip_is_an_error_naming_the_file(tmp_path, monkeypatch):
    path = write_fer_csv(tmp_path / "fer.csv.zip")
    for failure in (NotImplementedError("That compression method is not supported"), RuntimeError("is encrypted")):

        def refuse(*args, error=failure, **kwargs):
            raise error

        monkeypatch.setattr(zipfile.ZipFile, "open", refuse)
        with pytest.raises(FerDataError, match=rf"fer\.csv\.zip: cannot read as CSV \({failure}"):
            load_fer2013(path)
    monkeypatch.undo()
    damaged = tmp_path / "damaged.csv.gz"
    data = gzip.compress(write_fer_csv(tmp_path / "plain.csv").read_bytes())
    damaged.write_bytes(data[:200] + bytes(b ^ 0x55 for b in data[200:400]) + data[400:])
    with pytest.raises(FerDataError, match=r"damaged\.csv\.gz: cannot read"):
        load_fer2013(damaged)


def test_class_weights_lift_rare_classes():
    labels = np.array([3] * 100 + [1] * 4 + [0] * 25 + [2, 4, 5, 6] * 10)
    weights = class_weights(labels)
    assert weights[EMOTIONS.index("disgust")] > weights[EMOTIONS.index("angry")] > weights[EMOTIONS.index("happy")]
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)


def test_fingerprint_identifies_the_data(tmp_path):
    a = load_fer2013(write_fer_csv(tmp_path / "a.csv", seed=0))
    b = load_fer2013(write_fer_csv(tmp_path / "b.csv", seed=1))
    assert a.fingerprint() == load_fer2013(tmp_path / "a.csv").fingerprint()
    assert a.fingerprint() != b.fingerprint()


def insert_lines(path, index, *rows):
    lines = path.read_text().splitlines()
    lines[index:index] = rows
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("at", "problem"),
    [(3, "cannot parse this record .* an unclosed quote"), (-1, "a row has 2 fields, expected 3")],
)
def test_stray_quote_is_an_error_naming_the_lines_it_swallowed(tmp_path, at, problem):
    """Early in the file the quote runs into the csv size limit; near the end into the end of the file."""
    path = insert_lines(write_fer_csv(tmp_path / "fer.csv"), at, '3,"' + " ".join(["7"] * 2304) + ",Training")
    with pytest.raises(FerDataError, match=rf"fer\.csv lines \d+-\d+ \(\d+ rows\): {problem}") as err:
        load_fer2013(path)
    span = re.search(r"lines (\d+)-(\d+)", str(err.value))
    assert span is not None
    first, last = map(int, span.groups())
    assert first == (at + 1 if at > 0 else 71)
    dataset = load_fer2013(path, skip_bad=True)
    assert len(dataset.skipped) == 1
    assert sum(len(split) for split in dataset.splits.values()) == 70 - (last - first)  # the records it swallowed
    assert dataset.skipped_count == last - first + 1  # its own row and each it swallowed


def data_lines(path: Path) -> int:
    """The rows of a CSV as a person counts them: its non-blank lines after the header."""
    return sum(1 for line in path.read_text().splitlines()[1:] if line.strip())


def test_skip_bad_counts_every_row_a_stray_quote_swallowed(tmp_path, caplog):
    """An unclosed quote swallowing lines 13-32 counted as one skipped row: "skipped 3" when 22 of 56 were gone."""
    pixels = " ".join(["7"] * 2304)
    path = write_fer_csv(tmp_path / "bad.csv", n_train=36, n_public=10, n_private=10)
    insert_lines(path, 12, f'3,"{pixels},Training')  # file line 13: its quote never closes
    insert_lines(path, 14, "")  # a blank line inside the quote's span is no row
    insert_lines(path, 40, "3,1 2 3,Training", "4,5")  # two plain bad rows after the span
    with caplog.at_level(logging.WARNING, logger="fer_core.data"):
        dataset = load_fer2013(path, skip_bad=True)
    kept = sum(len(split) for split in dataset.splits.values())
    assert kept < 56 - 10  # the quote really swallowed many rows
    assert dataset.skipped_count == data_lines(path) - kept
    assert len(dataset.skipped) == 3  # one message per bad record, as before
    span = re.search(r"lines (\d+)-(\d+)", dataset.skipped[0])
    assert span is not None
    first, last = map(int, span.groups())
    assert first == 13 and f"lines 13-{last} ({last - 13} rows): cannot parse this record" in dataset.skipped[0]
    assert f"skipped {dataset.skipped_count} bad rows/files" in caplog.text


def test_a_bad_record_over_several_lines_counts_and_names_its_rows(tmp_path):
    """A stray quote closed by a later one merges rows into a record with the right field count; its bad pixels
    cost every row it merged."""
    path = write_fer_csv(tmp_path / "fer.csv", n_train=6, n_public=0, n_private=0)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(",", ',"', 1)  # opens in line 3's pixels ...
    lines[4] = lines[4].replace(",Training", '",Training')  # ... and closes in line 5's
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FerDataError, match=r"fer\.csv lines 3-5 \(3 rows\): expected 2304 pixel values"):
        load_fer2013(path)
    dataset = load_fer2013(path, skip_bad=True)
    assert sum(len(split) for split in dataset.splits.values()) == 3 and dataset.skipped_count == 3


def test_line_numbers_are_file_lines_past_blank_lines_and_quoted_newlines(tmp_path):
    pixels = " ".join(["7"] * 2304)
    quoted = f'3,"{pixels[:9]}\n{pixels[10:]}",Training'  # one record over two lines (the newline splits a value)
    path = insert_lines(write_fer_csv(tmp_path / "fer.csv"), 1, "", quoted, "3,1 2 3,Training")
    with pytest.raises(FerDataError, match=r"fer\.csv line 5: expected 2304 pixel values"):
        load_fer2013(path)
    dataset = load_fer2013(path, skip_bad=True)
    assert dataset["Training"].sources[:2] == ("fer.csv lines 3-4", "fer.csv line 6")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty file"),
        ("cut.csv.zip", None, "cannot read as CSV"),
        ("bad.csv.xz", b"\xfd7zXZ\x00 this is not xz data", "cannot read as CSV"),
        ("two.zip", "two", "expected one CSV inside the zip, found 2"),
    ],
)
def test_damaged_files_are_named_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:  # a zip cut in half
        whole = write_fer_csv(tmp_path / "whole.csv.zip").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif content == "two":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.csv", "emotion,pixels\n")
            archive.writestr("b.csv", "emotion,pixels\n")
    else:
        path.write_bytes(content)
    with pytest.raises(FerDataError, match=message) as err:
        load_fer2013(path, skip_bad=True)
    assert name in str(err.value)


def test_header_and_usage_spelling_is_not_case_sensitive(tmp_path):
    """A lower-case `usage` column was ignored: every row became Training, PrivateTest included, with no word."""
    plain = write_fer_csv(tmp_path / "fer.csv")
    lines = plain.read_text().splitlines()
    lines[0] = "Emotion,PIXELS,usage"
    lines[-1] = lines[-1].replace("PrivateTest", "privatetest")
    respelled = tmp_path / "respelled.csv"
    respelled.write_text("\n".join(lines) + "\n")
    expected = load_fer2013(plain)
    dataset = load_fer2013(respelled)
    assert {k: len(v) for k, v in dataset.splits.items()} == {"Training": 42, "PublicTest": 14, "PrivateTest": 14}
    assert dataset.fingerprint() == expected.fingerprint()
    twice = tmp_path / "twice.csv"
    twice.write_text("emotion,pixels,Usage,usage\n")
    with pytest.raises(FerDataError, match="2 columns named 'Usage'"):
        load_fer2013(twice)


def test_a_zip_made_by_macos_finder_loads(tmp_path):
    """Finder adds `__MACOSX/._fer.csv`; it was counted as a second CSV and the zip refused."""
    path = tmp_path / "fer.csv.zip"
    text = write_fer_csv(tmp_path / "fer.csv").read_text()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fer.csv", text)
        archive.writestr("__MACOSX/._fer.csv", b"\x00\x05\x16\x07 resource fork")
    assert len(load_fer2013(path)["PrivateTest"]) == 14


def test_skipped_counts_the_files_of_a_skipped_folder(tmp_path):
    """A skipped folder counted as one however many faces it held, so `skipped` in metrics.json undercounted."""
    root = write_fer_folder(tmp_path / "fer")
    extra = root / "extra" / "happy"
    extra.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.zeros((48, 48), np.uint8)).save(extra / f"x{i}.png")
    (extra / ".DS_Store").write_bytes(b"")
    misc = root / "train" / "misc"
    misc.mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(misc / "y.png")
    (root / "test" / "Thumbs.db").write_bytes(b"")
    dataset = load_fer2013(root, skip_bad=True)
    assert len(dataset.skipped) == 3 and dataset.skipped_count == 5
    assert any("extra: split folder name" in m and "(3 file(s) left out)" in m for m in dataset.skipped)


def deny(monkeypatch, folder: Path, *, enter_only: bool = False) -> None:
    """Root ignores chmod, so fake the PermissionError a user gets from a folder with mode 000 (cannot list it) or,
    with `enter_only`, mode r-- (can list it, but not look at anything inside it)."""
    iterdir, stat = Path.iterdir, Path.stat

    def refused(path: Path) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def listing(self):
        if self == folder and not enter_only:
            raise refused(self)
        return iterdir(self)

    def looking(self, *, follow_symlinks=True):
        if self.parent == folder and enter_only:
            raise refused(self)
        return stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "iterdir", listing)
    monkeypatch.setattr(Path, "stat", looking)


@pytest.mark.parametrize(("folder", "enter_only"), [("train/happy", False), ("train/happy", True), ("test", False)])
def test_a_folder_that_cannot_be_listed_is_named_or_skipped(tmp_path, monkeypatch, caplog, folder, enter_only):
    """A split or class folder without read rights gave a PermissionError traceback, --skip-bad or not."""
    root = write_fer_folder(tmp_path / "fer")
    denied = root / folder
    deny(monkeypatch, denied, enter_only=enter_only)
    with pytest.raises(FerDataError) as refused:
        load_fer2013(root)
    assert str(refused.value) == f"{denied}: cannot list it: permission denied"
    with caplog.at_level(logging.WARNING, logger="fer_core.data"):
        dataset = load_fer2013(root, skip_bad=True)
    assert dataset.skipped == (f"{denied}: cannot list it: permission denied (its files could not be counted)",)
    assert dataset.skipped_count == 1 and "skipped at least 1 bad rows/files" in caplog.text
    kept = [source for split in dataset.splits.values() for source in split.sources]
    assert len(kept) == 56 - (4 if folder == "train/happy" else 28) and not any(str(denied) in s for s in kept)


def test_a_skipped_folder_holding_one_that_cannot_be_listed_counts_what_it_can(tmp_path, monkeypatch):
    root = write_fer_folder(tmp_path / "fer")
    extra = root / "extra"
    shutil.copytree(root / "train", extra)
    deny(monkeypatch, extra / "happy")
    dataset = load_fer2013(root, skip_bad=True)
    assert dataset.skipped_count == 24
    assert dataset.skipped[0].endswith(
        f"(at least 24 file(s) left out; {extra / 'happy'} cannot be listed to count its files)"
    )


@pytest.mark.parametrize(
    ("name", "mode"), [("a.tar", "w"), ("fer2013.tar.gz", "w:gz"), ("b.tgz", "w:gz"), ("c.tar.xz", "w:xz")]
)
def test_a_tar_archive_is_named_as_one_to_extract(tmp_path, name, mode):
    """Kaggle's fer2013.tar.gz (fer2013/fer2013.csv inside) got the advice to save it as CSV UTF-8, and still did
    from `predict --csv-out`."""
    path = tmp_path / name
    with tarfile.open(path, mode) as archive:
        archive.add(write_fer_csv(tmp_path / "fer2013.csv"), arcname="fer2013/fer2013.csv")
    for read in (lambda: load_fer2013(path, skip_bad=True), lambda: read_csv_records(path)):  # predict reads so
        with pytest.raises(FerDataError) as refused:
            read()
        assert str(refused.value).startswith(f"{path}: a tar archive, which is not read directly; extract it first")
        assert "a .csv, a .gz/.xz/.zip of one CSV, or the Kaggle folder" in str(refused.value)


def test_emotion_id_7_is_refused_and_6_accepted() -> None:
    """An off-by-one export (or FER+'s 8th "contempt" class) writes emotion 7: it must be refused at its row, not
    become a label that breaks class counts or the loss far from it. 6, the last id, is a label."""
    assert parse_emotion("6", "fer.csv line 2") == 6
    with pytest.raises(FerDataError, match=r"fer\.csv line 2: emotion '7' is not one of 0\.\.6"):
        parse_emotion("7", "fer.csv line 2")


def test_pixel_value_256_is_refused_and_255_accepted() -> None:
    """uint8 wraps 256 to 0: a malformed row became a face with a black pixel instead of an error at its row."""
    values = ["7"] * (48 * 48 - 1)
    assert parse_pixels(" ".join([*values, "255"]), "fer.csv line 2")[-1, -1] == 255
    with pytest.raises(FerDataError, match=r"fer\.csv line 2: pixel values must lie in 0\.\.255, got 7\.\.256"):
        parse_pixels(" ".join([*values, "256"]), "fer.csv line 2")


def test_fingerprint_changes_with_the_labels_alone() -> None:
    """The fingerprint identifies the exact training data: a relabelled dataset (fixed annotations, merged classes)
    with the same pixels must not pass for the data a checkpoint was trained on."""
    images, labels = synthetic_faces(14)
    relabelled = labels.copy()
    relabelled[3] = (relabelled[3] + 1) % len(EMOTIONS)
    sources = tuple(f"face {i}" for i in range(14))

    def dataset(split_labels: np.ndarray) -> FerDataset:
        return FerDataset({"Training": FerSplit("Training", images, split_labels, sources)})

    assert dataset(labels).fingerprint() == dataset(labels.copy()).fingerprint()
    assert dataset(labels).fingerprint() != dataset(relabelled).fingerprint()


def test_a_small_class_gives_one_face_to_the_carved_validation_split(tmp_path: Path) -> None:
    """With no PublicTest in the source, 10 % of a class of 3 rounds to none: that class (disgust in a small
    custom set) was never seen by model selection. A class of 2 to 4 gives one face; a class of one keeps it."""
    counts = {"angry": 20, "disgust": 3, "fear": 1, "happy": 20}
    images, _ = synthetic_faces(sum(counts.values()))
    labels = [EMOTIONS.index(name) for name, n in counts.items() for _ in range(n)]
    rows = [f"{label},{' '.join(map(str, image.ravel()))}" for image, label in zip(images, labels, strict=True)]
    path = tmp_path / "no_usage.csv"
    path.write_text("emotion,pixels\n" + "\n".join(rows) + "\n")
    dataset = load_fer2013(path)
    carved, kept = dataset["PublicTest"].class_counts(), dataset["Training"].class_counts()
    assert (carved["angry"], carved["disgust"], carved["fear"], carved["happy"]) == (2, 1, 0, 2)
    assert (kept["angry"], kept["disgust"], kept["fear"], kept["happy"]) == (18, 2, 1, 18)


def test_a_dev_split_folder_is_the_validation_split(tmp_path: Path) -> None:
    """The docs and the refusal promise "val*/dev*": a layout with dev/ (or Development/) was refused as not a split
    folder, or with --skip-bad silently left out, and a validation split carved from Training instead."""
    assert folder_usage("dev") == folder_usage("Development") == "PublicTest"
    root = write_fer_folder(tmp_path / "fer", per_class=2, prefixes=False)
    (root / "test").rename(root / "dev")
    dataset = load_fer2013(root)
    assert {k: len(v) for k, v in dataset.splits.items()} == {"Training": 14, "PublicTest": 14}
    assert dataset.carved_share == 0 and dataset.validation_warning(root) is None


def test_a_larger_folder_face_is_resized_smoothly_not_by_picking_pixels(tmp_path: Path) -> None:
    """A custom folder of 96 px faces: nearest neighbour keeps every other pixel (aliasing: a fine checkerboard
    becomes all black or all white), changing the training data silently; a filtered resize gives its mean gray."""
    checkerboard = (np.indices((96, 96)).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(checkerboard).save(tmp_path / "face.png")
    face = read_gray_face(tmp_path / "face.png")
    assert face.shape == (48, 48) and 120 <= face.min() <= face.max() <= 135
