"""The browser pages in a real browser: Debian's headless Chromium driven by Playwright
against the running Serve app. Upload one image (sync) and several (a job with SSE
progress), compare before/after, download one result and the zip, find the job in the
browser's history; then the dashboard shows that job and the deployments. Screenshots
go to ``$PIXSERVE_ARTIFACTS`` (default ``var/test-artifacts``)."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.test_jobs_api import submit, wait
from tests.utils.images import astronaut, encode
from tests.utils.tiny_meshers import TINY_DEPTH
from tests.utils.tiny_models import TINY_COMPACT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("PIXSERVE_ARTIFACTS", "var/test-artifacts"))


@pytest.fixture(scope="module")
def driver() -> Iterator[playwright_api.Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install chromium")
    with playwright_api.sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(driver: playwright_api.Playwright) -> Iterator[playwright_api.Browser]:
    # Debian's build, launched by path (browser downloads are not possible here)
    browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def gl_browser(driver: playwright_api.Playwright) -> Iterator[playwright_api.Browser]:
    """Chromium with WebGL on the CPU (SwiftShader), for the 3D viewer."""
    browser = driver.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
    )  # fmt: skip
    yield browser
    browser.close()


@pytest.fixture
def page(browser: playwright_api.Browser) -> Iterator[playwright_api.Page]:
    yield from _page_of(browser)


@pytest.fixture
def gl_page(gl_browser: playwright_api.Browser) -> Iterator[playwright_api.Page]:
    yield from _page_of(gl_browser)


def _page_of(browser: playwright_api.Browser) -> Iterator[playwright_api.Page]:
    """A fresh page; any JavaScript error on it fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: playwright_api.Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def images(tmp_path: Path, sizes: list[int]) -> list[str]:
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"astronaut-{i}.png"
        path.write_bytes(encode(astronaut(size)))
        paths.append(str(path))
    return paths


def open_upload_page(page: playwright_api.Page, serve_url: str) -> None:
    """The upload page, once its model list has loaded, with the tiny x2 model chosen."""
    page.goto(f"{serve_url}/")
    page.wait_for_selector(f"#model option[value='{TINY_COMPACT}']", state="attached")
    page.select_option("#model", TINY_COMPACT)


def test_upload_one_image_compare_and_download(
    page: playwright_api.Page, serve_url: str, tmp_path: Path
) -> None:
    open_upload_page(page, serve_url)
    page.set_input_files("#files", images(tmp_path, [48]))
    page.click("#submit")  # one small image: the synchronous endpoint
    page.wait_for_selector(".card .badge.done", timeout=60_000)
    before, after = page.locator(".compare img.before"), page.locator(".compare img.after")
    assert before.is_visible() and after.is_visible()
    page.locator(".compare input[type=range]").fill("20")
    assert before.evaluate("img => img.style.clipPath") == "inset(0px 80% 0px 0px)"
    with page.expect_download() as download:
        page.click(".card a.download")
    result = Image.open(download.value.path())
    assert result.size == (96, 96)  # the tiny model's x2
    assert download.value.suggested_filename == "astronaut-0.upscaled.png"
    facts = page.inner_text(".card .facts")  # how the run went
    assert TINY_COMPACT in facts and "48x48 → 96x96" in facts and facts.count(" s") >= 1
    shot(page, "upload-single")


