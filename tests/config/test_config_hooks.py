"""Server hooks: callables or dotted paths, with gunicorn's arity checks."""

import inspect

import pytest

from unicornd.config import ConfigError
from unicornd.config.settings import BY_NAME

# hook -> gunicorn's parameters
HOOKS = {
    "on_starting": ("server",),
    "on_reload": ("server",),
    "when_ready": ("server",),
    "pre_fork": ("server", "worker"),
    "post_fork": ("server", "worker"),
    "post_worker_init": ("worker",),
    "worker_int": ("worker",),
    "worker_abort": ("worker",),
    "pre_exec": ("server",),
    "pre_request": ("worker", "req"),
    "child_exit": ("server", "worker"),
    "worker_exit": ("server", "worker"),
    "nworkers_changed": ("server", "new_value", "old_value"),
    "on_exit": ("server",),
    "ssl_context": ("config", "default_ssl_context_factory"),
}


def test_every_supported_hook_is_covered():
    hooks = {s.name for s in BY_NAME.values() if s.section == "Server Hooks" and s.supported}
    assert hooks == set(HOOKS) | {"post_request"}


@pytest.mark.parametrize("name,params", HOOKS.items())
def test_hook_with_the_right_arity(load, write, name, params):
    write("conf.py", f"def {name}({', '.join(params)}):\n    return 'called'\n")
    hook = getattr(load("-c", "conf.py"), name)
    assert hook(*params) == "called"


@pytest.mark.parametrize("name,params", HOOKS.items())
def test_hook_with_a_wrong_arity_is_an_error_naming_it(load, write, name, params):
    wrong = params + ("extra",)
    write("conf.py", f"def {name}({', '.join(wrong)}):\n    pass\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    n = len(params)
    plural = "argument" if n == 1 else "arguments"
    assert str(err.value) == (
        f"Invalid value for {name}: <function {name}>: expected a callable taking {n} "
        f"positional {plural} ({', '.join(params)}); it takes {n + 1} (set in conf.py)")
    assert err.value.setting == name


def test_defaults_do_nothing_and_take_gunicorns_arguments(load):
    cfg = load()
    for name, params in HOOKS.items():
        assert tuple(inspect.signature(getattr(cfg, name)).parameters) == params
        if name != "ssl_context":  # its default returns what the factory builds
            assert getattr(cfg, name)(*params) is None
    assert cfg.ssl_context(cfg, lambda: "built") == "built"


def test_arity_counts_as_gunicorn_does(load, write):
    # *args and keyword-only parameters don't count; parameters with defaults do.
    write("conf.py", """
        def post_fork(server, worker, *args, flag=False, **kw): pass
        def on_starting(server, *, verbose=True): pass
        class Hook:
            def __call__(self, server): return "instance"
        when_ready = Hook()
        import functools
        def _two(server, worker, extra): return extra
        pre_fork = functools.partial(_two, extra="partial")
    """)
    cfg = load("-c", "conf.py")
    assert cfg.when_ready(None) == "instance"
    assert cfg.pre_fork(None, None) == "partial"
    write("conf.py", "def on_exit(server, extra=None): pass\n")
    with pytest.raises(ConfigError, match="^Invalid value for on_exit: .* it takes 2"):
        load("-c", "conf.py")


@pytest.mark.parametrize("params", [("worker", "req"), ("worker", "req", "environ"),
                                    ("worker", "req", "environ", "resp")])
def test_post_request_takes_two_to_four_arguments_and_is_widened(load, write, params):
    write("conf.py", f"def post_request({', '.join(params)}):\n    return ({', '.join(params)},)\n")
    hook = load("-c", "conf.py").post_request
    assert len(inspect.signature(hook).parameters) == 4
    assert hook("w", "r", "e", "s") == ("w", "r", "e", "s")[: len(params)]
    assert hook.__qualname__ == "post_request"


@pytest.mark.parametrize("params", [("worker",), ("a", "b", "c", "d", "e")])
def test_post_request_with_a_wrong_arity(load, write, params):
    write("conf.py", f"def post_request({', '.join(params)}): pass\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    assert str(err.value) == (
        "Invalid value for post_request: <function post_request>: expected a callable taking "
        f"2 to 4 positional arguments (worker, req, environ, resp); it takes {len(params)} "
        "(set in conf.py)")


def test_hooks_as_dotted_paths(load, write):
    write("myhooks.py", """
        def ready(server): return "ready"
        def fork(server, worker): return "fork"
        def bad(server, worker): pass
    """)
    write("conf.py", "when_ready = 'myhooks.ready'\npost_fork = 'myhooks:fork'\n")
    cfg = load("-c", "conf.py")
    assert (cfg.when_ready(None), cfg.post_fork(None, None)) == ("ready", "fork")

    write("conf.py", "on_starting = 'myhooks.bad'\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    assert str(err.value) == (
        "Invalid value for on_starting: 'myhooks.bad': expected a callable taking 1 positional "
        "argument (server); it takes 2 (set in conf.py)")


def test_dotted_paths_are_imported_with_chdir_and_pythonpath(load, write, tmp_path):
    write("app/apphooks.py", "def on_exit(server): return 'bye'\n")
    write("lib/libhooks.py", "def on_exit(server): return 'lib'\n")
    write("conf.py", "chdir = 'app'\non_exit = 'apphooks.on_exit'\n")
    assert load("-c", "conf.py").on_exit(None) == "bye"
    write("conf.py", "pythonpath = 'lib'\nchdir = '.'\non_exit = 'libhooks.on_exit'\n")
    assert load("-c", "conf.py").on_exit(None) == "lib"


@pytest.mark.parametrize("line,message", [
    ("on_exit = 'nodots'", "'nodots': expected a callable taking 1 positional argument "
     "(server), or a dotted path to one (module.name)"),
    ("on_exit = 'no_such_mod.fn'", "'no_such_mod.fn': cannot import 'no_such_mod': "
     "ModuleNotFoundError: No module named 'no_such_mod'"),
    ("on_exit = 'os.no_such_fn'", "'os.no_such_fn': module 'os' has no attribute "
     "'no_such_fn'"),
    ("on_exit = 'os.sep'", "'os.sep': expected a callable taking 1 positional argument "
     "(server), or a dotted path to one"),
    ("on_exit = 42", "42: expected a callable taking 1 positional argument (server), or a "
     "dotted path to one"),
    ("on_exit = None", "None: expected a callable taking 1 positional argument (server), or "
     "a dotted path to one"),
])
def test_bad_hook_values(load, write, line, message):
    write("conf.py", line + "\n")
    with pytest.raises(ConfigError) as err:
        load("-c", "conf.py")
    assert str(err.value) == f"Invalid value for on_exit: {message} (set in conf.py)"


def test_dotted_paths_are_also_found_from_the_starting_directory(load, write):
    write("sub/.keep", "")
    write("tophooks.py", "def on_exit(server): return 'top'\n")
    write("conf.py", "chdir = 'sub'\non_exit = 'tophooks.on_exit'\n")
    assert load("-c", "conf.py").on_exit(None) == "top"
