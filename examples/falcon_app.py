"""A Falcon app: ``unicornd -w 4 examples.falcon_app:app`` (``pip install falcon``)."""

import falcon


class Things:
    def on_get(self, req, resp, name):
        resp.media = {"thing": name, "params": req.params}

    def on_put(self, req, resp, name):
        resp.media = {"thing": name, "stored": req.get_media()}
        resp.status = falcon.HTTP_201


app = falcon.App()
app.add_route("/things/{name}", Things())
