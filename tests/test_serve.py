"""`unblur serve` through FastAPI's test client: every endpoint, every bound, bad input of every
kind, the queue (429 with Retry-After), cancel and disconnect; the PNG settings (unblur's JSON
and AUTOMATIC1111's parameters) and `unblur sample --from-png` reproducing an image bit for bit."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is part of the dev install")
from fastapi.testclient import TestClient  # noqa: E402

from unblur.cli import main  # noqa: E402
from unblur.runs import Run  # noqa: E402
from unblur.runs.pnginfo import parameters_text, read_settings  # noqa: E402
from unblur.serve import Job, JobQueue, Limits, QueueFull, create_app  # noqa: E402
from unblur.serve.jobs import Cancelled  # noqa: E402

OLD = Path(__file__).parent / "fixtures" / "old_runs"


@pytest.fixture(scope="module")
def runs():
    return {"digits": Run.load(OLD / "edm-classes", device="cpu"), "blur": Run.load(OLD / "blur", device="cpu")}


@pytest.fixture
def client(runs):
    app = create_app(runs, limits=Limits(max_steps=50, max_n=4, max_upload_bytes=200_000, max_upload_pixels=512 * 512,
                                         max_body_bytes=1_000_000, max_restore_side=64))
    with TestClient(app) as c:
        yield c


def png_b64(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def events(client, job_id: str) -> list[tuple[str, dict]]:
    out = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def run_job(client, path: str, body: dict) -> tuple[str, list[tuple[str, dict]]]:
    r = client.post(path, json=body)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    return job, events(client, job)


def test_runs_are_described(client):
    d = client.get("/api/runs").json()
    by = {r["name"]: r for r in d["runs"]}
    assert by["digits"]["classes"] == [str(i) for i in range(10)] and not by["digits"]["restorer"]
    assert by["blur"]["restorer"] and "restore" in by["blur"]["can"] and by["blur"]["process"] == "blur"
    assert by["digits"]["size"] == [8, 8] and len(by["digits"]["model_hash"]) == 64
    assert d["limits"]["max_steps"] == 50
    assert client.get("/").text.startswith("<!doctype html>")
    assert "EventSource" in client.get("/static/app.js").text
    assert "/api/generate" in client.get("/openapi.json").json()["paths"]


def test_the_description_is_asked_of_the_run(client, runs):
    by = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    for name, run in runs.items():
        d, plan = by[name], run.plan()
        assert d["samplers"] == list(run.process.samplers) and (d["sampler"], d["steps"]) == (plan.sampler, plan.steps)
    assert by["digits"]["can"] == ["generate", "img2img", "inpaint"]  # a Gaussian run does every edit
    assert by["blur"]["can"] == ["generate", "img2img", "restore"]  # a cold blur run: no inpainting
    assert by["blur"]["samplers"] == ["cold", "cold-naive"] and by["blur"]["sampler"] in by["blur"]["samplers"]
    assert by["digits"]["guidance"] == runs["digits"].config.cond.guidance and not by["digits"]["text"]


def test_uploads_are_read_by_the_reader_of_image_files(tmp_path):
    from unblur.images import UploadTooLarge, image_tensor, read_image, read_upload

    rng = np.random.default_rng(1)
    img = Image.fromarray((rng.random((30, 20, 4)) * 255).astype(np.uint8), "RGBA")  # transparency: on white
    img.save(tmp_path / "u.png")
    text = png_b64(img)
    for channels, size in ((1, (8, 8)), (3, (45, 30)), (3, None)):
        got = image_tensor(read_upload(text, max_bytes=10**6), channels=channels, size=size)
        assert torch.equal(got, read_image(tmp_path / "u.png", channels=channels, size=size)), (channels, size)
    cropped = image_tensor(read_upload(text, max_bytes=10**6), channels=3, size=(8, 8), crop=True)
    assert cropped.shape == (3, 8, 8) and not torch.equal(cropped, read_image(tmp_path / "u.png", channels=3,
                                                                               size=(8, 8)))
    with pytest.raises(UploadTooLarge, match="limit of 100 bytes"):
        read_upload(text, max_bytes=100)
    with pytest.raises(ValueError, match="20x30 pixels"):
        read_upload(text, max_bytes=10**6, max_pixels=100)


def test_generate_streams_distinct_previews_then_pngs_with_settings(client, runs):
    job, evs = run_job(client, "/api/generate", {"run": "digits", "class": "3", "steps": 6, "seed": 11, "n": 2,
                                                  "sampler": "euler", "guidance": 2.0})
    kinds = [k for k, _ in evs]
    assert kinds[-1] == "done" and "started" in kinds
    progress = [d for k, d in evs if k == "progress"]  # a slow reader skips to the newest picture
    steps = [d["step"] for d in progress]
    assert steps == sorted(set(steps)) and steps[-1] == 6 and all(d["total"] == 6 for d in progress)
    assert all(d["x0"].startswith("data:image/png;base64,") for d in progress)
    done = evs[-1][1]
    assert len(done["results"]) == 2
    r = client.get(done["results"][1]["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    s = read_settings(r.content)
    assert s["run"] == str(OLD / "edm-classes") and s["model_hash"] == runs["digits"].weights_sha256
    assert (s["seed"], s["request_seed"], s["index"], s["class_name"], s["sampler"], s["steps"], s["guidance"]) == \
        (12, 11, 1, "3", "euler", 6, 2.0)
    params = Image.open(io.BytesIO(r.content)).text["parameters"]
    assert params.splitlines()[0] == "class 3"
    assert "Steps: 6, Sampler: Euler, Schedule type: Karras, CFG scale: 2, Seed: 12, Size: 8x8, Model hash: " \
        f"{runs['digits'].weights_sha256[:10]}" in params
    # the same image as the library makes for that request
    want = next(iter(runs["digits"].sample(2, classes=["3"], steps=6, seed=11, sampler="euler", guidance=2.0,
                                           batch=2))).x[1]
    got = torch.from_numpy(np.array(Image.open(io.BytesIO(r.content)), dtype=np.float32) / 127.5 - 1)
    assert (got - want[0]).abs().max() <= 1 / 127.5 + 1e-6
    # the dropped PNG gives its settings back, with the run that made it
    back = client.post("/api/png-settings", json={"image": base64.b64encode(r.content).decode()}).json()
    assert back["run"] == "digits" and back["settings"] == s
    assert client.get(f"/api/jobs/{job}").json()["state"] == "done"


def test_inpainting_keeps_the_unmasked_pixels_and_img2img_runs(client):
    x = np.zeros((8, 8), np.uint8)
    x[2:6, 3:5] = 255
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255  # regenerate the right half
    _, evs = run_job(client, "/api/edit", {"run": "digits", "image": png_b64(Image.fromarray(x)),
                                           "mask": png_b64(Image.fromarray(mask).resize((64, 64), Image.NEAREST)),
                                           "steps": 5, "strength": 1.0, "seed": 3})
    assert evs[-1][0] == "done", evs[-1]
    out = np.array(Image.open(io.BytesIO(client.get(evs[-1][1]["results"][0]["url"]).content)))
    assert np.abs(out[:, :4].astype(int) - x[:, :4]).max() <= 2  # kept
    s = evs[-1][1]["results"][0]["settings"]
    assert s["kind"] == "edit" and s["strength"] == 1.0 and s["method"] == "replace"
    _, evs = run_job(client, "/api/edit", {"run": "digits", "image": png_b64(Image.fromarray(x).resize((20, 30))),
                                           "steps": 4, "strength": 0.5, "n": 2})
    assert evs[-1][0] == "done" and len(evs[-1][1]["results"]) == 2


def test_restore_with_a_cold_run_keeps_the_size(client, runs):
    img = Image.fromarray((np.random.default_rng(0).random((12, 16)) * 255).astype(np.uint8))
    _, evs = run_job(client, "/api/restore", {"run": "blur", "image": png_b64(img), "steps": 3})
    assert evs[-1][0] == "done", evs[-1]
    got = Image.open(io.BytesIO(client.get(evs[-1][1]["results"][0]["url"]).content))
    assert got.size == (16, 12)
    assert any(k == "progress" for k, _ in evs)


@pytest.mark.parametrize("body,status,words", [
    ({"run": "nope"}, 404, "no run named 'nope'"),
    ({"run": "digits", "steps": 51}, 422, "steps: 51 is outside 1..50"),
    ({"run": "digits", "steps": 0}, 422, "steps"),
    ({"run": "digits", "n": 5}, 422, "n: 5 images is more than the limit of 4"),
    ({"run": "digits", "n": 0}, 422, "n: "),
    ({"run": "digits", "guidance": 99}, 422, "guidance: 99"),
    ({"run": "digits", "seed": -1}, 422, "seed"),
    ({"run": "digits", "steps": "many"}, 422, "steps"),
    ({"run": "digits", "class": "eleven"}, 422, "eleven"),
    ({"run": "digits", "prompt": "a cat"}, 422, "no text"),
    ({"run": "digits", "sampler": "magic"}, 422, "magic"),
    ({"run": "digits", "preview": "movie"}, 422, "preview"),
    ({"run": "digits", "path": "/etc/passwd"}, 422, "path"),  # no field names a server path
    ({"steps": 3}, 422, "run"),
    ({"run": "digits", "prompt": "x" * 501}, 422, "prompt: 501 characters"),
])
def test_generate_bounds(client, body, status, words):
    r = client.post("/api/generate", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_malformed_json_and_bodies(client):
    r = client.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = client.post("/api/generate", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/api/generate", content=b"x" * 1_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_uploads_are_bounded_and_checked(client):
    base = {"run": "digits", "steps": 2}
    r = client.post("/api/edit", json={**base, "image": "data:image/png;base64," + "A" * 300_000})
    assert r.status_code == 413 and "200000 bytes" in r.json()["detail"]
    r = client.post("/api/edit", json={**base, "image": base64.b64encode(b"hello, not an image").decode()})
    assert r.status_code == 422 and "cannot be read as an image" in r.json()["detail"]
    r = client.post("/api/edit", json={**base, "image": "!!!not base64!!!"})
    assert r.status_code == 422 and "base64" in r.json()["detail"]
    # a decompression bomb: a tiny file whose header claims 4000 x 4000 pixels is refused undecoded
    bomb = io.BytesIO()
    Image.new("L", (4000, 4000)).save(bomb, format="PNG", optimize=True)
    assert len(bomb.getvalue()) < 200_000
    r = client.post("/api/edit", json={**base, "image": base64.b64encode(bomb.getvalue()).decode()})
    assert r.status_code == 422 and "4000x4000" in r.json()["detail"] and "not decoded" in r.json()["detail"]
    r = client.post("/api/restore", json={"run": "blur", "image": png_b64(Image.new("L", (100, 30)))})
    assert r.status_code == 422 and "larger than 64 pixels" in r.json()["detail"]
    r = client.post("/api/restore", json={"run": "digits", "image": png_b64(Image.new("L", (8, 8)))})
    assert r.status_code == 422 and "cold-diffusion" in r.json()["detail"]
    r = client.post("/api/png-settings", json={"image": png_b64(Image.new("L", (8, 8)))})
    assert r.status_code == 422 and "carries no unblur settings" in r.json()["detail"]
    r = client.post("/api/png-settings", json={"image": png_b64(Image.new("RGB", (8, 8)), "JPEG")})
    assert r.status_code == 422 and "not a PNG" in r.json()["detail"]


def test_unknown_jobs_and_images(client):
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.post("/api/jobs/nope/cancel").status_code == 404
    job, evs = run_job(client, "/api/generate", {"run": "digits", "steps": 2})
    assert client.get(f"/api/jobs/{job}/images/5.png").status_code == 404


def blocker(release: threading.Event, started: threading.Event):
    def work(job: Job) -> list[dict]:
        started.set()
        while not release.wait(0.01):
            job.check()
        return []

    return work


def test_a_full_queue_answers_429_with_retry_after(runs):
    app = create_app(runs, queue=2, workers=1)
    release, started = threading.Event(), threading.Event()
    with TestClient(app) as c:
        app.state.jobs.submit(Job("test", "digits", blocker(release, started)))
        assert started.wait(5)
        codes = [c.post("/api/generate", json={"run": "digits", "steps": 2}).status_code for _ in range(4)]
        assert codes == [202, 202, 429, 429]
        r = c.post("/api/generate", json={"run": "digits", "steps": 2})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "queue is full" in r.json()["detail"]
        release.set()


def test_cancel_a_queued_and_a_running_job(runs):
    app = create_app(runs, queue=4)
    release, started = threading.Event(), threading.Event()
    with TestClient(app) as c:
        running = Job("test", "digits", blocker(release, started))
        app.state.jobs.submit(running)
        assert started.wait(5)
        queued = c.post("/api/generate", json={"run": "digits", "steps": 2}).json()["job"]
        assert c.post(f"/api/jobs/{queued}/cancel").json()["state"] == "cancelled"
        assert [k for k, _ in events(c, queued)][-1] == "cancelled"
        assert c.post(f"/api/jobs/{running.id}/cancel").status_code == 200
        deadline = time.time() + 5
        while running.state != "cancelled" and time.time() < deadline:
            time.sleep(0.01)
        assert running.state == "cancelled" and not release.is_set()


def test_a_client_that_leaves_cancels_its_job(runs):
    app = create_app(runs, queue=4)
    release, started = threading.Event(), threading.Event()
    with TestClient(app) as c:
        job = Job("test", "digits", blocker(release, started))
        app.state.jobs.submit(job, loop=None)
        assert started.wait(5)
        with c.stream("GET", f"/api/jobs/{job.id}/events") as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    break  # read one event, then hang up
        deadline = time.time() + 5
        while job.state != "cancelled" and time.time() < deadline:
            time.sleep(0.01)
        assert job.state == "cancelled"


def test_the_token_guards_the_api(runs):
    with TestClient(create_app(runs, token="s3cret")) as c:
        assert c.get("/").status_code == 200  # the page itself; it sends the token with every call
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs?token=wrong").status_code == 401
        assert c.get("/api/runs?token=s3cret").status_code == 200
        assert c.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_job_queue_unit():
    q = JobQueue(workers=1, limit=1, keep=2)
    release, started = threading.Event(), threading.Event()
    q.submit(Job("t", "r", blocker(release, started)))
    assert started.wait(5)
    q.submit(Job("t", "r", lambda job: [{"png": b"", "settings": {}}]))
    with pytest.raises(QueueFull) as e:
        q.submit(Job("t", "r", lambda job: []))
    assert e.value.retry_after >= 1
    release.set()
    bad = Job("t", "r", lambda job: (_ for _ in ()).throw(ValueError("a clear message")))
    deadline = time.time() + 5
    while q.stats()["waiting"] and time.time() < deadline:
        time.sleep(0.01)
    q.submit(bad)
    while bad.state != "error" and time.time() < deadline:
        time.sleep(0.01)
    assert bad.events[-1] == {"type": "error", "message": "a clear message"}
    assert len(q.jobs) <= 2 + q.stats()["waiting"]  # finished jobs beyond `keep` are dropped
    with pytest.raises(Cancelled):
        j = Job("t", "r", lambda job: [])
        j.cancel_requested = True
        j.check()
    q.close()


def test_parameters_text_layout():
    s = {"unblur": "0.1.0", "kind": "generate", "run": "builtin:shapes", "model_hash": "abcdef0123456789",
         "size": [32, 48], "prompt": "a red circle", "negative_prompt": "blue", "sampler": "dpmpp-2m",
         "grid": "karras", "steps": 20, "guidance": 3.0, "seed": 7}
    assert parameters_text(s) == ("a red circle\nNegative prompt: blue\nSteps: 20, Sampler: DPM++ 2M, Schedule type: "
                                  "Karras, CFG scale: 3, Seed: 7, Size: 48x32, Model hash: abcdef0123, Model: "
                                  "\"builtin:shapes\", Version: unblur 0.1.0")


def test_unblur_sample_writes_settings_and_from_png_reproduces_bit_for_bit(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", str(OLD / "edm-classes"), "--n", "3", "--class", "7", "--steps", "4", "--seed", "40",
                 "--batch", "2", "--out", str(out), "--device", "cpu"]) == 0
    png = out / "00002.png"
    s = read_settings(png)
    assert (s["seed"], s["request_seed"], s["index"], s["class_name"], s["n"], s["batch"]) == (42, 40, 2, "7", 3, 2)
    assert "Seed: 42" in Image.open(png).text["parameters"]
    again = tmp_path / "again.png"
    assert main(["sample", "--from-png", str(png), "--out", str(again), "--device", "cpu"]) == 0
    assert np.array_equal(np.array(Image.open(again)), np.array(Image.open(png)))
    assert "identical" in capsys.readouterr().out
    # another run's weights: refused, naming both hashes
    assert main(["sample", str(OLD / "blur"), "--from-png", str(png), "--out", str(tmp_path / "x.png")]) == 2
    assert "was made by" in capsys.readouterr().err
    # several contexts in one request, and the classes cycled: the same batch is made again
    for extra in (["--class", "1", "--class", "5"], []):
        out2 = tmp_path / f"s{len(extra)}"
        assert main(["sample", str(OLD / "edm-classes"), "--n", "3", *extra, "--steps", "3", "--seed", "7",
                     "--batch", "4", "--out", str(out2), "--device", "cpu"]) == 0
        for png in sorted(out2.glob("0000*.png"))[::2]:
            again = tmp_path / f"again-{len(extra)}-{png.name}"
            assert main(["sample", "--from-png", str(png), "--out", str(again), "--device", "cpu"]) == 0
            assert np.array_equal(np.array(Image.open(again)), np.array(Image.open(png))), png
    plain = tmp_path / "plain.png"
    Image.new("L", (8, 8)).save(plain)
    assert main(["sample", "--from-png", str(plain), "--out", str(tmp_path / "y.png")]) == 2
    assert "carries no unblur settings" in capsys.readouterr().err


def test_serve_cli_warns_off_loopback(monkeypatch, capsys):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    assert main(["serve", str(OLD / "edm-classes"), "--host", "0.0.0.0", "--port", "7999", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "reachable from other machines" in err and "--token" in err and seen["host"] == "0.0.0.0"
    assert main(["serve", str(OLD / "edm-classes"), "--port", "70000"]) == 2
    assert main(["serve", "builtin:nothing"]) == 2
    assert "no built-in run 'builtin:nothing'" in capsys.readouterr().err
    assert main(["serve", str(OLD / "toy"), "--device", "cpu"]) == 2  # 2-D points: nothing for a page to show
    assert "the page serves image runs" in capsys.readouterr().err
