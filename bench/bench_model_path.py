"""Benchmark the model path of the pose pipeline: calls per frame, our overhead, concurrency.

Usage::

    .venv/bin/python bench/bench_model_path.py [--frames 100] [--latency-ms 200]
        [--concurrency 8] [--backends openai hybrid] [--guard-frames 30]
        [--work /tmp/bench-model-path] [--report bench/results/model-path.md]
        [--server subprocess|inprocess]

No model runs here. The real client (``ChatOpenAI`` through
:class:`agent.llm.ModelClient`, built by
:func:`agent.backends.factory_pose.make_pose_backend`) talks to the scripted
local OpenAI-compatible server (``tests/fixtures/openai_server.py``), which
answers every request after a fixed latency as a model that trusts the
motion prediction would (``tests/fixtures/scripted_pose_model.py``, oracle).
For each backend it reports:

* model calls per tracked frame, per stage (the paper's design makes
  6 cameras x (4 + 4 + 1) = 54 for a first try);
* the orchestrator's own share of wall time: the time with no request in
  flight at the server, i.e. the model sat idle waiting for us (images,
  graph, Stage 4, centroids, checkpoints, and stages run one after another);
* achieved concurrency: the most requests in flight, and the mean number in
  flight while any is, against what the frame-to-frame dependency allows
  (:func:`dependency_bound`: frames one after another, within a frame and
  quality-control attempt the stages one after another, each stage's
  requests ``--concurrency`` at a time, a call's tool rounds and retries one
  after another).

The scripted server runs in its own process by default (``--server
subprocess``), as a real model server does: in-process, its request parsing
and oracle answers would compete with the orchestrator for the interpreter
lock and be counted as our overhead. ``--server inprocess`` measures that way
too. Both processes stamp times with ``time.monotonic`` (one system-wide
clock). A request is in flight from the moment the server has read it until
its answer is due (the fixed latency); everything else, the HTTP transfer
included, counts as ours.

The guard section runs a *nonsense* model (schema-valid random boxes and
centroid numbers) with no latency through ``hybrid`` and ``openai`` on the
first ``--guard-frames`` frames and scores them against ``classical`` with
``eval`` (tools.pose_metrics).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from agent.allocator import keep_freed_memory  # noqa: E402
from agent.backends import factory_pose  # noqa: E402
from agent.commands.eval_pose import score_results  # noqa: E402
from agent.pose_context import PoseContext  # noqa: E402
from agent.pose_pipeline import run_pose  # noqa: E402
from agent.recording import load_recording  # noqa: E402
from agent.synth_pose import SynthPoseOptions, synthesize_pose_recording  # noqa: E402
from tests.fixtures.fake_chat import ScriptedChatModel  # noqa: E402
from tests.fixtures.openai_server import Reply, ScriptedOpenAIServer  # noqa: E402
from tests.fixtures.scripted_pose_model import pose_chat_script, pose_responder  # noqa: E402

PAPER_CALLS_PER_FRAME = 6 * (4 + 4 + 1)


class TimedResponder:
    """Oracle answers after ``latency_s``; records each request's [start, end) on the server."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.answer = pose_responder("oracle")
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> Reply:
        start = time.monotonic()
        reply = self.answer(body)
        # The oracle's own compute is part of the model's time: the answer is due latency_s after arrival.
        delay_s = max(0.0, start + self.latency_s - time.monotonic())
        with self._lock:
            self.intervals.append((start, start + self.latency_s))
        return Reply(content=reply.content, tool_calls=reply.tool_calls, delay_s=delay_s)


class _RequestCounter:
    """Stands in for the server's list of request bodies: counts them, keeps none.

    Thousands of image-laden bodies held in memory slow the server's garbage
    collection, which is not what is measured.
    """

    def __init__(self) -> None:
        self.n = 0

    def append(self, body: dict) -> None:
        self.n += 1

    def __len__(self) -> int:
        return self.n


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of the request intervals (time with at least one in flight)."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return busy


def _serve(latency_s: float, connection) -> None:
    """Child process: the scripted server until told to stop; then its timings go back."""
    responder = TimedResponder(latency_s)
    with ScriptedOpenAIServer(responder) as server:
        server.requests = _RequestCounter()
        connection.send(server.base_url)
        connection.recv()
        connection.send({"intervals": responder.intervals, "n_requests": len(server.requests),
                         "max_in_flight": server.max_in_flight})


