#!/usr/bin/env python3
"""Draw a digit in the browser and watch the trained network read it.

    python nn.py serve                       # http://127.0.0.1:8000/
    python nn.py serve --model runs/model_mnist.npz --port 0 --open

A small WSGI application on waitress, a pure-Python web server that does the HTTP
(parsing, keep-alive, threads, limits on connections and bodies, timeouts). It serves
the page in web/ (plain HTML, CSS and JavaScript) and a small JSON API that the page uses:

    GET  /api/model     the model's facts: layer sizes, steps trained, test accuracy
    POST /api/predict   a drawing or an image -> digit, probabilities, the 28x28
                        input and every hidden layer's activations
    POST /api/explain   the 28x28 input and a digit -> its saliency map (explain.py)
    GET  /api/damage    the damage settings in force and the test accuracy (damage.py)
    POST /api/damage    new damage settings for a copy of the model -> its test accuracy
    GET  /api/train     the training run: status, loss curve, evaluations, first-layer weights
    POST /api/train     start a run (409 while one goes); /api/train/stop stops it, and
                        /api/train/save saves or discards a stopped run

The explore views are explore.py's and training_session.py's; docs/explore.md shows them.

The drawing is turned into MNIST form by predict.to_mnist, the same code path as
`python nn.py predict`, and read by the model's own layers. All the maths stays
in Python; the page only draws.

Every refusal is one line of JSON with its status (docs/serve.md lists them).
Listening on this computer only (the default), it answers only requests whose
Host is localhost, 127.0.0.1 or [::1]. Every POST must be JSON (or an image, for
/api/predict), and no API request may come from another site's page (Origin,
Sec-Fetch-Site), so that no web page elsewhere can start a run that replaces the
model file, or make a visitor's computer measure the test set again and again. A model file replaced
while serving is read again on the next request.
"""

import argparse
import contextlib
import errno
import io
import ipaddress
import json
import logging
import math
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path

import numpy as np

from app import cli, model_file, ood, predict, save, signals
from app.page import explore
from app.page import training_session
from app.model_file import ModelFileError
from functions import softmax

PROJECT_DIR = Path(__file__).resolve().parents[2]
WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_BODY_BYTES = 2 * 1024 * 1024   # a 280x280 canvas as PNG is a few kB, as JSON grey levels under 1 MB
MAX_IMAGE_SIDE = 4096              # larger images are refused before they are decoded
CHANNEL_TIMEOUT_S = 10             # seconds (whole): a connection silent this long (a stalled request, an idle keep-alive) is closed
CONNECTION_LIMIT = 100             # open connections; further ones wait to be accepted until one closes
MAX_DRAINED_BYTES = 16 * MAX_BODY_BYTES  # of a body over the limit, read and dropped so that the client sees the 413
THREADS = 8                        # requests answered at once (waitress's threads); the others wait in line
DECODE_SLOTS = 1                   # drawings decoded and read at once; the others wait for the slot. Python runs
                                   # one thread at a time: readings side by side only take turns, at more CPU each
DECODE_WAIT_S = 10                 # seconds a request waits for a slot before it gets 503
BODY_TYPES = ("image/png", "image/jpeg", "application/json")  # what POST /api/predict reads
LOCAL_HOST_NAMES = ("localhost", "127.0.0.1", "[::1]")     # the Host names a local server answers to
TOP_UNITS = 8                      # first-layer units whose weights the page shows
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
                 ".ico": "image/x-icon"}
JSON_SHAPE = 'expected {"width": W, "height": H, "pixels": [W*H grey levels in [0, 1]]}'


class BadRequest(ValueError):
    """A request the server refuses: its HTTP status, a one-line reason and any headers
    the answer needs (Allow for 405, Retry-After for 503)."""

    def __init__(self, status, reason, headers=None):
        super().__init__(reason)
        self.status = status
        self.headers = headers or {}


# ------------------------------------------------------------------ the model

