"""Run the netzoo command line in this process as a user would, through ``netzoo.cli.main``: exit code and output.

``CliRunner`` calls the click group directly and so skips ``main``'s one-line error printing; these tests
check exactly that line (exit code 2, one line on stderr, no traceback).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class Ran:
    code: int
    out: str
    err: str


def netzoo(args: list[str], capsys, monkeypatch) -> Ran:
    """``netzoo ARGS`` in this process: its exit code (0 when it returns), stdout and stderr."""
    from netzoo.cli import main

    monkeypatch.setattr(sys, "argv", ["netzoo", *map(str, args)])
    capsys.readouterr()  # drop anything printed before
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def one_line_error(ran: Ran) -> str:
    """The error line of a refused command (exit code 2, one line on stderr, no traceback); fails otherwise."""
    assert ran.code == 2, (ran.code, ran.out, ran.err)
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in ran.err, ran.err
    return lines[0]
