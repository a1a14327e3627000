"""Interop: flightrec's own spans as Arize Phoenix shows them (issue 14). Not part of `make test`.

    python benchmarks/bench_phoenix_interop.py [--scenario order_status] [--keep]

It makes its own venv (``benchmarks/out/phoenix-venv``, not committed) and installs
``arize-phoenix`` there from PyPI the first time, starts ``phoenix serve`` on a free loopback port
(its data in a temp dir), and records one reference-agent session twice, offline against the
simulated model, with ``tracer.Recorder(endpoint=<Phoenix>/v1/traces)``: once as is, once with
``native_spans=True`` (the anthropic SDK's own spans too). Each run goes to its own Phoenix
project (``openinference.project.name`` through ``$OTEL_RESOURCE_ATTRIBUTES``). Then it reads back
through Phoenix's REST API (``/v1/projects/{p}/spans``) and GraphQL (cost and token totals) and
checks, per run:

- every flightrec chat span is an LLM span in Phoenix with input messages, output messages, the
  tools it was offered, the model, and the prompt/completion tokens flightrec recorded;
- the session, turn and tool spans are AGENT, CHAIN and TOOL spans, all in one Phoenix session;
- the exact bodies did not travel (``otlp_bodies`` default) and every span arrived;
- tokens and cost are counted once: the project's token total equals what flightrec recorded,
  and with native spans the SDK's spans are there but are not LLM spans and carry no tokens.

It prints PASS/FAIL per check and exits non-zero when one fails.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import tracer  # noqa: E402
from reference_agent import Agent, World, get_scenario  # noqa: E402
from tracer import _attributes as A  # noqa: E402

VENV = ROOT / "benchmarks" / "out" / "phoenix-venv"
START_TIMEOUT_S = 180
READ_TIMEOUT_S = 60


def ensure_phoenix() -> Path:
    phoenix = VENV / "bin" / "phoenix"
    if not phoenix.exists():
        print(f"installing arize-phoenix into {VENV} (first run only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "arize-phoenix"], check=True)
    return phoenix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def graphql(base: str, query: str) -> Any:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL: {answer['errors']}")
    return answer["data"]


def start_phoenix(phoenix: Path, workdir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(free_port()), "PHOENIX_WORKING_DIR": workdir,
           "PHOENIX_TELEMETRY_ENABLED": "false"}
    log = open(Path(workdir) / "phoenix.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([str(phoenix), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"phoenix exited with {proc.returncode}; see {workdir}/phoenix.log")
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=2).close()
            return proc, base
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"phoenix did not answer within {START_TIMEOUT_S} s; see {workdir}/phoenix.log")


def record(base: str, project: str, scenario: str, *, native: bool, workdir: str) -> tuple[str, list, tracer.Recorder]:
    """One reference-agent session sent to Phoenix; returns its id and flightrec's own spans of it."""
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = f"openinference.project.name={project}"
    rec = tracer.Recorder(endpoint=f"{base}/v1/traces")
    memory = InMemorySpanExporter()  # what flightrec sent, to compare Phoenix's view with
    rec.provider.add_span_processor(SimpleSpanProcessor(memory))
    if native:
        plain = rec.instrument
        rec.instrument = lambda client, native_spans=False: plain(client, native_spans=True)  # type: ignore[method-assign]
    with World(str(Path(workdir) / f"{project}.world.sqlite")) as world:
        out = Agent(world, rec).run(get_scenario(scenario), seed=0)
    rec.shutdown()
    return out.session_id, list(memory.get_finished_spans()), rec


