"""The ``bgio`` command: ``bgio bench`` measures bgio against plain writes on this machine;
``bgio copy`` copies a file through the background engine, paced like ``pv -L``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import BgioError
from .version import __version__

if TYPE_CHECKING:
    from .priority import BackgroundIOPriority

__all__ = ["main"]

MIB = 1024 * 1024

PROG = "bgio"
#: The presets ``bgio bench`` compares.
BENCH_PRESETS = tuple(range(1, 11))
#: Its scenarios (see bgio.bench.suite).
BENCH_SCENARIOS = ("streams", "busy", "small", "hdf5", "pacing", "disk")


class _UsageError(Exception):
    """A bad argument or environment found before measuring: exit status 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage before its error; one line is easier to
    # read in a terminal and to match in a script, and --help has the rest.
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Throttled, ordered background writes: tools.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    b = commands.add_parser(
        "bench",
        help="measure bgio against plain writes on this machine (about a minute)",
        description=(
            "Measure bgio beside the plain ways, in one run, on this machine: "
            "streams (--size MiB in one call at presets 1..10, against one synchronous "
            "f.write and f.write in a plain thread: throughput, requested and measured duty "
            "cycle, the main thread's 1 ms loop p99 and longest iteration, peak RSS), busy (the "
            "same write at presets 1, 4, 7, 10 with the thread and the process backend while "
            "the main thread runs Python: throughput, duty cycle, the main thread's work "
            "rate), small "
            "(100,000 x 4 KiB through bgio.open against a buffered file), hdf5 (100 camera-like "
            "frames with gzip-4 while the main thread calls h5py, against a plain thread doing "
            "dset[i] = frame), pacing (the rate achieved at max_rate 50 MB/s) and disk "
            "(512 MiB at preset 4 with and without its write-back windows, page cache dropped "
            "first when root: time until on disk, peak dirty memory, the device's rate). "
            "Runs are interleaved; with --repeat the medians are shown."
        ),
        epilog="Exit status: 0 on success, 1 if a measurement failed, 2 on a usage error.",
    )
    b.add_argument("--dir", metavar="DIR",
                   help="write the test files in DIR (in a temporary subdirectory, removed "
                        "afterwards) instead of the system's temporary directory")
    b.add_argument("--size", type=_positive_float, default=512.0, metavar="MIB",
                   help="MiB per write of the streams scenario (default: 512)")
    b.add_argument("--scenarios", type=_scenarios, default=BENCH_SCENARIOS, metavar="LIST",
                   help=f"comma-separated, from {','.join(BENCH_SCENARIOS)} (default: all)")
    b.add_argument("--repeat", type=_positive_int, default=1, metavar="N",
                   help="rounds; medians are shown when N > 1 (default: 1)")
    b.add_argument("--json", metavar="FILE",
                   help="also write every raw figure, versions and machine facts to FILE")
    b.add_argument("--plot", metavar="FILE.png",
                   help="also plot throughput against the main loop's p99 per preset and per "
                        "baseline (needs matplotlib: pip install 'bgio[plot]')")
    c = commands.add_parser(
        "copy",
        help="copy a file (or stdin, or to stdout) through the background engine",
        description=(
            "Copy SRC to DST through bgio's engine, with a progress bar (rate and ETA) on "
            "stderr when it is a terminal. At full speed by default, as cp and pv without "
            "-L; --priority paces it at a preset, --rate caps its rate. Use - for standard "
            "input or standard output."
        ),
        epilog=("Exit status: 0 on success, 1 if the copy failed (SRC missing or unreadable, "
                "SRC and DST the same file, a full disk), 2 on a usage error, 130 if "
                "interrupted. If the reader of standard output goes away (| head), bgio copy "
                "ends silently by SIGPIPE, as cat does (status 141 in a shell)."),
    )
    c.add_argument("source", metavar="SRC", help="file to copy, or - for standard input")
    c.add_argument("destination", metavar="DST", help="file to write, or - for standard output")
    c.add_argument("--priority", type=_preset, default=None, metavar="N",
                   help="pace the copy at priority preset 1 (fastest) .. 10 (gentlest); "
                        "default: full speed, unpaced, at the I/O priority bgio copy runs at")
    c.add_argument("--rate", type=_rate, default=None, metavar="RATE",
                   help="at most RATE bytes per second; K, M, G, T are powers of 1024, as for "
                        "pv -L and as the progress bar prints them (50M = 50MiB); KiB, MiB, "
                        "GiB, TiB are accepted, 50MB is refused as ambiguous")
    c.add_argument("--fsync", action="store_true", help="sync DST to disk before finishing")
    c.add_argument("--atomic", action="store_true",
                   help="write to a temporary file and rename it over DST when complete "
                        "(a failure or Ctrl-C leaves DST as it was)")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in BENCH_SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or repr(text)}; "
            f"choose from {','.join(BENCH_SCENARIOS)}")
    return tuple(name for name in BENCH_SCENARIOS if name in names)