def test_the_loupe_the_zoom_view_run_again_curl_and_the_history(
    page: playwright_api.Page, serve_url: str, tmp_path: Path
) -> None:
    """After one sync run: the loupe shows the output's own pixels under the pointer,
    zoom opens it at 1:1 and 2:1, the same image can run again with other settings,
    the run comes as a curl command, and the history lists the sync run."""
    open_upload_page(page, serve_url)
    page.set_input_files("#files", images(tmp_path, [200]))  # 400 px out, shown in ~300
    page.click("#submit")
    page.wait_for_selector(".card .badge.done", timeout=60_000)
    box = page.locator(".compare").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 3)
    loupe = page.locator(".compare .loupe")
    assert loupe.is_visible()  # the card shows 400 px in ~300: the loupe shows them 1:1
    assert 0 < int(loupe.get_attribute("data-x") or "0") < 400
    assert loupe.evaluate("l => l.style.backgroundSize") == "400px 400px"
    shot(page, "upload-loupe")
    page.click(".compare button.zoom")
    view = page.locator(".zoomview")
    assert view.is_visible() and view.locator("img.after").evaluate("i => i.style.width") == "400px"
    view.locator("select").select_option("2")
    assert view.locator("img.after").evaluate("i => i.style.width") == "800px"
    page.keyboard.press("Escape")
    assert page.locator(".zoomview").count() == 0
    page.click("#again")  # the same image again, to try another setting
    assert "1 image(s)" in page.inner_text("#summary") and page.locator(".card").count() == 2
    page.select_option("#format", "webp")
    page.click("#curl")
    command = page.inner_text("#curl-text")
    assert command.startswith("curl -fsS") and "image=@astronaut-0.png" in command
    assert f"model={TINY_COMPACT}" in command and "format=webp" in command
    assert f"{serve_url}/v1/upscale" in command and "astronaut-0.upscaled.webp" in command
    synced = page.locator(".history li[data-sync]").first
    assert "astronaut-0.png" in synced.inner_text() and TINY_COMPACT in synced.inner_text()
    page.reload()  # kept by the browser
    assert page.locator(".history li[data-sync]").count() >= 1
    icon = httpx.get(f"{serve_url}/favicon.ico", timeout=10)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert page.locator("link[rel=icon]").get_attribute("href") == "assets/favicon.svg"


def test_presets_that_cannot_run_say_what_they_need(
    page: playwright_api.Page, serve_url: str
) -> None:
    """The app without denoise or face models: their presets are offered disabled, each
    with the reason the service gave."""
    page.goto(f"{serve_url}/missing/")
    page.wait_for_selector("#task option[value='enhance']", state="attached")
    enhance = page.locator("#task option[value='enhance']")
    assert enhance.is_disabled()
    assert "cannot run: needs the Denoiser" in enhance.inner_text()
    assert page.locator("#task option[value='thumbnail-webp']").is_enabled()


def test_upload_several_images_as_a_job_with_progress_zip_and_history(
    page: playwright_api.Page, serve_url: str, tmp_path: Path
) -> None:
    open_upload_page(page, serve_url)
    page.select_option("#format", "webp")
    page.set_input_files("#files", images(tmp_path, [32, 40, 48]))
    assert "3 image(s)" in page.inner_text("#summary")
    page.click("#submit")  # several images: a job, followed over SSE
    page.wait_for_function("document.querySelectorAll('.card .badge.done').length === 3",
                           timeout=90_000)  # fmt: skip
    assert page.locator("#progress").evaluate("p => p.value") == 3
    page.wait_for_function("document.querySelectorAll('.card .facts').length === 3")
    facts = page.locator(".card .facts").all_inner_texts()
    assert all(TINY_COMPACT in f for f in facts) and any("32x32 → 64x64" in f for f in facts)
    with page.expect_download() as download:
        page.click("#zip")
    with zipfile.ZipFile(download.value.path()) as archive:
        names = sorted(archive.namelist())
        sizes = sorted(Image.open(io.BytesIO(archive.read(n))).size for n in names)
    assert names == [f"astronaut-{i}.upscaled.webp" for i in range(3)]
    assert sizes == [(64, 64), (80, 80), (96, 96)]
    shot(page, "upload-job")
    # the job is in this browser's history, also after a reload
    page.reload()
    entry = page.locator(".history li[data-job]").first
    assert "3 image(s)" in entry.inner_text() and "succeeded" in entry.inner_text()
    assert entry.get_attribute("data-job") in page.evaluate("localStorage['pixserve.history']")
    # an entry past its retention shows the expiry badge (history is the browser's own)
    page.evaluate("""() => {
        const h = JSON.parse(localStorage.getItem('pixserve.history'));
        h.push({...h[0], id: 'f'.repeat(32), expires_at: 1});
        localStorage.setItem('pixserve.history', JSON.stringify(h));
    }""")
    page.reload()
    expired = page.locator(f".history li[data-job='{'f' * 32}']")
    assert expired.locator(".badge.expired").is_visible()


def choose_preset(page: playwright_api.Page, serve_url: str, preset: str) -> None:
    open_upload_page(page, serve_url)
    page.wait_for_selector(f"#task option[value='{preset}']", state="attached")
    page.select_option("#task", preset)


