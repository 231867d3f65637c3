"""The drawing page in a real browser: headless Chromium, driven by selenium, draws the ten
digits with mouse strokes on #canvas and reads #prediction.

Needs Debian's chromium and chromium-driver and selenium from PyPI (requirements-dev.txt).
In CI (the CI environment variable set) a missing browser fails the test; elsewhere it skips.
"""

import math
import os
import shutil
import time

import pytest

from conftest import run_nn, start_server
from app import model_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def arc(centre_x, centre_y, radius_x, radius_y, start, end, count=24):
    """count + 1 points on an ellipse from angle start to end in degrees (0 is right, 90 down)."""
    return [(centre_x + radius_x * math.cos(math.radians(start + (end - start) * i / count)),
             centre_y + radius_y * math.sin(math.radians(start + (end - start) * i / count)))
            for i in range(count + 1)]


# Each digit as pen strokes (lists of points) in a unit box, y downwards, written the
# way a person writes them.
DIGIT_STROKES = {
    0: [arc(0.5, 0.5, 0.3, 0.45, -90, 270)],
    1: [[(0.4, 0.17), (0.55, 0.05), (0.55, 0.95)]],
    2: [arc(0.5, 0.3, 0.3, 0.25, 180, 360, 16) + [(0.75, 0.45), (0.2, 0.95), (0.85, 0.95)]],
    3: [arc(0.48, 0.27, 0.28, 0.22, 200, 450, 20) + arc(0.48, 0.72, 0.3, 0.23, -90, 160, 20)],
    4: [[(0.6, 0.05), (0.15, 0.65), (0.85, 0.65)], [(0.62, 0.3), (0.62, 0.95)]],
    5: [[(0.8, 0.05), (0.3, 0.05), (0.25, 0.45)] + arc(0.5, 0.68, 0.32, 0.27, -120, 150, 20)],
    6: [[(0.7, 0.05), (0.45, 0.25)] + arc(0.5, 0.7, 0.28, 0.25, 200, 560, 28)],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
    8: [arc(0.5, 0.27, 0.24, 0.22, 90, 450, 24), arc(0.5, 0.72, 0.3, 0.23, -90, 270, 24)],
    9: [arc(0.48, 0.3, 0.27, 0.24, 0, 360, 24) + [(0.75, 0.3), (0.7, 0.95)]],
}


@pytest.fixture(scope="session")
def default_model(tmp_path_factory):
    """A model trained by the default configuration (`python nn.py`), once per session."""
    folder = tmp_path_factory.mktemp("default_model")
    result = run_nn("--out", folder, "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "model_mnist.npz"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver; skipped locally when they are missing, never in CI."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {message}")
        pytest.skip(message)
    if os.environ.get("CI"):
        from selenium import webdriver  # in CI a missing selenium is a failure too
    else:
        webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, default_model):
    """The browser on the served page of the default model."""
    process, url = start_server(default_model)
    browser.get(url)
    yield browser
    process.terminate()
    process.wait(timeout=10)


def draw(driver, strokes, size=180):
    """Draw strokes (unit-box points) with the mouse on #canvas, in a size x size box at its centre."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By
    canvas = driver.find_element(By.ID, "canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)  # after using the lower cards
    actions = ActionBuilder(driver, duration=0)
    for stroke in strokes:
        points = [(round((x - 0.5) * size), round((y - 0.5) * size)) for x, y in stroke]  # offsets from the centre
        actions.pointer_action.move_to(canvas, *points[0]).pointer_down()
        for point in points[1:]:
            actions.pointer_action.move_to(canvas, *point)
        actions.pointer_action.pointer_up()
    actions.perform()


def reading(driver):
    """The text of #prediction once the page has no reading pending."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.busy") == "0")
    return driver.find_element(By.ID, "prediction").text


def test_the_model_card_wraps_a_long_path_only_after_a_slash(page, default_model):
    """The card broke the file's path mid-name ('model_mni st.npz'): each slash is now followed
    by a <wbr>, the only places the line may wrap, and the path reads (and copies) whole."""
    from selenium.webdriver.support.wait import WebDriverWait
    script = ("const d = [...document.querySelectorAll('#facts dt')].find(t => t.textContent === 'file');"
              "return d && [d.nextElementSibling.textContent, d.nextElementSibling.querySelectorAll('wbr').length];")
    text, breaks = WebDriverWait(page, 20).until(lambda driver: driver.execute_script(script))
    assert text == str(default_model) and breaks == str(default_model).count(os.sep)


def test_the_page_reads_digits_drawn_with_the_mouse(page):
    from selenium.webdriver.common.by import By
    assert reading(page) == ""  # nothing drawn yet
    read = {}
    for digit, strokes in DIGIT_STROKES.items():
        page.find_element(By.ID, "clear").click()
        assert reading(page) == ""
        draw(page, strokes)
        read[digit] = reading(page)
    right = sum(read[digit] == str(digit) for digit in read)
    assert right >= 9, f"read {read}"


def test_clear_empties_the_prediction(page):
    from selenium.webdriver.common.by import By
    draw(page, DIGIT_STROKES[7])
    assert reading(page) == "7"
    page.find_element(By.ID, "clear").click()
    assert reading(page) == ""