class ServedModel:
    """The model that the server reads drawings with, and its facts.

    Inference (``training=False``) keeps no state in the layers, so one model
    serves any number of request threads at once.
    """

    def __init__(self, model, info, model_path, number=1, description=None):
        self.model = model
        self.number = number  # 1 for the model read at start, 2 for the first reload, ...
        self.info, self.model_path = info, model_path
        self.stats_signature = file_signature(Path(model_path).parent / "stats.json")
        self.facts = {**model_facts(model, info, model_path), "model_number": number}
        self.saved_model = model  # the file's own weights, for its facts (self.model may be a training run's)
        self.ood = ood.from_members(info.get("ood", {}))  # "is this a digit at all?": the training digits' statistics
        # "Model: PATH (date, steps, test accuracy)", the line predict prints too
        self.description = description or save.describe_model(model_path, info["steps_done"])
        self.warning = None  # why a newer file could not replace this model, once that happens
        self.encoded_units = (None, {})  # (the first-layer W, {unit: its weights as JSONText}): see unit_weights

    def take(self, other):
        """Become `other` (the ServedModel of a new model file): its model, facts, number,
        description, and no warning. The server and its explorer share this one object, so
        both read with the new model from the next request on."""
        self.model, self.facts, self.number = other.model, other.facts, other.number
        self.description, self.warning = other.description, other.warning
        self.info, self.model_path, self.stats_signature = other.info, other.model_path, other.stats_signature
        self.ood, self.saved_model = other.ood, other.saved_model

    def current_facts(self):
        """The facts, read again when the stats.json beside the model changed since they were
        read (a run's stats.json is written after its model file; cp -p copies it later)."""
        signature = file_signature(Path(self.model_path).parent / "stats.json")
        if signature != self.stats_signature:
            self.stats_signature = signature
            self.facts = {**model_facts(self.saved_model, self.info, self.model_path), "model_number": self.number}
        return self.facts

    def read(self, grey):
        """Everything the page shows for a grey image (H, W) in [0, 1].

        Returns a dict that json.dumps can write: {"digit": None, "message": ...}
        for a blank image; otherwise digit, probabilities (10,) unrounded (the page
        rounds them down, as predict does: words.confidence_text), not_one_digit: why
        the drawing is not read as one digit (app/ood.py's verdict), or None; digit_statistics:
        whether the model file holds the digit statistics (they describe the training
        digits' pixels, so they hold for any weights in use: a damaged copy's, a training
        run's); without them only marks are counted; input (28, 28)
        as the network sees it (white ink on black), activations (one list per
        hidden layer, its units' outputs) and top_units: the most active units of
        the first hidden layer with their weights (28, 28) scaled to [-1, 1].
        Raises BadRequest 503 when the model's sums overflow for this drawing (its
        outputs are NaN, which JSON cannot hold): a training run's weights can do that,
        and so can a model file whose blank and full probes (check_outputs) passed.
        """
        try:
            prepared = predict.prepare(grey)
        except ValueError as error:  # predict.prepare found no digit
            return {"digit": None, "message": f"draw a digit: {error}"}
        image = prepared.image
        model = self.model  # one model for the whole reading, even if a training run swaps it meanwhile
        fitted = self.ood
        X = image.reshape(1, 784).astype(np.float32)
        activations = []
        A = X
        with np.errstate(over="ignore", invalid="ignore"):  # no RuntimeWarning on the console: the 503 says it
            for layer in model.layers[:-1]:
                A = layer.forward(A)
                activations.append(A[0])
            probabilities = softmax(model.layers[-1].forward(A))[0]
        if not all(np.isfinite(values).all() for values in [probabilities, *activations]):
            raise BadRequest(503, f"the model in use: {predict.OUTPUTS_OVERFLOW}")
        return {
            "digit": int(probabilities.argmax()),
            "probabilities": probabilities.astype(np.float64).tolist(),  # as computed: the page rounds down
            "not_one_digit": ood.verdict(fitted, prepared), "digit_statistics": fitted is not None,
            "input": rounded(image, 3),
            "activations": [rounded(a, 3) for a in activations],
            "top_units": self.top_units(activations[0], model.layers[0].W) if activations else [],
        }

    def top_units(self, first_activations, W, count=TOP_UNITS):
        """[{"unit": i, "activation": a, "weights": (28, 28)}] for the most active units
        of the first hidden layer (whose weights are W, (784, n_hidden)), most active
        first, with their weights as unit_weights gives them."""
        units = np.argsort(-first_activations, kind="stable")[:count]
        result = []
        for unit in units:
            if first_activations[unit] <= 0:
                break
            result.append({"unit": int(unit), "activation": round(float(first_activations[unit]), 4),
                           "weights": self.unit_weights(W, int(unit))})
        return result

    def unit_weights(self, W, unit):
        """JSONText of a first-layer unit's input weights W[:, unit] as 28x28, divided by their
        largest magnitude (so that the page can colour +1 and -1 alike for every unit), to 3
        decimals. They are the same for every drawing, so each is encoded once for the weights
        W in use (a new model, a training run's snapshot or a damaged copy brings a new W)."""
        encoded_for, encoded = self.encoded_units
        if encoded_for is not W:
            encoded = {}
            self.encoded_units = (W, encoded)
        if unit not in encoded:
            weights = W[:, unit] / max(float(np.abs(W[:, unit]).max()), 1e-12)
            encoded[unit] = JSONText(to_json(rounded(weights.reshape(28, 28), 3)))
        return encoded[unit]


class JSONText(str):
    """Text already encoded as JSON, which to_json puts into an answer as it is."""


def to_json(value):
    """The JSON text of value (dicts, lists, numbers, strings, None), compact, with its
    JSONText parts as they are (a unit's weights: 784 numbers encoded once, not per drawing)."""
    if isinstance(value, JSONText):
        return value
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(key))}:{to_json(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, JSONText)) for item in value):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    return json.dumps(value, separators=(",", ":"))