def test_a_preset_gives_its_image_and_its_caption(
    page: playwright_api.Page, serve_url: str, tmp_path: Path
) -> None:
    """The archive preset (denoise -> 2x -> faces, a caption beside): the result is
    compared with its input and the caption step's texts show under it."""
    choose_preset(page, serve_url, "archive")
    assert page.locator("#upscale-options").is_hidden()
    assert "denoise → upscale → face → describe" in page.inner_text("#task-help")
    assert page.inner_text("#submit") == "Run archive"
    page.set_input_files("#files", images(tmp_path, [48]))
    page.fill("#preset-params", "{not json")
    page.click("#submit")  # refused here, and the image stays chosen
    assert "must be a JSON object" in page.inner_text("#message")
    assert "1 image(s)" in page.inner_text("#summary")
    page.fill("#preset-params", '{"face": {"max_faces": 1}}')
    page.click("#submit")
    page.wait_for_selector(".card .badge.done", timeout=90_000)
    assert page.locator(".compare img.after").is_visible()
    described = page.locator(".card .texts [data-step='describe']")
    assert described.locator(".caption").inner_text().strip()
    assert "NSFW" in described.inner_text()
    with page.expect_download() as download:
        page.click(".card a.download")
    assert download.value.suggested_filename == "astronaut-0.archive.png"
    assert Image.open(download.value.path()).size == (96, 96)
    shot(page, "upload-preset")


def test_a_job_shows_live_previews_and_falls_back_to_sse(
    page: playwright_api.Page, serve_url: str, tmp_path: Path
) -> None:
    """A job's cards show its items' previews over /v1/ws while they run; with no
    WebSocket in the browser the same job flow completes over Server-Sent Events."""
    open_upload_page(page, serve_url)
    page.set_input_files("#files", images(tmp_path, [400, 400]))
    page.click("#submit")
    page.wait_for_function("document.querySelectorAll('.card .badge.done').length === 2",
                           timeout=90_000)  # fmt: skip
    assert int(page.evaluate("document.body.dataset.previews || 0")) >= 1
    page.add_init_script("window.WebSocket = function () { throw new Error('blocked'); };")
    open_upload_page(page, serve_url)
    page.set_input_files("#files", images(tmp_path, [32, 40]))
    page.click("#submit")
    page.wait_for_function("document.querySelectorAll('.card .badge.done').length === 2",
                           timeout=90_000)  # fmt: skip
    assert page.evaluate("document.body.dataset.previews") is None


def test_a_text_preset_job_shows_each_images_caption(
    page: playwright_api.Page, serve_url: str, tmp_path: Path
) -> None:
    choose_preset(page, serve_url, "caption")
    assert page.locator("#format").is_hidden()  # no image comes back
    page.set_input_files("#files", images(tmp_path, [32, 40]))
    page.click("#submit")  # two images: a job of the caption preset
    page.wait_for_function("document.querySelectorAll('.card .badge.done').length === 2",
                           timeout=90_000)  # fmt: skip
    captions = page.locator(".card .texts [data-step='caption'] .caption")
    assert captions.count() == 2 and all(c.strip() for c in captions.all_inner_texts())
    with page.expect_download() as download:
        page.click("#zip")
    with zipfile.ZipFile(download.value.path()) as archive:
        assert sorted(archive.namelist()) == [f"astronaut-{i}.caption.json" for i in range(2)]
        said = json.loads(archive.read("astronaut-0.caption.json"))
    assert said["caption"]["caption"] and 0 <= said["caption"]["nsfw"] <= 1
    shot(page, "upload-text-preset")


def test_other_tasks_run_from_the_page(
    page: playwright_api.Page, serve_url: str, tmp_path: Path
) -> None:
    """Denoise one image (sync, its own route) and caption two (a caption job): each
    task is offered, says what it does, takes JSON fields and shows its result."""
    choose_preset(page, serve_url, "task:denoise")
    assert "Remove noise" in page.inner_text("#task-help")
    assert (
        page.inner_text("#params-label") == "Fields" and page.inner_text("#submit") == "Run denoise"
    )
    page.set_input_files("#files", images(tmp_path, [40]))
    page.fill("#preset-params", '{"model": "nope"}')
    page.click("#submit")  # refused by the service, named, the card says so
    page.wait_for_selector(".card .badge.failed", timeout=60_000)
    assert "unknown model 'nope'" in page.inner_text("#message")
    page.click("#clear")
    page.set_input_files("#files", images(tmp_path, [40]))
    page.fill("#preset-params", "")
    page.click("#submit")
    page.wait_for_selector(".card .badge.done", timeout=60_000)
    with page.expect_download() as download:
        page.click(".card a.download")
    assert download.value.suggested_filename == "astronaut-0.denoise.png"
    assert Image.open(download.value.path()).size == (40, 40)
    page.click("#clear")
    page.select_option("#task", "task:caption")
    assert page.locator("#format").is_hidden()
    page.set_input_files("#files", images(tmp_path, [32, 40]))
    page.click("#submit")  # two images: a caption job
    page.wait_for_function("document.querySelectorAll('.card .badge.done').length === 2",
                           timeout=90_000)  # fmt: skip
    captions = page.locator(".card .texts [data-step='caption'] .caption")
    assert captions.count() == 2 and all(c.strip() for c in captions.all_inner_texts())
    shot(page, "upload-caption-task")


