"""pihub's configuration: Platypush-compatible YAML, validated, every problem located.

``load()`` finds and reads the config file (following ``include:``), maps Platypush's
keys to pihub's, validates each section with the plugin's :class:`Schema`, and returns a
:class:`Config`, or raises :class:`~pihub.errors.ConfigError` listing every problem as
``file:line:col: path: message``.
"""

from pihub.config.loader import Config, HookSpec, ProcedureSpec, load
from pihub.config.schema import REQUIRED, Field, Schema
from pihub.config.yamlsrc import Location, Secret
from pihub.errors import ConfigNotFound, ConfigUnreadable, SchemaProblem

__all__ = [
    "REQUIRED",
    "Config",
    "ConfigNotFound",
    "ConfigUnreadable",
    "Field",
    "HookSpec",
    "Location",
    "ProcedureSpec",
    "Schema",
    "SchemaProblem",
    "Secret",
    "load",
]