def rounded(array, decimals):
    """The array as nested lists of floats rounded to `decimals` places (smaller JSON)."""
    return np.round(np.asarray(array, dtype=np.float64), decimals).tolist()


def model_facts(model, info, model_path):
    """The page's "about this model": sizes, parameters, the steps its weights come from
    (from the model file), the test accuracy and calibration (app/calibration.py) of the
    stats.json beside it when that file describes this model (save.stats_of_model; None
    otherwise), and whether the file holds the digit statistics (app/ood.py)."""
    stats = save.stats_of_model(Path(model_path).parent, info["steps_done"], model_path=model_path)
    return {"model_file": str(model_path), "layer_sizes": model.layer_sizes,
            "activations": model.activations, "parameters": int(model.flat_parameters.size),
            "steps_done": info["steps_done"], "test_accuracy": save.stats_test_accuracy(stats),
            "calibration": stats.get("calibration"), "digit_statistics": bool(info.get("ood"))}


# ------------------------------------------------------------------ request bodies

def parse_json(body):
    """The JSON value of a request body; NaN and Infinity, which are not JSON, are refused."""
    def refuse_constant(name):
        raise BadRequest(400, f"body: {name} is not a number")

    try:
        return json.loads(body, parse_constant=refuse_constant)
    except BadRequest:
        raise
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        raise BadRequest(400, f"body: not JSON ({error})") from None
    except RecursionError:  # [[[[...]]]] deeper than the parser's recursion goes: a bad body, not a bug
        raise BadRequest(400, "body: not JSON (nested too deeply)") from None


def grey_from_json(body):
    """The grey image (H, W) in [0, 1] that a JSON body describes (see JSON_SHAPE)."""
    value = parse_json(body)
    if not isinstance(value, dict) or set(value) != {"width", "height", "pixels"}:
        raise BadRequest(400, f"body: {JSON_SHAPE}")
    width, height, pixels = value["width"], value["height"], value["pixels"]
    for name, side in (("width", width), ("height", height)):
        if type(side) is not int or not 2 <= side <= MAX_IMAGE_SIDE:
            raise BadRequest(400, f"{name}: expected a whole number from 2 to {MAX_IMAGE_SIDE}, got {side!r}")
    if not isinstance(pixels, list) or len(pixels) != width * height:
        count = len(pixels) if isinstance(pixels, list) else type(pixels).__name__
        raise BadRequest(400, f"pixels: expected {width}*{height} = {width * height} numbers, got {count}")
    try:
        return explore.grey_levels(pixels, "pixels", (height, width))
    except explore.BadValue as error:
        raise BadRequest(400, str(error)) from None


def grey_from_image(body):
    """The grey image (H, W) in [0, 1] of PNG or JPEG bytes, read by predict.load_grey."""
    from PIL import Image  # Pillow comes with matplotlib
    try:
        with Image.open(io.BytesIO(body), formats=["PNG", "JPEG"]) as image:
            width, height = image.size  # from the header: nothing is decoded yet
    except Exception:  # Pillow raises many kinds for bytes that are not an image
        raise BadRequest(400, "body: not an image (send PNG or JPEG bytes, or JSON grey levels)") from None
    if max(width, height) > MAX_IMAGE_SIDE:
        raise BadRequest(400, f"body: image of {width}x{height} pixels, the limit is {MAX_IMAGE_SIDE} a side")
    try:
        return predict.load_grey(io.BytesIO(body))
    except ValueError:
        raise BadRequest(400, "body: not a readable image (send PNG or JPEG bytes, or JSON grey levels)") from None


# ------------------------------------------------------------------ HTTP: request headers

def static_files(folder=WEB_DIR):
    """{"/index.html": path, ...} for the files directly in the page's folder, plus "/".

    Only these exact paths are ever served: a request path is looked up in this
    table, never joined to a folder, so no spelling of "..", no encoded slash and
    no absolute path can reach a file outside it.
    """
    files = {"/" + path.name: path for path in sorted(folder.iterdir())
             if path.is_file() and path.suffix in CONTENT_TYPES}
    files["/"] = folder / "index.html"
    return files


def check_host(host_header, server):
    """Refuse (403) a Host other than localhost, 127.0.0.1, [::1] or the loopback address the
    server listens on (with no port or the server's) when it listens on this computer only.

    A web page on another site can make the browser send requests here under a name
    of its own that resolves to 127.0.0.1 (DNS rebinding); such requests carry that
    name in Host, and the check turns them away.
    """
    if not server.local_only:
        return
    parts = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*)(?::([0-9]+))?", (host_header or "").strip())  # NAME[:PORT]
    own_address = server.url.split("//")[1].rsplit(":", 1)[0]  # the loopback address listened on: 127.0.0.2, say
    if (parts is None or parts[1].lower() not in (*LOCAL_HOST_NAMES, own_address)
            or parts[2] not in (None, str(server.server_port))):
        raise BadRequest(403, f"Host {host_header!r}: this server answers only to localhost, 127.0.0.1 "
                              f"or [::1] on port {server.server_port}")


