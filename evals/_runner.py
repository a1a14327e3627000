"""Running an eval: every case K times against one agent variant, each trial a traced session,
scored from its trace and stored with the run."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

import tracer

from ._agents import REFERENCE, load_agent
from ._dataset import Case, Dataset, load_dataset
from ._errors import DatasetError, EvalError
from ._scorers import Scorer, build_scorer, score_trial
from ._trajectory import trajectory_of

DEFAULT_TRIALS = 5
"""Trials per case. With the simulated model, 5 keeps the A/A false-alarm rate under 5% and
flags the bundled regression every time (tests/evals/test_gate.py); 3 already misses small
regressions, 10 doubles the run for little gain. See the README's "Statistics"."""

DEFAULT_CONCURRENCY = 4
"""Trials in flight at once."""

_FLUSH_S = 30.0


class EvalRun(BaseModel):
    """A finished run: its record and every trial's result, as stored."""

    run: tracer.EvalRunRecord
    """The run."""
    results: list[tracer.EvalResultRecord]
    """Every trial of every case, by case and trial."""


Progress = Callable[[tracer.EvalResultRecord, int, int], None]
"""``(result, done, total)``: called on the calling thread as trials are scored."""


def trial_seed(run_seed: int, case_id: str, trial: int) -> int:
    """A trial's seed: stable for a run seed, different across cases and trials."""
    return int.from_bytes(hashlib.sha256(f"{run_seed}:{case_id}:{trial}".encode()).digest()[:4], "big") >> 1


def run_eval(dataset: Dataset | str | os.PathLike[str], *, agent: str | None = None,
             settings: Mapping[str, str] | None = None, trials: int = DEFAULT_TRIALS,
             concurrency: int = DEFAULT_CONCURRENCY, tags: Sequence[str] = (), seed: int | None = None,
             db: str | os.PathLike[str] | None = None, label: str | None = None,
             progress: Progress | None = None) -> EvalRun:
    """Runs a dataset against an agent variant and stores the run.

    Args:
        dataset: A ``Dataset`` or the path of a YAML/JSONL file.
        agent: ``reference`` (default) or ``MODULE:FACTORY``.
        settings: The variant: ``--set`` values the agent's factory takes.
        trials: Trials per case.
        concurrency: Trials in flight at once.
        tags: Run only the cases with one of these tags.
        seed: The run's seed (default: a fresh one, so that two runs sample the model's variation
            the way two real runs would).
        db: The trace store the sessions and the run go to.
        label: Point this label (``baseline`` …) at the run when it is stored.
        progress: Called as each trial is scored.

    Raises:
        DatasetError, ScorerError, AgentLoadError: bad input, before any trial runs.
        tracer.StoreError: the store cannot be written (locked by another process …).

    Blocking: runs ``concurrency`` trials at once on worker threads; returns when all are stored.
    """
    if trials < 1 or concurrency < 1:
        raise EvalError("--trials and --concurrency must be at least 1.")
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    cases = data.select(tags)
    if not cases:
        known = sorted({t for c in data.cases for t in c.tags})
        raise DatasetError(f"no case in {data.name} has the tag(s) {', '.join(tags)}; its tags are: "
                           f"{', '.join(known) or 'none'}.")
    scorers: dict[str, list[Scorer]] = {c.id: [build_scorer(s) for s in data.expectations(c)] for c in cases}
    run_seed = secrets.randbits(31) if seed is None else seed
    settings = dict(settings or {})
    db_path = tracer.default_db_path(db)
    store = tracer.Store(db_path)  # fails now, with a clear message, if another process holds the file
    started_ns, started = time.time_ns(), time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="flightrec-eval-") as workdir:
            under_test = load_agent(agent, settings, workdir)
            try:
                for case in cases:
                    under_test.check(case)
                sessions = _run_trials(under_test, cases, trials, concurrency, run_seed, db_path)
            finally:
                under_test.close()
        run_id = str(uuid.uuid4())
        results = _score(store, run_id, cases, trials, sessions, scorers, progress)
        passed = sum(r.passed for r in results)
        costs = [r.cost_usd for r in results]
        record = tracer.EvalRunRecord(
            run_id=run_id, started_ns=started_ns, ended_ns=time.time_ns(), dataset=data.name,
            dataset_sha256=data.sha256(cases), agent=agent or REFERENCE, settings=settings, trials=trials,
            seed=run_seed, case_tags=list(tags), cases=len(cases), passed_trials=passed, total_trials=len(results),
            mean_score=sum(r.score for r in results) / len(results),
            cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
            wall_s=time.perf_counter() - started, labels=[label] if label else [])
        store.save_eval_run(record, results)
        if label:
            store.label_eval_run(run_id, label)
        return EvalRun(run=record, results=results)
    finally:
        store.close()


def _run_trials(agent: object, cases: Sequence[Case], trials: int, concurrency: int, run_seed: int,
                db_path: str) -> dict[tuple[str, int], str | BaseException]:
    """Each trial's session id, or the exception that stopped it."""
    recorder = tracer.Recorder(db_path)
    out: dict[tuple[str, int], str | BaseException] = {}
    lock = threading.Lock()

    def one(case: Case, k: int) -> None:
        try:
            result: str | BaseException = agent.run_trial(  # type: ignore[attr-defined]
                case, recorder=recorder, seed=trial_seed(run_seed, case.id, k))
        except Exception as exc:  # one trial's failure is that trial's result, not the run's end
            result = exc
        with lock:
            out[(case.id, k)] = result

    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="flightrec-eval") as pool:
            for f in [pool.submit(one, c, k) for k in range(trials) for c in cases]:
                f.result()
        recorder.flush(timeout_s=_FLUSH_S)
    finally:
        recorder.shutdown()
    return out


def _score(store: tracer.Store, run_id: str, cases: Sequence[Case], trials: int,
           sessions: Mapping[tuple[str, int], str | BaseException], scorers: Mapping[str, list[Scorer]],
           progress: Progress | None) -> list[tracer.EvalResultRecord]:
    results = []
    total = len(cases) * trials
    for case in cases:
        for k in range(trials):
            got = sessions[(case.id, k)]
            base = dict(run_id=run_id, case_id=case.id, trial=k, tags=list(case.tags))
            if isinstance(got, BaseException):
                result = tracer.EvalResultRecord(
                    **base, session_id=None, passed=False, score=0.0, scores=[], status="error", turns=None,
                    cost_usd=None, latency_ms=None, error=f"the agent raised {type(got).__name__}: {got}")
            else:
                try:
                    trajectory = trajectory_of(store, got)
                except tracer.UnknownSessionError:
                    result = tracer.EvalResultRecord(
                        **base, session_id=got, passed=False, score=0.0, scores=[], status=None, turns=None,
                        cost_usd=None, latency_ms=None,
                        error="the session's trace did not reach the store (see the exporter's dropped spans)")
                else:
                    score, passed, scores = score_trial(scorers[case.id], trajectory)
                    result = tracer.EvalResultRecord(
                        **base, session_id=got, passed=passed, score=score,
                        scores=[s.model_dump() for s in scores], error=None, status=trajectory.status,
                        turns=trajectory.turns, cost_usd=trajectory.cost_usd, latency_ms=trajectory.latency_ms)
            results.append(result)
            if progress is not None:
                progress(result, len(results), total)
    return results
