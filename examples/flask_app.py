"""A Flask app: ``unicornd -w 4 examples.flask_app:app`` (``pip install flask``).

Flask's ``app`` object is the WSGI callable. Behind nginx, Flask builds URLs from the
``Host`` header and the scheme unicornd sets from ``X-Forwarded-Proto`` (see
docs/deployment.md), so no ProxyFix is needed for the scheme.
"""

from flask import Flask, jsonify, request, url_for

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask!\n"


@app.post("/echo")
def echo():
    return jsonify(length=len(request.get_data()), json=request.get_json(silent=True))


@app.get("/where")
def where():
    return jsonify(url=url_for("where", _external=True), remote_addr=request.remote_addr)
