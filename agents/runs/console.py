"""A quiet console for ``rexrag train``: our lines and real warnings on the terminal,
third-party notices only in the run's log file.

A run's terminal should show its progress lines, its evaluation and anything that went
wrong. Libraries also print notices that ask nothing of a rexrag user (RLlib warning
every algorithm that it is on the new API stack, its default; a deprecation RLlib 2.60
raises from its own ``RLModule.__init__``; Ray's hint to install gputil; transformers'
progress bars while loading a tiny model). :data:`KNOWN_NOTICES` names each, with why it
is irrelevant; :class:`QuietConsole` keeps those lines off the terminal and writes every
line, those included, to ``RUN/train.log``. Deprecations our own code triggers are
fixed where they arise instead (``agents/llm/hf.py``'s cache argument), never listed.

It works on the process's file descriptors 1 and 2, not on ``sys.stdout``: Ray's and
transformers' loggers hold the stream objects they found at import, C++ code and child
processes write to the descriptors directly, and the log must have all of it. Each
descriptor becomes a pipe that a thread reads line by line (``\\n`` or a progress bar's
``\\r``), copying every line to the log and the others to the terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading
import time
from pathlib import Path
from traceback import format_exception
from types import TracebackType
from typing import BinaryIO

#: (why it is irrelevant to a rexrag user, a regex that finds the line).
KNOWN_NOTICES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (why, re.compile(pattern))
    for why, pattern in (
        (
            "RLlib warns every algorithm on the new API stack, which is its default",
            r"You are running \S+ on the new API stack!",
        ),
        (
            "RLlib 2.60's RLModule.__init__ builds the deprecated RLModuleConfig itself",
            r"DeprecationWarning: `RLModule\(config=\[RLModuleConfig object\]\)`",
        ),
        (
            "Ray's optional GPU monitor, which rexrag does not use",
            r"Install gputil for GPU system monitoring",
        ),
        (
            "Ray enabling token auth on a new local cluster (which listens on loopback only)",
            r"Token authentication is enabled for this Ray cluster",
        ),
        ("Ray starting the local instance the run asked for", r"Started a local Ray instance"),
        (
            "transformers' progress bars while loading or saving weights",
            r"^\s*(Loading weights|Writing model shards|Loading checkpoint shards)\b",
        ),
    )
)
#: How long the exit waits for the pipes to drain (a child process that inherited
#: them may keep them open; its later lines still reach the log and the terminal).
_DRAIN_SECONDS = 2.0


def is_known_notice(line: str) -> bool:
    """Whether ``line`` is one of :data:`KNOWN_NOTICES`."""
    return any(pattern.search(line) for _, pattern in KNOWN_NOTICES)


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """``(complete lines with their terminator, the unfinished rest)``: a line ends at
    ``\\n`` or at ``\\r`` (a progress bar redrawing itself)."""
    lines, start = [], 0
    for match in re.finditer(rb"\r\n|\n|\r", buffer):
        lines.append(buffer[start : match.end()])
        start = match.end()
    return lines, buffer[start:]


class QuietConsole:
    """While active, descriptors 1 and 2 go through a filter: every line to ``log_path``
    (appended), every line but :data:`KNOWN_NOTICES` (and the indented or blank lines
    that follow one: a warning's source line, the end of a progress bar) to the terminal."""

    def __init__(self, log_path: str | Path) -> None:
        self.log_path = Path(log_path)
        self._log: BinaryIO | None = None
        self._lock = threading.Lock()
        self._pumps: list[tuple[int, int, threading.Thread]] = []  # (fd, saved fd, thread)

    def __enter__(self) -> QuietConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.write(f"--- {stamp} {' '.join(sys.argv)}\n".encode())
        _flush_python_streams()
        for fd in (1, 2):
            saved = os.dup(fd)
            read, write = os.pipe()
            os.dup2(write, fd)
            os.close(write)
            thread = threading.Thread(
                target=self._pump, args=(read, saved), name=f"quiet-console-{fd}", daemon=True
            )
            thread.start()
            self._pumps.append((fd, saved, thread))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _flush_python_streams()
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            # the caller reports it on the terminal; the log keeps where it came from
            with self._lock:
                self._log.write("".join(format_exception(exc_type, exc, traceback)).encode())
        for fd, saved, _ in self._pumps:
            os.dup2(saved, fd)  # closes our end of the pipe: the pump sees its end
        for _, saved, thread in self._pumps:
            thread.join(_DRAIN_SECONDS)
            if not thread.is_alive():
                os.close(saved)
        if all(not thread.is_alive() for _, _, thread in self._pumps):
            self._log.close()
        self._pumps = []

    def _pump(self, read_fd: int, console_fd: int) -> None:
        """Copy lines from the pipe until every writer has closed it."""
        pending, dropping = b"", False
        while True:
            ready, _, _ = select.select([read_fd], [], [], 0.5)
            chunk = os.read(read_fd, 65536) if ready else None
            if chunk == b"":
                break
            if chunk:
                lines, pending = split_lines(pending + chunk)
                for line in lines:
                    dropping = self._route(line, console_fd, dropping)
        if pending:
            self._route(pending, console_fd, dropping)
        os.close(read_fd)

    def _route(self, line: bytes, console_fd: int, dropping: bool) -> bool:
        """Log ``line``; show it unless it is a known notice or continues one. Returns
        whether the next indented line continues a dropped notice."""
        with self._lock:
            self._log.write(line)
            self._log.flush()
        text = line.decode("utf-8", errors="replace")
        # a dropped notice's source line, or the newline that ends a dropped progress bar
        continues = dropping and (text[:1] in (" ", "\t") or not text.strip())
        if continues or is_known_notice(text):
            return True
        if text.endswith("\r") and not text.strip():  # a bare carriage return shows nothing
            return dropping
        _write_all(console_fd, line)
        return False


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            # a closed or detached stream has nothing buffered
            with contextlib.suppress(OSError, ValueError):
                stream.flush()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except OSError:  # the terminal went away: the log still has the line
            return
        data = data[written:]