def test_dashboard_shows_the_job_and_the_deployments(
    page: playwright_api.Page, serve_url: str, client: httpx.Client
) -> None:
    job = submit(client, [encode(astronaut(16))] * 2).json()
    wait(client, job["id"])
    client.post("/v1/upscale", files={"image": ("bad.png", b"junk", "image/png")})
    page.goto(f"{serve_url}/dashboard")
    page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
    row = page.locator(f"#jobs tr[data-job='{job['id']}']")
    assert "succeeded" in row.inner_text() and "2 / 2" in row.inner_text()
    for name in ("Ingress", "Upscaler", "Dispatcher"):
        deployment = page.locator(f"#deployments tr[data-deployment='{name}']")
        assert "HEALTHY" in deployment.inner_text() or "SCALING" in deployment.inner_text()
    row.click()
    detail = page.locator(f"#job-detail-panel[data-job='{job['id']}']")
    detail.wait_for()
    assert detail.locator("tbody tr").count() == 2
    # the replicas panel and the charts fill once the replicas' live stats are flushed
    page.wait_for_function(
        "document.querySelectorAll('#replicas tbody tr').length >= 3"
        " && document.querySelector('#errors').innerText.includes('invalid_image')",
        timeout=30_000,
    )
    assert page.locator("#queue-chart svg polyline").count() >= 1
    # a bad upload is the caller's: counted as refused (4xx), apart from the errors
    assert "invalid_image" in page.inner_text("#refused-title + *")
    assert "invalid_image" not in page.inner_text("#faults-title + *")
    assert "refused" in page.inner_text("#latency thead")
    upscale = page.locator("#latency tbody tr", has_text="/v1/upscale").first
    assert upscale.locator("td").nth(3).inner_text() != "0"  # refused
    assert "CPU" in page.inner_text("#stats")  # no GPU: no $0.00000
    # a deployment that is scaling says why (Serve's message under its status)
    page.evaluate("""() => renderDeployments({deployments: [{name: 'Upscaler',
        status: 'UPSCALING', running: 1, target: 4, min_replicas: 1, max_replicas: 4,
        num_cpus: 1, num_gpus: 0.5, message: 'Upscaling from 1 to 4 replicas.'}],
        replicas: []})""")
    assert "Upscaling from 1 to 4 replicas." in page.inner_text("#deployments")
    page.reload()
    page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
    shot(page, "dashboard")


def test_dashboard_unloads_and_loads_a_model(page: playwright_api.Page, serve_url: str) -> None:
    """The models panel: every replica's models; Unload frees one on all replicas (the
    row then says unloaded and offers Load), Load brings it back."""
    page.goto(f"{serve_url}/dashboard")
    page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
    button = page.locator(f"#models button[data-model='{TINY_COMPACT}'][data-action='unload']")
    button.first.wait_for(timeout=30_000)
    assert "Upscaler" in page.inner_text("#models") and "RSS" in page.inner_text("#models")
    button.first.click()
    page.wait_for_selector(f"#models button[data-model='{TINY_COMPACT}'][data-action='load']",
                           timeout=60_000)  # fmt: skip
    row = page.locator("#models tr", has_text=TINY_COMPACT).first
    assert "unloaded" in row.inner_text() and "loads on its next request" in row.inner_text()
    page.locator(f"#models button[data-model='{TINY_COMPACT}'][data-action='load']").first.click()
    page.wait_for_function(
        f"[...document.querySelectorAll('#models button[data-model=\"{TINY_COMPACT}\"]')]"
        ".every((b) => b.dataset.action === 'unload')",
        timeout=60_000,
    )
    shot(page, "dashboard-models")


