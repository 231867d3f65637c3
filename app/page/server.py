#!/usr/bin/env python3
"""Draw a digit in the browser and watch the trained network read it.

    python nn.py serve                       # http://127.0.0.1:8000/
    python nn.py serve --model runs/model_mnist.npz --port 0 --open

A local web server from Python's standard library. It serves the page in web/
(plain HTML, CSS and JavaScript) and a small JSON API that the page uses:

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
/api/predict) and come from no other site's page (Origin), so that no web page
elsewhere can start a run that replaces the model file. A model file replaced
while serving is read again on the next request.
"""

import argparse
import contextlib
import errno
import io
import ipaddress
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from app.page import explore
import nn
from app import predict
from app import runs
from app.page import training_session
from functions import softmax

PROJECT_DIR = Path(__file__).resolve().parents[2]
WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_BODY_BYTES = 2 * 1024 * 1024   # a 280x280 canvas as PNG is a few kB, as JSON grey levels under 1 MB
MAX_DRAINED_BYTES = 16 * MAX_BODY_BYTES  # of a refused body, read and dropped so that the client sees the answer
MAX_IMAGE_SIDE = 4096              # larger images are refused before they are decoded
BODY_TIMEOUT_S = 10                # a body that pauses longer than this gets 408
DECODE_SLOTS = 4                   # requests decoded and read at once; the others wait for a slot
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
        self.facts = {**model_facts(model, info, model_path), "model_number": number}
        # "Model: PATH (date, steps, test accuracy)", the line predict prints too
        self.description = description or runs.describe_model(model_path, info["steps_done"])
        self.warning = None  # why a newer file could not replace this model, once that happens

    def take(self, other):
        """Become `other` (the ServedModel of a new model file): its model, facts, number,
        description, and no warning. The server and its explorer share this one object, so
        both read with the new model from the next request on."""
        self.model, self.facts, self.number = other.model, other.facts, other.number
        self.description, self.warning = other.description, other.warning

    def read(self, grey):
        """Everything the page shows for a grey image (H, W) in [0, 1].

        Returns a dict that json.dumps can write: {"digit": None, "message": ...}
        for a blank image; otherwise digit, probabilities (10,) unrounded (the page
        rounds them down, as predict does: words.confidence_text), input (28, 28)
        as the network sees it (white ink on black), activations (one list per
        hidden layer, its units' outputs) and top_units: the most active units of
        the first hidden layer with their weights (28, 28) scaled to [-1, 1].
        Raises BadRequest 503 when the model's sums overflow for this drawing (its
        outputs are NaN, which JSON cannot hold): a training run's weights can do that,
        and so can a model file whose blank and full probes (check_outputs) passed.
        """
        try:
            image = predict.to_mnist(grey)
        except ValueError as error:  # predict.to_mnist found no digit
            return {"digit": None, "message": f"draw a digit: {error}"}
        model = self.model  # one model for the whole reading, even if a training run swaps it meanwhile
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
            "input": rounded(image, 3),
            "activations": [rounded(a, 3) for a in activations],
            "top_units": self.top_units(activations[0], model.layers[0].W) if activations else [],
        }

    @staticmethod
    def top_units(first_activations, W, count=TOP_UNITS):
        """[{"unit": i, "activation": a, "weights": (28, 28)}] for the most active units
        of the first hidden layer (whose weights are W, (784, n_hidden)), most active
        first; weights divided by their largest magnitude, so that the page can colour
        +1 and -1 alike for every unit."""
        units = np.argsort(-first_activations, kind="stable")[:count]
        result = []
        for unit in units:
            if first_activations[unit] <= 0:
                break
            weights = W[:, unit] / max(float(np.abs(W[:, unit]).max()), 1e-12)
            result.append({"unit": int(unit), "activation": round(float(first_activations[unit]), 4),
                           "weights": rounded(weights.reshape(28, 28), 3)})
        return result


def rounded(array, decimals):
    """The array as nested lists of floats rounded to `decimals` places (smaller JSON)."""
    return np.round(np.asarray(array, dtype=np.float64), decimals).tolist()


