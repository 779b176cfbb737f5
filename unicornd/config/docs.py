"""Render the settings table as Markdown: ``python -m unicornd.config.docs``.

The docs site's build (docs/_hooks/unicornd_docs.py) calls ``render()`` to make its
``settings.md`` page, so the reference is never committed nor edited by hand. The output
depends on the table only (never on the environment).
"""

from __future__ import annotations

from unicornd.config.settings import SECTIONS, SETTINGS, Setting

INTRO = """\
# Settings

<!-- Generated from unicornd/config/settings.py at every docs build (unicornd.config.docs). -->

unicornd takes gunicorn's settings: the same names in config files, the same command-line
flags, the same defaults. Every gunicorn 27 setting is listed here. The ones marked *not
supported yet* would change what the server does (HTTP/2, the uWSGI protocol, dirty arbiters):
they are refused with an error when given any value other than their default. The ones marked
*accepted, no effect* only tune something gunicorn uses in its ASGI worker or in a feature
unicornd refuses: they are accepted, and a warning at startup and from `--check-config` says
they do nothing. `unicornd --help` lists neither kind; they are still read from every source.

## Where settings come from

From lowest to highest precedence:

1. **Defaults.** A few come from the environment, as in gunicorn: `workers` from
   `WEB_CONCURRENCY`, `bind` from `PORT`, `forwarded_allow_ips` from `FORWARDED_ALLOW_IPS`,
   `sendfile` from `SENDFILE`.
2. **The config file**, a Python file given with `-c PATH` (or `-c python:MODULE` to import a
   module). Every module-level name that is a setting becomes its value; other names are
   helpers and are ignored, except that a name close to a setting's (`worker` for `workers`)
   is reported as a warning. Without `-c`, unicornd reads `./unicornd.conf.py` and, when there
   is none, `./gunicorn.conf.py`, so that a gunicorn deployment works by renaming the command.
   An exception raised by the file stops the server with its traceback.
3. **`UNICORND_CMD_ARGS`**, an environment variable holding command-line options (split as a
   shell would). When it is not set, `GUNICORN_CMD_ARGS` is read instead, for the same reason.
4. **The command line**: `unicornd [OPTIONS] [APP_MODULE]`. Options given here override all
   the others; list options such as `--bind` replace the config file's list rather than add
   to it.

`--check-config` validates all of this, loads the worker class and the application, logs the
warnings (settings with no effect, or with another effect than in gunicorn) and exits;
`--print-config` prints every setting as finally resolved, with `config` the file actually
read (`None` when there was none). At startup the log names that file
(`Loaded configuration from ./gunicorn.conf.py`), and at `--log-level debug` every setting.

## Where unicornd is stricter than gunicorn

- Values gunicorn accepts and then ignores or misreads are errors: an unknown `loglevel`
  (gunicorn uses `info`), a `bind` address that is malformed or whose host does not resolve,
  `workers = 0`, a malformed `raw_env` entry.
- Errors exit with status 2 and a one-line message naming the setting, the value and what is
  allowed (gunicorn exits 1).
- `sendfile = True` in a config file means on (gunicorn turns it off for any value).
- `secure_scheme_headers` names are upper-cased (gunicorn never matches lower-case ones).
- The default process name is `unicornd`, and the default config file `./unicornd.conf.py`.
"""


def _flags(s: Setting) -> str:
    if not s.cli:
        return "none (config file only)"
    if s.action in ("store_true", "store_const"):
        return ", ".join(f"`{flag}`" for flag in s.cli)
    meta = s.meta or s.name.upper()
    arg = f"[{meta}]" if s.nargs == "?" else meta
    return ", ".join(f"`{flag} {arg}`" for flag in s.cli)


def _default(s: Setting) -> str:
    if s.default_doc is not None:
        return s.default_doc
    if callable(s.default):
        return "does nothing"
    return f"`{s.default!r}`"


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")


def _status(s: Setting) -> str:
    if s.ignored:
        return f"**accepted, no effect**: {s.ignored}"
    if not s.supported:
        return "**not supported yet**: refused unless left at the default"
    return "supported"


def render() -> str:
    refused = sum(not s.supported and not s.ignored for s in SETTINGS)
    ignored = sum(bool(s.ignored) for s in SETTINGS)
    out = [INTRO]
    out.append(
        f"{len(SETTINGS)} settings: {len(SETTINGS) - refused - ignored} supported, "
        f"{ignored} accepted with no effect, {refused} not supported yet.\n"
    )
    out.append("## Sections\n")
    for section in SECTIONS:
        out.append(f"- [{section}](#{_anchor(section)})")
    out.append("")
    for section in SECTIONS:
        out.append(f"## {section}\n")
        for s in SETTINGS:
            if s.section != section:
                continue
            out.append(f"### `{s.name}`\n")
            out.append(f"- Command line: {_flags(s)}")
            out.append(f"- Default: {_default(s)}")
            out.append(f"- Type: {s.validate.kind}")
            out.append(f"- Status: {_status(s)}")
            out.append("")
            out.append(s.doc)
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
