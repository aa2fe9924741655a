"""The ``unblur`` command: one module per command family, each with ``add_parser(sub)`` and a
``run_*(args)`` per command; they parse, validate and call the library (``unblur.runs``).

``main`` turns every expected failure (a bad value, a missing or unreadable file, an
unsupported combination, no space or memory left) into one line on stderr and a non-zero exit;
a traceback appears only for a real bug, with a line asking to report it.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from .. import __version__
from . import data, edit, evaluate, info, restore, sample, serve, show, train
from .common import DefaultsHelpFormatter

# each adds its sub-commands, in this order
COMMANDS = (train, data, sample, edit, info, evaluate, show, restore, serve)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unblur", description="Diffusion models: train, sample, inspect.")
    p.add_argument("--version", action="version", version=f"unblur {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    for command in sub.choices.values():  # every command's help shows its defaults, even an option with no help
        command.formatter_class = DefaultsHelpFormatter
        for action in command._actions:
            if action.help is None and action.option_strings and DefaultsHelpFormatter.says(action.default):
                action.help = "(default: %(default)s)"
    return p


def _os_message(e: OSError) -> str:
    where = f" {e.filename!r}" if getattr(e, "filename", None) else ""
    if e.errno == errno.ENOSPC:
        return f"no space left on the device{where}: free some space or write elsewhere (--out)"
    if isinstance(e, PermissionError):
        return f"permission denied{where}: choose a folder you can write to, or fix its permissions"
    if isinstance(e, FileNotFoundError):
        return f"no such file or folder{where}"
    return f"{e.strerror or e}{where}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"unblur {args.command}: error:"
    _one_line_warnings(f"unblur {args.command}: warning:")
    try:
        return args.fn(args)
    except BrokenPipeError:  # the reader left (`unblur info RUN | head -1`): nothing more to say
        _quiet_stdout()
        return 0
    except ValueError as e:  # a bad value, file or combination: the message says what to do
        print(f"{prefix} {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prefix} {_os_message(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{prefix} {OOM}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # PyTorch reports running out of memory as a RuntimeError
        if not any(s in str(e) for s in ("out of memory", "can't allocate memory", "not enough memory")):
            return _bug(prefix)
        print(f"{prefix} {OOM} ({str(e).splitlines()[0][:200]})", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"unblur {args.command}: interrupted" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug: show it, and ask for a report
        return _bug(prefix)


def _one_line_warnings(prefix: str) -> None:
    """Show unblur's own warnings (a resized mask, skipped files) as one line, without the source
    line Python adds; warnings from other packages keep their usual form."""
    import warnings

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category is UserWarning and "unblur" in str(filename):
            print(f"{prefix} {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


OOM = "out of memory: use a smaller --batch (or train.batch_size), data.size or model"


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on the closed
    pipe again (the recipe of Python's ``signal`` documentation, "Note on SIGPIPE")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _bug(prefix: str) -> int:
    traceback.print_exc()
    print(f"{prefix} this is a bug in unblur {__version__}; please report it with the command line and the "
          "traceback above", file=sys.stderr)
    return 3


__all__ = ["build_parser", "main"]