class ServedModel:
    """The scripted model server, in this process or its own; ``base_url`` while open.

    After the ``with`` block: ``intervals`` (server-side [arrival, answer due) per
    request, ``time.monotonic``), ``n_requests`` and ``max_in_flight``.
    """

    def __init__(self, latency_s: float, where: str) -> None:
        self.latency_s, self.where = latency_s, where
        self.intervals: list[tuple[float, float]] = []
        self.n_requests = self.max_in_flight = 0

    def __enter__(self) -> ServedModel:
        if self.where == "inprocess":
            self._responder = TimedResponder(self.latency_s)
            self._server = ScriptedOpenAIServer(self._responder).__enter__()
            self._server.requests = _RequestCounter()
            self.base_url = self._server.base_url
        else:
            context = multiprocessing.get_context("spawn")
            self._connection, child = context.Pipe()
            self._process = context.Process(target=_serve, args=(self.latency_s, child), daemon=True)
            self._process.start()
            self.base_url = self._connection.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.where == "inprocess":
            self._server.__exit__(None, None, None)
            self.intervals = list(self._responder.intervals)
            self.n_requests, self.max_in_flight = len(self._server.requests), self._server.max_in_flight
            return
        self._connection.send("stop")
        report = self._connection.recv()
        self._process.join()
        self.intervals = [tuple(i) for i in report["intervals"]]
        self.n_requests, self.max_in_flight = report["n_requests"], report["max_in_flight"]


STAGE_ORDER = {"locate_regions": 0, "assign_within_region": 1, "reconcile_regions": 2}


def dependency_bound(calls_log: Path, concurrency: int) -> int:
    """Fewest sequential request rounds the run's dependencies allow (a lower bound).

    Frames run one after another (the rolling window). Within a frame, each
    camera's stages run one after another, per quality-control attempt, and
    one call's requests (tool rounds, retries) one after another; cameras are
    independent, and at most ``concurrency`` requests run at once. A frame
    needs at least max(ceil(requests / concurrency), the longest camera's
    chain) rounds, a chain being the sum over its stage runs of the longest
    call. A camera's new attempt starts where its log returns to an earlier stage.
    """
    entries = [json.loads(line) for line in calls_log.read_text(encoding="utf-8").splitlines()]
    # (frame, camera) -> per stage run: item -> requests
    runs: dict[tuple[str, str], list[Counter[str]]] = defaultdict(list)
    last_rank: dict[tuple[str, str], int] = {}
    requests: Counter[str] = Counter()
    for entry in sorted(entries, key=lambda e: e["seq"]):
        fields = dict(part.split("=", 1) for part in entry["item"].split())
        key, rank = (fields["frame"], fields["camera"]), STAGE_ORDER[entry["node"]]
        if rank != last_rank.get(key):
            runs[key].append(Counter())
        last_rank[key] = rank
        runs[key][-1][entry["item"]] += 1
        requests[fields["frame"]] += 1
    chains: dict[str, int] = defaultdict(int)
    for (frame, _), stage_runs in runs.items():
        chains[frame] = max(chains[frame], sum(max(calls.values()) for calls in stage_runs))
    return sum(max(math.ceil(n / concurrency), chains[frame]) for frame, n in requests.items())


def recording_dir(work: Path, frames: int) -> Path:
    path = work / f"rec-{frames}f-6cam"
    if not (path / "recording.toml").is_file():
        synthesize_pose_recording(path, SynthPoseOptions(frames=frames, cameras=6, seed=0, overwrite=True))
    return path


def run_backend(rec: Path, out: Path, ctx: PoseContext, chat_model=None) -> tuple[object, object, float, float]:
    """Run the pipeline with the factory's backend; returns (summary, backend, start, end) in monotonic s."""
    recording = load_recording(rec)
    if chat_model is not None:
        factory_pose.load_chat_model = lambda **kwargs: chat_model
    out.mkdir(parents=True, exist_ok=True)
    backend = factory_pose.make_pose_backend(ctx, recording, out)
    started = time.monotonic()
    summary = run_pose(rec, out, ctx, overwrite=True, quiet=True, backend=backend)
    return summary, backend, started, time.monotonic()


