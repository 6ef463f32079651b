"""A pre-imported ``nas`` that forks one process per command: what ``tests/conftest.py: run_nas`` runs the CLI
in.

Starting ``python -m nas`` costs about 3.5 s on a 2-core machine, nearly all of it importing torch, and the suite
runs the CLI a few hundred times. This server imports what every command imports once, then forks a child per
request. The child is a process of its own, as a user's command is: it takes the request's argument list,
working directory and environment, writes to its own stdout and stderr files, reads nothing (stdin is
/dev/null), and exits with the status ``python -m nas`` would give: ``main()``'s return value, a
``SystemExit``'s code, or 1 with a traceback for an exception that escapes ``main``; a child killed by a signal
reports minus the signal's number, as ``subprocess`` does. It exits through the interpreter's own
shutdown, so exit handlers and finalisers run as at the end of a user's command.

What a fork cannot show is a failure while starting Python or importing ``nas``: tests/test_packaging.py and the
tests that start ``python -m nas`` themselves (the signal and resume tests) still cover that path. A command
whose environment differs from the server's in what a process reads only at start-up (``MALLOC_*``,
``PYTHON*``, ``LD_*``, OpenMP's) runs in a fresh interpreter (``CliServer.serves`` in tests/conftest.py), and
``NAS_TEST_FRESH_CLI=1`` makes ``run_nas`` start one for every command.

Protocol: one JSON object per line on stdin, ``{"argv", "cwd", "env", "stdout", "stderr"}`` (the last two are
file paths); one line back per request on stdout, ``{"status": int}``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
import warnings
from typing import NoReturn

import nas.cli  # imported once, before any fork: the point of the server

# What ``python -m nas`` puts in sys.argv[0]; found, not imported (importing it runs the CLI).
ENTRY_POINT = importlib.util.find_spec("nas.__main__").origin


def run_command(request: dict) -> NoReturn:
    """In the forked child: become the command, run it, exit through the interpreter's own shutdown (exit
    handlers, then finalisers: an SQLite storage closes as it does at the end of a user's command)."""
    status = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if os.environ.get("PYTHONWARNINGS") == "ignore":  # read by a fresh interpreter at start-up only
            warnings.simplefilter("ignore")
        sys.argv = [ENTRY_POINT, *request["argv"]]
        result = nas.cli.main(request["argv"])
        status = 0 if result is None else int(result)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            status = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
    raise SystemExit(status)  # out of serve(): the child never answers a request


def serve() -> None:
    answers = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_command(request)
        _, code = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(code)
        answers.write(json.dumps({"status": status}) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