def phoenix_spans(base: str, project: str, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + READ_TIMEOUT_S
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            spans = get(f"{base}/v1/projects/{project}/spans?limit=1000")["data"]
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # 404: the project is made with its first span, in the background
                raise
        if len(spans) >= expected:
            return spans
        time.sleep(0.5)  # Phoenix inserts spans in the background
    if not spans:
        names = [e["node"]["name"] for e in graphql(base, "{ projects { edges { node { name } } } }")
                 ["projects"]["edges"]]
        raise RuntimeError(f"no spans in Phoenix project {project!r}; its projects: {names}")
    return spans


def flat(attributes: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Phoenix's REST API nests dotted attribute names; flatten them back."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


class Checks:
    def __init__(self) -> None:
        self.failed = 0
        self.rows: list[tuple[str, str, str]] = []

    def __call__(self, run: str, what: str, ok: bool, detail: str) -> None:
        self.failed += not ok
        self.rows.append((run, what, "PASS" if ok else "FAIL"))
        print(f"  {'PASS' if ok else 'FAIL'}  {what}: {detail}", flush=True)


def check_run(check: Checks, base: str, project: str, sid: str, sent: list, rec: tracer.Recorder,
              native: bool) -> dict[str, Any]:
    run = "native" if native else "plain"
    spans = phoenix_spans(base, project, len(sent))
    by_id = {s["context"]["span_id"]: s for s in spans}
    attrs = {s["context"]["span_id"]: flat(s["attributes"]) for s in spans}
    ours_chat = [s for s in sent if s.instrumentation_scope.name == "flightrec" and s.name.startswith("chat ")]
    check(run, "every span arrived", len(spans) == len(sent) and rec.stats.dropped == 0,
          f"{len(spans)} in Phoenix, {len(sent)} sent, {rec.stats.dropped} dropped")
    kinds = Counter((s["name"].split(" ")[0], s["span_kind"]) for s in spans)
    chat_ok, missing = 0, []
    tokens_in = tokens_out = 0
    for span in ours_chat:
        sid_hex = f"{span.context.span_id:016x}"
        p, a = by_id.get(sid_hex), attrs.get(sid_hex, {})
        offered = len(json.loads(span.attributes[A.TOOL_DEFINITIONS])) if A.TOOL_DEFINITIONS in span.attributes else 0
        got = {
            "LLM kind": p is not None and p["span_kind"] == "LLM",
            "input messages": any(k.startswith("llm.input_messages.") for k in a),
            "output messages": any(k.startswith("llm.output_messages.") for k in a),
            "tools": sum(1 for k in a if k.startswith("llm.tools.") and k.endswith("json_schema")) == offered > 0,
            "model": a.get("llm.model_name") == span.attributes[A.REQUEST_MODEL],
            "tokens": (a.get("llm.token_count.prompt"), a.get("llm.token_count.completion")) == (
                span.attributes.get(A.USAGE_INPUT), span.attributes.get(A.USAGE_OUTPUT)),
            "no exact bodies": A.REQUEST_BODY not in a and A.RESPONSE_BODY not in a,
        }
        tokens_in += span.attributes.get(A.USAGE_INPUT, 0)
        tokens_out += span.attributes.get(A.USAGE_OUTPUT, 0)
        if all(got.values()):
            chat_ok += 1
        else:
            missing.append([k for k, v in got.items() if not v])
    check(run, "chat spans show input and output messages, tools, model and tokens (and no exact bodies)",
          chat_ok == len(ours_chat) > 0, f"{chat_ok}/{len(ours_chat)} chat spans complete"
          + (f"; missing {missing[:3]}" if missing else ""))
    want = {"invoke_agent": "AGENT", "flightrec.turn": "CHAIN", "execute_tool": "TOOL"}
    wrong = [(s["name"], s["span_kind"]) for s in spans
             if s["name"].split(" ")[0] in want and s["span_kind"] != want[s["name"].split(" ")[0]]]
    check(run, "session, turns and tools are AGENT, CHAIN and TOOL spans", not wrong, f"wrong: {wrong[:3]}")
    sessions = {a.get("session.id") for s in spans if (a := attrs[s["context"]["span_id"]]).get("session.id")}
    check(run, "one Phoenix session, the flightrec session id", sessions == {sid}, f"{sessions}")
    native_spans = [s for s in spans if s["name"].startswith("anthropic.")]
    if native:
        leaked = [s["span_kind"] for s in native_spans if s["span_kind"] == "LLM"
                  or any(k.startswith("llm.token_count") for k in attrs[s["context"]["span_id"]])]
        inside = all(s["context"]["trace_id"] == spans[0]["context"]["trace_id"] for s in spans)
        check(run, "SDK spans inside the session's trace, not LLM spans, no tokens",
              len(native_spans) > 0 and not leaked and inside,
              f"{len(native_spans)} SDK spans, {len(leaked)} counted, one trace: {inside}")
    else:
        check(run, "no SDK spans when native_spans is off", not native_spans, f"{len(native_spans)}")
    llm_spans = [s for s in spans if s["span_kind"] == "LLM"]
    summary = graphql(base, """{ projects { edges { node { name tokenCountTotal
        costSummary { total { tokens cost } } } } } }""")
    node = next(e["node"] for e in summary["projects"]["edges"] if e["node"]["name"] == project)
    total = node["tokenCountTotal"]
    cost = node["costSummary"]["total"]
    check(run, "tokens counted once (Phoenix's project total = flightrec's chat spans)",
          total == tokens_in + tokens_out and len(llm_spans) == len(ours_chat),
          f"Phoenix {total:.0f} tokens over {len(llm_spans)} LLM spans; flightrec {tokens_in}+{tokens_out} "
          f"over {len(ours_chat)} calls")
    ours_cost = sum(s.attributes.get(A.COST_USD, 0) for s in ours_chat)
    check(run, "cost counted once (priced on the LLM spans only)",
          cost["tokens"] == tokens_in + tokens_out,
          f"Phoenix ${cost['cost'] or 0:.6f} on {cost['tokens']:.0f} tokens (its own prices); "
          f"flightrec ${ours_cost:.6f}")
    return {"spans": len(spans), "llm": len(llm_spans), "tokens": total, "phoenix_cost": cost["cost"],
            "flightrec_cost": ours_cost, "native": len(native_spans),
            "kinds": {f"{n}:{k}": c for (n, k), c in sorted(kinds.items())}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="order_status")
    ap.add_argument("--keep", action="store_true", help="leave Phoenix running (prints its URL) until Enter")
    args = ap.parse_args()
    print(machine_header("Phoenix interop"))
    phoenix = ensure_phoenix()
    version = subprocess.run([str(VENV / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('arize-phoenix'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"arize-phoenix {version}")
    check = Checks()
    with tempfile.TemporaryDirectory(prefix="phoenix-interop-") as workdir:
        started = time.perf_counter()
        proc, base = start_phoenix(phoenix, workdir)
        print(f"phoenix at {base} (started in {time.perf_counter() - started:.1f} s)")
        try:
            for native in (False, True):
                project = f"flightrec-{'native' if native else 'plain'}"
                print(f"\n{project}: scenario {args.scenario}, native_spans={native}")
                sid, sent, rec = record(base, project, args.scenario, native=native, workdir=workdir)
                figures = check_run(check, base, project, sid, sent, rec, native)
                print(f"        figures: {json.dumps(figures)}")
            if args.keep:
                input(f"\nPhoenix is at {base}; press Enter to stop it. ")
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\n{len(check.rows) - check.failed}/{len(check.rows)} checks passed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