def body_type(headers, accepted=BODY_TYPES):
    """The media type of a POST body: one of `accepted` (BODY_TYPES for /api/predict,
    JSON alone for the other POST routes, a body-less stop included), else 415.

    Refusing the rest refuses the text/plain and form posts that another web site can
    make a browser send without asking first (CORS "simple requests"): a page elsewhere
    could otherwise start a training run that replaces the model file. A JSON post from
    elsewhere needs the browser to ask first (a preflight OPTIONS), which gets 405.
    """
    kind = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind not in accepted:
        names = f"{', '.join(accepted[:-1])} or {accepted[-1]}" if len(accepted) > 1 else accepted[0]
        raise BadRequest(415, f"Content-Type {kind or '(none)'}: send {names}")
    return kind


def check_origin(headers):
    """Refuse (403) an API request that another site's page sends: every POST, and the GETs
    too, since some cost CPU (GET /api/damage measures the test set).

    A browser names the site of the page that sends a request in Sec-Fetch-Site (every
    request, even an <img> or a no-cors fetch) and, for posts and cross-site fetches, the
    page itself in Origin; the server's own page is http://HOST (the Host it was sent to).
    Requests with neither header (curl, scripts, a URL typed in) are not from a page.
    """
    site = headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        raise BadRequest(403, f"Sec-Fetch-Site {site}: only this server's own page may send requests here")
    origin = headers.get("Origin")
    if origin is not None and origin.strip().lower() != f"http://{headers.get('Host', '')}".strip().lower():
        raise BadRequest(403, f"Origin {origin!r}: only this server's own page may send requests here")


@contextlib.contextmanager
def decode_slot(server):
    """Hold one of the server's DECODE_SLOTS while decoding and reading a drawing;
    503 with Retry-After when none frees up within server.decode_wait_s seconds,
    so that a flood of requests waits briefly instead of piling up in memory."""
    if not server.decode_slots.acquire(timeout=server.decode_wait_s):
        raise BadRequest(503, "busy, try again in a moment", {"Retry-After": "1"})
    try:
        yield
    finally:
        server.decode_slots.release()


# ------------------------------------------------------------------ HTTP: a request and its answer

class Request:
    """One request as a route sees it: command (the method), path, headers, the server,
    and read_body(). waitress has read the request whole before the application sees
    it, the body too (at most MAX_BODY_BYTES; a longer one got 413 without being read)."""

    def __init__(self, environ, server):
        self.environ, self.server = environ, server
        self.command = environ["REQUEST_METHOD"]
        self.path = environ.get("PATH_INFO", "")
        self.headers = {key.removeprefix("HTTP_").replace("_", "-").title(): value  # HTTP_HOST -> Host
                        for key, value in environ.items()
                        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")}

    def read_body(self):
        """The request body: 411 without a Content-Length (a chunked body has one by now:
        waitress gathered it)."""
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest(411, "body: a POST needs a Content-Length")
        return self.environ["wsgi.input"].read(int(length))


def answer(request):
    """(status, headers, body) for a request: check its Host and, for the API, the site of
    the page that sends it; route it; turn every failure into a one-line JSON refusal."""
    server, method, path = request.server, request.command, request.path
    try:
        check_host(request.headers.get("Host"), server)
        if method in ("GET", "HEAD") and request.headers.get("Content-Length", "0") != "0":
            raise BadRequest(400, f"{method} with a body: send none")  # waitress has read it: no request
        if path in server.routes:
            check_origin(request.headers)
            server.reload_if_replaced()
            allowed = server.routes[path]
            if "GET" in allowed:
                allowed = {**allowed, "HEAD": allowed["GET"]}
            if method not in allowed:
                raise BadRequest(405, f"{method} {path}: use {' or '.join(allowed)}", {"Allow": ", ".join(allowed)})
            return json_answer(200, allowed[method](request))
        if path in server.files:
            if method not in ("GET", "HEAD"):
                raise BadRequest(405, f"{method} {path}: use GET", {"Allow": "GET, HEAD"})
            return file_answer(path, server.files[path])
        raise BadRequest(404, f"{path}: not found")
    except BadRequest as refusal:
        return json_answer(refusal.status, {"error": str(refusal)}, refusal.headers)
    except Exception as error:  # a bug: answer one line, never a traceback; note it on the console
        print(f"nn.py serve: internal error on {method} {path}: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
        return json_answer(500, {"error": "internal error (see the server's console)"})


def json_answer(status, value, headers=None):
    return status, {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})}, \
        to_json(value).encode()


def file_answer(request_path, path):
    try:
        body = path.read_bytes()
    except OSError:  # removed or unreadable since the server started
        raise BadRequest(404, f"{request_path}: not found (gone from {path.parent.name}/)") from None
    return 200, {"Content-Type": CONTENT_TYPES[path.suffix], "Cache-Control": "no-cache"}, body


