"""A config whose post_fork hook fails: every worker fails to boot."""


def post_fork(server, worker):
    raise RuntimeError("post_fork hook failed on purpose")
