"""Settings: the table (``settings.SETTINGS``), and loading them into a frozen ``Config``.

    from unicornd.config import load_config, Config, ConfigError, format_config
    cfg = load_config(sys.argv[1:], os.environ)
"""

from unicornd.config.addresses import BindAddress, parse_bind
from unicornd.config.errors import ConfigError
from unicornd.config.loader import Config, build_parser, format_config, load_config
from unicornd.config.settings import SETTINGS, Setting

__all__ = [
    "BindAddress",
    "Config",
    "ConfigError",
    "SETTINGS",
    "Setting",
    "build_parser",
    "format_config",
    "load_config",
    "parse_bind",
]
