"""python nn.py serve: the JSON API, the page's files, and every kind of bad input.

The server runs in a subprocess, as a user starts it, on a free port (--port 0), with
an untrained model (random weights: the answers are checked against the model itself,
not against the digits; tests/test_browser.py reads real digits with a trained one).
"""

import contextlib
import http.client
import io
import json
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest

from app import predict
from app import model_file
from conftest import EPS32, PROJECT_DIR, run_nn, start_server
from mlp import MLP


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A 784-150-150-10 model with random weights, saved with a stats.json beside it."""
    folder = tmp_path_factory.mktemp("served")
    model_file.save(MLP([784, 150, 150, 10], rng=np.random.default_rng(0)), folder / "model_mnist.npz", steps_done=1234)
    (folder / "stats.json").write_text(json.dumps({"test_accuracy": 0.9765, "steps": 1234, "weights_from_step": 1234}))
    return folder / "model_mnist.npz"


@pytest.fixture(scope="module")
def model(model_path):
    return model_file.load(model_path)


@pytest.fixture(scope="module")
def server(model_path):
    """(host, port) of a running server; stopped after the module."""
    process, url = start_server(model_path)
    address = urlsplit(url)
    yield address.hostname, address.port
    process.terminate()
    process.wait(timeout=10)


def ask(server, method, path, body=None, content_type="application/json", headers=None):
    """(status, parsed JSON or raw bytes, Content-Type) of one request on a fresh connection;
    the path is sent exactly as given (http.client does not normalise it)."""
    connection = http.client.HTTPConnection(*server, timeout=30)
    connection.request(method, path, body=body, headers={"Content-Type": content_type, **(headers or {})})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(data) if kind == "application/json" else data, kind


def drawing(size=280):
    """A white '7' on black, as a canvas of size x size grey levels that are multiples of 1/255
    (so that a PNG of it holds exactly the same values)."""
    grey = np.zeros((size, size))
    unit = size // 10
    grey[2 * unit:3 * unit, 2 * unit:8 * unit] = 1.0
    for row in range(3 * unit, 9 * unit):  # the diagonal
        column = 8 * unit - (row - 3 * unit) * 4 * unit // (6 * unit)
        grey[row, column - unit // 2:column + unit // 2] = 200 / 255
    return grey


def as_json(grey):
    return json.dumps({"width": grey.shape[1], "height": grey.shape[0], "pixels": grey.ravel().tolist()})


def as_png(grey):
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.round(grey * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_reading(model, grey):
    """Probabilities (10,), input (28, 28) and hidden activations in float64 from the saved weights:
    a reference computed apart from the server's code."""
    image = predict.to_mnist(grey)
    A = image.reshape(1, 784).astype(np.float32).astype(np.float64)
    activations = []
    for layer in model.layers[:-1]:
        A = np.maximum(A @ layer.W.astype(np.float64) + layer.b, 0)
        activations.append(A[0])
    Z = A @ model.layers[-1].W.astype(np.float64) + model.layers[-1].b
    probabilities = np.exp(Z - Z.max()) / np.exp(Z - Z.max()).sum()
    return probabilities[0], image, activations


# ------------------------------------------------------------------ the API and the page

def test_model_facts(server):
    status, facts, _ = ask(server, "GET", "/api/model")
    assert status == 200
    assert facts["layer_sizes"] == [784, 150, 150, 10]
    assert facts["steps_done"] == 1234
    assert facts["test_accuracy"] == 0.9765
    assert facts["parameters"] == 785 * 150 + 151 * 150 + 151 * 10


def test_predict_json_gives_the_reading_of_the_predict_code_path(server, model):
    grey = drawing()
    status, answer, _ = ask(server, "POST", "/api/predict", as_json(grey))
    assert status == 200, answer
    probabilities, image, activations = expected_reading(model, grey)
    # The JSON rounds the input and activations to 3 decimals; float32 sums of 784 terms add
    # ~784 * 1.2e-7 * |terms|, far below that rounding. The probabilities are sent unrounded:
    # float32 logits of magnitude ~20, summed in another order, differ by a few float32 steps
    # (4 * 20 * EPS32 = 9.5e-6), and a probability moves by at most half as much (the
    # softmax's slope is at most 1/2).
    np.testing.assert_allclose(answer["probabilities"], probabilities, atol=4 * 20 * EPS32)  # see above
    np.testing.assert_allclose(answer["input"], image, atol=5e-4)  # rounding to 3 decimals
    assert [len(a) for a in answer["activations"]] == [150, 150]
    for served, reference in zip(answer["activations"], activations):
        np.testing.assert_allclose(served, reference, atol=5e-4 + 1e-4 * np.abs(reference).max())  # rounding + float32
    assert answer["digit"] == int(np.argmax(probabilities))


def test_predict_png_reads_like_the_same_grey_levels(server):
    grey = drawing()
    _, from_json, _ = ask(server, "POST", "/api/predict", as_json(grey))
    status, from_png, _ = ask(server, "POST", "/api/predict", as_png(grey), "image/png")
    assert status == 200, from_png
    assert from_png["digit"] == from_json["digit"]
    assert from_png["probabilities"] == from_json["probabilities"]  # the same grey levels, the same float32 sums


def test_the_pages_percentages_are_those_of_predict(tmp_path):
    """The JSON rounded the probabilities to 5 decimals, and the page rounds down to 1 (>99.9 %
    from 0.999 up): p = 0.998997 came to the page as 0.999 and read ">99.9 %" where predict,
    from the same model, says "99.8 %". With no weights, p(3) is e^b / (e^b + 9) for any drawing."""
    from app.words import confidence_text
    model = MLP([784, 10], rng=np.random.default_rng(0))
    model.layers[0].W[...] = 0
    model.layers[0].b[3] = np.log(9 * 0.998997 / 0.001003)
    model_file.save(model, tmp_path / "model_mnist.npz", steps_done=1)
    exact = model.predict_proba(np.zeros((1, 784), dtype=np.float32))[0]
    assert 0.998995 < exact[3] < 0.999  # the window that 5 decimals round up to 0.999
    process, url = start_server(tmp_path / "model_mnist.npz")
    try:
        status, answer, _ = ask((urlsplit(url).hostname, urlsplit(url).port), "POST", "/api/predict", as_json(drawing()))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert status == 200 and answer["digit"] == 3
    assert [confidence_text(p) for p in answer["probabilities"]] == [confidence_text(p) for p in exact]
    assert confidence_text(answer["probabilities"][3]) == "99.8 %"


