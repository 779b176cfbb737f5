"""Websocket echo with flask-sock (simple-websocket): takes the socket over after its 101."""

from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)


@app.route("/")
def index():
    return "ws echo at /echo\n"


@sock.route("/echo")
def echo(ws):
    while True:
        data = ws.receive()
        if data == "bye":
            break
        ws.send(data)
