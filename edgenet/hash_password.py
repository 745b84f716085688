"""``edgenet hash-password [NAME]``: print a hashed credentials.txt entry.

The password comes from a hidden prompt (twice) on a terminal, or from the first
line of stdin otherwise; never from the command line, where other users could
read it in the process list and it would stay in the shell's history.
"""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from edgenet.numbers import NumberError, parse_ascii_int
from edgenet.server.auth import valid_device_name
from edgenet.server.passwords import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    hash_password,
)
from edgenet.wire.messages import MAX_PASSWORD


def _fail(message: str, status: int = 2) -> int:
    print(f"edgenet: {message}", file=sys.stderr)
    return status


def run_hash_password(name: str | None, iterations_text: str | None,
                      stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    iterations = DEFAULT_ITERATIONS
    if iterations_text is not None:
        try:
            iterations = parse_ascii_int(iterations_text.strip(), MIN_ITERATIONS,
                                         MAX_ITERATIONS, "--iterations")
        except NumberError:
            return _fail(f"Invalid --iterations: {iterations_text}. It must be an integer "
                         f"from {MIN_ITERATIONS} to {MAX_ITERATIONS}")
    if name is not None:
        why = valid_device_name(name)
        if why:
            return _fail(f"Invalid device name {name!r}: {why}")
    try:
        if stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Repeat the password: ") != password:
                return _fail("the passwords differ; nothing printed", 1)
        else:
            line = stdin.readline()
            if not line:
                return _fail("no password on stdin", 1)
            password = line.rstrip("\r\n")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return _fail("no password given", 1)
    if not password:
        return _fail("the password is empty", 1)
    if len(password) > MAX_PASSWORD:
        return _fail(f"the password must be at most {MAX_PASSWORD} characters", 1)
    entry = hash_password(password, iterations)
    stdout.write(f"{name} {entry}\n" if name is not None else f"{entry}\n")
    stdout.flush()
    return 0
