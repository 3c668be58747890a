"""How every `python -m fer_core.<tool>` explains its flags (each with its default), ends (input a user can fix
is one line on stderr, not a traceback) and writes the results other tools read (whole or not at all)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Exit status of a tool that went on past inputs it could not use (`predict`, `detect_faces`) and wrote everything
#: else, naming them in its output: as `cp` ends such a run, so a script that checks only the status still learns
#: that something is missing (2 stays "nothing was done": a bad flag or input that stops the tool).
PARTIAL_FAILURE = 1


#: The runtimes of every tool's `--runtime` (see `add_runtime_option`).
RUNTIMES = ("auto", "torch", "onnxruntime")


class UserInputError(ValueError):
    """Input a user can fix (a malformed CSV row, a damaged image or video, a foreign checkpoint); says which."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, so a user need not read the code to learn it; left out where it
    says nothing (a switch that is off, no value, an empty list, a required option) or where the help already
    speaks of its default in words. Unlike argparse's `ArgumentDefaultsHelpFormatter`, which printed
    "(default: None)" and "(default: False)" beside half the flags and a second default beside those that name
    theirs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        says_nothing = (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or (isinstance(default, list | tuple) and not default)
        )
        store_false = isinstance(action, argparse._StoreFalseAction)  # its True means "off until given": no "on"
        if not action.option_strings or action.required or says_nothing or store_false or "default" in text.lower():
            return action.help
        if default is True:  # a --x/--no-x switch that is on: "True" reads as a value to type
            shown = "on"
        else:
            shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"  # argparse fills in %(...)s: a literal % is %%


def argument_parser(tool: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of `python -m fer_core.<tool>`: its module docstring's first paragraph as the description, and
    every option's default in --help (`DefaultsHelpFormatter`), alike in all tools."""
    return argparse.ArgumentParser(
        prog=f"python -m fer_core.{tool}",
        description=(doc or "").split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )


#: Help texts of the tools that run the whole photo pipeline (`predict`, `video`).
PIPELINE_WEIGHTS_HELP = "folder with ensemble.json, its classifiers and face_yolo.pt"
PIPELINE_RUNTIME_SUBJECT = "the emotion classifiers and the YOLO face detector"
DETECTOR_HELP = (
    "face detector: yolo (WEIGHTS/face_yolo.pt), haar (OpenCV's cascade), or auto: yolo, or haar with a warning "
    "where the YOLO weights are missing or unusable"
)


def add_runtime_option(parser: argparse.ArgumentParser, subject: str = "the emotion classifiers") -> None:
    """`--runtime`, one help text in every tool that runs the classifiers on the CPU (`EmotionClassifier.load`)."""
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=RUNTIMES,
        help=f"what runs {subject} (on the CPU): onnxruntime (faster; exported to ONNX once, cached), torch, or "
        "auto (onnxruntime; torch where the export cannot be cached)",
    )


def add_skip_bad_option(parser: argparse.ArgumentParser) -> None:
    """`--skip-bad`, one help text in every tool that reads FER-2013 (`load_fer2013(skip_bad=...)`), as train's."""
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip (and count) malformed rows/files instead of stopping, as train --skip-bad does",
    )


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """`warnings.formatwarning` for the tools: `warning: <message>`, as they print their own, instead of Python's
    file:line, category and source line (`predict` showed a fallback as `.../pipeline.py:140: RuntimeWarning: ...`
    followed by a line of our code)."""
    return f"warning: {message}\n"