def test_an_answer_on_its_way_does_not_come_back_after_clear(page):
    """Clear pressed while a drawing's request is on its way (fetch is wrapped to press it just
    before sending): the answer is for a drawing that no longer exists, and is not shown."""
    draw(page, DIGIT_STROKES[7])
    assert reading(page) == "7"
    page.execute_script("""
        const realFetch = window.fetch;
        window.fetch = (...args) => {
            window.fetch = realFetch;
            document.getElementById("clear").click();
            return realFetch(...args);
        };
        const canvas = document.getElementById("canvas");
        const box = canvas.getBoundingClientRect();
        for (const type of ["pointerdown", "pointerup"]) {  // one more dot: one more request
            canvas.dispatchEvent(new PointerEvent(type, {pointerId: 1, isPrimary: true, pointerType: "mouse",
                bubbles: true, clientX: box.left + 140, clientY: box.top + 140}));
        }
    """)
    assert reading(page) == ""
    assert page.execute_script("return window.fetch.name") == "fetch"  # the wrapper ran and was removed


def test_a_chosen_image_file_is_read(page, tmp_path):
    """The second way in: a picture of a dark 4 on light paper, chosen with the file input."""
    from PIL import Image, ImageDraw
    from selenium.webdriver.common.by import By
    picture = Image.new("L", (300, 400), 235)
    pen = ImageDraw.Draw(picture)
    for stroke in DIGIT_STROKES[4]:
        pen.line([(50 + 200 * x, 60 + 280 * y) for x, y in stroke], fill=30, width=22, joint="curve")
    picture.save(tmp_path / "four.png")
    page.find_element(By.ID, "clear").click()
    page.find_element(By.ID, "file").send_keys(str(tmp_path / "four.png"))
    from selenium.webdriver.support.wait import WebDriverWait
    WebDriverWait(page, 20).until(lambda driver: driver.find_element(By.ID, "prediction").text != "")
    assert reading(page) == "4"


def hint_shown(driver):
    return driver.execute_script("return getComputedStyle(document.querySelector('.drop-hint')).display") != "none"


def ink(driver):
    """How many pixels of the page's canvas are not black."""
    return driver.execute_script("""
        const canvas = document.getElementById("canvas");
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < pixels.length; i += 4) if (pixels[i] > 0) count++;
        return count;""")


def test_the_drop_hint_shows_on_an_empty_canvas_only(page, tmp_path):
    """"drop an image here" is shown until something is drawn or an image is shown, and again
    after Clear; a file that is no image leaves the canvas empty and the hint shown."""
    import base64
    import io
    from PIL import Image
    from selenium.webdriver.common.by import By
    page.find_element(By.ID, "clear").click()
    assert hint_shown(page)
    draw(page, DIGIT_STROKES[7])
    assert reading(page) == "7" and not hint_shown(page)
    page.find_element(By.ID, "clear").click()
    assert hint_shown(page)
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    page.find_element(By.ID, "file").send_keys(str(tmp_path / "blank.png"))
    from selenium.webdriver.support.wait import WebDriverWait
    WebDriverWait(page, 20).until(lambda driver: not hint_shown(driver))
    page.find_element(By.ID, "clear").click()
    assert hint_shown(page)
    (tmp_path / "notes.png").write_text("not an image")
    page.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.png"))
    WebDriverWait(page, 20).until(lambda driver: "notes.png" in driver.find_element(By.ID, "message").text)
    assert hint_shown(page) and ink(page) == 0
    # A photo dropped and Clear pressed before it is decoded: the canvas stays empty.
    photo = io.BytesIO()
    Image.new("L", (40, 40), 255).save(photo, format="PNG")  # white: ink wherever it is drawn
    page.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "white.png", {type: "image/png"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer}));
        document.getElementById("clear").click();
    """, base64.b64encode(photo.getvalue()).decode())
    wait_idle(page)
    page.execute_script("return new Promise((done) => setTimeout(done, 300))")  # time for the photo's decoding
    assert hint_shown(page) and ink(page) == 0


def test_answers_are_shown_while_the_pen_still_moves(page):
    """The drawing changes while its request is on its way (fetch is wrapped to add a dot
    just after sending it): that answer is still the newest, and is shown at once, not
    dropped because the pen moved on. The next request is held back until the test
    releases it; then the final drawing's answer is shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    page.find_element(By.ID, "clear").click()
    assert reading(page) == ""
    page.execute_script("""
        const realFetch = window.fetch;
        const canvas = document.getElementById("canvas");
        const box = canvas.getBoundingClientRect();
        const dot = (x, y) => {  // a pen touch on the canvas: one more drawing, one more request
            for (const type of ["pointerdown", "pointerup"]) {
                canvas.dispatchEvent(new PointerEvent(type, {pointerId: 1, isPrimary: true, pointerType: "mouse",
                    bubbles: true, clientX: box.left + x, clientY: box.top + y}));
            }
        };
        const pen = canvas.getContext("2d");  // a 7 drawn straight onto the canvas: no request yet
        pen.strokeStyle = "#fff"; pen.lineWidth = 20; pen.lineCap = "round"; pen.lineJoin = "round";
        pen.beginPath(); pen.moveTo(60, 40); pen.lineTo(220, 40); pen.lineTo(120, 250); pen.stroke();
        let calls = 0;
        window.fetch = (...args) => {
            if (!String(args[0]).includes("api/predict")) return realFetch(...args);  // explore.js's own requests
            calls += 1;
            if (calls === 1) {
                const answer = realFetch(...args);
                dot(170, 145);  // on the 7's stroke: the drawing changes while its answer is on its way
                return answer;
            }
            window.fetch = realFetch;
            return new Promise((resolve) => { window.releaseHeld = () => resolve(realFetch(...args)); });
        };
        dot(220, 40);  // the first request: the 7
    """)
    WebDriverWait(page, 20).until(lambda driver: driver.find_element(By.ID, "prediction").text != "")
    assert page.find_element(By.ID, "prediction").text == "7"
    assert page.execute_script("return document.body.dataset.busy") == "1"  # the held request is pending
    page.execute_script("window.releaseHeld()")
    assert reading(page) == "7"


