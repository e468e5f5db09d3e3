"""What every `facelens` command shares: the one error and exit-code layer, output helpers,
progress bars, the gallery handles `main` closes, and option types used by several command groups.

Exit codes: 0 success, 1 "different person" (verify) or "not found" (find), 2 errors (a bad option,
a missing model, or any input that could not be processed — the other inputs are still processed),
3 "cannot decide" (verify: a face below the quality floor).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facelens.errors import FacelensError
from facelens.io import expand_paths
from facelens.pipeline import FaceAnalyzer
from facelens.types import ImageResult

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_NEGATIVE, EXIT_ERROR, EXIT_UNDECIDED = 0, 1, 2, 3
PROGRESS_MIN_FILES = 6

DetectorOpt = Annotated[str | None, typer.Option(
    "--detector", help="scrfd-500m, yunet, dlib-hog or dlib-cnn (default: the profile's)")]
RecognizerOpt = Annotated[str | None, typer.Option(
    "--recognizer", help="arcface-mbf, sface or dlib-resnet (default: the profile's)")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=0, help="images processed at once (0: all CPUs)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
FlipOpt = Annotated[bool, typer.Option("--flip", help="average each embedding with its mirror image's")]
Int8Opt = Annotated[bool, typer.Option(
    "--int8", help="the recognizer's INT8 build (arcface-mbf-int8, or sface-int8 in the clean profile; `facelens "
                   "models pull NAME`): same embeddings within 0.1 point of verification accuracy, faster embedding")]
CropsOpt = Annotated[bool, typer.Option(
    "--crops", help="each image is one face crop (as in FER-2013, UTKFace, LFW-style sets): the whole image is the "
                    "face, never 'no face'; its five points are detected where possible, else a template")]
FarOpt = Annotated[float, typer.Option("--far", help="target false-match rate: 1e-2, 1e-3 or 1e-4")]
MinQualityOpt = Annotated[float | None, typer.Option(
    "--min-quality", min=0.0, max=1.0,
    help="face quality floor (default: the shipped floor, see README; 0 turns it off)")]
def _det_size(value: str) -> str:
    """Checked when the command line is parsed: a bad value is one usage error before any file is read."""
    from facelens.detect import parse_det_size
    from facelens.errors import ConfigError

    try:
        parse_det_size(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


DetSizeOpt = Annotated[str, typer.Option(
    "--det-size", callback=_det_size,
    help="detector input: auto (large photos get a second, tiled pass that finds faces down to ~24 px) or the "
    "longest input side in px, a multiple of 32 (640: one pass, fastest)")]
GalleryOpt = Annotated[Path | None, typer.Option("--gallery", help="gallery folder (default $FACELENS_GALLERY)")]


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(EXIT_ERROR)


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[ImageResult], None]]:
    """A rich progress bar on stderr for batches worth one; yields the per-result callback."""
    if total < PROGRESS_MIN_FILES:
        yield lambda result: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda result: bar.advance(task)


def run_batch(analyzer: FaceAnalyzer, inputs: Sequence[str], embed: bool, label: str) -> list[ImageResult]:
    paths = expand_paths(inputs)
    with progress_bar(len(paths), label) as advance:
        return analyzer.analyze_batch(paths, embed=embed, on_result=advance)


def unique_path(path: Path, used: set[Path], suffix: str) -> Path:
    """`path`, or `stem-2<suffix>`, `stem-3<suffix>`... when an earlier output of the same run took it: inputs
    named alike in different folders must not write over each other's outputs. `suffix` is the part the
    command appended (".annotated.mp4", ".jpg"); the number goes before it."""
    if not path.name.endswith(suffix):
        suffix = path.suffix
    candidate, n = path, 1
    while candidate in used:
        n += 1
        candidate = path.with_name(f"{path.name[: len(path.name) - len(suffix)]}-{n}{suffix}")
    used.add(candidate)
    return candidate


def report_errors(results: list[ImageResult]) -> int:
    failed = [r for r in results if not r.ok]
    for r in failed:
        err.print(f"[red]error:[/red] {r.error}", markup=True, highlight=False)
    return len(failed)


# control characters and bidi overrides would let a stored name rewrite the terminal or reorder a line
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """Text safe to print: rich markup neutralised, control and bidi characters shown as escapes."""
    text = _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))
    return text.replace("[", r"\[")


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=None) + "\n")


# -- galleries --------------------------------------------------------------------------------
_OPEN_GALLERIES: list[Any] = []


def open_gallery(path: Path | None, recognizer: str | None = None, min_quality: float | None = None,
                 det_size: str = "auto") -> Any:
    from facelens.gallery import Gallery

    analyzer = FaceAnalyzer(recognizer=recognizer, threads=1, det_size=det_size) if recognizer else None
    gallery = Gallery(path, analyzer, min_quality=min_quality)
    if analyzer is None and det_size != "auto":
        # the recognizer is the one the gallery is bound to (or the default for a new gallery)
        gallery.analyzer = FaceAnalyzer(recognizer=gallery.recognizer, threads=1, det_size=det_size)
    _OPEN_GALLERIES.append(gallery)  # closed by main(): the search index is saved once, at exit
    return gallery


def close_galleries() -> None:
    while _OPEN_GALLERIES:
        gallery = _OPEN_GALLERIES.pop()
        try:
            gallery.close()
        except (FacelensError, OSError) as exc:  # the index is a cache: a read-only gallery still answers
            logging.getLogger("facelens").debug("search index not saved: %s", exc)


# -- errors -> exit codes ---------------------------------------------------------------------
def exit_code_for(exc: BaseException) -> int:
    """Report an exception that escaped a command as one line on stderr and give its exit code.

    Every error a user can cause ends as exit code 2, never a traceback; `main` is the only caller.
    """
    if isinstance(exc, typer.Exit):
        return exc.exit_code
    if isinstance(exc, FacelensError):
        fail(escape(str(exc)))  # its text names user paths, which may hold [brackets]
        return EXIT_ERROR
    if isinstance(exc, UnicodeError):
        # a command-line argument with bytes that are not UTF-8 (kept by Python as lone surrogates)
        fail("an argument is not valid UTF-8 text; names and paths must be UTF-8")
        return EXIT_ERROR
    if isinstance(exc, OSError):
        # the user's file system said no (a path in /proc, a full disk, no permission): their problem to
        # fix, so one line naming the file, not a bug report
        where = f"{exc.filename}: " if exc.filename else ""
        fail(escape(f"{where}{exc.strerror or exc}"))
        return EXIT_ERROR
    if isinstance(exc, KeyboardInterrupt):
        err.print("interrupted")
        return 130
    # usage errors from typer's click layer, and anything unexpected
    if callable(getattr(exc, "show", None)) and hasattr(exc, "exit_code"):
        exc.show(file=sys.stderr)  # a bad option or argument: click's one-paragraph usage message
        return EXIT_ERROR
    if type(exc).__name__ == "Abort":  # Ctrl-C or end of input at a question
        err.print("aborted; nothing changed")
        return 130
    fail(escape(f"unexpected {type(exc).__name__}: {exc} (please report this)"))
    return EXIT_ERROR
