"""unicornd: a pre-fork WSGI HTTP server for Unix."""

__version__ = "0.1.0"
SERVER_SOFTWARE = f"unicornd/{__version__}"