def model_facts(model, info, model_path):
    """The page's "about this model": sizes, parameters, the steps its weights come from
    (from the model file) and the test accuracy of the stats.json beside it when that
    file describes this model (runs.stats_of_model; None otherwise)."""
    stats = runs.stats_of_model(Path(model_path).parent, info["steps_done"], model_path=model_path)
    return {"model_file": str(model_path), "layer_sizes": model.layer_sizes,
            "activations": model.activations, "parameters": int(model.flat_parameters.size),
            "steps_done": info["steps_done"], "test_accuracy": runs.stats_test_accuracy(stats)}


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


def announced_length(headers):
    """The body length that the Content-Length header announces, or None without one.

    Only ASCII digits are a length: int() would also read '１２' (fullwidth) or ' +1_0',
    and a second Content-Length could disagree with the first (request smuggling), so
    both are refused with 400.
    """
    values = headers.get_all("Content-Length") or []
    if len(values) > 1:
        raise BadRequest(400, f"Content-Length given {len(values)} times: send it once")
    if not values:
        return None
    text = values[0].strip()
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(400, f"Content-Length {values[0]!r} is not a number of bytes in ASCII digits")
    return int(text)


def check_host(host_header, server):
    """Refuse (403) a Host other than localhost, 127.0.0.1 or [::1] (with no port or the
    server's) when the server listens on this computer only.

    A web page on another site can make the browser send requests here under a name
    of its own that resolves to 127.0.0.1 (DNS rebinding); such requests carry that
    name in Host, and the check turns them away.
    """
    if not server.local_only:
        return
    parts = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*)(?::([0-9]+))?", (host_header or "").strip())  # NAME[:PORT]
    if (parts is None or parts[1].lower() not in LOCAL_HOST_NAMES
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


def check_origin(origin_header, host_header):
    """Refuse (403) a POST whose Origin is another site's: a browser names the page that
    sends a request in Origin, and the server's own page is http://HOST (the Host the
    request was sent to). Requests without Origin (curl, scripts) are not from a page."""
    if origin_header is not None and origin_header.strip().lower() != f"http://{host_header or ''}".strip().lower():
        raise BadRequest(403, f"Origin {origin_header!r}: only this server's own page may send requests here")


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


# ------------------------------------------------------------------ HTTP: the handler

class Handler(BaseHTTPRequestHandler):
    """Answers GET and HEAD for the page's files and the API routes, POST for /api/predict.

    Every answer that is not a file is JSON; every refusal is {"error": one line}.
    """

    server_version = "nn.py-serve"
    protocol_version = "HTTP/1.1"  # keep-alive: the page sends many small requests
    timeout = 60  # seconds a connection may stay silent before it is closed
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart (Nagle + delayed ACK)

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def do_HEAD(self):
        self._answer("HEAD")  # as GET; _send leaves the body out

    def do_PUT(self):
        self._answer("PUT")

    def do_DELETE(self):
        self._answer("DELETE")

    def do_PATCH(self):
        self._answer("PATCH")

    def do_OPTIONS(self):
        self._answer("OPTIONS")

    def _answer(self, method):
        """Check the headers, route the request; turn every failure into a one-line JSON refusal."""
        self.unread_bytes = 0  # of the body, still on the connection
        try:
            try:
                self.body_length = announced_length(self.headers)
            except BadRequest:
                self.close_connection = True  # where this body ends is unknown: the connection cannot go on
                raise
            self.unread_bytes = self.body_length or 0
            check_host(self.headers.get("Host"), self.server)
            if method in ("GET", "HEAD") and (self.unread_bytes or "Transfer-Encoding" in self.headers):
                self.close_connection = True  # the body could be taken for the next request
                raise BadRequest(400, f"{method} with a body: send none")
            if method not in ("GET", "HEAD", "OPTIONS"):
                check_origin(self.headers.get("Origin"), self.headers.get("Host"))
            path = urlsplit(self.path).path
            if path in self.server.routes:
                self.server.reload_if_replaced()
                allowed = self.server.routes[path]
                if "GET" in allowed:
                    allowed = {**allowed, "HEAD": allowed["GET"]}
                if method not in allowed:
                    raise BadRequest(405, f"{method} {path}: use {' or '.join(allowed)}", {"Allow": ", ".join(allowed)})
                self._send_json(200, allowed[method](self))
            elif path in self.server.files:
                if method not in ("GET", "HEAD"):
                    raise BadRequest(405, f"{method} {path}: use GET", {"Allow": "GET, HEAD"})
                self._send_file(path, self.server.files[path])
            else:
                raise BadRequest(404, f"{path}: not found")
        except BadRequest as refusal:
            self._refuse(refusal)
        except Exception as error:  # a bug: answer one line, never a traceback; note it on the console
            self.log_message("internal error on %s %s: %s: %s", method, self.path, type(error).__name__, error)
            self._refuse(BadRequest(500, "internal error (see the server's console)"))

    def read_body(self):
        """The request body: 411 without a Content-Length, 413 over MAX_BODY_BYTES (before
        reading it), 408 when it stops arriving for BODY_TIMEOUT_S, 400 when the client
        closes before sending all of it. After 408 and 400 the connection is closed."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise BadRequest(411, "body: send a Content-Length, not chunked encoding")
        if self.body_length is None:
            self.close_connection = True
            raise BadRequest(411, "body: a POST needs a Content-Length")
        if self.body_length > MAX_BODY_BYTES:
            raise BadRequest(413, f"body of {self.body_length} bytes, the limit is {MAX_BODY_BYTES}")
        self.unread_bytes = 0  # from here on, whatever happens, nothing of it is read again
        self.connection.settimeout(BODY_TIMEOUT_S)
        try:
            body = self.rfile.read(self.body_length)
        except TimeoutError:
            self.close_connection = True
            self.log_message("%s %s: the body stopped arriving (408)", self.command, self.path)
            raise BadRequest(408, f"body: timed out, nothing arrived for {BODY_TIMEOUT_S} s") from None
        finally:
            self.connection.settimeout(self.timeout)
        if len(body) < self.body_length:
            self.close_connection = True
            raise BadRequest(400, f"body: {len(body)} of the {self.body_length} bytes that Content-Length "
                                  f"announced arrived before the client closed")
        return body

    def _send_json(self, status, value, headers=None):
        self._send(status, json.dumps(value, separators=(",", ":")).encode(), "application/json", headers=headers)

    def _send_file(self, request_path, path):
        try:
            body = path.read_bytes()
        except OSError:  # removed or unreadable since the server started
            raise BadRequest(404, f"{request_path}: not found (gone from {path.parent.name}/)") from None
        self._send(200, body, CONTENT_TYPES[path.suffix], cache="no-cache")

    def _refuse(self, refusal):
        unread = self.unread_bytes
        if unread:
            self.close_connection = True  # its unread body would be taken for the next request
        self._send_json(refusal.status, {"error": str(refusal)}, refusal.headers)
        if unread:
            self._drain_body(unread)

    def _drain_body(self, length):
        """Read and drop up to MAX_DRAINED_BYTES of a refused body of `length` bytes, waiting at
        most a second for each piece: a client still sending it then reads the answer, not a
        reset connection."""
        try:
            remaining = min(length, MAX_DRAINED_BYTES)
            self.connection.settimeout(1.0)
            while remaining > 0:
                piece = self.rfile.read(min(remaining, 1 << 16))
                if not piece:
                    break
                remaining -= len(piece)
        except (OSError, ValueError):  # the client gave up or paused
            pass

    def _send(self, status, body, content_type, cache="no-store", headers=None):
        """Send the answer; to HEAD, the same headers (Content-Length included) with no body."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code, message=None, explain=None):
        """Malformed requests that the standard library refuses itself: one JSON line too."""
        self.close_connection = True
        self._send_json(code, {"error": message or HTTPStatus(code).phrase})

    def handle_one_request(self):
        self.request_started = False  # set by parse_request once a request line has arrived
        super().handle_one_request()

    def parse_request(self):
        self.request_started = True
        return super().parse_request()

    def log_error(self, format, *args):
        """One console line per real error; a keep-alive connection closed after its idle
        time (the standard library's "Request timed out" before any request) is none."""
        if format.startswith("Request timed out") and not self.request_started:
            return
        super().log_error(format, *args)

    def log_request(self, code="-", size="-"):
        """Answered requests are not logged (the page sends one per pen move)."""


def api_model(handler):
    """GET /api/model: the model's facts, and a warning when a newer file could not be read."""
    served = handler.server.served
    return {**served.facts, "model_warning": served.warning}


def api_predict(handler):
    """POST /api/predict: JSON grey levels or PNG/JPEG bytes -> the reading (ServedModel.read),
    with model_number (which model read it: the page refreshes its facts when it changes)
    and model_warning (see api_model)."""
    kind = body_type(handler.headers)
    body = handler.read_body()
    with decode_slot(handler.server):
        grey = grey_from_json(body) if kind == "application/json" else grey_from_image(body)
        served = handler.server.served
        answer = served.read(grey)
    return {**answer, "model_number": served.number, "model_warning": served.warning}


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


class Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows the model, the routes and the page's files.

    served is the model in use; reload_if_replaced swaps in a new one when its file
    changes. decode_slots bounds how many drawings are decoded and read at once.
    """

    daemon_threads = True  # open keep-alive connections do not hold up Ctrl-C
    request_queue_size = 128  # the listen backlog; socketserver's 5 resets a burst of connections

    def __init__(self, address, served, routes=ROUTES, files=None, model_path=None,
                 data_dir=PROJECT_DIR / "datasets"):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.served = served
        self.explorer = explore.Explorer(served, data_dir)
        self.model_lock = threading.RLock()  # the model file: a reload, or a training run's save and its reload
        self.training = training_session.TrainingSession(self.explorer, served.facts["model_file"], data_dir,
                                                         reload=self.load_written_model, file_lock=self.model_lock,
                                                         say=lambda line: print(line, flush=True))
        self.explorer.training = self.training
        self.routes = routes
        self.files = files if files is not None else static_files()
        self.decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
        self.decode_wait_s = DECODE_WAIT_S
        self.model_path = model_path
        self.model_signature = file_signature(model_path) if model_path else None
        super().__init__(address, Handler)
        self.local_only = ipaddress.ip_address(self.server_address[0]).is_loopback

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def reload_if_replaced(self):
        """Read the model file again when it changed (time, size or inode) since it was read.

        The new model replaces the one in use only once it is loaded whole; a file that
        does not load keeps the model in use, with a warning for the page. One line on
        the console says which happened.
        """
        if self.model_path is None or file_signature(self.model_path) == self.model_signature:
            return
        from mlp import ModelFileError
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

    def handle_error(self, request, client_address):
        """One line for an error outside a request's own handling, instead of socketserver's
        traceback; nothing when the client merely went away."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return
        print(f"nn.py serve: error with {client_address[0]}: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)


def file_signature(path):
    """(modification time in ns, size, inode) of the file at path, or None when it is missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


# ------------------------------------------------------------------ the command

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
    parser = nn._Parser(prog="nn.py serve",
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
    from mlp import MLP, ModelFileError
    model, info = MLP.load(path, with_info=True)
    if model.layer_sizes[0] != 784 or model.layer_sizes[-1] != 10:
        raise ModelFileError(f"{path}: a {model.layer_sizes} network, not one for 28x28 digits (784 in, 10 out)")
    check_outputs(model, path)
    return ServedModel(model, info, path, number)


def check_outputs(model, path):
    """Raise ModelFileError, in predict's words, when the model's outputs for a blank input or
    a page full of ink are not numbers. Finite weights as large as 1e30 pass MLP.load, but
    their sums overflow float32: predict refuses such a model once it has read the images,
    and a server has none to read before it starts, so these two stand in for them."""
    from mlp import ModelFileError
    probes = np.stack([np.zeros(784, dtype=np.float32), np.ones(784, dtype=np.float32)])
    if not np.isfinite(predict.probabilities_of(model, probes)).all():
        raise ModelFileError(f"{path}: {predict.OUTPUTS_OVERFLOW}")


def untrained_served_model(path):
    """ServedModel of an untrained network of nn.py's default configuration, for
    `serve --train` before the model file at path exists (the run will write it)."""
    return ServedModel(nn.new_model(nn.DEFAULTS, np.random.default_rng(0)), {"steps_done": 0}, path,
                       description=f"Model: {path} (not written yet: an untrained network until the run saves it)")


class Stopping:
    """SIGINT (Ctrl-C) and SIGTERM stop the server: each raises KeyboardInterrupt in the
    main thread, and ``signal`` remembers the last one, for the exit status."""

    def __init__(self):
        self.signal, self.signal_time = None, -math.inf
        for number in nn.EXIT_INTERRUPTED:
            signal.signal(number, self._handle)

    def _handle(self, number, frame):
        if number == self.signal == signal.SIGTERM and time.monotonic() - self.signal_time < nn.SAME_SIGNAL_S:
            return  # the same SIGTERM again (timeout signals the process, then its group)
        self.signal, self.signal_time = number, time.monotonic()
        raise KeyboardInterrupt

    def done(self):
        """The server is closed and its run dealt with: a further signal has nothing left to
        stop and is ignored (raised now, it would end the program with a traceback)."""
        for number in nn.EXIT_INTERRUPTED:
            signal.signal(number, signal.SIG_IGN)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from mlp import ModelFileError
    if os.path.isdir(args.model):  # os.path's: False, not an error, for a path too long to look at
        parser.error(f"--model {args.model}: a folder; name the model file (--model {args.model / nn.MODEL_FILE})")
    if args.train and args.model.name != nn.MODEL_FILE:
        print(f"nn.py serve: error: --train saves {nn.MODEL_FILE} (with its stats.json and pictures), and --model "
              f"names {args.model.name}: serve FOLDER/{nn.MODEL_FILE} to train", file=sys.stderr)
        return 2
    if args.train and not args.model.parent.is_dir():
        parser.error(f"--model {args.model}: no folder {args.model.parent} for the run's outputs")
    untrained = args.train and not args.model.exists() and args.model.parent.is_dir()
    try:
        served = untrained_served_model(args.model) if untrained else load_served_model(args.model)
    except ModelFileError as error:
        advice = "remove or move it, and --train writes a new one" if args.train else "train one first: python nn.py"
        print(f"nn.py serve: error: {error} ({advice})", file=sys.stderr)
        return 1
    try:
        server = Server((args.host, args.port), served, model_path=args.model, data_dir=args.data)
    except OSError as error:  # in use: 1, as a busy resource; any other (a bad --host or --port): 2
        if error.errno == errno.EADDRINUSE:
            print(f"nn.py serve: error: port {args.port} is in use on {args.host} "
                  f"(choose another with --port, or --port 0 for a free one)", file=sys.stderr)
            return 1
        print(f"nn.py serve: error: cannot listen on --host {args.host} --port {args.port}: {error.strerror} "
              f"(see python nn.py serve --help)", file=sys.stderr)
        return 2
    if args.train:
        try:
            server.training.check_can_save()
        except explore.Unavailable as error:  # the model's folder cannot take the run's outputs
            print(f"nn.py serve: error: {error}", file=sys.stderr)
            server.server_close()
            return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"nn.py serve: warning: listening on {args.host}: the page is open to others on the network",
              file=sys.stderr)
    stopping = Stopping()  # before the line that says Ctrl-C stops: a script may send it at once
    with contextlib.suppress(KeyboardInterrupt):
        print(served.description, flush=True)
        print(f"Serving {args.model} at {server.url}  (Ctrl-C stops)", flush=True)
        if args.open:
            import webbrowser
            threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
        if args.train:
            server.training.start({})
            print("Training the default configuration; watch it on the page"
                  + (f" (no {args.model.name} yet: untrained weights read the drawing until the run saves one)"
                     if untrained else ""), flush=True)
        server.serve_forever()
    try:
        outcome = server.training.shutdown(say=lambda line: print(line, flush=True))  # a save under way finishes
    except KeyboardInterrupt:  # a second Ctrl-C: quit now, saying what the save had written
        print(server.training.quit_message(), file=sys.stderr, flush=True)
        return nn.EXIT_INTERRUPTED.get(stopping.signal, 130)
    finally:
        server.server_close()
        stopping.done()
    if outcome:
        print(outcome, flush=True)  # what became of the run, before the server's last line
    print("Stopped.", flush=True)
    # A run dropped unsaved is work lost: 130 (143 for SIGTERM), as nn.py stopped by a signal;
    # a server stopped with no run left unsaved stopped cleanly: 0.
    return nn.EXIT_INTERRUPTED.get(stopping.signal, 130) if outcome else 0


if __name__ == "__main__":
    sys.exit(main())
