"""Defaults for ``bcrun COMMAND`` from the configuration file and BCRUN_*
variables.

``$XDG_CONFIG_HOME/bcrun/config.toml`` (``~/.config/bcrun/config.toml``)
holds options of ``bcrun COMMAND`` by their long names::

    policy = "adaptive,memory"
    mem-reserve = "2G"
    idle-after = "10m"

and ``BCRUN_POLICY``, ``BCRUN_MEM_RESERVE``... override it; the command
line overrides both.  A bad value is reported with where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcrun.errors import ConfigError

if TYPE_CHECKING:
    import click

#: Options that make no sense as defaults.
NOT_SETTINGS = frozenset({"explain", "help"})


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "bcrun" / "config.toml"


def settings_defaults(
    command: click.Command, environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """The defaults for *command*'s options, converted and checked: the
    file's, then the environment's on top."""
    import click  # the common case reads them without it (bcrun.quickargs)

    options = {
        _long_name(param): param
        for param in command.params
        if isinstance(param, click.Option) and _long_name(param) not in NOT_SETTINGS
    }
    defaults: dict[str, Any] = {}
    path = config_path(environ)
    for key, value in read_config(path).items():
        name = key.replace("_", "-")
        if name not in options:
            raise ConfigError(
                f"{path}: unknown setting {key!r} (settings are the long options "
                f"of 'bcrun COMMAND': {', '.join(sorted(options))})"
            )
        defaults[name] = _convert(options[name], value, f"{path}: {key}")
    for name, option in options.items():
        variable = "BCRUN_" + name.upper().replace("-", "_")
        if variable in environ:
            defaults[name] = _convert(option, environ[variable], variable)
    return {options[name].name: value for name, value in defaults.items()}


def _long_name(param: click.Option) -> str:
    longs = [opt for opt in param.opts if opt.startswith("--")]
    return (longs[0] if longs else param.opts[0]).lstrip("-")


def read_config(path: Path) -> dict[str, Any]:
    """The settings of the file at *path*; none if there is none."""
    import tomllib  # only when there is a file

    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from err


def _convert(option: click.Option, value: Any, source: str) -> Any:
    import click

    if option.is_flag:
        return parse_flag(value, source)
    if isinstance(value, bool | dict | list):
        raise ConfigError(f"{source}: {value!r} is not a single value")
    try:
        return option.type.convert(str(value), option, None)
    except click.BadParameter as err:
        raise ConfigError(f"{source}: {err.format_message()}") from err


def parse_flag(value: Any, source: str) -> bool:
    """A setting that is true or false; *source* names it in the error."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{source}: {value!r} is not true or false")