def _preset(text: str) -> int:
    value = _positive_int(text)
    if value > 10:
        raise argparse.ArgumentTypeError(f"must be a preset 1..10, got {text!r}")
    return value


def _rate(text: str) -> int:
    from .copy import parse_rate

    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_bench_args(args: argparse.Namespace) -> int:
    """Validate what argparse cannot; return the size in bytes."""
    size = int(args.size * MIB)
    if size < 1:
        raise _UsageError(f"--size {args.size:g} MiB is less than one byte")
    if args.dir is not None:
        if not os.path.exists(args.dir):
            raise _UsageError(f"--dir {args.dir}: no such directory")
        if not os.path.isdir(args.dir):
            raise _UsageError(f"--dir {args.dir}: not a directory")
        if not os.access(args.dir, os.W_OK | os.X_OK):
            raise _UsageError(f"--dir {args.dir}: not writable")
    for option, value in (("--json", args.json), ("--plot", args.plot)):
        if value is None:
            continue
        parent = os.path.dirname(os.path.abspath(value))
        if not os.path.isdir(parent):
            raise _UsageError(f"{option} {value}: directory {parent} does not exist")
        if os.path.isdir(value):
            raise _UsageError(f"{option} {value}: is a directory")
    if args.plot is not None:
        if "streams" not in args.scenarios:
            raise _UsageError("--plot shows the streams scenario: include it in --scenarios")
        try:
            import matplotlib  # noqa: F401 - only whether it is there
        except ImportError:
            raise _UsageError("--plot needs matplotlib: pip install 'bgio[plot]'") from None
    # The input lives in memory and a copy of it lands in the page cache or on disk;
    # refuse up front rather than be killed half-way.
    import psutil

    available = psutil.virtual_memory().available
    if size > available // 2:
        raise _UsageError(
            f"--size {args.size:g} MiB: needs more than half of the "
            f"{available / MIB:.0f} MiB of available memory"
        )
    free = shutil.disk_usage(args.dir or tempfile.gettempdir()).free
    if size > free:
        raise _UsageError(
            f"--size {args.size:g} MiB: only {free / MIB:.0f} MiB free in "
            f"{args.dir or tempfile.gettempdir()}"
        )
    return size


def _run_bench(args: argparse.Namespace) -> int:
    # Imported here: `bgio copy` and `bgio --help` start without numpy and friends.
    from tqdm import tqdm

    from . import bench
    from .bench import suite as scenarios

    size = _check_bench_args(args)
    repeat = args.repeat
    with tempfile.TemporaryDirectory(prefix="bgio-bench-", dir=args.dir) as directory:
        env = bench.environment(directory)
        steps = scenarios.suite_steps(args.scenarios, BENCH_PRESETS, repeat)
        # tqdm's disable=None turns the bar off when stderr is not a terminal.
        with tqdm(total=steps, desc="bgio bench", unit="run", file=sys.stderr,
                  disable=None, leave=False) as bar:

            def step(label: str) -> None:
                bar.set_postfix_str(label, refresh=False)
                bar.update()

            result = scenarios.run_suite(directory, args.scenarios, size, repeat, BENCH_PRESETS,
                                         on_step=step)
    where = f"in {args.dir}" if args.dir else "in a temporary directory"
    runs = "1 run" if repeat == 1 else f"medians of {repeat} runs"
    fs = env.get("filesystem")
    print(f"bgio {__version__} bench: {runs}, {where}{f' ({fs})' if fs else ''}")
    print()
    print("\n".join(scenarios.suite_tables(result)))
    if args.json is not None:
        env["directory"] = args.dir  # the temporary subdirectory is gone
        report = {"settings": result.settings, "environment": env,
                  "results": bench.to_jsonable(result)}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
    if args.plot is not None:
        scenarios.plot_suite(result, args.plot)
    return 0