def test_top_units_are_the_most_active_first_layer_units(server, model):
    status, answer, _ = ask(server, "POST", "/api/predict", as_json(drawing()))
    first_layer = np.array(answer["activations"][0])
    units = [unit["unit"] for unit in answer["top_units"]]
    assert len(units) == 8
    assert sorted(first_layer[units], reverse=True) == list(first_layer[units])
    assert first_layer[units].min() >= np.sort(first_layer)[-8]
    W = model.layers[0].W[:, units[0]]
    np.testing.assert_allclose(np.array(answer["top_units"][0]["weights"]).ravel(), W / np.abs(W).max(),
                               atol=5e-4)  # rounding to 3 decimals


def test_empty_canvas_asks_for_a_digit(server):
    status, answer, _ = ask(server, "POST", "/api/predict", as_json(np.zeros((280, 280))))
    assert status == 200
    assert answer["digit"] is None
    assert "draw a digit" in answer["message"]


def test_the_page_and_its_files_are_served(server):
    status, html, kind = ask(server, "GET", "/")
    assert status == 200 and kind.startswith("text/html")
    for hook in ('id="canvas"', 'id="clear"', 'id="prediction"', 'src="app.js"', 'href="style.css"'):
        assert hook.encode() in html
    assert b"http" not in html.replace(b"http-equiv", b"")  # nothing from a CDN: it works offline
    status, script, kind = ask(server, "GET", "/app.js")
    assert status == 200 and kind.startswith("text/javascript") and b"api/predict" in script
    assert ask(server, "GET", "/style.css")[0] == 200


# ------------------------------------------------------------------ bad input

def still_serving(server):
    status, facts, _ = ask(server, "GET", "/api/model")
    return status == 200 and facts["layer_sizes"] == [784, 150, 150, 10]


def png_of_size(width, height):
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")  # compresses to a few kB
    return buffer.getvalue()


BAD_REQUESTS = [
    ("not JSON", "POST", "/api/predict", b"{pixels: 1", "application/json", 400, "not JSON"),
    ("JSON nested deeper than the parser goes", "POST", "/api/predict", b"[" * 100_000 + b"]" * 100_000,
     "application/json", 400, "nested too deeply"),  # json's recursion limit: it was 500, an internal error
    ("JSON, wrong shape", "POST", "/api/predict", b"[1, 2, 3]", "application/json", 400, "expected"),
    ("a key missing", "POST", "/api/predict", b'{"width": 2, "height": 2}', "application/json", 400, "expected"),
    ("NaN", "POST", "/api/predict", b'{"width": 2, "height": 2, "pixels": [0, NaN, 0, 0]}',
     "application/json", 400, "NaN"),
    ("Infinity", "POST", "/api/predict", b'{"width": 2, "height": 2, "pixels": [0, Infinity, 0, 0]}',
     "application/json", 400, "Infinity"),
    ("a huge number", "POST", "/api/predict", b'{"width": 2, "height": 2, "pixels": [0, 1e999, 0, 0]}',
     "application/json", 400, "[0, 1]"),
    ("wrong length", "POST", "/api/predict", b'{"width": 3, "height": 2, "pixels": [0, 0, 0, 0]}',
     "application/json", 400, "3*2 = 6 numbers, got 4"),
    ("out of range", "POST", "/api/predict", b'{"width": 2, "height": 2, "pixels": [0, 2, 0, 0]}',
     "application/json", 400, "[0, 1]"),
    ("strings", "POST", "/api/predict", b'{"width": 2, "height": 2, "pixels": ["0", 0, 0, 0]}',
     "application/json", 400, "number"),
    ("nested lists", "POST", "/api/predict", b'{"width": 2, "height": 2, "pixels": [[0], 0, 0, 0]}',
     "application/json", 400, "number"),
    ("a width that is not a whole number", "POST", "/api/predict",
     b'{"width": 2.5, "height": 2, "pixels": [0, 0, 0, 0, 0]}', "application/json", 400, "width"),
    ("a width of true", "POST", "/api/predict", b'{"width": true, "height": 2, "pixels": [0, 0]}',
     "application/json", 400, "width"),
    ("not an image", "POST", "/api/predict", b"\x89PNG\r\n\x1a\nnot really", "image/png", 400, "not an image"),
    ("an empty body", "POST", "/api/predict", b"", "image/png", 400, "not an image"),
    ("an image too large to decode", "POST", "/api/predict", png_of_size(5000, 5000), "image/png", 400, "5000x5000"),
    ("GET on the predict route", "GET", "/api/predict", None, "application/json", 405, "use POST"),
    ("POST on the page", "POST", "/", b"{}", "application/json", 405, "use GET"),
    ("PUT on the model route", "PUT", "/api/model", b"{}", "application/json", 405, "use GET"),
    ("DELETE on a file", "DELETE", "/app.js", None, "application/json", 405, "use GET"),
    ("an unknown path", "GET", "/api/nothing", None, "application/json", 404, "not found"),
    ("an unknown file", "GET", "/favicon.ico", None, "application/json", 404, "not found"),
]