def api_model(handler):
    """GET /api/model: the model's facts, and a warning when a newer file could not be read."""
    served = handler.server.served
    return {**served.current_facts(), "model_warning": served.warning}


def api_predict(handler):
    """POST /api/predict: JSON grey levels or PNG/JPEG bytes -> the reading (ServedModel.read),
    with model_number (which model read it: the page refreshes its facts when it changes),
    model_warning (see api_model) and damage_number (how many times Break it's damage changed,
    by any page or a training run: a page that sees a newer one shows the damage in force)."""
    kind = body_type(handler.headers)
    body = handler.read_body()
    with decode_slot(handler.server):
        grey = grey_from_json(body) if kind == "application/json" else grey_from_image(body)
        served = handler.server.served
        damage_number = handler.server.explorer.damage_number  # of the weights read() takes next
        answer = served.read(grey)
    return {**answer, "model_number": served.number, "model_warning": served.warning,
            "damage_number": damage_number}


def explore_route(owner, method, with_body=True):
    """A route calling method(server.OWNER, JSON value of the body), or method(server.OWNER)
    for GET and HEAD and without a body (one sent is read and dropped); a POST must say
    its body is JSON (body_type), even an empty one. explore.BadValue becomes 400,
    explore.Busy 409 and explore.Unavailable 503, each with its one line."""
    def route(handler):
        try:
            if handler.command in ("GET", "HEAD"):
                return method(getattr(handler.server, owner))
            body_type(handler.headers, accepted=("application/json",))
            if not with_body:
                handler.read_body()
                return method(getattr(handler.server, owner))
            return method(getattr(handler.server, owner), parse_json(handler.read_body()))
        except explore.BadValue as error:
            raise BadRequest(400, str(error)) from None
        except explore.Busy as error:
            raise BadRequest(409, str(error)) from None
        except explore.Unavailable as error:
            raise BadRequest(503, str(error)) from None
    route.__doc__ = method.__doc__
    return route


# path -> {method: function(handler) -> JSON value}; HEAD is answered wherever GET is.
ROUTES = {"/api/model": {"GET": api_model}, "/api/predict": {"POST": api_predict},
          "/api/explain": {"POST": explore_route("explorer", explore.Explorer.explain)},
          "/api/damage": {"GET": explore_route("explorer", explore.Explorer.damage_state),
                          "POST": explore_route("explorer", explore.Explorer.set_damage)},
          "/api/train": {"GET": explore_route("training", training_session.TrainingSession.state),
                         "POST": explore_route("training", training_session.TrainingSession.start)},
          "/api/train/stop": {"POST": explore_route("training", training_session.TrainingSession.stop,
                                                    with_body=False)},
          "/api/train/save": {"POST": explore_route("training", training_session.TrainingSession.decide)}}