class _CopyFailed(Exception):
    """A copy that failed, with the line to print (as ``cp`` words it): exit status 1."""


class _ReadFailed(Exception):
    """Reading the source failed: told apart from the destination's errors for the message."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _Reading(io.RawIOBase):
    """The source as ``copy_stream`` reads it, its errors marked as read errors."""

    def __init__(self, file: io.RawIOBase) -> None:
        super().__init__()
        self._file = file

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        try:
            return self._file.readinto(buffer)
        except OSError as exc:
            raise _ReadFailed(exc) from exc


def _quote(name: str) -> str:
    # The names the user typed, quoted as coreutils quote them; - is a stream.
    return f"'{name}'"


#: The smallest chunk ``bgio copy --rate`` makes (a very low rate: a pause per chunk).
_MIN_RATE_CHUNK = 4096


def copy_profile(priority: int | None, rate: float | None) -> BackgroundIOPriority:
    """The profile of ``bgio copy --priority P --rate R``: full speed unless asked (preset
    1's chunks, no pacing, and the process's own I/O priority: preset 1's best-effort 0
    would put the copy before other programs), a preset's pacing with ``--priority``, a
    rate cap on top with ``--rate``."""
    from .priority import DEFAULT_WRITEBACK_WINDOW, PRESETS

    profile = PRESETS[1].replace(io_priority=None) if priority is None else PRESETS[priority]
    if rate is None:
        return profile
    # Chunks of a twentieth of a second at the rate (as pv -L's steady flow), no bigger
    # than the preset's: a 5 MiB chunk at 1 MiB/s would go out in one burst, then wait.
    chunk = max(_MIN_RATE_CHUNK, min(profile.default_chunk_size, int(rate / 20)))
    if priority is None:  # (a rate asked alone is held at the device too, not the cache)
        return profile.replace(max_rate=rate, default_chunk_size=chunk,
                               writeback_window=DEFAULT_WRITEBACK_WINDOW)
    return profile.replace(max_rate=rate, default_chunk_size=chunk)



def _run_copy(args: argparse.Namespace) -> int:
    if args.atomic and args.destination == "-":
        raise _UsageError("--atomic needs a file as DST, not standard output")
    profile = copy_profile(args.priority, args.rate)
    from .objects import is_object_url, local_path

    try:  # file:///dir/name is a path
        args.source = local_path(args.source) or args.source
        args.destination = local_path(args.destination) or args.destination
    except ValueError as exc:
        raise _CopyFailed(str(exc)) from None
    if is_object_url(args.source) or is_object_url(args.destination):
        _copy_objects(args, profile)
        return 0
    source = _open_source(args.source)
    try:
        _copy_from(source, args, profile)
    finally:
        source.close()
    return 0


def _copy_objects(args: argparse.Namespace, profile: BackgroundIOPriority) -> None:
    """A copy from or to an object store (``s3://bucket/key``; credentials, region and
    endpoint from the environment, as obstore reads them): the object is complete at
    the end, or absent."""
    from .copy import copy_stream
    from .objects import ObjectReader, is_object_url, object_target

    try:
        source: io.RawIOBase = (ObjectReader(object_target(args.source))
                                if is_object_url(args.source) else _open_source(args.source))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _CopyFailed(f"cannot open {_quote(args.source)} for reading: {why}") from None
    try:
        destination: str | int = args.destination
        if args.destination == "-":
            destination = sys.stdout.fileno()
        elif not is_object_url(args.destination):
            destination = _destination_name(args)
        total = getattr(source, "size", 0)
        if not total and isinstance(source, io.FileIO):
            info = os.fstat(source.fileno())
            total = info.st_size if stat.S_ISREG(info.st_mode) else 0
        label = "stdin" if args.source == "-" else os.path.basename(args.source)
        shown = "'standard output'" if args.destination == "-" else _quote(args.destination)
        try:
            with _progress_bar(total or None, label, args.quiet) as progress:
                copy_stream(_Reading(source), destination, profile, fsync=args.fsync,
                            atomic=args.atomic, on_progress=progress)
        except _ReadFailed as exc:
            raise _CopyFailed(f"error reading {_quote(args.source)}: "
                              f"{exc.error.strerror or exc.error}") from None
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            why = why.removeprefix(f"{args.destination}: ")  # (named already)
            raise _CopyFailed(f"error writing {shown}: {why}") from None
    finally:
        source.close()


def _open_source(name: str) -> io.RawIOBase:
    if name == "-":
        return open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    try:
        return open(name, "rb", buffering=0)
    except OSError as exc:
        raise _CopyFailed(f"cannot open {_quote(name)} for reading: {exc.strerror}") from None


def _destination_name(args: argparse.Namespace) -> str:
    """DST as given, or the file it names inside a directory (as ``cp`` does)."""
    name: str = args.destination
    if name == "-" or not os.path.isdir(name):
        return name
    if args.source == "-":
        raise _CopyFailed(f"cannot create {_quote(name)}: Is a directory (name the file to write)")
    return os.path.join(name, os.path.basename(args.source))


def _copy_from(source: io.RawIOBase, args: argparse.Namespace,
               profile: BackgroundIOPriority) -> None:
    from .copy import copy_stream

    source_stat = os.fstat(source.fileno())
    name = _destination_name(args)
    shown = "'standard output'" if name == "-" else _quote(name)
    # Checked before DST is opened for writing: opening it truncates it.
    _refuse_same_file(args.source, source_stat, name)
    destination: str | int
    if name == "-":
        destination = sys.stdout.fileno()
    elif args.atomic:
        destination = _check_atomic_target(name)
    else:
        destination = _open_destination(name, args.source, source_stat)
    total = source_stat.st_size if stat.S_ISREG(source_stat.st_mode) else 0
    label = "stdin" if args.source == "-" else os.path.basename(args.source)
    failed = True
    try:
        with _progress_bar(total or None, label, args.quiet) as progress:
            copy_stream(_Reading(source), destination, profile, fsync=args.fsync,
                        atomic=args.atomic, on_progress=progress)
        failed = False
    except _ReadFailed as exc:
        where = "'standard input'" if args.source == "-" else _quote(args.source)
        raise _CopyFailed(f"error reading {where}: {exc.error.strerror}") from None
    except BrokenPipeError:
        raise  # the reader went away: main() ends as cat does
    except OSError as exc:
        # The temporary file of --atomic, or fd N, would mean nothing to the user: name DST.
        raise _CopyFailed(f"error writing {shown}: {exc.strerror or exc}") from None
    except ValueError as exc:  # refused by bgio in the caller (an --atomic DST it cannot replace)
        raise _CopyFailed(str(exc)) from None
    finally:
        if isinstance(destination, int) and name != "-":
            _close_destination(destination, shown, failed)


def _refuse_same_file(source: str, source_stat: os.stat_result, destination: str) -> None:
    """Exit 1 as ``cp`` does when SRC and DST are one file (links and symlinks included)."""
    try:
        target = os.fstat(sys.stdout.fileno()) if destination == "-" else os.stat(destination)
    except OSError:
        return  # DST does not exist yet (or cannot be looked at: opening it will say why)
    _check_not_same(source, source_stat, destination, target)


def _check_not_same(source: str, source_stat: os.stat_result, destination: str,
                    target: os.stat_result) -> None:
    if (source_stat.st_dev, source_stat.st_ino) != (target.st_dev, target.st_ino):
        return
    # `bgio copy - -` from a terminal to itself is a stream, not a file copied onto itself.
    if "-" in (source, destination) and not stat.S_ISREG(target.st_mode):
        return
    raise _CopyFailed(f"{_quote(source)} and {_quote(destination)} are the same file")


def _open_destination(name: str, source: str, source_stat: os.stat_result) -> int:
    """Open DST for writing without replacing it: a device or FIFO is written into."""
    existed = os.path.lexists(name)
    try:
        # No O_TRUNC: a regular file is truncated below, once it is known not to be SRC.
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        doing = f"open {_quote(name)} for writing" if existed else f"create {_quote(name)}"
        raise _CopyFailed(f"cannot {doing}: {exc.strerror}") from None
    try:
        target = os.fstat(fd)
        _check_not_same(source, source_stat, name, target)  # a link made since the first look
        if stat.S_ISREG(target.st_mode):
            os.ftruncate(fd, 0)
    except OSError as exc:
        os.close(fd)
        raise _CopyFailed(f"cannot open {_quote(name)} for writing: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_atomic_target(name: str) -> str:
    """The checks opening DST would make, for --atomic (which creates a temporary beside it)."""
    directory = os.path.dirname(os.path.abspath(name))
    problem = None
    if not os.path.exists(directory):
        problem = errno.ENOENT
    elif not os.path.isdir(directory):
        problem = errno.ENOTDIR
    elif not os.access(directory, os.W_OK | os.X_OK):
        problem = errno.EACCES
    if problem is not None:
        raise _CopyFailed(f"cannot create {_quote(name)}: {os.strerror(problem)}")
    return name


def _close_destination(fd: int, shown: str, failed: bool) -> None:
    try:
        os.close(fd)  # NFS reports some write errors (a full disk) only here
    except OSError as exc:
        if not failed:
            raise _CopyFailed(f"error writing {shown}: {exc.strerror}") from None


@contextlib.contextmanager
def _progress_bar(total: int | None, label: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr (bytes, rate, ETA) when it is a terminal; yields its update."""
    if quiet or not sys.stderr.isatty():
        # No bar, and no tqdm import: a paced copy is timed from the start.
        yield lambda _size: None
        return
    lock = threading.Lock()
    with _byte_bar()(total=total, desc=label, unit="B", file=sys.stderr, leave=True,
                     dynamic_ncols=True, bar_format=_BAR if total else _BAR_NO_TOTAL) as bar:

        def update(size: int) -> None:
            with lock:  # called from the worker thread
                bar.update(size)

        yield update