@pytest.mark.parametrize("method, path, body, content_type, status, reason",
                         [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_status_and_one_line(server, method, path, body, content_type, status, reason):
    answer_status, answer, kind = ask(server, method, path, body, content_type)
    assert answer_status == status
    assert kind == "application/json"
    assert set(answer) == {"error"} and "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert reason in answer["error"]
    assert still_serving(server)


def test_a_body_over_the_limit_gets_413_before_it_is_sent(server):
    connection = http.client.HTTPConnection(*server, timeout=30)
    connection.putrequest("POST", "/api/predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(2 * 1024 * 1024 + 1))
    connection.endheaders()  # the body is never sent: the server must not wait for it
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 413
    assert "limit is 2097152" in answer["error"]
    assert still_serving(server)


def test_a_client_sending_a_body_over_the_limit_reads_the_413(server):
    # The server answers, then reads and drops the body: without that, most such clients
    # got a reset connection instead of the answer (20 of 30 here).
    for _ in range(10):
        connection = http.client.HTTPConnection(*server, timeout=30)
        connection.request("POST", "/api/predict", body=bytes(2 * 1024 * 1024 + 1),
                           headers={"Content-Type": "image/png"})
        response = connection.getresponse()
        assert response.status == 413 and "limit is 2097152" in json.loads(response.read())["error"]
        connection.close()
    assert still_serving(server)


def test_a_post_without_length_is_refused(server):
    with socket.create_connection(server, timeout=30) as connection:
        connection.sendall(f"POST /api/predict HTTP/1.1\r\nHost: {host(server)}\r\nContent-Type: image/png\r\n\r\n"
                           .encode())
        head = connection.recv(4096).decode()
    assert head.startswith("HTTP/1.1 411"), head
    assert still_serving(server)


TRAVERSALS = ["/../nn.py", "/%2e%2e/nn.py", "/%2E%2E/nn.py", "/..%2fnn.py", "/%2F..%2Fnn.py", "/..%5cnn.py",
              "/web/../nn.py", "//nn.py", "/../../../../etc/passwd", "/%2fetc%2fpasswd", "/..",
              "/./index.html/../../nn.py", "/index.html%00.py", "/ /nn.py"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_out_of_the_page_folder_get_404(server, path):
    with socket.create_connection(server, timeout=30) as connection:  # the path exactly as written
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host(server)}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    # "/ /nn.py" is no request line: waitress answers 400 in HTTP/1.0, the version it cannot read
    assert answer.split(b"\r\n")[0] in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request",
                                         b"HTTP/1.0 400 Bad Request"), answer[:200]
    assert b"def main" not in answer and b"root:" not in answer and b"Traceback" not in answer
    assert still_serving(server)


def test_an_absolute_path_outside_gets_404(server):
    status, answer, _ = ask(server, "GET", str(PROJECT_DIR / "nn.py"))
    assert status == 404 and "not found" in answer["error"]


def test_50_concurrent_requests_are_all_answered_correctly(server, model):
    from app import data
    images, _, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    greys = [image.reshape(28, 28).astype(np.float64) / 255 for image in images[:50]]
    expected = [int(np.argmax(expected_reading(model, grey)[0])) for grey in greys]

    def read(grey):
        status, answer, _ = ask(server, "POST", "/api/predict", as_json(grey))
        return status, answer["digit"], answer["probabilities"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(read, greys))
    assert [status for status, _, _ in answers] == [200] * 50
    assert [digit for _, digit, _ in answers] == expected
    for grey, (_, _, probabilities) in zip(greys, answers):
        np.testing.assert_allclose(probabilities, expected_reading(model, grey)[0], atol=1e-5)  # float32, as above


# ------------------------------------------------------------------ starting and stopping

def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_missing_model_is_one_line_and_exit_1(tmp_path):
    result = run_nn("serve", "--model", tmp_path / "none.npz", "--port", 0, timeout=60)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "none.npz" in line and "train one first: python nn.py" in line


def test_a_damaged_model_is_one_line_and_exit_1(tmp_path, model_path):
    damaged = tmp_path / "model_mnist.npz"
    damaged.write_bytes(model_path.read_bytes()[:5000])
    result = run_nn("serve", "--model", damaged, "--port", 0, timeout=60)
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith(f"nn.py serve: error: {damaged}: not a") and "model file" in line
    assert line.endswith("(python nn.py trains a new one)")  # not "train one first": there is a file


def test_a_port_in_use_is_one_line_naming_it_and_exit_1(model_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_nn("serve", "--model", model_path, "--port", port, timeout=60)
    assert result.returncode == 1
    line = one_error_line(result)
    assert f"port {port} is in use" in line


BAD_FLAGS = [
    ("a port above 65535", ["--port", 99999], "--port: 99999: choose 0-65535"),
    ("a negative port", ["--port", -1], "--port: -1: choose 0-65535"),
    ("a port as text", ["--port", "abc"], "--port: expected a whole number"),
    ("a host with no address", ["--host", "nosuch.invalid"], "--host nosuch.invalid"),
    ("a host not of this machine", ["--host", "192.0.2.1"], "--host 192.0.2.1"),  # TEST-NET-1: never local
    ("a folder as the model", ["--model", PROJECT_DIR / "docs"], "a folder; name the model file"),
    ("an unknown flag", ["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("flags, expected", [case[1:] for case in BAD_FLAGS], ids=[case[0] for case in BAD_FLAGS])
def test_a_bad_flag_value_is_one_line_and_exit_2(model_path, flags, expected):
    """As nn.py's own flags: exit 2 and one line (not argparse's usage block), the flag named."""
    result = run_nn("serve", "--model", model_path, "--port", 0, *flags, timeout=60)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert line.startswith("nn.py serve: error: ") and expected in line, line


def test_another_host_is_warned_about(model_path):
    """Listening on every address, the page is meant to be reached under other names:
    no Host check then (the warning says the page is open to the network)."""
    from app.page import server as serve
    process, url = start_server(model_path, "--host", "0.0.0.0")
    # the address to give a class (http://0.0.0.0:PORT/ reaches this computer only)
    address = serve.network_address()
    if address is not None:  # a computer on a network: the line after "Serving" names its address there
        line = process.stdout.readline()
        assert line.startswith(f"Others on the network open http://{address}:{urlsplit(url).port}/ "), line
    status, facts, _ = ask(("127.0.0.1", urlsplit(url).port), "GET", "/api/model", headers={"Host": "my-laptop:80"})
    assert status == 200 and facts["steps_done"] == 1234
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=30)
    assert "open to others on the network" in errors and "Others on the network" not in output


def test_ctrl_c_stops_the_server_cleanly(model_path):
    process, url = start_server(model_path)
    address = urlsplit(url)
    assert still_serving((address.hostname, address.port))
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "Stopped." in output
    assert errors == ""  # no traceback, no noise
    with socket.socket() as again:  # the port is free again
        again.bind((address.hostname, address.port))


@pytest.mark.parametrize("gap", [0.002, 0.02])
def test_a_second_ctrl_c_while_stopping_changes_nothing(model_path, gap):
    """Two Ctrl-C close together (a key held, a shell and its child both signalled): the
    second reached a server already stopped, which then died of it (exit status -2, -SIGINT)."""
    for _ in range(3):
        process, _ = start_server(model_path)
        process.send_signal(signal.SIGINT)
        time.sleep(gap)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=30)
        assert process.returncode == 0 and "Stopped." in output and "Traceback" not in errors, (process.returncode, errors)


def test_serve_help_names_its_flags():
    result = run_nn("serve", "--help", timeout=60)
    assert result.returncode == 0
    for flag in ("--model", "--port", "--host", "--open"):
        assert flag in result.stdout


def test_latency_benchmark_runs_with_tiny_sizes(model_path):
    import sys
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "benchmarks" / "serve_latency.py"), "--model",
                             str(model_path), "--repeats", "3", "--warmup", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "png (" in result.stdout and "json (" in result.stdout and "predict.to_mnist" in result.stdout


def test_load_benchmark_runs_with_tiny_sizes(model_path):
    import sys
    result = subprocess.run([sys.executable, str(PROJECT_DIR / "benchmarks" / "serve_load.py"), "--model",
                             str(model_path), "--clients", "1", "3", "--seconds", "1", "--warmup", "0.5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["1"], ["3"])]
    assert [row[0] for row in rows] == ["1", "3"], result.stdout
    assert all(row[6:8] == ["0", "0"] for row in rows), result.stdout  # no errors, no wrong readings


def test_a_refused_body_is_not_read_as_the_next_request(server):
    """A 405 answers before the body is read; on a keep-alive connection that body must not be
    taken for the next request (the server closes the connection instead)."""
    connection = http.client.HTTPConnection(*server, timeout=30)
    connection.request("POST", "/", body=b'{"pixels": []}', headers={"Content-Type": "application/json"})
    first = connection.getresponse()
    first.read()
    connection.request("GET", "/api/model")  # reconnects if the server closed, as it should
    second = connection.getresponse()
    answer = json.loads(second.read())
    connection.close()
    assert first.status == 405
    assert second.status == 200, answer


# ------------------------------------------------------------------ request parsing (issue 11 review)

def raw_exchange(server, request, half_close=True, timeout=30):
    """Send raw bytes on a fresh connection (closing our sending side when half_close),
    and return everything the server answers until it closes the connection."""
    with socket.create_connection(server, timeout=timeout) as connection:
        connection.sendall(request)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def parse_answer(answer):
    """(status, {header name lowercased: value}, body bytes) of one raw HTTP answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def host(server):
    return f"{server[0]}:{server[1]}"


def assert_one_line_refusal(answer, status, reason):
    answer_status, headers, body = parse_answer(answer)
    assert answer_status == status, answer[:300]
    error = json.loads(body)["error"]
    assert "\n" not in error and "Traceback" not in error and reason in error, error
    return headers


def test_a_body_shorter_than_its_length_is_never_read_as_a_drawing(server):
    """The client closes its side before the 100 bytes it announced: the request is never
    answered (nor read with 8 bytes), and the connection is closed."""
    request = (f"POST /api/predict HTTP/1.1\r\nHost: {host(server)}\r\nContent-Type: image/png\r\n"
               f"Content-Length: 100\r\n\r\n").encode() + b"\x89PNG\r\n\x1a\n"
    assert raw_exchange(server, request) == b""
    assert still_serving(server)


@pytest.mark.parametrize("length", ["\u00b2", "\uff11\uff12", " 12x", "-1", "+12", "1_0"],
                         ids=["superscript two", "fullwidth digits", "trailing letter", "negative", "plus sign",
                              "underscore"])
def test_a_content_length_that_is_not_ascii_digits_gets_400(server, length):
    request = (f"POST /api/predict HTTP/1.1\r\nHost: {host(server)}\r\nContent-Type: image/png\r\n"
               f"Content-Length: {length}\r\n\r\n").encode() + b"x" * 12
    headers = assert_one_line_refusal(raw_exchange(server, request), 400, "Content-Length")
    assert headers.get("connection") == "close"
    assert still_serving(server)


def test_two_content_lengths_get_400(server):
    body = as_png(drawing())
    request = (f"POST /api/predict HTTP/1.1\r\nHost: {host(server)}\r\nContent-Type: image/png\r\n"
               f"Content-Length: {len(body)}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    assert_one_line_refusal(raw_exchange(server, request), 400, "Content-Length")
    assert still_serving(server)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "image/gif", ""])
def test_a_body_of_another_type_gets_415(server, content_type):
    """Only PNG, JPEG and JSON are read; this also refuses the text/plain form posts that
    another web site could make a browser send here."""
    status, answer, _ = ask(server, "POST", "/api/predict", as_png(drawing()), content_type)
    assert status == 415 and "\n" not in answer["error"] and "image/png" in answer["error"], answer
    assert still_serving(server)


def test_head_of_the_page_and_its_files_is_get_without_a_body(server):
    for path in ("/", "/app.js", "/style.css"):
        connection = http.client.HTTPConnection(*server, timeout=30)
        connection.request("GET", path)
        get = connection.getresponse()
        full = get.read()
        connection.request("HEAD", path)
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        assert head.getheader("Content-Type") == get.getheader("Content-Type")
        assert int(head.getheader("Content-Length")) == len(full)
        connection.close()
    assert still_serving(server)


@pytest.mark.parametrize("method, path, allow", [("HEAD", "/api/predict", "POST"), ("GET", "/api/predict", "POST"),
                                                 ("POST", "/", "GET, HEAD"), ("PUT", "/api/model", "GET, HEAD"),
                                                 ("OPTIONS", "/app.js", "GET, HEAD")])
def test_every_405_names_the_allowed_methods(server, method, path, allow):
    connection = http.client.HTTPConnection(*server, timeout=30)
    connection.request(method, path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 405 and response.getheader("Allow") == allow
    if method == "HEAD":
        assert body == b"" and int(response.getheader("Content-Length")) > 0  # the length a GET body would have
    else:
        assert "use " in json.loads(body)["error"]
    assert still_serving(server)


@pytest.mark.parametrize("host_header", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                         "127.0.0.1:1", "localhost:{port}@evil.example", "", "[::1]x:{port}",
                                         "localhost:{port}:{port}", "[::2]:{port}"])
def test_another_host_name_gets_403_against_dns_rebinding(server, host_header):
    request = (f"GET /api/model HTTP/1.1\r\nHost: {host_header.format(port=server[1])}\r\n"
               "Connection: close\r\n\r\n").encode()
    assert_one_line_refusal(raw_exchange(server, request, half_close=False), 403, "Host")
    assert still_serving(server)


@pytest.mark.parametrize("host_header", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "localhost",
                                         "127.0.0.1", "[::1]:{port}", "[::1]"])
def test_local_host_names_are_served(server, host_header):
    request = (f"GET /api/model HTTP/1.1\r\nHost: {host_header.format(port=server[1])}\r\n"
               "Connection: close\r\n\r\n").encode()
    assert parse_answer(raw_exchange(server, request, half_close=False))[0] == 200


# ------------------------------------------------------------------ an in-process server, for its internals

def in_process_server(model_path, tmp_path, **limits):
    """A serve.Server running in this process, serving a copy of web/ in tmp_path, with
    `limits` (connection_limit, channel_timeout_s); stopped by the caller."""
    import shutil
    from app.page import server as serve
    shutil.copytree(PROJECT_DIR / "app" / "page" / "web", tmp_path / "web")
    running = serve.Server(("127.0.0.1", 0), serve.load_served_model(model_path),
                           files=serve.static_files(tmp_path / "web"), **limits)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    running.web_folder = tmp_path / "web"
    return running


@pytest.fixture
def local_server(model_path, tmp_path):
    """A server running in this process with a short timeout: a connection silent for 1 s
    (waitress counts whole seconds) is closed."""
    running = in_process_server(model_path, tmp_path, channel_timeout_s=1)
    yield running
    running.shutdown()
    running.server_close()


def test_shutdown_and_server_close_end_in_either_order(model_path, tmp_path):
    """shutdown() then server_close() (the fixtures' order), server_close() then shutdown()
    while the loop runs, and both on a server whose loop never ran: each returns at once and
    the loop, if any, has ended."""
    from app.page import server as serve
    for order, started in ((("shutdown", "server_close"), True), (("server_close", "shutdown"), True),
                           (("server_close", "shutdown"), False)):
        running = serve.Server(("127.0.0.1", 0), serve.load_served_model(model_path))
        loop = threading.Thread(target=running.serve_forever, daemon=True)
        if started:
            loop.start()
            running.running.wait(5)
        for name in order:
            call = threading.Thread(target=getattr(running, name), daemon=True)
            call.start()
            call.join(5)
            assert not call.is_alive(), (order, started, name)
        if started:
            loop.join(5)
            assert not loop.is_alive(), order


def address(running):
    return running.server_address[:2]


def test_a_sender_that_stalls_half_way_is_dropped_while_others_are_served(local_server, capfd):
    """Slow senders time out: a body that stops arriving holds its connection only until the
    channel timeout (1 s here), and every other client is answered meanwhile."""
    request = (f"POST /api/predict HTTP/1.1\r\nHost: {host(address(local_server))}\r\nContent-Type: image/png\r\n"
               f"Content-Length: 1000\r\n\r\n").encode() + as_png(drawing())[:500]
    with socket.create_connection(address(local_server), timeout=30) as stalled:
        stalled.sendall(request)  # half the body, then nothing
        started = time.monotonic()
        assert still_serving(address(local_server))
        answered = time.monotonic() - started
        assert stalled.recv(65536) == b""  # closed, without an answer: its client is gone or stuck
        waited = time.monotonic() - started
    assert answered < waited, (answered, waited)  # the other client was answered while the stalled one waited
    assert 0.9 < waited < 5, waited  # the timeout (1 s) and the check that runs each second
    assert still_serving(address(local_server))
    assert capfd.readouterr().err == ""  # a routine event in a class: nothing on the console


def test_bodies_over_the_limit_trickled_in_cannot_hold_every_thread(model_path, tmp_path):
    """A body over the limit is answered 413, then read and dropped for a while so that its
    client reads the answer; a client trickling such a body a byte at a time held a thread for
    as long as it went on, and nine of them left the page answering nothing. The drain has one
    deadline now: a request from someone else is answered while they trickle."""
    from app.page import server as serve
    running = in_process_server(model_path, tmp_path, channel_timeout_s=30)
    stop = threading.Event()
    senders = []
    try:
        request = (f"POST /api/predict HTTP/1.1\r\nHost: {host(address(running))}\r\nContent-Type: image/png\r\n"
                   f"Content-Length: {3 * serve.MAX_BODY_BYTES}\r\n\r\n").encode()
        for _ in range(serve.THREADS + 1):
            sender = socket.create_connection(address(running), timeout=30)
            sender.sendall(request + b"x")
            senders.append(sender)

        def trickle():
            while not stop.wait(0.3):
                for sender in senders:
                    with contextlib.suppress(OSError):
                        sender.send(b"x")

        threading.Thread(target=trickle, daemon=True).start()
        time.sleep(1)
        started = time.monotonic()
        status, facts, _ = ask(address(running), "GET", "/api/model")
        assert status == 200 and facts["steps_done"] == 1234
        assert time.monotonic() - started < 15  # the drains end within 2 s, whatever the trickle does
    finally:
        stop.set()
        for sender in senders:
            sender.close()
        running.shutdown()
        running.server_close()


def test_connections_over_the_cap_wait_until_one_closes(model_path, tmp_path, capfd):
    """At most connection_limit connections are open at once (the listening socket and
    waitress's wake-up pipe count among them); a further one waits unanswered in the
    listen queue, and is served as soon as another closes. None is refused."""
    running = in_process_server(model_path, tmp_path, connection_limit=4, channel_timeout_s=30)
    try:
        held = [http.client.HTTPConnection(*address(running), timeout=30) for _ in range(2)]
        for connection in held:  # two keep-alive connections: the cap of 4 is reached
            connection.request("GET", "/api/model")
            assert connection.getresponse().read()
        extra = socket.create_connection(address(running), timeout=1)  # the kernel takes it into the queue
        extra.sendall(f"GET /api/model HTTP/1.1\r\nHost: {host(address(running))}\r\n\r\n".encode())
        with pytest.raises(TimeoutError):
            extra.recv(65536)  # not accepted: no answer for 1 s
        held[0].close()
        extra.settimeout(30)
        assert extra.recv(65536).startswith(b"HTTP/1.1 200 OK")  # accepted and answered once one closed
        extra.close()
        held[1].request("GET", "/api/model")  # the connections kept open are served all along
        assert held[1].getresponse().status == 200
        held[1].close()
        lines = capfd.readouterr().err.splitlines()  # one line each time the cap is reached
        assert lines and set(lines) == {"nn.py serve: total open connections reached the connection limit, "
                                        "no longer accepting new connections"}, lines
    finally:
        running.shutdown()
        running.server_close()


def test_idle_keep_alive_connections_close_quietly(local_server, capfd):
    """A browser keeps connections open; the server closing one after its idle time is no
    error and prints nothing; nor does closing one whose headers never ended."""
    idle = http.client.HTTPConnection(*address(local_server), timeout=30)
    idle.request("GET", "/api/model")
    assert idle.getresponse().read()  # the whole answer; the connection stays open
    started = time.monotonic()
    assert idle.sock.recv(65536) == b""  # then nothing more is asked, and the server closes it
    assert 0.9 < time.monotonic() - started < 5  # the timeout (1 s) and the check that runs each second
    idle.close()
    with socket.create_connection(address(local_server), timeout=30) as half:
        half.sendall(b"GET /api/model HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the headers never end
        assert half.recv(65536) == b""  # the server gives up and closes
    assert capfd.readouterr().err == ""


def test_a_web_file_deleted_while_serving_gets_404(local_server):
    (local_server.web_folder / "style.css").unlink()
    status, answer, _ = ask(address(local_server), "GET", "/style.css")
    assert status == 404 and "style.css" in answer["error"] and "\n" not in answer["error"]
    assert still_serving(address(local_server))


def test_a_full_server_answers_503_with_retry_after(local_server):
    """Every decoding slot taken (the test holds them all): the request waits briefly, then
    gets 503 and Retry-After instead of queueing without end."""
    from app.page import server as serve
    slots = local_server.decode_slots
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    assert taken == serve.DECODE_SLOTS
    local_server.decode_wait_s = 0.2
    try:
        connection = http.client.HTTPConnection(*address(local_server), timeout=30)
        connection.request("POST", "/api/predict", as_png(drawing()), {"Content-Type": "image/png"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        assert response.status == 503 and "busy" in answer["error"] and response.getheader("Retry-After") == "1"
    finally:
        for _ in range(taken):
            slots.release()
    status, answer, _ = ask(address(local_server), "POST", "/api/predict", as_png(drawing()), "image/png")
    assert status == 200 and answer["digit"] is not None


def test_a_replaced_model_file_is_read_on_the_next_request(tmp_path, model_path):
    """A new model saved over the served one is used from the next request on, with one line
    on the console; a broken file keeps the model in use, and the page is told so."""
    import shutil
    import time
    served_path = tmp_path / "model_mnist.npz"
    shutil.copyfile(model_path, served_path)
    shutil.copyfile(model_path.parent / "stats.json", tmp_path / "stats.json")
    process, url = start_server(served_path)
    served = (urlsplit(url).hostname, urlsplit(url).port)
    try:
        facts = ask(served, "GET", "/api/model")[1]
        assert facts["steps_done"] == 1234 and facts["test_accuracy"] == 0.9765
        model_file.save(MLP([784, 30, 10], rng=np.random.default_rng(1)), served_path, steps_done=77)
        facts = ask(served, "GET", "/api/model")[1]
        assert facts["layer_sizes"] == [784, 30, 10] and facts["steps_done"] == 77
        assert facts["model_warning"] is None and facts["test_accuracy"] is None  # stats.json is not for it
        status, answer, _ = ask(served, "POST", "/api/predict", as_json(drawing()))
        assert status == 200 and [len(a) for a in answer["activations"]] == [30]
        line = process.stdout.readline()
        assert line.startswith(f"Reloaded the changed model file. Model: {served_path} (") and "77 steps" in line, line
        time.sleep(0.01)
        broken = tmp_path / "broken.npz"
        broken.write_bytes(b"PK\x03\x04 not a model")
        broken.replace(served_path)
        facts = ask(served, "GET", "/api/model")[1]
        assert facts["steps_done"] == 77 and "still serving the previous model" in facts["model_warning"]
        status, answer, _ = ask(served, "POST", "/api/predict", as_json(drawing()))
        assert status == 200 and "still serving the previous model" in answer["model_warning"]
        line = process.stdout.readline()
        assert line.startswith(f"Could not reload {served_path}") and "\n" == line[-1], line
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "Traceback" not in process.stderr.read()


def test_serve_names_its_model_first(model_path):
    """The same one-line account as predict's, and the steps from the model file."""
    process, url = start_server(model_path)
    process.terminate()
    process.communicate(timeout=10)
    assert len(process.startup_lines) == 2, process.startup_lines
    first = process.startup_lines[0]
    assert first.startswith(f"Model: {model_path} (") and first.endswith(", 1,234 steps, test accuracy 97.65 %)\n")


# ------------------------------------------------------------------ requests from other sites (issue 14, item 1)

@pytest.mark.parametrize("path", ["/api/train", "/api/train/stop", "/api/train/save", "/api/damage", "/api/explain"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_post_that_is_not_json_gets_415_so_other_sites_cannot_send_one(server, path, content_type):
    # a page elsewhere may send these types without asking the browser first (CORS simple requests)
    status, answer, _ = ask(server, "POST", path, b'{"steps": 50}', content_type)
    assert status == 415 and "application/json" in answer["error"] and "\n" not in answer["error"]
    assert ask(server, "GET", "/api/train")[1]["status"] == "idle"  # no run started


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "null"])
def test_a_post_from_another_origin_gets_403(server, origin):
    status, answer, _ = ask(server, "POST", "/api/train", b'{"steps": 50}', headers={"Origin": origin})
    assert status == 403 and answer["error"].startswith(f"Origin {origin!r}") and "\n" not in answer["error"]
    assert ask(server, "GET", "/api/train")[1]["status"] == "idle"


def test_a_post_from_the_servers_own_page_is_answered(server):
    host = f"{server[0]}:{server[1]}"
    body = json.dumps({"input": [[0] * 28] * 28, "digit": 3})
    status, answer, _ = ask(server, "POST", "/api/explain", body, headers={"Origin": f"http://{host}"})
    assert status == 200 and answer["digit"] == 3


# ------------------------------------------------------------------ HEAD, bodies of GET, huge numbers (items 6, 7, 11)

@pytest.mark.parametrize("path", ["/api/train", "/api/damage"])
def test_head_of_an_api_route_is_its_get_without_a_body(server, path):
    connection = http.client.HTTPConnection(*server, timeout=30)
    connection.request("HEAD", path)
    response = connection.getresponse()
    assert response.status == 200 and response.read() == b"" and int(response.getheader("Content-Length")) > 0
    connection.close()


def test_a_get_with_a_body_is_refused_and_its_body_never_read_as_a_request(server):
    smuggled = b'POST /api/train HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' \
               b'Content-Length: 13\r\n\r\n{"steps": 50}'
    with socket.create_connection(server, timeout=30) as connection:
        connection.sendall(f"GET /api/model HTTP/1.1\r\nHost: {server[0]}:{server[1]}\r\n"
                           f"Content-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled
                           + f"GET /api/train HTTP/1.1\r\nHost: {host(server)}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):  # the server closes the connection after the second answer
            answer += chunk
    # two answers: the GET with a body, and the GET after it; the body in between was no request
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 2, answer
    assert b"GET with a body: send none" in answer and b'"status":"idle"' in answer
    assert ask(server, "GET", "/api/train")[1]["status"] == "idle"  # the body started no run


HUGE = "1" + "0" * 400  # a whole number that JSON allows and no float holds


@pytest.mark.parametrize("path, body, reason", [
    ("/api/predict", '{"width": 2, "height": 2, "pixels": [0, %s, 0, 0]}' % HUGE, "pixels"),
    ("/api/explain", '{"input": [%s], "digit": 3}' % ", ".join([HUGE] + ["0"] * 783), "input"),
    ("/api/damage", '{"noise": %s}' % HUGE, "noise")])
def test_a_number_too_large_for_a_float_gets_400_not_500(server, path, body, reason):
    status, answer, _ = ask(server, "POST", path, body.encode())
    assert status == 400 and answer["error"].startswith(reason) and len(answer["error"]) < 200, answer
    assert still_serving(server)


# ------------------------------------------------------------------ a model whose sums overflow

def overflowing_model():
    """A 784-150-150-10 model that reads a blank input and a page full of ink (serve.check_outputs)
    but overflows float32 on most drawings. First-layer units 0 and 1 weigh the left half of the
    image +2^66 and the right half -2^66 (unit 1 the other way round): powers of 2, so that a
    full page sums to exactly 0 in any order, while a drawing with more ink on one side gives
    one of them about 2^66 times the difference; the second layer weighs both by 2^66 more,
    2^132 = 5e39, past float32's largest (3.4e38)."""
    model = MLP([784, 150, 150, 10], rng=np.random.default_rng(0))
    huge = np.float32(2.0 ** 66)
    left_half = np.arange(784) % 28 < 14
    model.layers[0].W[:, 0] = np.where(left_half, huge, -huge)
    model.layers[0].W[:, 1] = -model.layers[0].W[:, 0]
    model.layers[1].W[:2, :] = huge
    return model


def test_a_model_whose_sums_overflow_is_refused_at_start_as_predict_refuses_it(tmp_path):
    """Weights of 1e30 pass model_file.load; serve started and answered every drawing with status 200
    and NaN probabilities, which are not JSON (the page's response.json() fails)."""
    model = MLP([784, 150, 150, 10], rng=np.random.default_rng(0))
    for layer in model.layers:
        layer.W[...] = np.abs(layer.W) * np.float32(1e30)
    model_file.save(model, tmp_path / "huge.npz", steps_done=5)
    result = run_nn("serve", "--model", tmp_path / "huge.npz", "--port", 0, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    line = one_error_line(result)
    assert line.startswith(f"nn.py serve: error: {tmp_path / 'huge.npz'}: {predict.OUTPUTS_OVERFLOW}"), line


def test_a_drawing_that_overflows_the_model_gets_503_and_the_server_goes_on(tmp_path):
    """A model that passes the start's check can still overflow on a drawing (a training run's
    weights can too: test_training_session): one line of JSON with 503, not 200 with NaN."""
    model_file.save(overflowing_model(), tmp_path / "model_mnist.npz", steps_done=5)
    process, url = start_server(tmp_path / "model_mnist.npz")
    served = (urlsplit(url).hostname, urlsplit(url).port)
    try:
        status, answer, kind = ask(served, "POST", "/api/predict", as_json(drawing()))
        assert (status, kind) == (503, "application/json"), (status, answer)
        assert answer == {"error": f"the model in use: {predict.OUTPUTS_OVERFLOW}"}
        image = predict.to_mnist(drawing())
        status, answer, _ = ask(served, "POST", "/api/explain", json.dumps({"input": image.tolist(), "digit": 7}))
        assert status == 503 and answer == {"error": f"the model in use: {predict.OUTPUTS_OVERFLOW}"}
        status, answer, _ = ask(served, "POST", "/api/predict", as_json(np.zeros((28, 28))))
        assert status == 200 and answer["digit"] is None  # still serving: a blank page asks for a digit
        assert ask(served, "GET", "/api/model")[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.stderr.read() == ""  # no RuntimeWarning, no traceback


# ------------------------------------------------------------------ is it one digit, facts that follow, loopback

def test_a_loopback_address_is_this_computer_only_and_its_url_answers(model_path):
    """--host 127.0.0.2 warned that the page was open to the network, then answered 403 to the
    URL it printed (its Host was not localhost, 127.0.0.1 or [::1])."""
    import urllib.request
    process, url = start_server(model_path, "--host", "127.0.0.2")
    try:
        with urllib.request.urlopen(url + "api/model", timeout=30) as response:
            assert response.status == 200 and json.loads(response.read())["steps_done"] == 1234
        status, _, _ = ask(("127.0.0.2", urlsplit(url).port), "GET", "/api/model", headers={"Host": "evil.example"})
        assert status == 403  # other names are still refused (DNS rebinding)
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    assert "open to others" not in errors


def test_the_facts_follow_a_stats_json_written_after_the_model(tmp_path, model_path):
    """A run writes its model, then its stats.json: a server that read the model in between
    kept 'test_accuracy: null' until the model file changed again."""
    (tmp_path / "model_mnist.npz").write_bytes(model_path.read_bytes())
    process, url = start_server(tmp_path / "model_mnist.npz")
    server = ("127.0.0.1", urlsplit(url).port)
    try:
        assert ask(server, "GET", "/api/model")[1]["test_accuracy"] is None
        (tmp_path / "stats.json").write_text(json.dumps({"test_accuracy": 0.91, "weights_from_step": 1234,
                                                        "calibration": {"expected_calibration_error": 0.01}}))
        facts = ask(server, "GET", "/api/model")[1]
        assert facts["test_accuracy"] == 0.91 and facts["calibration"]["expected_calibration_error"] == 0.01
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_is_it_a_digit_is_checked_whatever_weights_are_in_use(tmp_path):
    """The check asks the drawing's pixels (app/ood.py), not the weights: with a damaged copy or
    a training run's weights in use (served.model replaced, as explore.py and a page run do),
    noise is still said to be no digit, and a test digit is not."""
    from app import data, ood
    from app.page import server as serve
    images, labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    model = MLP([784, 16, 10], rng=np.random.default_rng(0))
    model_file.save(model, tmp_path / "model_mnist.npz", ood_members=ood.fitted_members(model, images[:3000], labels[:3000]))
    served = serve.load_served_model(tmp_path / "model_mnist.npz")
    served.model = MLP([784, 16, 10], rng=np.random.default_rng(1))  # other weights in use
    noise = served.read(np.random.default_rng(0).random((280, 280)))
    assert noise["digit_statistics"] and noise["not_one_digit"] == "unlike the digits it learned from"
    digit = served.read(images[0].reshape(28, 28) / 255)
    assert digit["digit_statistics"] and digit["not_one_digit"] is None


def test_noise_and_two_digits_are_said_not_to_be_one_digit(tmp_path):
    """Noise read '8, >99.9 % sure' and '42' read '4': the answer now says why it is no one digit."""
    from app import data, ood
    images, labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    inputs = data.to_inputs(images[:3000])
    model = MLP([784, 150, 150, 10], rng=np.random.default_rng(0))
    model_file.save(model, tmp_path / "model_mnist.npz", ood_members=ood.fitted_members(model, inputs, labels[:3000]))
    process, url = start_server(tmp_path / "model_mnist.npz")
    server = ("127.0.0.1", urlsplit(url).port)
    try:
        noise = np.random.default_rng(0).integers(0, 256, (280, 280)) / 255
        _, answer, _ = ask(server, "POST", "/api/predict", as_json(noise))
        assert answer["digit_statistics"] and answer["not_one_digit"] is not None and answer["digit"] is not None
        two = np.hstack([drawing(140), np.zeros((140, 20)), drawing(140)])
        _, answer, _ = ask(server, "POST", "/api/predict", as_json(two))
        assert answer["not_one_digit"] == "2 separate marks: the network reads one digit at a time"
        _, answer, _ = ask(server, "POST", "/api/predict", as_json(images[0].reshape(28, 28) / 255))
        assert answer["not_one_digit"] is None and answer["digit_statistics"]
        assert ask(server, "GET", "/api/model")[1]["digit_statistics"] is True
    finally:
        process.terminate()
        process.wait(timeout=10)


# ------------------------------------------------------------------ GETs from other sites, the web stack apart

@pytest.mark.parametrize("path", ["/api/damage", "/api/model", "/api/train"])
@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "http://evil.example"}], ids=["cross-site", "same-site", "origin"])
def test_a_get_from_another_sites_page_gets_403_before_any_work(server, path, headers):
    """A browser names the sending page's site in Sec-Fetch-Site on every request (an <img>,
    a no-cors fetch), and the page in Origin on cross-site fetches: GET /api/damage, which
    measures the test set, is refused to other sites' pages, as every API route is."""
    status, answer, _ = ask(server, "GET", path, headers=headers)
    assert status == 403 and "only this server's own page may send requests here" in answer["error"]
    assert "\n" not in answer["error"]


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}],
                         ids=["the page itself", "a URL typed in", "curl"])
def test_gets_from_the_page_itself_or_no_page_are_answered(server, headers):
    own = {"Origin": f"http://{host(server)}"} if headers.get("Sec-Fetch-Site") == "same-origin" else {}
    assert ask(server, "GET", "/api/model", headers={**headers, **own})[0] == 200
    assert ask(server, "GET", "/", headers={"Sec-Fetch-Site": "cross-site"})[0] == 200  # a link to the page works


def test_training_needs_no_web_server(tmp_path):
    """`python nn.py` (training) runs with waitress unimportable: the web stack is the page's alone."""
    blocker = tmp_path / "blocked" / "waitress"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('waitress is not for training')\n")
    result = run_nn("--steps", 1, "--eval-every", 0, "--out", tmp_path / "run", "--quiet",
                    env={"PYTHONPATH": str(tmp_path / "blocked")}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "model_mnist.npz").exists()
