"""Shared helpers of the data layer: error type, bad-file policy, cache and output folders, image decoding."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from atcon._json import to_json

OnError = Literal["raise", "skip"]
"""What a reader does with a bad file: stop with an error naming it, or skip it with a warning."""

T = TypeVar("T")

DATA_DIR_ENV = "ATCON_DATA_DIR"

GENERATOR_VERSION = 1
"""Version of the benchmark generators, stored in each build's ``meta.json``."""

# Pillow's modes for 16-bit greyscale; "I" is what older Pillow versions open 16-bit PNGs as.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class DataError(ValueError):
    """A problem with the user's data; the message names the offending file.

    Subclasses ``ValueError`` so the CLI prints it without a traceback.

    Args:
        message: What is wrong.
        path: The offending file or folder, if any; it is appended to the message.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(message if path is None else f"{path}: {message}")


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` option early, as other named strategies are."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error  # type: ignore[return-value]


def filter_bad(
    items: Iterable[T], check: Callable[[T], object], on_error: OnError, what: str
) -> tuple[list[T], list[DataError]]:
    """Run ``check`` on every item; raise on the first failure or drop the failures.

    Args:
        items: Things to check (paths, records).
        check: Raises ``DataError`` (or ``FileNotFoundError``) for a bad item.
        on_error: ``"raise"`` re-raises the first error; ``"skip"`` drops bad items and emits a single
            warning with their count and the first few messages.
        what: Plural noun for the warning ("images", "clips").

    Returns:
        The good items, in order, and the errors of the dropped ones.
    """
    good: list[T] = []
    errors: list[DataError] = []
    for item in items:
        try:
            check(item)
        except (DataError, FileNotFoundError) as err:
            if on_error == "raise":
                raise
            if not isinstance(err, DataError):
                err = _as_data_error(err)
            errors.append(err)
            continue
        good.append(item)
    if errors:
        shown = "; ".join(str(e) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        warnings.warn(f"skipped {len(errors)} bad {what}: {shown}{more}", stacklevel=3)
    return good, errors


class _NotFound(FileNotFoundError):
    # OSError's own text becomes "[Errno None] None: '<filename>'" once ``filename`` is set.
    def __str__(self) -> str:
        return str(self.args[0])


def not_found(what: str, path: str | os.PathLike[str], note: str = "") -> FileNotFoundError:
    """A ``FileNotFoundError`` saying "<what> not found: <path>", with ``filename`` set for reports."""
    err = _NotFound(f"{what} not found: {path}{note}")
    err.filename = str(path)
    return err


def _as_data_error(err: FileNotFoundError) -> DataError:
    out = DataError(str(err))
    out.path = Path(err.filename) if err.filename else None
    return out


def default_data_dir() -> Path:
    """Return the folder where generated datasets are cached.

    ``$ATCON_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/atcon/datasets``, else ``~/.cache/atcon/datasets``.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "atcon" / "datasets"


def prepare_out(out: str | Path) -> Path:
    """Create the output folder of a generated dataset; refuse one that holds anything."""
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder is not empty: {out} (choose another, or delete it first)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def publish_build(
    out: Path, build: Callable[[Path], object], finished: Callable[[], bool], *, replace: bool = False
) -> None:
    """Build a generated folder in a temporary folder of this process's own beside ``out``, then
    rename it into place, so an interrupted build never looks complete and two processes building
    at once (shards of an experiment) both succeed.

    Args:
        out: the folder to publish.
        build: writes the folder's content into the path it is given.
        finished: whether ``out`` already holds a complete build (another process's, finished
            meanwhile: that copy is kept, it may be in use).
        replace: replace ``out`` even when it is complete (a forced rebuild).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        build(tmp / "data")
        if not replace and finished():
            return
        if out.exists():
            shutil.rmtree(out)
        try:
            os.replace(tmp / "data", out)
        except OSError:
            if replace or not finished():
                raise  # not a copy another process renamed into place first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_meta(out: Path, name: str, seed: int, params: dict[str, Any]) -> None:
    """Write ``meta.json`` (name, generator version, seed, sizes); written last, it marks a finished build."""
    meta = {"name": name, "generator_version": GENERATOR_VERSION, "seed": seed, **params}
    (out / "meta.json").write_text(to_json(meta) + "\n")


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise ``FileNotFoundError`` naming it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def not_utf8(err: UnicodeDecodeError, path: Path, what: str = "file") -> DataError:
    """The one-line error of a text file that is not UTF-8 (Latin-1, UTF-16 exports)."""
    return DataError(
        f"not UTF-8 text (byte {err.start}: {err.reason}); save the {what} as UTF-8 (a spreadsheet's "
        "'CSV UTF-8' export)",
        path,
    )


def bad_csv(err: Exception, path: Path, after_line: int | None = None) -> DataError:
    """The one-line error of a file Python's csv module cannot parse (an unclosed quote, mostly)."""
    where = f" after line {after_line}" if after_line is not None else ""
    return DataError(f'not well-formed CSV{where} ({err}); an unclosed quote (") is the usual cause', path)


