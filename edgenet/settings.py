"""Where each option's value comes from, and ``--print-config``.

Precedence: the command line, then the environment (``EDGENET_`` + the option's
name upper-cased, dashes as underscores: ``--data-dir`` is ``EDGENET_DATA_DIR``,
SERVER_PORT is ``EDGENET_SERVER_PORT``), then a TOML file (``--config FILE`` or
``EDGENET_CONFIG``), then the parser's defaults.

The layer walks the argparse actions of the ``server`` and ``client``
sub-commands, so an option added to ``build_parser`` later is covered without
a change here. It yields the same ``argparse.Namespace`` a plain parse would
(values as the command line would give them: strings, flags as booleans), so
``__main__`` checks them and builds ServerConfig/ClientConfig in one place
whatever their source.

TOML keys are the options' names, dashes or underscores (``data_dir = "/var/lib/edgenet"``);
keys at the top level apply to either sub-command, a ``[server]`` or ``[client]`` table
to that one only and wins over the top level. ``--config`` uses ``tomllib``
(Python 3.11+) or, on 3.10, the ``tomli`` package when it is importable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgenet.numbers import parse_ascii_int
from edgenet.textfile import TextFileError, read_small_text

ENV_PREFIX = "EDGENET_"
CONFIG_ENV = "EDGENET_CONFIG"
#: The sub-commands whose options can come from the environment or a file.
LAYERED = ("server", "client")
#: Option names holding one of these words are shown masked (not ones naming a file).
SECRET_WORDS = ("token", "password", "secret")
MASK = "********"
#: Secrets taken only from the environment, never from an option (shown masked).
ENV_SECRETS = {"client": ("EDGENET_PASSWORD",)}
MAX_CONFIG_BYTES = 1 << 20

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class SettingsError(Exception):
    """An option from the environment or the file is wrong: one line, exit status 2."""


class _Unset:
    """Marks an option the command line did not give; shows as the real default in help."""

    def __init__(self, default: Any) -> None:
        self.default = default

    def __repr__(self) -> str:
        return repr(self.default)

    def __str__(self) -> str:
        return str(self.default)


@dataclass(frozen=True)
class Option:
    """One layered option of a sub-command."""

    action: argparse.Action
    key: str        # its name in TOML and (upper-cased) in the environment: data_dir
    default: Any
    positional: bool

    @property
    def dest(self) -> str:
        return self.action.dest

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def secret(self) -> bool:
        return (any(word in self.key for word in SECRET_WORDS)
                and not self.key.endswith(("_file", "_path", "_dir")))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _is_layered(action: argparse.Action) -> bool:
    skip = (argparse._HelpAction, argparse._VersionAction,
            argparse._SubParsersAction)
    return not isinstance(action, skip) and action.dest not in ("config", "print_config")


def install(parser: argparse.ArgumentParser) -> dict[str, list[Option]]:
    """Add --config and --print-config to the layered sub-commands and mark every
    default, so that what the command line gave can be told from what it did not."""
    layered: dict[str, list[Option]] = {}
    for name, sub in _subparsers(parser).items():
        if name not in LAYERED:
            continue
        group = sub.add_argument_group("configuration")
        group.add_argument("--config", metavar="FILE", default=None,
                           help="TOML file of options (or $EDGENET_CONFIG); the command line "
                                "and EDGENET_* variables win over it")
        group.add_argument("--print-config", action="store_true",
                           help="print the effective configuration (secrets masked) and exit")
        options = []
        for action in sub._actions:
            if not _is_layered(action):
                continue
            positional = not action.option_strings
            if positional:
                key = action.dest
                if action.nargs is None:  # required on the command line: now from any source
                    action.nargs = "?"
                    action.required = False
            else:
                longs = [s for s in action.option_strings if s.startswith("--")]
                key = (longs or action.option_strings)[0].lstrip("-").replace("-", "_")
            options.append(Option(action, key, action.default, positional))
            action.default = _Unset(action.default)
        layered[name] = options
    return layered


def resolve_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` and fill what it left out from the environment, the TOML file
    and the defaults. Handles --print-config (prints, exits 0); a wrong value from
    the environment or the file exits 2 with one line."""
    environ = os.environ if environ is None else environ
    layered = install(parser)
    args = parser.parse_args(argv)
    options = layered.get(getattr(args, "command", None) or "")
    if options is None:
        return args
    sub = _subparsers(parser)[args.command]
    try:
        sources = apply_layers(args, args.command, options, environ, layered)
    except SettingsError as exc:
        parser.exit(2, f"edgenet: {exc}\n")
    if args.print_config:
        sys.stdout.write(render(args, args.command, options, sources, environ))
        parser.exit(0)
    missing = [(o.action.metavar or o.dest) for o in options
               if o.positional and getattr(args, o.dest) is None and o.default is None]
    if missing:
        sub.error("the following arguments are required: " + ", ".join(map(str, missing)))
    args.settings_sources = sources
    return args