# ------------------------------------------------------------------ the explore views (issue 14)

def damage_from_elsewhere(driver, settings):
    """POST the damage settings to the page's server as another person's page would."""
    import json
    import urllib.request
    request = urllib.request.Request(driver.current_url.split("#")[0].rstrip("/") + "/api/damage",
                                     json.dumps(settings).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def wait_idle(driver, *flags):
    """Wait until document.body.dataset[flag] is "0" for the drawing's reading and each flag."""
    from selenium.webdriver.support.wait import WebDriverWait
    script = "return [" + ", ".join(f"document.body.dataset.{flag}" for flag in ("busy", *flags)) + "]"
    WebDriverWait(driver, 20).until(lambda d: all(value == "0" for value in d.execute_script(script)))


def saliency_colours(driver):
    """(digit shown, number of orange pixels, number of blue pixels) of the #saliency canvas."""
    return tuple(driver.execute_script("""
        const canvas = document.getElementById("saliency");
        const pixels = canvas.getContext("2d").getImageData(0, 0, 28, 28).data;
        let orange = 0, blue = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            if (pixels[i] > pixels[i + 2] + 60) orange += 1;
            if (pixels[i + 2] > pixels[i] + 60) blue += 1;
        }
        return [canvas.dataset.digit || null, orange, blue];
    """))


def test_a_saliency_map_appears_for_a_drawn_digit_and_follows_the_picked_digit(page):
    from selenium.webdriver.common.by import By
    page.find_element(By.ID, "clear").click()
    wait_idle(page, "explaining")
    assert saliency_colours(page) == (None, 0, 0)  # nothing drawn, nothing explained
    draw(page, DIGIT_STROKES[7])
    assert reading(page) == "7"
    wait_idle(page, "explaining")
    digit, orange, blue = saliency_colours(page)
    assert digit == "7" and orange > 20 and blue > 20  # even where p(7) rounds to 1 in float32 (explain.py)
    page.find_element(By.CSS_SELECTOR, '#digit-picker button[data-digit="3"]').click()
    wait_idle(page, "explaining")
    digit, orange, blue = saliency_colours(page)
    assert digit == "3" and orange > 20 and blue > 20  # pixels that push both ways
    assert "Why 3?" in page.find_element(By.ID, "saliency-note").text
    page.find_element(By.CSS_SELECTOR, '#digit-picker button[data-digit="3"]').click()  # back to the reading


def test_zero_all_biases_changes_the_test_accuracy_and_undo_restores_it_exactly(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    wait_idle(page, "damaging")
    accuracy = page.find_element(By.ID, "damaged-accuracy")
    WebDriverWait(page, 20).until(lambda d: accuracy.text.endswith(" %"))  # the page's first measure, run alone
    original = accuracy.text
    page.find_element(By.ID, "zero-biases").click()
    wait_idle(page, "damaging")
    assert accuracy.text != original
    assert "measured by the server in" in page.find_element(By.ID, "damage-note").text
    page.find_element(By.ID, "undo-damage").click()
    wait_idle(page, "damaging")
    assert accuracy.text == original
    assert not page.find_element(By.ID, "zero-biases").is_selected()


def test_damage_set_from_another_page_shows_under_break_it_at_the_next_reading(page):
    """A class shares one server and its damaged copy: one person's damage read everyone's
    drawings while their pages said "the model as loaded". Each reading now carries the
    server's damage_number, and a page that sees a new one shows the damage in force."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    wait_idle(page, "damaging")
    page.find_element(By.ID, "clear").click()
    damage_from_elsewhere(page, {"zero_biases": True})
    try:
        draw(page, DIGIT_STROKES[4])
        reading(page)
        WebDriverWait(page, 20).until(lambda d: d.find_element(By.ID, "zero-biases").is_selected())
        WebDriverWait(page, 20).until(lambda d: "damaged copy" in d.find_element(By.ID, "damage-note").text)
    finally:
        damage_from_elsewhere(page, {})
    draw(page, DIGIT_STROKES[4])
    reading(page)
    WebDriverWait(page, 20).until(lambda d: not d.find_element(By.ID, "zero-biases").is_selected())


def test_break_it_asks_the_server_once_for_a_change_made_elsewhere_and_never_for_its_own(page):
    """Every page that saw a new damage_number asked GET /api/damage, which measures the test
    set, at each reading until an answer came, and put back older settings under a slider being
    moved. Now: one request for a change made elsewhere, none for the page's own."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    wait_idle(page, "damaging")
    page.find_element(By.ID, "clear").click()
    draw(page, DIGIT_STROKES[4])
    reading(page)
    page.execute_script("window.damageGets = 0; window.pageFetch = window.fetch;"
                        "window.fetch = (url, options) => { if (url === 'api/damage' && !options) damageGets += 1;"
                        "return window.pageFetch(url, options); };")
    try:
        for noise in (0.1, 0.2, 0.3, 0.4, 0.5):  # the page's own slider, moved
            page.execute_script("const s = document.getElementById('noise'); s.value = arguments[0];"
                                "s.dispatchEvent(new Event('input'));", noise)
        wait_idle(page, "damaging")
        reading(page)
        own = page.execute_script("return window.damageGets")
        damage_from_elsewhere(page, {"zero_biases": True})
        for _ in range(5):
            page.execute_script("readAgain()")
            reading(page)
        WebDriverWait(page, 20).until(lambda d: d.find_element(By.ID, "zero-biases").is_selected())
        elsewhere = page.execute_script("return window.damageGets") - own
    finally:
        page.execute_script("window.fetch = window.pageFetch")
        damage_from_elsewhere(page, {})
        page.find_element(By.ID, "undo-damage").click()
        wait_idle(page, "damaging")
    assert own == 0 and elsewhere == 1, (own, elsewhere)
    assert page.find_element(By.ID, "noise").get_attribute("value") == "0"


def test_the_break_it_values_stay_inside_their_card_on_a_laptop_screen(page):
    """At 1366 pixels wide the noise slider's "0.80 x" ran over the card's right edge: the
    slider kept its own width in a grid column that could not shrink below it."""
    page.set_window_size(1366, 900)
    try:
        overflow = page.execute_script(
            "const card = document.querySelector('.damage-controls').getBoundingClientRect();"
            "return [...document.querySelectorAll('.damage-controls label > *')]"
            ".map(e => e.getBoundingClientRect().right - card.right).filter(d => d > 0.5);")
    finally:
        page.set_window_size(1400, 1100)
    assert overflow == [], overflow


def test_a_zeroed_output_layer_changes_the_reading_of_the_drawing(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    page.find_element(By.ID, "clear").click()
    draw(page, DIGIT_STROKES[4])
    assert reading(page) == "4"
    Select(page.find_element(By.ID, "zero-layer")).select_by_value("3")
    wait_idle(page, "damaging")
    assert reading(page) == "0"  # every logit 0: ten equal probabilities, the first one wins
    page.find_element(By.ID, "undo-damage").click()
    wait_idle(page, "damaging")
    assert reading(page) == "4"


# ------------------------------------------------------------------ honest readings, small drawings, messages

def draw_at(driver, strokes, left, top, size):
    """Draw strokes (unit-box points) with the mouse into the box (left, top, size) of the
    280x280 canvas, in the canvas's own pixels."""
    from selenium.webdriver.common.by import By
    canvas = driver.find_element(By.ID, "canvas")
    scale = canvas.size["width"] / 280
    draw(driver, [[((left + size * x - 140) / 180 + 0.5, (top + size * y - 140) / 180 + 0.5) for x, y in stroke]
                  for stroke in strokes], size=round(180 * scale))


def test_digits_drawn_small_in_a_corner_are_read_and_full_size_ones_still(page):
    """A 7 drawn small in a corner read '8, >99.9 % sure' (strokes scaled up with the digit);
    at a quarter of the canvas 8 of 10 were read. Two sets of ten in two corners, 56-70 pixels
    of the 280 (20-25 %), and two sets full size."""
    from selenium.webdriver.common.by import By
    read = {}
    for name, (left, top, size) in {"small, top left": (6, 6, 56), "small, bottom right": (205, 205, 70),
                                     "full size": (50, 50, 180), "full size, lower": (40, 80, 190)}.items():
        for digit, strokes in DIGIT_STROKES.items():
            page.find_element(By.ID, "clear").click()
            assert reading(page) == ""
            draw_at(page, strokes, left, top, size)
            read[name, digit] = reading(page)
    small = sum(read[key] == str(key[1]) for key in read if key[0].startswith("small"))
    full = sum(read[key] == str(key[1]) for key in read if key[0].startswith("full"))
    assert small >= 19 and full == 20, read


def test_the_page_sends_the_square_around_the_ink_at_most_112_pixels_a_side(page):
    """The page sent its whole 280x280 canvas, and a class of thirty drawing at once waited
    about 0.25 s (p95) for each reading. It now sends the square around the ink, 2.5 times the
    ink's size, scaled down to 112x112 at most: a digit drawn large loses nothing the 20x20
    input keeps, and one drawn small goes at the canvas's own resolution."""
    import base64
    import io
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By

    def ink_box(data_url):  # (left, top, right, bottom) of the pixels that are not black, and the side
        picture = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("L")
        rows, columns = np.flatnonzero(np.asarray(picture).any(axis=1)), np.flatnonzero(np.asarray(picture).any(axis=0))
        return np.array([columns[0], rows[0], columns[-1] + 1, rows[-1] + 1]), picture.width, picture.height
    for left, top, size in ((6, 6, 20), (200, 120, 60), (50, 50, 180)):
        page.find_element(By.ID, "clear").click()
        draw_at(page, DIGIT_STROKES[7], left, top, size)
        reading(page)
        sent_box, width, height = ink_box(page.execute_async_script(
            "const done = arguments[arguments.length - 1]; canvasAsPng().then((blob) => {"
            "const reader = new FileReader(); reader.onload = () => done(reader.result); reader.readAsDataURL(blob); });"))
        box, _, _ = ink_box(page.execute_script("return document.getElementById('canvas').toDataURL()"))
        side = min(round(2.5 * max(box[2] - box[0], box[3] - box[1])), 280)  # the square the page sends
        corner = np.clip(np.round((box[:2] + box[2:] - side) / 2), 0, 280 - side)
        scale = min(side, 112) / side
        assert width == height == min(side, 112)
        assert np.abs(sent_box - (box - np.tile(corner, 2)) * scale).max() <= 2, (sent_box, box, corner, scale)


def test_a_chosen_file_is_read_again_as_itself_until_drawn_over(page, tmp_path):
    """Break it and a training run read the drawing again. A chosen photo was read again from
    the canvas it is shown on, scaled to fit, and now the page sends at most 112x112 of a
    canvas: a digit small in a big photo could read otherwise than from the file. The file
    itself is sent again now, until something is drawn over it."""
    from PIL import Image, ImageDraw
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    photo = Image.new("L", (900, 900), 235)
    ImageDraw.Draw(photo).line([(400, 380), (500, 380), (440, 520)], fill=30, width=14)  # a small 7
    photo.save(tmp_path / "small seven.png")
    page.find_element(By.ID, "clear").click()
    page.find_element(By.ID, "file").send_keys(str(tmp_path / "small seven.png"))
    WebDriverWait(page, 20).until(lambda d: d.find_element(By.ID, "prediction").text != "")
    page.execute_script("window.sentBodies = []; window.pageFetch = window.fetch;"
                        "window.fetch = (url, options) => { if (url === 'api/predict') sentBodies.push(options.body.size);"
                        "return window.pageFetch(url, options); };")
    first = reading(page)
    try:
        page.execute_script("readAgain()")
        assert reading(page) == first
        draw(page, DIGIT_STROKES[1])
        reading(page)
        page.execute_script("readAgain()")
        reading(page)
        sent = page.execute_script("return window.sentBodies")
    finally:
        page.execute_script("window.fetch = window.pageFetch")
    size = (tmp_path / "small seven.png").stat().st_size
    assert sent[0] == size and sent[-1] != size, sent  # the file's own bytes, then the drawing


def test_noise_and_two_digits_are_not_read_as_a_digit(page, tmp_path):
    """Noise read '8, >99.9 % sure', '42' read '4' with the 2 dropped: now a '?' and why."""
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from app import data
    from conftest import PROJECT_DIR
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (280, 280), dtype=np.uint8)).save(tmp_path / "noise.png")
    images, labels, _ = data.load_csv(PROJECT_DIR / "datasets" / "mnist_test.csv")
    four, two = (images[np.flatnonzero(labels == d)[0]].reshape(28, 28) for d in (4, 2))
    Image.fromarray(np.hstack([four, np.zeros((28, 4)), two]).astype(np.uint8)).resize((256, 112)).save(tmp_path / "42.png")
    for name, reason in (("noise.png", "not one digit: "), ("42.png", "not one digit: 2 separate marks")):
        page.find_element(By.ID, "clear").click()
        page.find_element(By.ID, "file").send_keys(str(tmp_path / name))
        from selenium.webdriver.support.wait import WebDriverWait
        WebDriverWait(page, 20).until(lambda d: d.find_element(By.ID, "prediction").text != "")
        assert reading(page) == "?"
        assert page.find_element(By.ID, "confidence").text.startswith(reason)
        assert "a softmax always names some digit" in page.find_element(By.ID, "verdict").text
    page.find_element(By.ID, "clear").click()
    draw(page, DIGIT_STROKES[7])
    assert reading(page) == "7"
    assert page.find_element(By.ID, "confidence").text.startswith("the network's probability: ")
    assert "sure" not in page.find_element(By.ID, "confidence").text


def test_messages_name_the_file_or_the_field_in_the_pages_words(page, tmp_path):
    """'body: not an image (send PNG or JPEG bytes...)' without the file's name; 'abc' steps:
    'got 0'; a seed typed without Enter did nothing; an invalid seed left the old accuracy."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait
    (tmp_path / "my.txt").write_text("not a picture\n")
    page.find_element(By.ID, "clear").click()
    page.find_element(By.ID, "file").send_keys(str(tmp_path / "my.txt"))
    WebDriverWait(page, 20).until(lambda d: d.find_element(By.ID, "message").text.startswith("my.txt"))
    assert page.find_element(By.ID, "message").text == "my.txt is not an image the page can read: choose a PNG or JPEG file."
    steps = page.find_element(By.ID, "train-steps")
    steps.clear()
    steps.send_keys("abc")
    page.find_element(By.ID, "train").click()
    assert page.find_element(By.ID, "train-status").text == "Steps must be a whole number from 1 to 100,000."
    steps.clear()
    steps.send_keys("20000")
    wait_idle(page, "damaging")
    seed = page.find_element(By.ID, "damage-seed")
    seed.clear()
    seed.send_keys("5")
    assert page.find_element(By.ID, "damage-seed-cue").text == "Enter applies it"
    seed.clear()
    seed.send_keys("-3", Keys.ENTER)
    wait_idle(page, "damaging")
    assert page.find_element(By.ID, "damage-note").text == "Seed must be a whole number from 0 to 4,294,967,295."
    assert page.find_element(By.ID, "damaged-accuracy").text == "–"  # not the accuracy of the settings before
    page.find_element(By.ID, "undo-damage").click()
    wait_idle(page, "damaging")
    assert page.find_element(By.ID, "damaged-accuracy").text.endswith(" %")


def test_switched_off_units_are_said_to_still_fire(page):
    from selenium.webdriver.common.by import By
    page.find_element(By.ID, "clear").click()
    draw(page, DIGIT_STROKES[4])
    reading(page)
    page.execute_script("const s = document.getElementById('units-off'); s.value = '1';"
                        "s.dispatchEvent(new Event('input'));")
    wait_idle(page, "damaging")
    assert "Switched-off units still fire" in page.find_element(By.ID, "damage-note").text
    assert "largest effect is tiny" in page.find_element(By.CSS_SELECTOR, ".card.why").text
    page.find_element(By.ID, "undo-damage").click()
    wait_idle(page, "damaging")


@pytest.fixture(scope="module")
def phone():
    """Headless Chromium laid out as a phone, 360 x 740 CSS pixels with touch (TOOLS.md)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_experimental_option("mobileEmulation", {
        "deviceMetrics": {"width": 360, "height": 740, "pixelRatio": 2, "touch": True},
        "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 Chrome/120 Mobile Safari/537.36"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_on_a_phone_nothing_scrolls_sideways_and_a_finger_draws(phone, default_model):
    """At 400 px the page was 474 px wide; in phone emulation the percentages were off-screen
    and the Train button read 'Tra'. A 7 drawn with a finger (touch pointer events), then
    every control checked."""
    process, url = start_server(default_model)
    try:
        phone.get(url)
        wait_idle(phone, "damaging")
        assert not hint_shown(phone)  # nothing to drag a file from on a phone
        from selenium.webdriver.common.actions import interaction
        from selenium.webdriver.common.actions.action_builder import ActionBuilder
        from selenium.webdriver.common.actions.pointer_input import PointerInput
        from selenium.webdriver.common.by import By
        canvas = phone.find_element(By.ID, "canvas")
        phone.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        scale = canvas.size["width"] / 280
        finger = ActionBuilder(phone, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"), duration=0)
        points = [(round((x - 140) * scale), round((y - 140) * scale)) for x, y in [(50, 40), (230, 40), (110, 250)]]
        finger.pointer_action.move_to(canvas, *points[0]).pointer_down()
        for point in points[1:]:
            finger.pointer_action.move_to(canvas, *point)
        finger.pointer_action.pointer_up()
        finger.perform()
        assert phone.execute_script("return document.body.dataset.busy") in ("0", "1")
        assert reading(phone) == "7"
        assert phone.execute_script("return document.documentElement.scrollWidth") <= 360
        outside = phone.execute_script("""
            return [...document.querySelectorAll("button, input, select, label, canvas, .bars li, .percent, dd")]
                .filter((e) => e.getClientRects().length)
                .filter((e) => { const r = e.getBoundingClientRect(); return r.left < 0 || r.right > 360; })
                .map((e) => `${e.tagName}#${e.id} ${e.textContent.trim().slice(0, 20)}`);
        """)
        assert outside == []
        widths = phone.execute_script("const b = document.getElementById('train');"
                                      "return [b.scrollWidth, b.clientWidth]")
        assert widths[0] <= widths[1]  # 'Train' whole, not 'Tra'
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_pages_percentages_are_rounded_down_as_words_confidence_text(browser, tmp_path):
    """The page said "100.0 % sure" for 0.9995 (misclassified.png and predict say ">99.9 %"),
    and "0.0 %" for the runner-ups of a sure reading (they say "<0.1 %" now)."""
    import numpy as np
    from mlp import MLP
    from app.words import confidence_text
    model_file.save(MLP([784, 150, 10], rng=np.random.default_rng(0)), tmp_path / "model_mnist.npz", steps_done=7)
    process, url = start_server(tmp_path / "model_mnist.npz")
    try:
        browser.get(url)
        probabilities = [0.9995, 0.999, 0.9989, 0.8746, 0.123, 0.5, 0.0004, 1.0, 0.0, 1e-30, 0.000999, 0.001]
        shown = browser.execute_script("return arguments[0].map(confidenceText)", probabilities)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert shown == [confidence_text(p) for p in probabilities]
    assert shown[0] == ">99.9 %" and shown[2] == "99.8 %"
    assert shown[6] == shown[9] == shown[10] == "<0.1 %"  # it said "0.0 %" beside ">99.9 %"
    assert shown[8] == "0.0 %" and shown[11] == "0.1 %"


def test_a_saturated_reading_says_so_instead_of_showing_a_blank_map(browser, tmp_path):
    """A digit read with every other probability under the smallest float32: no gradient at all.
    The page said "100.0 % sure" and showed a map with nothing on it. The model reads every
    drawing as a 3: its output bias of 200 outweighs the other logits by more than the 104
    (e^-104 = 1.4e-45, the smallest float32) after which exp gives 0."""
    import numpy as np
    from selenium.webdriver.common.by import By
    from mlp import MLP
    model_path = tmp_path / "model_mnist.npz"
    model = MLP([784, 150, 10], rng=np.random.default_rng(0))
    model.layers[-1].b[3] = 200.0
    model_file.save(model, model_path, steps_done=7)
    process, url = start_server(model_path)
    try:
        browser.get(url)
        draw(browser, DIGIT_STROKES[7])
        assert reading(browser) == "3"
        assert browser.find_element(By.ID, "confidence").text == "the network's probability: >99.9 %"
        assert browser.find_elements(By.CSS_SELECTOR, "#bars .percent")[3].text == ">99.9 %"
        wait_idle(browser, "explaining")
        note = browser.find_element(By.ID, "saliency-note").text
        assert "is 1 to the model's precision" in note and "no map to show" in note, note
        assert saliency_colours(browser) == ("3", 0, 0)  # the drawing, dimmed, and no colours
        browser.find_element(By.CSS_SELECTOR, '#digit-picker button[data-digit="5"]').click()
        wait_idle(browser, "explaining")  # log p(5) is about -200 and far from flat: a map
        digit, orange, blue = saliency_colours(browser)
        assert digit == "5" and orange + blue > 20 and "no map" not in browser.find_element(By.ID, "saliency-note").text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_break_it_follows_a_model_file_replaced_on_disk(browser, tmp_path):
    """The zero-a-layer menu offers the new model's layers, and the damage shown is the new
    model's (none: a new file starts undamaged), not the old one's."""
    import numpy as np
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    from mlp import MLP
    model_path = tmp_path / "model_mnist.npz"
    model_file.save(MLP([784, 150, 150, 10], rng=np.random.default_rng(0)), model_path, steps_done=7)
    process, url = start_server(model_path)
    layer_choices = "return [...document.getElementById('zero-layer').options].map((o) => o.value)"
    try:
        browser.get(url)
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(layer_choices) == ["", "1", "2", "3"])
        note = browser.find_element(By.ID, "damage-note")
        WebDriverWait(browser, 60).until(lambda d: "measured by the server" in note.text)  # the first loadDamage
        browser.find_element(By.ID, "zero-biases").click()
        wait_idle(browser, "damaging")
        assert browser.find_element(By.ID, "zero-biases").is_selected()
        model_file.save(MLP([784, 64, 10], rng=np.random.default_rng(1)), model_path, steps_done=9)  # replaced on disk
        draw(browser, DIGIT_STROKES[7])  # the next reading finds the new file
        reading(browser)
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(layer_choices) == ["", "1", "2"])
        WebDriverWait(browser, 20).until(lambda d: not d.find_element(By.ID, "zero-biases").is_selected())
        assert "the model as loaded" in browser.find_element(By.ID, "damage-note").text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_page_on_another_site_cannot_start_a_training_run(browser, tmp_path):
    """Issue 14's cross-site post: another site's page sends the simple request a browser
    allows without asking (text/plain, no-cors) and a JSON one (which needs a preflight)."""
    import http.server
    import threading
    import numpy as np
    from selenium.webdriver.support.wait import WebDriverWait
    from mlp import MLP
    from test_serve import ask
    model_path = tmp_path / "model_mnist.npz"
    model_file.save(MLP([784, 150, 150, 10], rng=np.random.default_rng(0)), model_path, steps_done=7)
    process, url = start_server(model_path)
    other_site = tmp_path / "other"
    other_site.mkdir()
    (other_site / "index.html").write_text(f"""<script>
      const api = "{url}api/train";
      Promise.allSettled([
        fetch(api, {{method: "POST", mode: "no-cors", body: '{{"steps": 50}}'}}),
        fetch(api, {{method: "POST", body: '{{"steps": 50}}', headers: {{"Content-Type": "application/json"}}}}),
      ]).then(() => {{ document.title = "sent"; }});
    </script>""")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(other_site))  # noqa: E731
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as site:
        threading.Thread(target=site.serve_forever, daemon=True).start()
        try:
            browser.get(f"http://localhost:{site.server_address[1]}/")
            WebDriverWait(browser, 20).until(lambda d: d.title == "sent")
            time.sleep(1)
            host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
            assert ask((host, int(port)), "GET", "/api/train")[1]["status"] == "idle"
        finally:
            site.shutdown()
            process.terminate()
            process.wait(timeout=10)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model_mnist.npz", "other"]


def test_before_any_run_stop_looks_disabled_and_the_weights_area_is_an_empty_light_frame(browser, default_model):
    """A disabled Stop must not look like Train, and no black square waits for the weights.
    Its own server: tests before it take the shared browser to other pages."""
    process, url = start_server(default_model)
    try:
        browser.get(url)
        style = lambda element_id, name: browser.execute_script(  # noqa: E731
            f"return getComputedStyle(document.getElementById('{element_id}'))['{name}']")
        assert browser.execute_script("return document.getElementById('stop-training').disabled")
        assert style("stop-training", "opacity") != style("train", "opacity")
        assert style("train-weights", "background-color") not in ("rgb(0, 0, 0)", "rgba(0, 0, 0, 0)")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_short_training_run_from_the_page_grows_the_curve_and_changes_the_reading(browser, default_model, tmp_path):
    """Last in this file: it opens its own server, on a copy of the model, which the run replaces."""
    import shutil as files
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    model_path = tmp_path / "model_mnist.npz"
    files.copy(default_model, model_path)
    process, url = start_server(model_path)
    try:
        browser.get(url)
        draw(browser, DIGIT_STROKES[7])
        assert reading(browser) == "7"
        zero_biases = browser.find_element(By.ID, "zero-biases")
        zero_biases.click()  # damaged before the run: the run's weights are then read undamaged
        WebDriverWait(browser, 30).until(lambda d: "damaged copy" in d.find_element(By.ID, "damage-note").text)
        wait_idle(browser)
        # The reading as the bars' widths: 100 p % unrounded (the text says ">99.9 %" for any p from 0.999 up)
        bars = "return [...document.querySelectorAll('#bars .bar span')].map((bar) => bar.style.width).join()"
        before = browser.execute_script(bars)
        steps = browser.find_element(By.ID, "train-steps")
        steps.clear()
        steps.send_keys("3000")
        browser.find_element(By.ID, "train").click()
        points = lambda d: int(d.find_element(By.ID, "loss-curve").get_attribute("data-points") or 0)  # noqa: E731
        WebDriverWait(browser, 60).until(lambda d: points(d) > 0)
        first = points(browser)
        # break it waits while the run goes: its controls off, the panel no longer saying "damaged copy"
        WebDriverWait(browser, 30).until(lambda d: "the training run's weights" in d.find_element(By.ID, "damage-note").text)
        assert not zero_biases.is_selected() and not zero_biases.is_enabled()
        seen = set()  # the readings shown while it trains: from the random start to a trained network
        WebDriverWait(browser, 120).until(lambda d: seen.add(d.execute_script(bars))
                                          or d.execute_script("return document.body.dataset.training") == "stopped")
        assert "Completed all 3,000 steps. Save it over model_mnist.npz" in browser.find_element(By.ID, "train-status").text
        browser.find_element(By.ID, "save-run").click()  # a completed run asks, as a stopped one does
        WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.training") == "saved")
        assert points(browser) > first
        assert seen - {before}
        assert "Saved model_mnist.npz: 3,000 steps" in browser.find_element(By.ID, "train-status").text
        assert browser.find_element(By.ID, "train-evaluations").text.startswith("Test accuracy at step 937: ")
        from mlp import MLP
        assert model_file.load(model_path, with_info=True)[1]["steps_done"] == 3000  # the file was replaced at the end
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_after_a_run_ends_break_it_shows_the_accuracy_of_the_model_served(browser, default_model, tmp_path):
    """While a run goes, break it shows the accuracy of the run's weights as it started;
    once the run is saved it must show the saved model's (stats.json's), and once one is
    discarded, the file's model's again."""
    import json
    import shutil as files
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait
    model_path = tmp_path / "model_mnist.npz"
    files.copy(default_model, model_path)
    process, url = start_server(model_path)
    shown = lambda d: d.find_element(By.ID, "damaged-accuracy").text  # noqa: E731
    note = lambda d: d.find_element(By.ID, "damage-note").text  # noqa: E731
    status = lambda d: d.execute_script("return document.body.dataset.training")  # noqa: E731

    def train(steps):
        field = browser.find_element(By.ID, "train-steps")
        field.clear()
        field.send_keys(str(steps))
        browser.find_element(By.ID, "train").click()
        WebDriverWait(browser, 60).until(lambda d: "the training run's weights" in note(d))

    try:
        browser.get(url)
        WebDriverWait(browser, 60).until(lambda d: "the model as loaded" in note(d))
        train(200)
        WebDriverWait(browser, 120).until(lambda d: status(d) == "stopped")  # completed: it asks first
        browser.find_element(By.ID, "save-run").click()
        WebDriverWait(browser, 120).until(lambda d: status(d) == "saved")
        saved = f"{100 * json.loads((tmp_path / 'stats.json').read_text())['test_accuracy']:.2f} %"
        WebDriverWait(browser, 30).until(lambda d: shown(d) == saved and "the model as loaded" in note(d))
        train(100000)
        WebDriverWait(browser, 60).until(lambda d: status(d) == "running" and shown(d) != saved)  # the run's first weights
        browser.find_element(By.ID, "stop-training").click()
        WebDriverWait(browser, 60).until(lambda d: status(d) == "stopped")
        browser.find_element(By.ID, "discard-run").click()
        WebDriverWait(browser, 30).until(lambda d: status(d) == "discarded")
        WebDriverWait(browser, 30).until(lambda d: shown(d) == saved and "the model as loaded" in note(d))
    finally:
        process.terminate()
        process.wait(timeout=10)