class Server:
    """The page's server: the model, the routes and the page's files, answered by waitress
    (threads, keep-alive, request parsing, limits and timeouts) through a WSGI application.

    served is the model in use; reload_if_replaced swaps in a new one when its file
    changes. decode_slots bounds how many drawings are decoded and read at once.
    """

    def __init__(self, address, served, routes=ROUTES, files=None, model_path=None,
                 data_dir=PROJECT_DIR / "datasets", connection_limit=CONNECTION_LIMIT,
                 channel_timeout_s=CHANNEL_TIMEOUT_S, train=None):
        self.served = served
        self.explorer = explore.Explorer(served, data_dir)
        self.model_lock = threading.RLock()  # the model file: a reload, or a training run's save and its reload
        self.training = training_session.TrainingSession(self.explorer, served.facts["model_file"], data_dir,
                                                         reload=self.load_written_model, file_lock=self.model_lock,
                                                         say=lambda line: print(line, flush=True), train=train)
        self.explorer.training = self.training
        self.routes = routes
        self.files = files if files is not None else static_files()
        self.decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
        self.decode_wait_s = DECODE_WAIT_S
        self.model_path = model_path
        self.model_signature = file_signature(model_path) if model_path else None
        # bound here, so that a port in use or a --host of no address is an OSError naming its errno
        listening = socket.create_server(address, family=socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        self.server_address = listening.getsockname()
        self.server_port = self.server_address[1]
        self.local_only = ipaddress.ip_address(self.server_address[0]).is_loopback
        self.connections = {}  # waitress's sockets: the listening one, its wake-up pipe, the clients'
        self.running = threading.Event()  # serve_forever has started
        self.stopped = threading.Event()  # serve_forever has returned
        self.closed = False  # server_close has closed every connection, the loop's trigger among them
        self.waitress = start_waitress(self.application, listening, self.connections, connection_limit,
                                       channel_timeout_s)

    def application(self, environ, start_response):
        """The WSGI application: every request's answer (see answer); to HEAD, the same
        headers (Content-Length included) with no body."""
        request = Request(environ, self)
        status, headers, body = answer(request)
        start_response(f"{status} {HTTPStatus(status).phrase}", [
            *headers.items(), ("Content-Length", str(len(body))), ("X-Content-Type-Options", "nosniff")])
        return [] if request.command == "HEAD" else [body]

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve_forever(self):
        """Answer requests until Ctrl-C (KeyboardInterrupt, raised from here) or shutdown().
        waitress's own run() would wait up to 5 s for the requests being answered, a save
        of a training run among them, before saying anything: main says what it waits for.
        Once the loop has ended, a request still being answered has no one to answer, and
        its end is no error to report: waitress's log goes quiet."""
        from waitress import wasyncore
        self.running.set()
        try:
            wasyncore.loop(timeout=1, map=self.connections, use_poll=True)
        finally:
            logging.getLogger("waitress").setLevel(logging.CRITICAL)
            self.stopped.set()

    def shutdown(self):
        """Stop serve_forever from another thread, and wait until it has: waitress's loop
        closes every connection itself (two threads closing them could collide). After
        server_close, with no loop ever started, there is nothing to stop."""
        from waitress import wasyncore
        logging.getLogger("waitress").setLevel(logging.CRITICAL)  # see serve_forever
        if self.closed and not self.running.is_set():
            return
        if not self.stopped.is_set() and not self.closed:  # else the loop ends by itself, its trigger closed
            with contextlib.suppress(OSError):  # the loop closed its trigger as it ended, just now
                self.waitress.trigger.pull_trigger(lambda: wasyncore.close_all(self.connections))
        self.stopped.wait()

    def server_close(self):
        """Close the listening socket and every connection, and let waitress's threads end
        once their requests are answered (without waiting for them)."""
        from waitress import wasyncore
        logging.getLogger("waitress").setLevel(logging.CRITICAL)  # see serve_forever
        self.closed = True
        self.waitress.task_dispatcher.set_thread_count(0)
        wasyncore.close_all(self.connections)

    def reload_if_replaced(self):
        """Read the model file again when it changed (time, size or inode) since it was read.

        The new model replaces the one in use only once it is loaded whole; a file that
        does not load keeps the model in use, with a warning for the page. One line on
        the console says which happened.
        """
        if self.model_path is None or file_signature(self.model_path) == self.model_signature:
            return
        if not self.model_lock.acquire(blocking=False):
            return  # a training run is saving and reloading the file, or another request reloads it
        try:
            signature = file_signature(self.model_path)
            if signature == self.model_signature:  # another thread reloaded it meanwhile
                return
            self.model_signature = signature
            try:
                served = load_served_model(self.model_path, number=self.served.number + 1)
            except ModelFileError as error:
                self.served.warning = f"{error}; still serving the previous model"
                print(f"Could not reload {self.served.warning}", flush=True)  # the error names the file
                return
            self.explorer.adopt(served)
            print(f"Reloaded the changed model file. {served.description}", flush=True)
        finally:
            self.model_lock.release()

    def load_written_model(self, path):
        """The ServedModel of the file that a training run in this server has just
        written, numbered after the one in use; its signature is noted, so that
        reload_if_replaced does not read it a second time. The run holds model_lock
        from the save's start to here (TrainingSession's file_lock)."""
        with self.model_lock:
            served = load_served_model(path, number=self.served.number + 1)
            if self.model_path is not None:
                self.model_signature = file_signature(self.model_path)
            return served


def start_waitress(application, listening, connections, connection_limit, channel_timeout_s):
    """A waitress server answering `application` on the bound socket `listening`, keeping
    its sockets in the dict `connections`.

    waitress is imported here, not at the top: the training command never needs it. Its
    own refusals (a malformed request, a body over MAX_BODY_BYTES) are one line of JSON
    like every other; its log is one line an event, without the queue-depth notes that a
    class drawing at once makes routine.
    """
    from waitress.channel import HTTPChannel
    from waitress.server import create_server
    from waitress.task import ErrorTask

    class JSONErrorTask(ErrorTask):
        """waitress's answer to a request it refuses before the application sees it."""

        def execute(self):
            error, length = self.request.error, self.request.content_length
            if error.code == 413:
                reason = (f"body of {length} bytes, the limit is {MAX_BODY_BYTES}" if length > MAX_BODY_BYTES
                          else f"body of more than {MAX_BODY_BYTES} bytes (chunked), the limit is {MAX_BODY_BYTES}")
            else:
                reason = " ".join(str(error.body).split())
            body = json.dumps({"error": reason}, separators=(",", ":")).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers += [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")]
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)
            if error.code == 413:
                drain(self.channel.socket)

    log = logging.getLogger("waitress")
    if not log.handlers:  # not again for a second server in one process (the tests)
        log.addHandler(ConsoleLine())
        log.propagate = False
    log.setLevel(logging.NOTSET)  # heard again, after an earlier server of this process closed
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(application, map=connections, sockets=[listening], threads=THREADS, connection_limit=connection_limit,
                           channel_timeout=channel_timeout_s, cleanup_interval=1,
                           max_request_body_size=MAX_BODY_BYTES + 1,  # waitress refuses a body this long or longer
                           ident="nn.py-serve", log_socket_errors=False, asyncore_use_poll=True)
    server.channel_class = type("JSONErrorChannel", (HTTPChannel,), {"error_task_class": JSONErrorTask})
    return server


class ConsoleLine(logging.Handler):
    """Writes a log record as one console line, "nn.py serve: message", never a traceback."""

    def emit(self, record):
        print(f"nn.py serve: {record.getMessage()}", file=sys.stderr, flush=True)


def drain(connection, limit=MAX_DRAINED_BYTES, within_s=2.0):
    """Read and drop up to `limit` bytes that a client is still sending on `connection`, for
    at most within_s seconds in all: a client sending a body over the limit then reads its
    413, where a connection closed under it would be reset before it reads. (waitress reads
    nothing more from a connection while one of its requests is answered.) The deadline is
    for the whole drain, so that a client trickling its body cannot hold a thread."""
    deadline = time.monotonic() + within_s
    while limit > 0 and (left := deadline - time.monotonic()) > 0 and select.select([connection], [], [], left)[0]:
        try:
            piece = connection.recv(min(limit, 1 << 16))
        except OSError:  # the client gave up
            return
        if not piece:
            return
        limit -= len(piece)


def file_signature(path):
    """(modification time in ns, size, inode) of the file at path, or None when it is missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


# ------------------------------------------------------------------ the command

def network_address():
    """This computer's address on its network, as others reach it, or None: the address the
    system would send from to reach a distant one (a UDP socket's connect sends nothing)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # an address kept for documentation: nothing answers there
        address = probe.getsockname()[0]
        return None if ipaddress.ip_address(address).is_unspecified else address
    return None


def port_number(text):
    """--port: a whole number from 0 to 65535 (argparse makes a wrong one a one-line error)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port}: choose 0-65535; 0 picks a free one")
    return port


def build_parser():
    """nn.py's parser class: a bad flag is one line and exit status 2, as for nn.py's own flags."""
    parser = cli.Parser(prog="nn.py serve",
                        description="Draw digits in a browser and watch the trained network read them.")
    parser.add_argument("--model", type=Path, default=PROJECT_DIR / "model_mnist.npz",
                        help="the model file (default: model_mnist.npz beside nn.py)")
    parser.add_argument("--port", type=port_number, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this computer only)")
    parser.add_argument("--open", action="store_true", help="also open the page in a web browser")
    parser.add_argument("--data", type=Path, default=PROJECT_DIR / "datasets",
                        help="folder of the MNIST CSVs, for the test accuracy of a damaged model "
                             "and for training (default: datasets/ beside nn.py)")
    parser.add_argument("--train", action="store_true",
                        help="start a training run of the default configuration at once; the page "
                             "shows it, and the model file is replaced when it ends")
    return parser


def load_served_model(path, number=1):
    """ServedModel for the file at path (the number-th read while serving); raises
    ModelFileError with a one-line reason."""
    model, info = model_file.load(path, with_info=True)
    if model.layer_sizes[0] != 784 or model.layer_sizes[-1] != 10:
        raise ModelFileError(f"{path}: a {model.layer_sizes} network, not one for 28x28 digits (784 in, 10 out)")
    check_outputs(model, path)
    return ServedModel(model, info, path, number)


def check_outputs(model, path):
    """Raise ModelFileError, in predict's words, when the model's outputs for a blank input or
    a page full of ink are not numbers. Finite weights as large as 1e30 pass model_file.load, but
    their sums overflow float32: predict refuses such a model once it has read the images,
    and a server has none to read before it starts, so these two stand in for them."""
    probes = np.stack([np.zeros(784, dtype=np.float32), np.ones(784, dtype=np.float32)])
    if not np.isfinite(predict.probabilities_of(model, probes)).all():
        raise ModelFileError(f"{path}: {predict.OUTPUTS_OVERFLOW}")


def untrained_served_model(path):
    """ServedModel of an untrained network of nn.py's default configuration, for
    `serve --train` before the model file at path exists (the run will write it)."""
    return ServedModel(model_file.new_model(cli.DEFAULTS, np.random.default_rng(0)), {"steps_done": 0}, path,
                       description=f"Model: {path} (not written yet: an untrained network until the run saves it)")


class Stopping:
    """SIGINT (Ctrl-C) and SIGTERM stop the server: each raises KeyboardInterrupt in the
    main thread, and ``signal`` remembers the last one, for the exit status."""

    def __init__(self):
        self.signal, self.signal_time = None, -math.inf
        for number in signals.EXIT_INTERRUPTED:
            signal.signal(number, self._handle)

    def _handle(self, number, frame):
        if number == self.signal == signal.SIGTERM and time.monotonic() - self.signal_time < signals.SAME_SIGNAL_S:
            return  # the same SIGTERM again (timeout signals the process, then its group)
        self.signal, self.signal_time = number, time.monotonic()
        raise KeyboardInterrupt

    def done(self):
        """The server is closed and its run dealt with: a further signal has nothing left to
        stop and is ignored (raised now, it would end the program with a traceback)."""
        for number in signals.EXIT_INTERRUPTED:
            signal.signal(number, signal.SIG_IGN)


def main(argv=None, train=None):
    """`python nn.py serve ARGV`; train: nn.py's train(), which the page's Train runs. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.path.isdir(args.model):  # os.path's: False, not an error, for a path too long to look at
        parser.error(f"--model {args.model}: a folder; name the model file (--model {args.model / save.MODEL_FILE})")
    if args.train and args.model.name != save.MODEL_FILE:
        print(f"nn.py serve: error: --train saves {save.MODEL_FILE} (with its stats.json and pictures), and --model "
              f"names {args.model.name}: serve FOLDER/{save.MODEL_FILE} to train", file=sys.stderr)
        return 2
    if args.train and not args.model.parent.is_dir():
        parser.error(f"--model {args.model}: no folder {args.model.parent} for the run's outputs")
    untrained = args.train and not args.model.exists() and args.model.parent.is_dir()
    try:
        served = untrained_served_model(args.model) if untrained else load_served_model(args.model)
    except ModelFileError as error:
        missing = str(error).endswith(": no such model file")
        advice = ("remove or move it, and --train writes a new one" if args.train else
                  "train one first: python nn.py" if missing else "python nn.py trains a new one")
        print(f"nn.py serve: error: {error} ({advice})", file=sys.stderr)
        return 1
    try:
        server = Server((args.host, args.port), served, model_path=args.model, data_dir=args.data, train=train)
    except OSError as error:  # in use: 1, as a busy resource; any other (a bad --host or --port): 2
        if error.errno == errno.EADDRINUSE:
            print(f"nn.py serve: error: port {args.port} is in use on {args.host} "
                  f"(choose another with --port, or --port 0 for a free one)", file=sys.stderr)
            return 1
        print(f"nn.py serve: error: cannot listen on --host {args.host} --port {args.port}: {error.strerror} "
              f"(see python nn.py serve --help)", file=sys.stderr)
        return 2
    except ImportError as error:  # the web server the page stands on is not installed
        print(f"nn.py serve: error: the page needs waitress, its web server ({error}): "
              f"pip install -r requirements.txt", file=sys.stderr)
        return 1
    if args.train:
        try:
            server.training.check_can_save()
        except explore.Unavailable as error:  # the model's folder cannot take the run's outputs
            print(f"nn.py serve: error: {error}", file=sys.stderr)
            server.server_close()
            return 2
    if not server.local_only:  # any loopback address (127.0.0.2, ::1) is this computer only
        print(f"nn.py serve: warning: listening on {args.host}: the page is open to others on the network",
              file=sys.stderr)
    stopping = Stopping()  # before the line that says Ctrl-C stops: a script may send it at once
    with contextlib.suppress(KeyboardInterrupt):
        print(served.description, flush=True)
        print(f"Serving {args.model} at {server.url}  (Ctrl-C stops)", flush=True)
        address = network_address() if server.server_address[0] == "0.0.0.0" else None  # (:: listens on IPv6)
        if address is not None:  # http://0.0.0.0:PORT/ reaches this computer only
            print(f"Others on the network open http://{address}:{server.server_address[1]}/ "
                  f"(this computer's address there)", flush=True)
        if args.open:
            import webbrowser
            threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
        if args.train:
            server.training.start({}, save_when_complete=True)
            print("Training the default configuration; watch it on the page"
                  + (f" (no {args.model.name} yet: untrained weights read the drawing until the run saves one)"
                     if untrained else ""), flush=True)
        server.serve_forever()
    try:
        outcome = server.training.shutdown(say=lambda line: print(line, flush=True))  # a save under way finishes
    except KeyboardInterrupt:  # a second Ctrl-C: quit now, saying what the save had written
        print(server.training.quit_message(), file=sys.stderr, flush=True)
        return signals.EXIT_INTERRUPTED.get(stopping.signal, 130)
    finally:
        stopping.done()  # first: a further Ctrl-C now would only interrupt the closing
        server.server_close()
    if outcome:
        print(outcome, flush=True)  # what became of the run, before the server's last line
    print("Stopped.", flush=True)
    # A run dropped unsaved is work lost: 130 (143 for SIGTERM), as nn.py stopped by a signal;
    # a server stopped with no run left unsaved stopped cleanly: 0.
    return signals.EXIT_INTERRUPTED.get(stopping.signal, 130) if outcome else 0


if __name__ == "__main__":
    sys.exit(main())