def test_dashboard_sets_a_memory_mode_and_adds_a_model(
    page: playwright_api.Page, serve_url: str, tiny_store: tuple[Path, Path], tmp_path: Path
) -> None:
    page.goto(f"{serve_url}/dashboard")
    page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
    mode = page.locator("#memory-modes select[data-deployment='Upscaler']")
    mode.wait_for(timeout=30_000)
    mode.select_option("low")
    page.wait_for_function(
        "document.querySelector(\"#memory-modes select[data-deployment='Upscaler']\").value"
        " === 'low' && !document.querySelector(\"#memory-modes select\").disabled",
        timeout=60_000,
    )
    fleet = httpx.get(f"{serve_url}/v1/admin/models", timeout=60).json()["deployments"]
    upscaler = next(d for d in fleet if d["deployment"] == "Upscaler")
    assert {replica["memory_mode"] for replica in upscaler["replicas"]} == {"low"}
    httpx.put(f"{serve_url}/v1/admin/deployments/Upscaler/memory-mode", json={"mode": None},
              timeout=60)  # fmt: skip
    root, _ = tiny_store
    weights = tmp_path / "dashboard.pth"
    weights.write_bytes((root / f"{TINY_COMPACT}.pth").read_bytes())
    page.set_input_files("#add-file", str(weights))
    page.fill("#add-name", "dashboard-added")
    page.click("#add-model button")
    page.wait_for_selector("#models button[data-model='dashboard-added']", timeout=60_000)
    models = httpx.get(f"{serve_url}/v1/models", timeout=30).json()["models"]
    assert any(m["name"] == "dashboard-added" and m["state"] == "loaded" for m in models)


def test_image_to_3d_shows_each_mesh_in_the_viewer(
    gl_page: playwright_api.Page, serve_url: str, tmp_path: Path
) -> None:
    """One image (sync): the GLB turns in model-viewer (its canvas is not blank), the
    viewer's picture is the preview, and each format downloads; two (a job): each card
    shows the stored preview beside its viewer."""
    import trimesh

    page = gl_page
    open_upload_page(page, serve_url)
    page.select_option("#task", "task:mesh")
    assert page.locator("#format").is_hidden()  # a mesh's format is one of its fields
    page.fill("#preset-params", '{"resolution": 32}')
    page.set_input_files("#files", images(tmp_path, [64]))
    page.click("#submit")
    page.wait_for_selector(".card .badge.done", timeout=60_000)
    page.wait_for_function("document.querySelector('.card model-viewer').loaded === true",
                           timeout=60_000)  # fmt: skip
    page.wait_for_selector(".card img.preview:not([hidden])", timeout=30_000)
    canvas = np.asarray(Image.open(io.BytesIO(page.locator(".card model-viewer").screenshot())))
    assert canvas[..., :3].std() > 10  # the mesh is drawn, not an empty frame
    with page.expect_download() as download:
        page.click(".card a.download")
    assert download.value.suggested_filename == "astronaut-0.mesh.glb"
    scene = trimesh.load(download.value.path(), file_type="glb")
    assert next(iter(scene.geometry.values())).is_watertight
    with page.expect_download() as other:
        page.click(".card button[data-format=ply]")
    assert other.value.suggested_filename == "astronaut-0.mesh.ply"
    shot(page, "upload-mesh")
    page.click("#clear")
    page.set_input_files("#files", images(tmp_path, [40, 48]))
    page.click("#submit")  # two images: a job, followed over SSE
    page.wait_for_function("document.querySelectorAll('.card .badge.done').length === 2",
                           timeout=90_000)  # fmt: skip
    previews = page.locator(".card img.preview")
    assert previews.count() == 2 and "faces" in page.inner_text(".card .mesh-stats")
    assert all(previews.nth(i).evaluate("i => i.complete && i.naturalWidth === 512")
               for i in range(2))  # fmt: skip
    shot(page, "upload-mesh-job")
    page.goto(f"{serve_url}/dashboard")  # the meshes count among the models' outputs
    page.wait_for_function(f"document.querySelector('#cost').innerText.includes('{TINY_DEPTH}')",
                           timeout=30_000)  # fmt: skip
