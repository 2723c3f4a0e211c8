"""The web page in a real headless browser: Debian's chromium and chromedriver, driven by selenium.

The test serves ``app/streamlit_app.py`` with ``streamlit run`` on a free port of 127.0.0.1, from a
folder whose ``models/`` holds a smallcnn checkpoint with its inference recipe, uploads a face clip
made with real libx264 (``helpers_video.make_face_clip``), reads P(fake) and the robustness check
off the page, compares P(fake) with ``fakeproof detect --json`` on the same file, and saves a
screenshot under the test's tmp dir. ``.ci/run`` installs chromium and chromedriver (as root, with
apt-get) so CI runs it; elsewhere it skips with the reason.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from fakeproof.boundary import Boundary
from fakeproof.cli import main
from fakeproof.models import save_checkpoint
from fakeproof.recipe import build_recipe
from _models import spread_smallcnn
from helpers_video import make_face_clip, make_params

APP = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SERVE_TIMEOUT = 120  # seconds for streamlit to start
SCORE_TIMEOUT = 240  # seconds for the page to show the result (upload, MTCNN, PGD on 2 cores)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="chromium and chromedriver not installed (apt-get install chromium "
                              "chromium-driver; .ci/run does it as root)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A project-like folder (models/demo.pt), a face clip, and the page served from there."""
    pytest.importorskip("streamlit", reason="the app extra is not installed (pip install .[app])")
    root = tmp_path_factory.mktemp("app")
    (root / "models").mkdir()
    params = make_params(frames={"count": 4}, faces={"image_size": 64}, model={"name": "smallcnn"})
    model = spread_smallcnn(0)  # an untrained model whose outputs differ between frames
    save_checkpoint(root / "models" / "demo.pt", model,
                    {"recipe": build_recipe(params, Boundary())})
    make_face_clip(root / "clip.mp4", size=128, n_frames=8, fps=8)

    port = free_port()
    log = open(root / "streamlit.log", "w+")
    env = {**os.environ, "FAKEPROOF_MODELS": str(root / "models")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:  # streamlit prints its URL once it listens
            line = lines.get(timeout=SERVE_TIMEOUT)
            assert line is not None, f"streamlit exited: {(root / 'streamlit.log').read_text()}"
            if f":{port}" in line:
                break
        yield dict(root=root, url=f"http://127.0.0.1:{port}", clip=root / "clip.mp4",
                   ckpt=root / "models" / "demo.pt")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,2400"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


def metric(driver, label: str) -> str:
    """The value shown by the st.metric whose label starts with ``label``."""
    from selenium.webdriver.common.by import By

    for box in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        name = box.find_element(By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text.strip()
        if name.startswith(label):
            return box.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text.strip()
    raise AssertionError(f"no metric labelled {label!r} on the page")


def test_upload_a_video_and_read_the_score(site, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site["url"])
    upload = WebDriverWait(browser, SERVE_TIMEOUT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, 'input[type="file"]')))
    assert "fakeproof" in browser.find_element(By.TAG_NAME, "h1").text
    upload.send_keys(str(site["clip"]))
    WebDriverWait(browser, SCORE_TIMEOUT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]')) >= 4)
    WebDriverWait(browser, 60).until(  # the chart and the face crops render after the metrics
        lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
        and d.find_elements(By.CSS_SELECTOR, "canvas, svg.marks"))
    browser.save_screenshot(str(tmp_path / "app.png"))
    print(f"screenshot: {tmp_path / 'app.png'}")

    shown = float(metric(browser, "P(fake)"))
    verdict = metric(browser, "Verdict")
    attacked = float(metric(browser, "P(fake) under PGD"))
    page = browser.find_element(By.TAG_NAME, "body").text

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["detect", "--json", "--checkpoint", str(site["ckpt"]), str(site["clip"])])
    assert code == 0, err.getvalue()
    (cli,) = json.loads(out.getvalue())
    assert shown == pytest.approx(cli["p_fake"], abs=5e-5)  # the page shows 4 decimals
    assert verdict == cli["label"].upper()
    assert f"{cli['frames']} frames sampled, {cli['faces']} faces scored" in page
    m = re.search(r"P\(fake\) (\d\.\d{4}) → (\d\.\d{4}) on (\d+) faces", page)
    assert m, page
    assert int(m.group(3)) == cli["faces"]  # every face attacked: the clean side is P(fake)
    assert float(m.group(1)) == pytest.approx(cli["p_fake"], abs=5e-5)
    assert float(m.group(2)) == attacked
    assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')) == cli["faces"]
    assert "Traceback" not in page and "Error" not in page
