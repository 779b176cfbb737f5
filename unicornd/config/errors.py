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


_WHOLE = object()


class Invalid(ValueError):
    """Raised by a validator: ``str()`` is the "expected ..." part of a message.

    ``value``, when given, is the offending part of the value (one entry of a list), which
    the message then shows instead of the whole value.
    """

    def __init__(self, message: str, value=_WHOLE):
        super().__init__(message)
        self.value = value

    @property
    def has_value(self) -> bool:
        return self.value is not _WHOLE
