"""The explorer's web server: one page and a small JSON API over an :class:`Explorer` (Starlette,
served by uvicorn; the optional extra ``vaezoo[explore]``).

Endpoints (every error is JSON ``{"error": "..."}`` with a 4xx status, never a traceback)::

    GET  /                      the page (static/index.html, with its script and style)
    GET  /api/info              the models, their sliders, the gallery's size, the limits
    GET  /api/gallery/{i}.png   validation image i
    POST /api/upload            an image file's bytes -> {"image": "upload:KEY", "png": ...}
    POST /api/encode            {"image": REF} -> per model its code and reconstruction
    POST /api/decode            {"codes": {MODEL: [...]}, "sliders": [...]} -> per model a decode
    POST /api/sample            {"sampler": "prior"|"gmm", "n", "seed"} -> per model draws
    POST /api/interpolate       {"from": REF, "to": REF, "steps", "method"} -> per model a strip
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from vaezoo.explore.session import MAX_UPLOAD_BYTES, ExploreError, Explorer

STATIC = {"index.html": "text/html", "explore.js": "text/javascript", "explore.css": "text/css"}
MAX_JSON_BYTES = 4 * 2**20  # a decode request holds a few codes; anything larger is refused
log = logging.getLogger("vaezoo.explore")


class ExtraMissing(ImportError):
    """The web framework of ``vaezoo[explore]`` is not installed."""


def require_framework() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ExtraMissing(
            f"vaezoo explore needs a web server ({err.name} is not installed): pip install 'vaezoo[explore]'"
        ) from None


def static_file(name: str) -> bytes:
    return resources.files("vaezoo.explore").joinpath("static", name).read_bytes()


def create_app(explorer: Explorer) -> Any:
    """The Starlette application serving ``explorer``."""
    require_framework()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def body_bytes(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ExploreError(f"the request body has {declared} bytes; at most {limit} are taken", 413)
        data = await request.body()
        if len(data) > limit:
            raise ExploreError(f"the request body has {len(data)} bytes; at most {limit} are taken", 413)
        return data

    async def json_body(request: Request) -> Any:
        data = await body_bytes(request, MAX_JSON_BYTES)
        try:
            return json.loads(data or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ExploreError(f"the request body is not JSON: {err}") from None

    def post(work: Callable[[Any], dict[str, Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await json_body(request)
            return JSONResponse(await run_in_threadpool(work, body))  # torch work off the event loop

        return endpoint

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in STATIC:
            raise ExploreError(f"no file {name!r}", 404)
        return Response(static_file(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    async def info(request: Request) -> Response:
        return JSONResponse(explorer.info())

    async def gallery(request: Request) -> Response:
        png = await run_in_threadpool(explorer.gallery_png, request.path_params["index"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def upload(request: Request) -> Response:
        data = await body_bytes(request, MAX_UPLOAD_BYTES)
        return JSONResponse(await run_in_threadpool(explorer.upload, data))

    async def refused(request: Request, err: Exception) -> Response:
        assert isinstance(err, ExploreError)
        return JSONResponse({"error": str(err)}, status_code=err.status)

    async def http_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        what = "no such page or endpoint" if err.status_code == 404 else err.detail
        return JSONResponse(
            {"error": f"{request.method} {request.url.path}: {what}"}, status_code=err.status_code
        )

    async def crashed(request: Request, err: Exception) -> Response:
        log.exception("explore: %s %s failed", request.method, request.url.path)  # the server's console
        message = f"the server failed on {request.url.path}: {type(err).__name__}: {err}"
        return JSONResponse({"error": message}, status_code=500)

    routes = [
        Route("/", page),
        Route("/static/{name}", page),
        Route("/api/info", info),
        Route("/api/gallery/{index:int}.png", gallery),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/encode", post(explorer.encode), methods=["POST"]),
        Route("/api/decode", post(explorer.decode), methods=["POST"]),
        Route("/api/sample", post(explorer.sample), methods=["POST"]),
        Route("/api/interpolate", post(explorer.interpolate), methods=["POST"]),
    ]
    handlers = {ExploreError: refused, HTTPException: http_error, Exception: crashed}
    return Starlette(routes=routes, exception_handlers=handlers)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), bound before the server starts so the
    address printed is the one served."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a response's headers and body leave at once, instead of the
    # body waiting ~40 ms for the client's delayed ACK of the headers (Nagle's algorithm)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def server(explorer: Explorer, sock: socket.socket, quiet: bool = True) -> Any:
    """A uvicorn server of ``explorer`` on ``sock``; ``server.run(sockets=[sock])`` serves until stopped."""
    import uvicorn

    config = uvicorn.Config(
        create_app(explorer), log_level="warning" if quiet else "info", access_log=not quiet
    )
    return uvicorn.Server(config)


@contextmanager
def serving_in_background(explorer: Explorer, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``explorer`` from a thread while the block runs (from Python, a notebook, a test); yields
    the address. The server stops when the block ends."""
    sock = bind(host, port)
    running = server(explorer, sock)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30.0
        while not running.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the explorer's server did not start on {address(sock)}")
            time.sleep(0.01)
        yield address(sock)
    finally:
        running.should_exit = True
        thread.join(timeout=10)
        sock.close()