#: tqdm's own layouts, with the sizes and the rate formatted by bgio.copy.format_size.
_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_BAR_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def _byte_bar() -> Any:
    """A tqdm class that prints sizes and rates as ``--rate`` reads them (1024-based, MiB)."""
    # tqdm's unit_scale names powers of 1024 "MB" and scales the rate by 1000
    # whatever unit_divisor says: --rate 50M showed as 52.4MB/s.
    from tqdm import tqdm

    from .copy import format_size

    class ByteBar(tqdm):  # type: ignore[misc]  # tqdm is untyped (Any) here
        @property
        def format_dict(self) -> MutableMapping[str, Any]:
            values: MutableMapping[str, Any] = super().format_dict
            rate = values["rate"]
            if rate is None and values["elapsed"]:
                rate = (values["n"] - values["initial"]) / values["elapsed"]
            total = values["total"]
            values.update(n_fmt=format_size(values["n"]),
                          total_fmt="?" if total is None else format_size(total),
                          rate_fmt=f"{format_size(rate) if rate else '?'}/s")
            return values

    return ByteBar


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bgio`` command line.

    Parameters
    ----------
    argv : sequence of str or None
        Arguments without the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success, 1 if a measurement or a copy failed,
        2 on a usage error (bad option, missing directory, no command), 130
        if interrupted.

    Notes
    -----
    If standard output is a pipe whose reader went away, the process kills
    itself with SIGPIPE, as ``cat`` dies of it, and does not return.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    prog = f"{PROG} {args.command}"
    try:
        if args.command == "copy":
            return _run_copy(args)
        return _run_bench(args)
    except _UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except _CopyFailed as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`bgio copy big - | head`): end as cat does.
        return _die_of_sigpipe()
    except (OSError, MemoryError, TimeoutError, BgioError, ValueError) as exc:
        # A failed write (disk full, permission changed under us, ...): one line, no traceback.
        print(f"{prog}: error: {_describe(exc)}", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    """One line for an error: the OS's words for OS errors, with the file named."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc)


def _die_of_sigpipe() -> int:
    """End quietly, killed by SIGPIPE as ``cat`` is (status 141 in a shell); return 141 if alive."""
    # Python ignores SIGPIPE so that writes raise EPIPE instead; cat has the
    # default action and dies of it. Dying of the same signal gives scripts
    # (`set -o pipefail`, a parent that checks WIFSIGNALED) what cat gives.
    _silence_stdout()  # flushing stdout at exit must not print a second error
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    return 128 + 13  # no SIGPIPE here (Windows): the status a shell shows for cat


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
