"""Server configuration: one table of options read from flags, ``LB_*`` variables and a YAML file.

Precedence, highest first: command-line flags, environment variables, the config file
(``--config PATH`` or ``LB_CONFIG``), built-in defaults. ``options`` holds the table,
``values`` the parsers of its values, ``loading`` the merge, the file and its declared
registry.
"""

from lb_service.config.loading import (
    DECLARED_KEYS,
    ConfigError,
    Declared,
    ServiceConfig,
    declared_from,
    load,
    parse_option,
    read_file,
)
from lb_service.config.options import BALANCER_KEYS, OPTIONS, SERVICE_KEYS, Option, ServiceOptions
from lb_service.config.values import redact_url

__all__ = [
    "BALANCER_KEYS",
    "DECLARED_KEYS",
    "OPTIONS",
    "SERVICE_KEYS",
    "ConfigError",
    "Declared",
    "Option",
    "ServiceConfig",
    "ServiceOptions",
    "declared_from",
    "load",
    "parse_option",
    "read_file",
    "redact_url",
]