def timed_rows(rec: Path, work: Path, args: argparse.Namespace, n_seeds: int) -> list[str]:
    rows = []
    for name in args.backends:
        with ServedModel(args.latency_ms / 1000, args.server) as served:
            ctx = PoseContext(backend=name, base_url=served.base_url, vlm_model="scripted",
                              max_concurrency=args.concurrency, max_frames=args.frames)
            summary, backend, started, ended = run_backend(rec, work / f"out-{name}", ctx)
        wall = ended - started
        stats = backend.stats() if hasattr(backend, "stats") else {"model_calls": {}, "model_calls_total": 0}
        tracked = summary.n_frames - n_seeds
        per_stage = ", ".join(f"{node.split('_')[0]} {count / tracked:.1f}"
                              for node, count in stats["model_calls"].items())
        busy = busy_seconds([(max(a, started), min(b, ended)) for a, b in served.intervals])
        request_s = served.n_requests * served.latency_s
        mean_in_flight = request_s / busy if busy else 0.0
        calls_log = work / f"out-{name}" / "calls.jsonl"
        bound_s = (dependency_bound(calls_log, args.concurrency) * served.latency_s
                   if calls_log.is_file() and served.n_requests else 0.0)
        allowed = f"{request_s / bound_s:.1f} ({bound_s:.1f} s)" if bound_s else "-"
        rows.append(f"| {name} | {tracked} | {wall:.1f} | {stats['model_calls_total'] / tracked:.1f} "
                    f"({per_stage}) | {served.n_requests / tracked:.1f} | {100 * (1 - busy / wall):.1f} % "
                    f"| {served.max_in_flight} | {mean_in_flight:.1f} ({busy:.1f} s) | {allowed} |"
                    .replace(" ()", ""))
        print(rows[-1], flush=True)
    return rows


def guard_rows(rec: Path, work: Path, frames: int) -> list[str]:
    recording = load_recording(rec)
    rows = []
    for name, mode in (("classical", None), ("hybrid", "nonsense"), ("openai", "nonsense")):
        ctx = PoseContext(backend=name, base_url="http://unused/v1", vlm_model="scripted", max_frames=frames)
        chat = None if mode is None else ScriptedChatModel(script=pose_chat_script(mode, seed=0))
        out = work / f"guard-{name}"
        run_backend(rec, out, ctx, chat)
        metrics = score_results(recording, out)
        rows.append(f"| {name}{' + nonsense model' if mode else ''} | {metrics.mean_error_mm:.3f} | "
                    f"{100 * metrics.share_within_5mm:.1f} % | {100 * metrics.assignment_accuracy:.1f} % | "
                    f"{metrics.n_really_wrong} | {metrics.n_flagged} | {metrics.qc_precision:.2f} | "
                    f"{metrics.qc_recall:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backends", nargs="*", default=["openai", "hybrid"])
    parser.add_argument("--guard-frames", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-model-path"))
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--server", choices=["subprocess", "inprocess"], default="subprocess",
                        help="where the scripted model server runs (default: its own process)")
    args = parser.parse_args()
    rec = recording_dir(args.work, args.frames)
    n_seeds = len(load_recording(rec).seeds.frames)
    header = ["| backend | tracked frames | wall s | model calls / frame (per stage) | HTTP requests / frame "
              "| orchestrator share (no call in flight) | max in flight | mean in flight while busy (busy s) "
              "| mean in flight the dependencies allow (their bound s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    rows = timed_rows(rec, args.work, args, n_seeds)
    guard = ["| backend | mean 3D error mm | within 5 mm | 2D accuracy | really wrong | flagged "
             "| QC precision | QC recall |", "|---|---|---|---|---|---|---|---|"]
    guard += guard_rows(rec, args.work, args.guard_frames) if args.guard_frames else []
    table = "\n".join([*header, *rows, "", *guard]) + "\n"
    print(table)
    if args.report is not None:
        args.report.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    keep_freed_memory()  # as `python -m agent.run` does
    sys.exit(main())