def run(main: Callable[[], int | None]) -> None:
    """Exit with `main`'s status; on a `UserInputError` or a missing file, print `error: <message>` and exit 2 (as
    argparse does): a path the user typed wrong deserves the same one line as a malformed row. Python warnings
    print as one `warning:` line."""
    warnings.formatwarning = one_line_warning
    try:
        status = main()
    except (UserInputError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(status or 0)


def printable(text: str | os.PathLike[str]) -> str:
    """`text` (often a path) as UTF-8 a results file can hold: a file name in bytes no encoding decodes (a Latin-1
    `café.jpg` on a UTF-8 system) reaches Python as lone surrogates, which pandas, pyarrow and UTF-8 writers refuse
    with a traceback after all the work; its bytes are written as `\\xe9` escapes instead, as `ls -b` shows them."""
    return os.fspath(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: The largest `--seed` any tool takes: NumPy's legacy `np.random.seed` (explain's RandomCAM, ultralytics' training)
#: refuses more, and `train`'s per-epoch seeds (seed * 100_003 + epoch) must stay within `torch.manual_seed`'s 64 bits.
SEED_MAX = 2**32 - 1


def _whole_number(text: str) -> int:
    """`text` as an int, refused in argparse's own words for `type=int`."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def seed(text: str) -> int:
    """argparse `type` of every tool's `--seed`: a whole number from 0 to `SEED_MAX`. NumPy refused -1 or a
    24-digit seed with a traceback, and only after the data had loaded."""
    value = _whole_number(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value}: must be a whole number from 0 to {SEED_MAX} (2**32 - 1)")
    return value


def detector_imgsz(text: str) -> int:
    """argparse `type` of every tool's `--imgsz`: a face-detector input size `FaceDetector` takes. Five tools
    checked it by hand in five wordings (detect_faces not at all: FaceDetector's ValueError came after the image
    walk), each beside other flags' checks."""
    # Imported here: detection imports this module (through imageio) and costs cv2; every caller has loaded it.
    from fer_core.detection import MAX_IMGSZ, MIN_IMGSZ

    value = _whole_number(text)
    if not MIN_IMGSZ <= value <= MAX_IMGSZ:
        raise argparse.ArgumentTypeError(f"{value}: must be from {MIN_IMGSZ} to {MAX_IMGSZ} px (the detector's input)")
    return value


def out_folder(text: str) -> Path:
    """argparse `type` of an output folder: one that exists as a file, or lies under a file or a folder we may not
    write in, is refused before any work, not after it."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    _check_writable_place(path, text)
    return path


def out_file(text: str) -> Path:
    """argparse `type` of an output file: a folder, or a place under a file or a folder we may not write in, is
    refused before any work (writing there would fail last, after the whole run)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name")
    _check_writable_place(path.parent, text)
    return path


def _check_writable_place(folder: Path, text: str) -> None:
    """The nearest existing folder on the way to `folder` (itself included) must be a folder we can write in."""
    existing = next((place for place in (folder, *folder.parents) if place.exists()), Path("."))
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: cannot write in {existing} (permission denied)")


def prepare_out_folder(folder: Path, names: Iterable[str], option: str = "--out") -> Path:
    """Create the output `folder` of a tool that writes the files `names` into it, before the work: a folder
    already in one of those places failed only at its write, after the whole run and beside the files written
    first; and `out_folder`'s os.access check lets root past /sys and /proc, where mkdir then failed with a
    traceback (or, for /proc, a bare "[Errno 2]" that did not say which path was the output folder)."""
    try:
        in_the_way = [name for name in names if (folder / name).is_dir()]
    except OSError as err:  # a folder we may not search: is_dir() raises rather than answering
        raise UserInputError(f"{option} {folder}: cannot look inside ({err.strerror or err})") from err
    if in_the_way:
        raise UserInputError(f"{option} {folder}: {', '.join(in_the_way)} is a folder; the results need those names")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"{option} {folder}: cannot create the output folder ({err.strerror or err})") from err
    return folder


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A partial path beside `path` to write, moved over `path` when the block ends without error: Ctrl-C or a full
    disk mid-write leaves the earlier file, not half of a new one that the next reader (the model card, a resume, a
    script) would take as whole. The partial name ends with the real one, so writers that choose by suffix (pandas'
    compression for `.csv.gz`, NumPy's savez adding `.npz`) do as they would there."""
    partial = path.with_name(f".partial.{os.getpid()}.{path.name}")  # its own: two runs do not interleave
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_output(path: Path, write: Callable[[Path], object]) -> None:
    """`write(partial)`, then the partial file replaces `path` (see `replaced_atomically`); a write that fails (a
    full disk, a file-size limit) is one `UserInputError` naming the file, which keeps its earlier content."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as partial:
            write(partial)
    except OSError as err:
        raise UserInputError(f"{path}: could not write the results ({err.strerror or err})") from err


def write_text_atomically(path: Path, text: str) -> None:
    """UTF-8 `text` into `path` by `write_output`: whole or not at all, a failed write one line naming the file."""
    write_output(path, lambda partial: partial.write_text(text, encoding="utf-8"))
