"""Running an eval: every case K times against one agent variant, each trial a traced session,
scored from its trace and stored with the run."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from pydantic import BaseModel

import tracer

from ._agents import REFERENCE, EvalAgent, load_agent
from ._dataset import Case, Dataset, load_dataset
from ._errors import DatasetError, EvalError
from ._scorers import Scorer, build_scorer, score_trial
from ._trajectory import trajectory_of

DEFAULT_TRIALS = 5
"""Trials per case. With 5 a side the gate catches any case that breaks outright (100% -> 0%)
every time, and falsely alarms in about 1% of A/A runs; 10 catches a case falling to 40% about
60% of the time instead of 16%, at twice the cost (benchmarks/bench_gate.py). Every comparison
says what its trial count could catch; see the README's "The gate"."""

DEFAULT_CONCURRENCY = 4
"""Trials in flight at once."""

_FLUSH_S = 30.0
_SCORE_WINDOW_S = 0.25
"""How long an ended trial may wait to be scored, so that the trials that end meanwhile are stored in
the same commit: a commit costs milliseconds whatever it holds (RESULTS §48)."""


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
        agent: A registered agent's NAME or ``MODULE:ATTR``; default: the dataset's ``agent``, else ``reference``.
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
    agent = agent or data.agent or REFERENCE
    db_path = tracer.default_db_path(db)
    started_ns, started = time.time_ns(), time.perf_counter()
    under_test = load_agent(agent, settings)  # bad options fail before the store is touched
    try:
        for case in cases:
            under_test.check(case)
        # Opened now, so that a store held by another process fails the run before any trial runs.
        with tracer.Store(db_path) as store:
            run_id = str(uuid.uuid4())
            results = _execute(under_test, cases, trials, concurrency, run_seed, db_path, store, run_id,
                               scorers, progress)
            costs = [r.cost_usd for r in results]
            record = tracer.EvalRunRecord(
                run_id=run_id, started_ns=started_ns, ended_ns=time.time_ns(), dataset=data.name,
                dataset_sha256=data.sha256(cases), agent=agent, settings=settings, trials=trials,
                seed=run_seed, case_tags=list(tags), cases=len(cases), passed_trials=sum(r.passed for r in results),
                total_trials=len(results), mean_score=sum(r.score for r in results) / len(results),
                cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
                wall_s=time.perf_counter() - started, labels=[label] if label else [])
            store.save_eval_run(record, results)
            if label:
                store.label_eval_run(run_id, label)
    finally:
        under_test.close()
    return EvalRun(run=record, results=results)


class _Trial:
    """One trial in flight: its case, index and seed."""

    def __init__(self, case: Case, k: int, seed: int) -> None:
        self.case, self.k, self.seed = case, k, seed


def _execute(agent: EvalAgent, cases: Sequence[Case], trials: int, concurrency: int, run_seed: int, db_path: str,
             store: tracer.Store, run_id: str, scorers: Mapping[str, list[Scorer]],
             progress: Progress | None) -> list[tracer.EvalResultRecord]:
    """Runs every trial on ``concurrency`` worker threads and scores each on this thread once it has
    ended and its spans are stored (within ``_SCORE_WINDOW_S``).

    Scheduling: the first trial of every case goes first; after that, the case whose trials took
    longest goes next (longest-processing-time first), so that a 5-second case does not start
    last and leave the other workers idle at the end.
    """
    recorder = tracer.Recorder(db_path)
    waiting = [_Trial(c, k, trial_seed(run_seed, c.id, k)) for k in range(trials) for c in cases]
    took: dict[str, float] = {}
    results: dict[tuple[str, int], tracer.EvalResultRecord] = {}
    total = len(waiting)

    def one(trial: _Trial) -> tuple[str | BaseException, float]:
        started = time.perf_counter()
        got: str | BaseException
        try:
            # Its sessions are marked as this run's, so that the store tells them from production.
            with tracer.eval_trial(run_id, trial.case.id, trial.k):
                got = agent.run_trial(trial.case, recorder=recorder, seed=trial.seed)
        except Exception as exc:  # one trial's failure is that trial's result, not the run's end
            got = exc
        return got, time.perf_counter() - started

    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="flightrec-eval") as pool:
            running: dict[Future[tuple[str | BaseException, float]], _Trial] = {}
            ended: list[tuple[_Trial, str | BaseException]] = []
            oldest = 0.0  # when the oldest of ``ended`` ended
            while waiting or running or ended:
                while waiting and len(running) < concurrency:
                    nxt = max(waiting, key=lambda t: took.get(t.case.id, float("inf")))
                    waiting.remove(nxt)
                    running[pool.submit(one, nxt)] = nxt
                if running:
                    left = None if not ended else max(0.0, oldest + _SCORE_WINDOW_S - time.monotonic())
                    done, _ = wait(running, timeout=left, return_when=FIRST_COMPLETED)
                    for f in done:
                        trial, (got, seconds) = running.pop(f), f.result()
                        took[trial.case.id] = max(took.get(trial.case.id, 0.0), seconds)
                        oldest = oldest if ended else time.monotonic()
                        ended.append((trial, got))
                if ended and (not running or time.monotonic() - oldest >= _SCORE_WINDOW_S):
                    recorder.flush(timeout_s=_FLUSH_S)  # the ended trials' spans, so that their traces can be read
                    for trial, got in ended:
                        result = _score(store, run_id, trial, got, scorers[trial.case.id], recorder.policy)
                        results[(trial.case.id, trial.k)] = result
                        if progress is not None:
                            progress(result, len(results), total)
                    ended.clear()
    finally:
        recorder.shutdown()
    return [results[(c.id, k)] for c in cases for k in range(trials)]


def _score(store: tracer.Store, run_id: str, trial: _Trial, got: str | BaseException,
           scorers: list[Scorer], policy: tracer.ContentPolicy) -> tracer.EvalResultRecord:
    """The trial's result record, its texts shaped by the run's content policy like the trial's spans."""
    base = dict(run_id=run_id, case_id=trial.case.id, trial=trial.k, tags=list(trial.case.tags))
    if isinstance(got, BaseException):
        message = policy.content(str(got))
        return tracer.EvalResultRecord(**base, session_id=None, passed=False, score=0.0, scores=[], status="error",
                                       turns=None, cost_usd=None, latency_ms=None,
                                       error=f"the agent raised {type(got).__name__}" + (f": {message}" if message
                                                                                         else ""))
    try:
        trajectory = trajectory_of(store, got)
    except tracer.UnknownSessionError:
        return tracer.EvalResultRecord(
            **base, session_id=got, passed=False, score=0.0, scores=[], status=None, turns=None, cost_usd=None,
            latency_ms=None, error="the session's trace did not reach the store (see the exporter's dropped spans)")
    score, passed, scores = score_trial(scorers, trajectory)
    return tracer.EvalResultRecord(**base, session_id=got, passed=passed, score=score,
                                   scores=policy.metadata([s.model_dump() for s in scores]), error=None,
                                   status=trajectory.status,
                                   turns=trajectory.turns, cost_usd=trajectory.cost_usd,
                                   latency_ms=trajectory.latency_ms)