def import_av() -> Any:
    """PyAV, which reading and writing clips needs (the ``[video]`` extra), or a one-line error
    saying how to install it."""
    try:
        import av
    except ImportError:
        raise OSError(
            "reading or writing video clips needs PyAV: pip install 'atcon[video]' (or: pip install av)"
        ) from None
    return av


def read_image_rgb(path: Path) -> torch.Tensor:
    """Decode an image file to RGB.

    16-bit greyscale files (common for X-rays) are scaled from ``[0, 65535]`` to ``[0, 255]``
    (``round(v / 257)``), the same for every image, so relative intensities across images are kept;
    Pillow's own conversion would clip every value above 255 to white. The EXIF orientation is
    applied, so the image is the one a viewer shows (boxes are read in those viewed
    coordinates). 32-bit float greyscale
    files (``F`` mode TIFFs) are read as intensities in ``[0, 1]`` when all values lie there, else
    in ``[0, 255]`` (clipped); non-finite values become 0.

    Args:
        path: JPEG, PNG or anything Pillow reads.

    Returns:
        ``uint8`` tensor.

    Shape:
        ``(3, H, W)``.

    Raises:
        FileNotFoundError: The file does not exist.
        DataError: The file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    require_image_file(path)
    try:
        with Image.open(path) as opened:
            arr = _viewed_rgb(opened)
    except Image.DecompressionBombError as err:
        raise DataError(_bomb_message(err), path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"unreadable or corrupt image ({err})", path) from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def broken_link(path: Path) -> str | None:
    """What is wrong when ``path`` is a link whose target does not exist, else None."""
    if path.is_symlink() and not path.exists():
        return f"broken link: its target {os.readlink(path)} does not exist"
    return None


def require_image_file(path: Path) -> None:
    """Raise unless ``path`` is an existing file: ``DataError`` for a broken link,
    ``FileNotFoundError`` for nothing there."""
    problem = broken_link(path)
    if problem is not None:
        raise DataError(problem, path)
    if not path.is_file():
        raise not_found("image", path)


def _viewed_rgb(opened: Any) -> np.ndarray:
    """An open Pillow image as a ``(H, W, 3)`` uint8 array, as a viewer shows it (EXIF
    orientation) and with 16-bit and float greyscale scaled into range."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(opened)
    if im.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(im).astype(np.float64).clip(0, 65535) / 257.0
        return np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        return np.repeat(_float_to_uint8(np.asarray(im))[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _bomb_message(err: Exception) -> str:
    return (
        f"too large to decode safely ({err}); if the file is genuine, raise the limit with "
        "PIL.Image.MAX_IMAGE_PIXELS, or leave it out with --on-bad-file skip"
    )


def flat_decode(path: Path) -> str | None:
    """Why ``path`` decodes to one flat colour though its stored pixels vary, else None.

    What the reader makes of a file (:func:`read_image_rgb`) can lose everything a file holds:
    a 16-bit image whose values all lie below 128, or an unusual float range. ``atcon data info
    --check`` reports such files, which otherwise train as blank images.
    """
    from PIL import Image

    with Image.open(path) as im:
        raw = np.asarray(im)
        if raw.size == 0 or not np.issubdtype(raw.dtype, np.number) or np.ptp(raw) == 0:
            return None  # nothing stored varies, or a palette/bilevel image Pillow expands itself
        decoded = _viewed_rgb(im)
    if int(decoded.max()) != int(decoded.min()):
        return None
    return (
        f"decodes to a constant image ({int(decoded.min())}) though its stored {raw.dtype} pixels range "
        f"{raw.min():g}-{raw.max():g}: rescale it (e.g. to 8 or full-range 16 bits) before training"
    )


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """A float greyscale image as uint8: ``[0, 1]`` data scaled by 255, anything else clipped to
    ``[0, 255]`` (Pillow's conversion truncates ``[0, 1]`` floats to black)."""
    v = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if v.size and v.min() >= 0 and v.max() <= 1:
        v = v * 255.0
    return np.rint(v.clip(0, 255)).astype(np.uint8)


def verify_image(path: Path) -> None:
    """Cheaply check that an image decodes, for ``on_error="skip"`` scans of large folders.

    JPEGs are decoded at 1/8 scale (Pillow's DCT-domain ``draft`` mode), which reads every entropy-coded
    block, so truncated or garbled files fail, at a fraction of a full decode's cost.
    """
    from PIL import Image, UnidentifiedImageError

    require_image_file(path)
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Image.DecompressionBombError as err:
        raise DataError(_bomb_message(err), path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"unreadable or corrupt image ({err})", path) from err


def finish_item(
    image: torch.Tensor, target: Any, transform: Callable[..., Any] | None
) -> tuple[torch.Tensor, Any]:
    """A decoded uint8 image ``(3, H, W)`` and its target, transformed (``transform(image, target)``
    with a ``tv_tensors.Image``), or as floats in [0, 1] without a transform."""
    if transform is None:
        return image.float().div_(255), target
    from torchvision import tv_tensors

    return transform(tv_tensors.Image(image), target)  # type: ignore[no-any-return]
