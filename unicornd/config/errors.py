"""The two exceptions of the config package."""


class ConfigError(Exception):
    """A configuration that cannot be served.

    ``str()`` is the whole message for users, naming the setting, the value and what is
    allowed; the CLI prints ``Error: <message>`` and exits 2. Only a config file that
    raised adds lines after the first: its traceback.
    """

    def __init__(self, message: str, *, setting: str | None = None, source: str | None = None):
        super().__init__(message)
        self.setting = setting
        self.source = source


class Invalid(ValueError):
    """Raised by a validator: ``str()`` is the "expected ..." part of a message."""
