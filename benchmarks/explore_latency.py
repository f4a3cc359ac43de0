"""How long `vaezoo explore` takes to answer: the decode of a slider move, an encode, 8 samples and an
8-step interpolation, for one model and for two side by side, over HTTP on this machine.

    python benchmarks/explore_latency.py RUN [RUN ...]    # trained runs (the default: configs/vae.yaml's model)

The server runs in a thread of this process (uvicorn on a free local port) and a keep-alive HTTP client
sends the requests one after the other, as the page does; ``server`` is the time the server measured
for the work (the ``ms`` of its answer: decoding and PNG encoding), ``round trip`` adds HTTP and JSON.
Run it on an otherwise idle machine; it writes benchmarks/results/explore_latency.md.
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from vaezoo.cli import _run_data
from vaezoo.config import load_config
from vaezoo.explore.server import serving_in_background
from vaezoo.explore.session import Explorer, explorer_from_runs
from vaezoo.io import LoadedRun, load_run
from vaezoo.registry import create_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "explore_latency.md"


def default_run() -> tuple[str, LoadedRun, Any]:
    """configs/vae.yaml's model (untrained: the latency depends on the network, not its weights) on its data."""
    config = load_config(REPO / "configs" / "vae.yaml")
    raw = config.to_dict()
    model = create_model(config.model_name, **{**config.model_kwargs, "in_channels": 1, "image_size": 64})
    run = LoadedRun(model.eval(), raw, Path("configs/vae.yaml"), REPO, global_step=0)
    return "configs/vae.yaml (untrained)", run, _run_data(model, raw, None, [], "configs/vae.yaml", "bench")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, client: httpx.Client, path: str, bodies: list[dict[str, Any]]) -> dict[str, float]:
    server_ms, trip_ms = [], []
    for body in bodies:
        start = time.perf_counter()
        answer = client.post(url + path, json=body).raise_for_status().json()
        trip_ms.append((time.perf_counter() - start) * 1000.0)
        server_ms.append(answer["ms"])
    return {
        "server median": statistics.median(server_ms),
        "server p90": percentile(server_ms, 0.9),
        "round trip median": statistics.median(trip_ms),
        "round trip p90": percentile(trip_ms, 0.9),
    }


def run_requests(explorer: Explorer, repeats: int) -> dict[str, dict[str, float]]:
    """Each kind of request ``repeats`` times (samples and interpolations a quarter as often)."""
    generator = torch.Generator().manual_seed(0)
    # TCP_NODELAY, as browsers set it: without it, h11's separate header and body writes wait ~40 ms
    # for the server's delayed ACK (Nagle's algorithm), which says nothing about the server
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with serving_in_background(explorer) as url, httpx.Client(transport=transport, timeout=120) as client:
        encoded = client.post(url + "api/encode", json={"image": 0}).json()["models"]
        codes = {key: model["code"] for key, model in encoded.items()}
        client.post(url + "api/sample", json={"sampler": "gmm", "n": 1})  # the GMM is fitted on first use
        moves = [
            {"codes": codes, "sliders": (torch.rand(4, generator=generator) * 6 - 3).tolist()}
            for _ in range(repeats)
        ]
        measure(url, client, "api/decode", moves[:5])  # warm-up
        few = range(max(1, repeats // 4))
        requests = {
            "decode (a slider move)": ("api/decode", moves),
            "encode (pick an image)": ("api/encode", [{"image": i % 12} for i in range(repeats)]),
            "8 prior samples": ("api/sample", [{"n": 8, "seed": i} for i in few]),
            "8 GMM samples": ("api/sample", [{"sampler": "gmm", "n": 8, "seed": i} for i in few]),
            "8-step interpolation": ("api/interpolate", [{"from": i % 11, "to": i % 11 + 1} for i in few]),
        }
        return {name: measure(url, client, path, bodies) for name, (path, bodies) in requests.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", help="trained runs (default: configs/vae.yaml's model, untrained)")
    parser.add_argument("--repeats", type=int, default=200, help="decode and encode requests per case")
    parser.add_argument("-o", "--output", default=str(RESULTS))
    args = parser.parse_args()
    runs = [(source, load_run(source)) for source in args.runs]
    loaded = [(s, r, _run_data(r.model, r.config, None, [], s, "bench")) for s, r in runs] or [default_run()]
    lines = [
        "# `vaezoo explore`: time per request",
        "",
        f"Measured by `python benchmarks/explore_latency.py {' '.join(args.runs)}`".rstrip() + " on "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        "nothing else running. Milliseconds; *server*: the work (decode, PNG), *round trip*: plus HTTP and JSON.",
        "",
    ]
    for count in (1, 2):
        chosen = (loaded * 2)[:count] if len(loaded) < count else loaded[:count]
        explorer = explorer_from_runs(chosen, gallery_size=12, log=lambda _: None)
        names = " + ".join(view.name for view in explorer.views.values())
        results = run_requests(explorer, args.repeats)
        lines += [
            f"## {count} model{'s' if count > 1 else ''}: {names}",
            "",
            "| request | server median | server p90 | round trip median | round trip p90 |",
            "|---|---|---|---|---|",
        ]
        for request, numbers in results.items():
            lines.append(f"| {request} | " + " | ".join(f"{value:.1f}" for value in numbers.values()) + " |")
        lines.append("")
        print("\n".join(lines[-len(results) - 4 :]))
    described = [
        f"{type(run.model).__name__} on {run.config.get('data', {}).get('name', '?')} after {run.global_step} "
        f"steps (`{source}`)"
        for source, run, _ in loaded
    ]
    lines += [f"Runs: {'; '.join(described)}.", ""]
    Path(args.output).write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
