"""The explorer's JSON API without a browser (Starlette's test client): every endpoint, its answers and
its errors, over several small models of 32x32 dSprites side by side; and the registry-wide check that
every model can be explored."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUN, require_package
from PIL import Image
from test_zoo_contract import MODELS, build

from vaezoo.cli import main
from vaezoo.config import DataConfig
from vaezoo.data import VAEDataModule
from vaezoo.explore import server as explore_server
from vaezoo.explore.session import (
    SLIDER_LIMIT,
    Explorer,
    ModelView,
    NotExplorable,
    ViewSettings,
    explorer_from_runs,
)
from vaezoo.io import LoadedRun
from vaezoo.registry import create_model

# All of this file on one worker (make test's --dist loadgroup): its module fixtures, which train
# runs, are built once instead of once per worker.
pytestmark = pytest.mark.xdist_group("explore_api")


REPO = Path(__file__).resolve().parents[1]
SMALL = ViewSettings(stats_examples=64, fit_examples=64)


@pytest.fixture(scope="module")
def dsprites() -> VAEDataModule:
    module = VAEDataModule(DataConfig(name="dsprites", image_size=32, subset=400), batch_size=16)
    module.prepare_data()
    module.setup("fit")
    return module


def loaded(model: torch.nn.Module, name: str = "run") -> LoadedRun:
    return LoadedRun(model.eval(), {}, Path(name) / "last.ckpt", Path(name), global_step=7)


def small(name: str, seed: int = 0, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, in_channels=1, image_size=32, hidden_dims=[8, 16, 32], **kwargs)


@pytest.fixture(scope="module")
def explorer(dsprites) -> Explorer:
    """A VAE, a beta-VAE of the same latent size, a conditional VAE and a VQ-VAE (no prior)."""
    runs = [
        ("vae", loaded(small("VanillaVAE", latent_dim=4))),
        ("beta", loaded(small("BetaVAE", seed=1, latent_dim=4))),
        ("cvae", loaded(small("CVAE", latent_dim=3, num_classes=5))),
        (
            "vq",
            loaded(create_model("VQVAE", in_channels=1, embedding_dim=4, num_embeddings=16, image_size=32)),
        ),
    ]
    return explorer_from_runs(
        [(s, run, dsprites) for s, run in runs], SMALL, gallery_size=12, log=lambda _: None
    )


@pytest.fixture(scope="module")
def client(explorer):
    require_package("httpx", "test")
    from starlette.testclient import TestClient

    return TestClient(explore_server.create_app(explorer), raise_server_exceptions=False)


def png_pixels(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def codes_of(client, image=3) -> dict[str, list[float]]:
    answer = client.post("/api/encode", json={"image": image}).json()
    return {key: model["code"] for key, model in answer["models"].items()}


def refused(response, status: int, *pieces: str) -> str:
    """The error of a refused request, checked: its status, a JSON body with 'error', the pieces in it."""
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for piece in pieces:
        assert piece in message
    assert "Traceback" not in message
    return message


# -- what the page is told --------------------------------------------------------------------------
def test_info_lists_each_model_with_its_sliders_and_samplers(client):
    info = client.get("/api/info").json()
    assert [m["name"] for m in info["models"]] == ["VanillaVAE", "BetaVAE", "ConditionalVAE", "VQVAE"]
    vae, _, cvae, vq = info["models"]
    assert vae["latents"] == 4 and len(vae["sliders"]) == 4
    kls = [slider["kl"] for slider in vae["sliders"]]
    assert kls == sorted(kls, reverse=True)  # sorted by KL
    assert set(vae["sliders"][0]["affinity"]) == {"shape", "scale", "orientation", "posX", "posY"}
    assert len(cvae["sliders"]) == 3  # its latents, not the label columns of its code
    assert cvae["latents"] == 3 + 5 and cvae["conditional"]
    assert vq["samplers"]["prior"] and "no prior" in vq["samplers"]["prior"] and vq["samplers"]["gmm"] is None
    assert vq["sliders_note"] and len(vq["sliders"]) == 64  # the most active of its 4 x 8 x 8 latents
    assert info["gallery"] == 12 and info["image_shape"] == [1, 32, 32]
    assert info["factor_names"] == ["shape", "scale", "orientation", "posX", "posY"]
    assert info["slider_limit"] == SLIDER_LIMIT


def test_the_page_and_its_files_are_served_and_need_no_network(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/explore.js">' in page.text
    for name, kind in [("explore.js", "text/javascript"), ("explore.css", "text/css")]:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert not re.search(r"https?://", response.text), f"{name} must work offline"
    assert not re.search(r"https?://", page.text)
    refused(client.get("/static/secrets.txt"), 404, "no file 'secrets.txt'")
    refused(client.get("/static/..%2Fsession.py"), 404)


def test_gallery_images_are_the_validation_images(client, explorer):
    response = client.get("/api/gallery/2.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(response.content)))
    expected = (explorer.gallery[2, 0] * 255 + 0.5).to(torch.uint8).numpy()
    np.testing.assert_array_equal(pixels, expected)
    refused(client.get("/api/gallery/12.png"), 404, "no gallery image 12", "0 to 11")


# -- encode / decode ------------------------------------------------------------------------------------
def test_encode_gives_each_model_its_code_its_reconstruction_and_the_factors(client, explorer):
    answer = client.post("/api/encode", json={"image": 5}).json()
    assert set(answer["models"]) == {"m0", "m1", "m2", "m3"}
    for key, model in answer["models"].items():
        view = explorer.views[key]
        assert len(model["code"]) == view.width
        assert png_pixels(model["png"]).shape == (32, 32)
        expected = view.decode(view.encode(explorer.gallery[5:6], explorer.labels[5:6]))[0, 0]
        np.testing.assert_array_equal(
            png_pixels(model["png"]), (expected * 255 + 0.5).to(torch.uint8).numpy()
        )
    factors = answer["factors"]
    assert list(factors) == explorer.factor_names
    assert factors["posX"] == pytest.approx(float(explorer.labels[5, 3]))
    assert answer["ms"] >= 0


def test_decode_at_zero_is_the_reconstruction_and_a_slider_changes_it(client):
    codes = codes_of(client, 3)
    reconstruction = client.post("/api/encode", json={"image": 3}).json()["models"]
    still = client.post("/api/decode", json={"codes": codes, "sliders": [0, 0]}).json()["models"]
    for key in codes:
        assert still[key]["png"] == reconstruction[key]["png"]
    moved = client.post("/api/decode", json={"codes": codes, "sliders": [SLIDER_LIMIT]}).json()["models"]
    assert np.abs(png_pixels(moved["m0"]["png"]).astype(int) - png_pixels(still["m0"]["png"])).max() > 0


def test_the_same_slider_positions_move_each_models_own_latents(client, explorer):
    codes = codes_of(client, 4)
    sliders = [1.5, -2.0, 0.5]
    answer = client.post("/api/decode", json={"codes": codes, "sliders": sliders}).json()["models"]
    for key, view in explorer.views.items():
        code = torch.tensor(codes[key])
        for slider, value in zip(view.sliders, sliders, strict=False):  # rank r moves the r-th latent by KL
            code[slider.dim] += value * slider.unit
        expected = (view.decode(code[None])[0, 0] * 255 + 0.5).to(torch.uint8).numpy()
        np.testing.assert_array_equal(png_pixels(answer[key]["png"]), expected)


@pytest.mark.parametrize(
    ("body", "status", "pieces"),
    [
        ({"sliders": [SLIDER_LIMIT + 0.5]}, 400, ["'sliders'[0] = 4.5 is out of range", "-4 to 4"]),
        ({"sliders": [0, "a"]}, 400, ["'sliders' must be a list of numbers"]),
        ({"sliders": [0, True]}, 400, ["'sliders' must be a list of numbers"]),
        ({"sliders": [0.0] * 65}, 400, ["'sliders' has 65 values", "at most 64"]),
        ({"sliders": {"0": 1}}, 400, ["'sliders' must be a list, got dict"]),
        ({"codes": {"m0": [0.0, 1.0]}}, 400, ["'codes.m0' has 2 values; expected 4"]),
        ({"codes": {"m0": [0.0, 1.0, None, 2.0]}}, 400, ["'codes.m0' must be a list of numbers"]),
        ({"codes": {"m9": [0.0]}}, 404, ["unknown model 'm9'", "m0, m1, m2, m3"]),
        ({"codes": [1, 2]}, 400, ["'codes' must be an object, got list"]),
    ],
)
def test_bad_decode_requests_get_a_json_error_naming_the_field(client, body, status, pieces):
    request = {"codes": codes_of(client), "sliders": [0.0], **body}
    refused(client.post("/api/decode", json=request), status, *pieces)


def test_a_decode_needs_a_code_per_model_and_a_finite_one(client):
    codes = codes_of(client)
    del codes["m2"]
    refused(client.post("/api/decode", json={"codes": codes}), 400, "no code for m2")
    body = '{"codes": {"m0": [NaN, 0, 0, 0]}}'
    refused(client.post("/api/decode", content=body), 400)


@pytest.mark.parametrize(
    ("content", "pieces"),
    [(b"{nope", ["not JSON"]), (b"[1, 2]", ["must be a JSON object, got list"]), (b"\xff\xfe", ["not JSON"])],
)
def test_a_body_that_is_not_a_json_object_is_refused(client, content, pieces):
    refused(client.post("/api/encode", content=content), 400, *pieces)


def test_bad_image_references_are_refused(client):
    refused(client.post("/api/encode", json={}), 400, "the request has no 'image'")
    refused(client.post("/api/encode", json={"image": 99}), 400, "'image' = 99", "12 gallery images")
    refused(client.post("/api/encode", json={"image": "upload:0000"}), 404, "no such upload")
    refused(client.post("/api/encode", json={"image": 1.5}), 400, "'image' must be an integer or a string")
    refused(client.post("/api/encode", json={"image": True}), 400, "'image' must be an integer or a string")


def test_unknown_endpoints_and_methods_answer_in_json(client):
    refused(client.get("/api/nothing"), 404, "GET /api/nothing: no such page or endpoint")
    refused(client.get("/api/decode"), 405)


def test_a_failure_inside_the_server_is_a_json_500_not_a_traceback(client, explorer, monkeypatch):
    def broken(view, images, labels):
        raise RuntimeError("the decoder fell over")

    monkeypatch.setattr(ModelView, "encode", broken)
    message = refused(
        client.post("/api/encode", json={"image": 0}), 500, "RuntimeError: the decoder fell over"
    )
    assert message.startswith("the server failed on /api/encode")


# -- uploads --------------------------------------------------------------------------------------------
def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_uploaded_image_is_converted_to_the_models_shape_and_explored(client):
    colour = Image.new("RGB", (60, 40), (0, 0, 0))
    colour.paste((255, 255, 255), (25, 10, 35, 30))
    upload = client.post(
        "/api/upload", content=png_bytes(colour), headers={"content-type": "image/png"}
    ).json()
    assert upload["image"].startswith("upload:")
    pixels = png_pixels(upload["png"])
    assert (
        pixels.shape == (32, 32) and pixels.max() == 255 and pixels[0, 0] == 0
    )  # grey, centre-cropped, resized
    answer = client.post("/api/encode", json={"image": upload["image"]}).json()
    assert len(answer["models"]["m0"]["code"]) == 4 and answer["factors"] is None
    assert "conditional" in answer["models"]["m2"]["error"]  # uploads have no label; the others still answer
    assert "code" in answer["models"]["m3"]


@pytest.mark.parametrize(
    ("content", "status", "pieces"),
    [
        (b"", 400, ["the upload is empty"]),
        (b"GIF89a not really", 400, ["not an image Pillow can read", "starting b'GIF89a n'"]),
        (png_bytes(Image.new("L", (8, 8)))[:40], 400, ["not an image Pillow can read"]),
    ],
)
def test_a_bad_upload_is_refused_saying_why(client, content, status, pieces):
    refused(client.post("/api/upload", content=content), status, *pieces)


def test_an_upload_larger_than_the_limit_is_refused(client, monkeypatch):
    monkeypatch.setattr(explore_server, "MAX_UPLOAD_BYTES", 100)
    refused(client.post("/api/upload", content=b"x" * 101), 413, "101 bytes; at most 100")


# -- samples and interpolations ----------------------------------------------------------------------
def test_prior_samples_share_a_seed_and_a_model_without_a_prior_says_so(client):
    body = {"sampler": "prior", "n": 3, "seed": 5}
    first, again = (client.post("/api/sample", json=body).json()["models"] for _ in range(2))
    assert len(first["m0"]["png"]) == 3 and first["m0"]["codes"] == again["m0"]["codes"]
    assert first["m0"]["codes"] == first["m1"]["codes"]  # two models with 4 latents decode the same z
    assert len(first["m2"]["codes"][0]) == 3 + 5  # the conditional VAE's draws carry the image's label
    assert "no prior to sample from" in first["m3"]["error"]
    other = client.post("/api/sample", json={**body, "seed": 6}).json()["models"]
    assert other["m0"]["codes"] != first["m0"]["codes"]


def test_gmm_samples_are_drawn_for_every_model_even_without_a_prior(client):
    answer = client.post("/api/sample", json={"sampler": "gmm", "n": 2, "seed": 1}).json()
    for key, model in answer["models"].items():
        assert len(model["png"]) == 2, key
    assert len(answer["models"]["m3"]["codes"][0]) == 4 * 8 * 8


@pytest.mark.parametrize(
    ("body", "pieces"),
    [
        ({"sampler": "magic"}, ["unknown sampler 'magic'", "prior, gmm"]),
        ({"n": 0}, ["'n' must be between 1 and 64, got 0"]),
        ({"n": 65}, ["'n' must be between 1 and 64"]),
        ({"n": "8"}, ["'n' must be an integer, got str"]),
        ({"seed": -1}, ["'seed' must be between 0"]),
    ],
)
def test_bad_sample_requests_are_refused(client, body, pieces):
    refused(client.post("/api/sample", json=body), 400, *pieces)


def test_an_interpolation_runs_from_one_code_to_the_other(client, explorer):
    answer = client.post("/api/interpolate", json={"from": 1, "to": 6, "steps": 5}).json()["models"]
    start, end = codes_of(client, 1), codes_of(client, 6)
    for key, model in answer.items():
        assert len(model["png"]) == 5
        np.testing.assert_allclose(model["codes"][0], start[key], atol=1e-6)
        np.testing.assert_allclose(model["codes"][-1], end[key], atol=1e-6)
        middle = (np.asarray(start[key]) + np.asarray(end[key])) / 2
        np.testing.assert_allclose(model["codes"][2], middle, atol=1e-5)
    slerp = client.post("/api/interpolate", json={"from": 1, "to": 6, "steps": 5, "method": "slerp"}).json()
    assert slerp["models"]["m0"]["codes"][2] != answer["m0"]["codes"][2]
    refused(client.post("/api/interpolate", json={"from": 1, "to": 6, "method": "cubic"}), 400, "'method'")
    refused(client.post("/api/interpolate", json={"from": 1, "to": 60}), 400, "'to' = 60")
    refused(client.post("/api/interpolate", json={"from": 1, "to": 2, "steps": 1}), 400, "'steps'")


# -- what can be explored ------------------------------------------------------------------------------
def test_side_by_side_models_must_take_one_image_shape(dsprites):
    other = VAEDataModule(DataConfig(name="dsprites", image_size=16, subset=200), batch_size=16)
    other.setup("fit")
    runs = [
        ("a", loaded(small("VanillaVAE", latent_dim=2)), dsprites),
        (
            "b",
            loaded(create_model("VanillaVAE", in_channels=1, latent_dim=2, hidden_dims=[8], image_size=16)),
            other,
        ),
    ]
    with pytest.raises(NotExplorable, match=r"one shape; these take a 1x32x32, b 1x16x16"):
        explorer_from_runs(runs, SMALL, log=lambda _: None)


def test_a_run_trained_on_vectors_is_refused_saying_why(dsprites, monkeypatch):
    monkeypatch.setattr(VAEDataModule, "kind", property(lambda self: "vectors"))
    with pytest.raises(
        NotExplorable, match="run: VanillaVAE was trained on vectors, and the explorer draws images"
    ):
        ModelView("m0", "run", loaded(small("VanillaVAE", latent_dim=2)), dsprites, SMALL)


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_can_be_explored(name, dsprites):
    """Its code decodes, its sliders move the decode, and it samples from its prior or says why."""
    model = build(name, channels=1, size=32)
    view = ModelView("m0", name, loaded(model), dsprites, SMALL)
    explorer = Explorer([view], *dsprites.fixed_batch(4, split="val"), None)
    code = explorer.encode({"image": 0})["models"]["m0"]
    assert "code" in code, code
    assert len(code["code"]) == view.width and view.sliders
    sliders = [SLIDER_LIMIT] * len(view.sliders)
    moved = explorer.decode({"codes": {"m0": code["code"]}, "sliders": sliders})
    assert png_pixels(moved["models"]["m0"]["png"]).shape[:2] == (32, 32)
    base = torch.tensor(code["code"])
    still, shifted = view.decode(torch.stack([base, view.moved(base, sliders)]))  # (C, H, W) each
    assert torch.isfinite(shifted).all() and not torch.equal(
        still, shifted
    )  # the decoder answers the sliders
    prior = explorer.sample({"sampler": "prior", "n": 2})["models"]["m0"]
    if model.samples_from_prior:
        assert len(prior["codes"]) == 2 and len(prior["codes"][0]) == view.width, prior
    else:
        assert "no prior" in prior["error"]


# -- the command ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("explore")
    assert (
        main(["train", "-c", str(REPO / "configs/vae.yaml"), *TINY_RUN, "--run-dir", str(tmp / "run")]) == 0
    )
    return tmp / "run"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_the_command_serves_a_run_on_a_free_local_port_and_writes_nothing(run_dir):
    require_package("httpx", "test")
    import httpx

    before = snapshot(run_dir)
    command = [
        sys.executable,
        "-m",
        "vaezoo.cli",
        "explore",
        str(run_dir),
        str(run_dir),
        "--stats-examples",
        "32",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        lines = [process.stdout.readline() for _ in range(3)]  # two "measuring" lines, then the address
        found = re.search(r"at (http://127\.0\.0\.1:(\d+)/)", lines[-1])
        assert found, (lines, process.stderr.read() if process.poll() is not None else "")
        url = found.group(1)
        info = httpx.get(url + "api/info", timeout=30).json()
        assert [m["name"] for m in info["models"]] == ["VanillaVAE", "VanillaVAE"]
        codes = {
            m: a["code"]
            for m, a in httpx.post(url + "api/encode", json={"image": 0}, timeout=30).json()["models"].items()
        }
        decoded = httpx.post(url + "api/decode", json={"codes": codes, "sliders": [1.0]}, timeout=30).json()
        assert decoded["models"]["m0"]["png"].startswith("data:image/png")
        assert httpx.post(url + "api/decode", content=b"{", timeout=30).status_code == 400
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert snapshot(run_dir) == before  # the server never writes into the run folder


@pytest.mark.slow
def test_the_command_refuses_bad_arguments_before_serving(run_dir, capsys):
    assert main(["explore", str(run_dir / "nothing.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["explore", str(run_dir), "--gallery", "1"]) == 2
    assert "--gallery must be at least 2, got 1" in capsys.readouterr().err
    assert main(["explore", str(run_dir), "--port", "70000"]) == 2
    assert "--port must be between 0 and 65535" in capsys.readouterr().err
    taken = explore_server.bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        assert main(["explore", str(run_dir), "--port", str(port), "--stats-examples", "16"]) == 2
        assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    finally:
        taken.close()


@pytest.mark.slow
def test_an_exported_folder_and_a_checkpoint_file_are_explored_as_the_run_is(run_dir, tmp_path):
    from vaezoo.cli import _run_data
    from vaezoo.export import export_model
    from vaezoo.io import load_run

    exported = export_model(run_dir, tmp_path / "export", images=False)
    runs = []
    for source in (run_dir, exported, run_dir / "checkpoints" / "last.ckpt"):
        run = load_run(source)
        runs.append((str(source), run, _run_data(run.model, run.config, None, [], str(source), "explore")))
    explorer = explorer_from_runs(runs, SMALL, gallery_size=4, log=lambda _: None)
    answer = explorer.encode({"image": 1})["models"]
    assert answer["m0"]["code"] == answer["m1"]["code"] == answer["m2"]["code"]  # the same weights
    assert answer["m0"]["png"] == answer["m1"]["png"] == answer["m2"]["png"]


def test_without_the_web_framework_the_command_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    assert main(["explore", "some/run"]) == 2
    assert "pip install 'vaezoo[explore]'" in capsys.readouterr().err


def test_an_info_answer_is_plain_json(client):
    assert json.loads(client.get("/api/info").text)["models"][0]["key"] == "m0"
