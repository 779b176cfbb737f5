"""TLS: the server's SSLContext, built once in the master from the settings.

Workers inherit it across fork; the connection loop wraps each accepted socket with it.
"""

import ssl

from unicornd.config import ConfigError

# gunicorn's ssl_version values (ssl.PROTOCOL_* numbers) read as the oldest version accepted.
_PROTOCOL_MINIMUM = {3: ssl.TLSVersion.TLSv1, 4: ssl.TLSVersion.TLSv1_1, 5: ssl.TLSVersion.TLSv1_2}


def _refuse_password():
    raise ConfigError("Invalid value for keyfile: the key is protected by a password, which "
                      "unicornd cannot ask for; give it an unencrypted key (readable by root only)")


def make_ssl_context(cfg):
    """The SSLContext for every listener, or None without ``certfile``. Bad files or values
    are a ConfigError naming the setting, found before anything is forked."""
    if not cfg.certfile:
        if cfg.keyfile:
            raise ConfigError(f"Invalid value for keyfile: {cfg.keyfile!r}: it needs certfile too")
        return None

    def default_ssl_context_factory():
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cfg.certfile, cfg.keyfile, password=_refuse_password)
        except (OSError, ssl.SSLError) as exc:
            which = "certfile/keyfile" if cfg.keyfile else "certfile"
            raise ConfigError(f"Invalid value for {which}: {cfg.certfile!r}"
                              f"{', ' + repr(cfg.keyfile) if cfg.keyfile else ''}: {exc}") from None
        if cfg.ca_certs:
            try:
                context.load_verify_locations(cfg.ca_certs)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"Invalid value for ca_certs: {cfg.ca_certs!r}: {exc}") from None
        try:
            context.verify_mode = ssl.VerifyMode(cfg.cert_reqs)
        except ValueError:
            raise ConfigError(f"Invalid value for cert_reqs: {cfg.cert_reqs!r}: expected 0, 1 or 2") from None
        if cfg.cert_reqs and not cfg.ca_certs:
            raise ConfigError(f"Invalid value for cert_reqs: {cfg.cert_reqs}: checking client "
                              "certificates needs ca_certs")
        minimum = cfg.ssl_version
        if not isinstance(minimum, ssl.TLSVersion):
            minimum = _PROTOCOL_MINIMUM.get(minimum)
        if minimum is not None:
            context.minimum_version = minimum
        if cfg.ciphers:
            try:
                context.set_ciphers(cfg.ciphers)
            except ssl.SSLError:
                raise ConfigError(f"Invalid value for ciphers: {cfg.ciphers!r}: OpenSSL matches "
                                  "no cipher with it") from None
        return context

    return cfg.ssl_context(cfg, default_ssl_context_factory)
