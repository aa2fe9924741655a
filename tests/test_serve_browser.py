"""The page in a real browser: Playwright drives Debian's chromium (no browser download) against
`unblur serve`'s application on loopback, serving the built-in runs. Generate from a prompt and
watch the previews change, inpaint a painted mask, download a PNG and drop it back, restore a
blurred digit, and the phone-width layout. Screenshots go to the test's folder (and to
UNBLUR_SCREENSHOTS=DIR when set, e.g. docs/)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is part of the dev install")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is part of the dev install")

from unblur.runs import Run  # noqa: E402
from unblur.runs.pnginfo import read_settings  # noqa: E402
from unblur.serve import create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: `make test` installs it "
                                "(scripts/need_chromium.sh: apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    import uvicorn

    runs = {name: Run.load(f"builtin:{name}", device="cpu") for name in ("shapes", "digits", "blur")}
    app = create_app(runs)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}", runs
    srv.should_exit = True
    t.join(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    extra = os.environ.get("UNBLUR_SCREENSHOTS")

    def shot(page, name: str, **kw) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), **kw)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / f"serve_{name}.png")
        return path

    return shot


def watch_previews(page) -> None:
    page.evaluate("""() => {
        window.__previews = new Set();
        new MutationObserver(() => window.__previews.add(document.getElementById('preview-x0').src))
            .observe(document.getElementById('preview-x0'), {attributes: true, attributeFilter: ['src']});
    }""")


def wait_done(page, timeout: float = 60_000) -> str:
    page.wait_for_function("() => /^(done|error|cancelled)/.test(document.getElementById('status').textContent)",
                           timeout=timeout)
    return page.text_content("#status")


def test_generate_inpaint_download_drop_restore_and_phone(server, browser, shots, tmp_path):
    url, runs = server
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("() => document.querySelectorAll('#run option').length === 3")

    # -- generate from a prompt, watching the denoising
    page.select_option("#run", "shapes")
    page.fill("#prompt", "a red circle on a black background")
    page.fill("#steps", "16")
    page.fill("#n", "4")
    page.fill("#seed", "5")
    watch_previews(page)
    page.click("#go")
    status = wait_done(page)
    assert status.startswith("done: 4 images"), status
    previews = page.evaluate("() => window.__previews.size")
    assert previews >= 3, f"only {previews} distinct previews"
    assert page.get_attribute("#progress", "value") == "16"
    assert page.locator("#gallery img").count() == 4
    shots(page, "generate")

    # -- download a PNG: its settings say what made it; drop it back and the form follows it
    with page.expect_download() as dl:
        page.locator("#gallery a").first.click()
    path = tmp_path / "download.png"
    dl.value.save_as(path)
    s = read_settings(path)
    assert s["prompt"] == "a red circle on a black background" and s["steps"] == 16
    assert s["model_hash"] == runs["shapes"].weights_sha256 and s["seed"] in range(5, 9)
    assert "Steps: 16" in Image.open(path).text["parameters"]
    page.fill("#prompt", "something else")
    page.fill("#steps", "3")
    page.select_option("#run", "digits")
    data = base64.b64encode(path.read_bytes()).decode()
    page.evaluate("""async ([data, name]) => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: 'image/png'}));
        document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [data, "download.png"])
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('settings loaded')")
    assert page.input_value("#run") == "shapes"
    assert page.input_value("#prompt") == "a red circle on a black background"
    assert page.input_value("#steps") == "16" and page.input_value("#seed") == str(s["seed"])

    # -- inpaint: upload a picture, paint the right half, edit; the left half is kept
    src = np.zeros((32, 32, 3), np.uint8)
    src[:, :, 2] = 200
    src[8:24, 4:14] = (230, 40, 40)
    src[:, 16:] = np.random.default_rng(0).integers(0, 256, (32, 16, 3))  # noise no run would draw
    Image.fromarray(src).save(tmp_path / "input.png")
    page.click(".tab[data-tab=edit]")
    page.set_input_files("#edit-file", str(tmp_path / "input.png"))
    page.fill("#n", "1")
    page.fill("#steps", "12")
    box = page.locator("#edit-mask").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + 5)
    page.mouse.down()
    for k in range(1, 40):
        page.mouse.move(box["x"] + box["width"] * (0.58 + 0.4 * (k % 2)), box["y"] + box["height"] * k / 40)
    page.mouse.up()
    page.evaluate("() => { const s = document.getElementById('strength'); s.value = '1'; "
                  "s.dispatchEvent(new Event('input')); }")
    page.click("#go")
    status = wait_done(page)
    assert status.startswith("done: 1 image"), status
    shots(page, "inpaint")
    out_url = page.locator("#gallery img").first.get_attribute("src")
    out = np.array(Image.open(io.BytesIO(page.request.get(url + out_url).body())).convert("RGB")).astype(int)
    assert np.abs(out[:, :12] - src[:, :12]).max() <= 3  # outside the painted half: the input
    assert np.abs(out[:, 20:] - src[:, 20:]).mean() > 40  # inside: regenerated, the noise gone

    # -- restore a blurred digit with the blur run
    digit = runs["blur"].process.degrade(
        __import__("unblur.data", fromlist=["load_data"]).load_data("builtin:digits").x[-1:],
        __import__("torch").full((1,), 0.6))
    Image.fromarray(((digit[0, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()).save(tmp_path / "blurred.png")
    page.select_option("#run", "blur")
    page.click(".tab[data-tab=restore]")
    page.set_input_files("#restore-file", str(tmp_path / "blurred.png"))
    page.click("#go")
    status = wait_done(page)
    assert status.startswith("done: 1 image"), status
    shots(page, "restore")

    # -- phone width: one column
    page.set_viewport_size({"width": 390, "height": 844})
    page.select_option("#run", "shapes")
    page.click(".tab[data-tab=generate]")
    c, live = page.locator("#controls").bounding_box(), page.locator("#live").bounding_box()
    assert live["y"] >= c["y"] + c["height"] - 1 and abs(live["x"] - c["x"]) < 2
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    shots(page, "phone", full_page=True)
    assert not errors, errors
    page.close()


def test_cancel_from_the_page(server, browser):
    url, _ = server
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("() => document.querySelectorAll('#run option').length === 3")
    page.select_option("#run", "shapes")
    page.fill("#steps", "200")
    page.fill("#n", "16")
    page.click("#go")
    page.wait_for_function("() => document.getElementById('step').textContent.startsWith('step')")
    page.click("#cancel")
    assert wait_done(page).startswith("cancelled")
    page.close()