def apply_layers(args: argparse.Namespace, command: str, options: list[Option],
                 environ: Mapping[str, str], every: Mapping[str, list[Option]] | None = None
                 ) -> dict[str, str]:
    """Fill ``args`` in place; returns where each value came from."""
    config = args.config if args.config is not None else environ.get(CONFIG_ENV) or None
    args.config = config
    top, table = load_file(Path(config), command) if config else ({}, {})
    known = {o.key for o in options}
    anywhere = known | {o.key for opts in (every or {}).values() for o in opts}
    unknown = sorted(set(table) - known) or sorted(set(top) - anywhere)
    if unknown:
        raise SettingsError(f"config file {config}: unknown option {unknown[0]!r} "
                            f"for edgenet {command}")
    # A top-level key that only the other sub-command knows is left to it.
    from_file = {**{k: v for k, v in top.items() if k in known}, **table}
    sources: dict[str, str] = {}
    for opt in options:
        value = getattr(args, opt.dest)
        if not isinstance(value, _Unset):
            sources[opt.dest] = "command line"
        elif opt.env in environ:
            setattr(args, opt.dest, _from_text(opt, environ[opt.env], opt.env))
            sources[opt.dest] = f"${opt.env}"
        elif opt.key in from_file:
            setattr(args, opt.dest, _from_toml(opt, from_file[opt.key], f"{config}: {opt.key}"))
            sources[opt.dest] = str(config)
        else:
            setattr(args, opt.dest, _default(opt))
            sources[opt.dest] = "default"
    return sources


def _default(opt: Option) -> Any:
    action, default = opt.action, opt.default
    if isinstance(default, str) and action.type is not None and callable(action.type):
        return action.type(default)
    return default


def _flag_value(opt: Option, on: bool) -> Any:
    return opt.action.const if on else opt.default


def _is_flag(action: argparse.Action) -> bool:
    return action.nargs == 0


def _from_text(opt: Option, text: str, where: str) -> Any:
    action = opt.action
    if _is_flag(action):
        word = text.strip().lower()
        if word in _TRUE:
            return _flag_value(opt, True)
        if word in _FALSE:
            return _flag_value(opt, False)
        raise SettingsError(f"{where}: {text!r} is not a yes/no value (1, true, yes, 0, false, no)")
    if isinstance(action, argparse._AppendAction):
        return [_convert(opt, part.strip(), where) for part in text.split(",") if part.strip()]
    if isinstance(action, argparse._CountAction):
        try:
            return parse_ascii_int(text.strip())
        except ValueError:
            raise SettingsError(f"{where}: {text!r} is not a whole number") from None
    return _convert(opt, text, where)


def _from_toml(opt: Option, value: Any, where: str) -> Any:
    action = opt.action
    if _is_flag(action):
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: must be true or false")
        return _flag_value(opt, value)
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_convert(opt, _scalar(item, where), where) for item in items]
    return _convert(opt, _scalar(value, where), where)


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SettingsError(f"{where}: must be a string or a number")
    return str(value)


def _convert(opt: Option, text: str, where: str) -> Any:
    action = opt.action
    value: Any = text
    if action.type is not None and callable(action.type):
        try:
            value = action.type(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise SettingsError(f"{where}: invalid value {text!r} ({exc})") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise SettingsError(f"{where}: invalid choice {text!r} (choose from {choices})")
    return value


def _toml_loads() -> Any:
    try:
        import tomllib

        return tomllib.loads
    except ModuleNotFoundError:
        pass
    try:
        import tomli  # type: ignore[import-not-found,unused-ignore]

        return tomli.loads
    except ModuleNotFoundError:
        raise SettingsError("--config needs Python 3.11 or newer (or the tomli package "
                            "installed)") from None


def load_file(path: Path, command: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TOML file's top-level options and its ``[command]`` table, keys normalised
    to underscores; other sub-commands' tables are ignored."""
    loads = _toml_loads()
    try:
        text = read_small_text(path, "config file", MAX_CONFIG_BYTES)
    except TextFileError as exc:
        raise SettingsError(str(exc)) from None
    try:
        data = loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise SettingsError(f"config file {path}: invalid TOML ({exc})") from None
    top: dict[str, Any] = {}
    table: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in LAYERED:
                raise SettingsError(f"config file {path}: unknown table [{key}] "
                                    f"(tables: {', '.join(LAYERED)})")
            if key == command:
                table = {k.replace("-", "_"): v for k, v in value.items()}
            continue
        top[key.replace("-", "_")] = value
    return top, table


def render(args: argparse.Namespace, command: str, options: list[Option],
           sources: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """The effective configuration as a TOML ``[command]`` table, secrets masked,
    each line commented with where the value came from."""
    lines = [f"# edgenet {command}: effective configuration",
             "# precedence: command line > EDGENET_* environment > --config file > default",
             f"[{command}]"]
    for opt in options:
        value = getattr(args, opt.dest)
        source = sources.get(opt.dest, "default")
        if value is None:
            need = f"required: {opt.action.metavar} or ${opt.env}" if opt.positional else source
            lines.append(f"# {opt.key} is not set ({need})")
            continue
        shown = MASK if opt.secret and value else _mask_url_password(value)
        lines.append(f"{opt.key} = {_toml_value(shown)}  # {source}")
    for name in ENV_SECRETS.get(command, ()):
        if name in environ:
            lines.append(f"# {name} is set ({MASK})")
    if args.config:
        lines.append(f"# config file: {args.config}")
    return "\n".join(lines) + "\n"


def _mask_url_password(value: Any) -> Any:
    """A URL's password masked (``redis://:secret@host`` -> ``redis://:********@host``)."""
    if not isinstance(value, str) or "://" not in value or "@" not in value:
        return value
    scheme, _, rest = value.partition("://")
    userinfo, _, host = rest.rpartition("@")
    if ":" not in userinfo:
        return value
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{host}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
