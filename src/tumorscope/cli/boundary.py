"""What crosses the CLI's boundary: printing untrusted text, logging, and the error net.

Known errors (bad config, bad data, a file that cannot be read or written, too little
memory, a bad option) end with exit code 2 and one line ``error: PATH: fault``; an
unexpected one with exit code 1, one line and the traceback in a private log file. Every
piece of data printed passes through :func:`tumorscope.text.printable` and is never read
as rich markup.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from tumorscope.text import printable, printable_lines


def stderr_console() -> Console:
    """stderr console, created per call so redirected streams (tests, pipes) are honoured."""
    return Console(stderr=True)


def stdout_console() -> Console:
    """stdout console; soft-wrapped so long problem lines stay greppable."""
    return Console(soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])


def say(text: str, style: str = "") -> None:
    """Print lines we composed whose pieces are data: escaped, clipped, never markup."""
    out = stdout_console()
    for line in printable_lines(text):
        out.print(Text(line, style=style))


def print_error(message: str) -> None:
    """The one ``error: ...`` line on stderr."""
    line = Text.assemble(("error:", "bold red"), " ", printable(message))
    stderr_console().print(line, soft_wrap=True)


class _SafeFormatter(logging.Formatter):
    """Log messages carry data (paths, library texts): escaped and clipped like all output."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def _no_foreign_traceback(record: logging.LogRecord) -> bool:
    # A library's traceback at ERROR repeats the one line our error net prints.
    if record.exc_info and record.name.split(".")[0] != "tumorscope":
        record.exc_info = record.exc_text = None
    return True


def setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=stderr_console(), show_path=False, show_time=False)
    handler.setFormatter(_SafeFormatter("%(message)s"))
    if not verbose:
        handler.addFilter(_no_foreign_traceback)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    for noisy in ("numexpr", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pydicom's decoders log a 40-line traceback at ERROR for pixel data we report in one
    # line (DicomPixelDataError); "pydicom" itself is reset to WARNING when pydicom loads.
    logging.getLogger("pydicom.pixels").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _os_fault(e: OSError, out: object) -> str:
    """``PATH: strerror`` of an OSError; ``--out`` stands in for a write that named no file."""
    what = e.strerror or str(e) or type(e).__name__
    names = [n for n in (e.filename, e.filename2) if n is not None]
    if names:
        shown = [os.fsdecode(n) if isinstance(n, str | bytes) else str(n) for n in names]
        return f"{' -> '.join(shown)}: {what}"
    if out is not None and e.errno in _WRITE_ERRNOS:
        return f"{out}: {what} (while writing the output)"
    return f"{what} ({errno.errorcode.get(e.errno or 0, type(e).__name__)})"


def _expected(e: Exception, kwargs: dict[str, Any]) -> str | None:
    """The one-line message of a failure the user can act on, or None for a bug."""
    source = kwargs.get("config") or kwargs.get("run")
    prefix = f"{source}: " if source is not None else ""
    if isinstance(e, MemoryError):  # first, and before importing anything
        return (
            "not enough memory for this command (an allocation failed); lower the config's "
            "batch_size, image_size or slices_per_patient, or use smaller inputs"
        )
    if isinstance(e, OSError):
        return _os_fault(e, kwargs.get("out_dir"))
    if isinstance(e, UnicodeDecodeError):
        return f"{prefix}not UTF-8 text ({e.reason} at byte {e.start})"
    if isinstance(e, UnicodeError):
        return f"{prefix}text that cannot be written as UTF-8 ({e})"
    if isinstance(e, RecursionError):
        return f"{prefix}input nested too deeply to be read"
    # deferred: the light ones first, so a config error does not load torch
    import yaml

    from tumorscope.config import ConfigError
    from tumorscope.data.types import DataError

    if isinstance(e, ConfigError | DataError):
        return str(e)
    if isinstance(e, yaml.YAMLError):
        return f"{prefix}not valid YAML ({' '.join(str(e).split())})"
    from safetensors import SafetensorError

    from tumorscope.evaluation.evaluate import EvaluationError
    from tumorscope.export.run import ExportError
    from tumorscope.runs import CheckpointError
    from tumorscope.training.run import RunError

    if isinstance(e, RunError | CheckpointError | EvaluationError | ExportError):
        return str(e)
    if isinstance(e, SafetensorError):
        return f"{kwargs.get('run', 'weights')}: not a readable safetensors file ({e})"
    return None


def _crash_log(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected failure to a private (0600) file; its path."""
    text = "".join(traceback.format_exception(exc))
    folders = [Path(tempfile.gettempdir())]
    try:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        folders.insert(0, Path(cache) / "tumorscope" / "crashes")
    except RuntimeError:  # no home folder
        pass
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="crash-", suffix=".log", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
                f.write(text)
            return Path(name)
        except OSError:
            continue
    return None


def report_unexpected(e: BaseException) -> None:
    log_file = _crash_log(e)
    where = f"the traceback is in {log_file}" if log_file else "no log file could be written"
    print_error(f"unexpected {type(e).__name__}: {printable(str(e), 300)} (a bug; {where})")


def friendly_errors(fn: F) -> F:
    """One ``error:`` line and exit code 2 for every failure the user can act on."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except typer.BadParameter as e:  # an option checked inside the command
            print_error(e.format_message())
            raise typer.Exit(2) from None
        except Exception as e:
            if isinstance(e, OSError) and e.errno == errno.EPIPE:  # `| head` closed stdout
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives until exit)
                raise typer.Exit(1) from None
            message = _expected(e, kwargs)
            if message is None:
                report_unexpected(e)
                raise typer.Exit(1) from None
            print_error(message)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def print_mapping(title: str, mapping: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in mapping.items():
        shown = f"{v:.4f}" if isinstance(v, float) else str(v)
        table.add_row(Text(printable(k)), Text(printable(shown)))
    stdout_console().print(table)
