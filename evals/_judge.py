"""An LLM judge that reads the whole trajectory, and its offline twin.

``judge(trajectory, rubric)`` sends the session's full transcript (``Trajectory.transcript()``:
the customer's words, every agent turn, every tool call with its arguments, result and errors,
and the guards that fired) with a numbered rubric to a model through the real Messages API. The
model must answer by calling the ``record_verdict`` tool (``tool_choice`` forces it) with one
``{"index", "met", "reason"}`` entry per criterion, at temperature 0.

The client is the seam. ``default_judge_client()`` picks the real API when ``ANTHROPIC_API_KEY``
is set *and* ``FLIGHTREC_JUDGE_MODEL`` names a model; otherwise it returns ``sim_judge_client()``,
a real ``anthropic.Anthropic`` client whose transport answers in process, in the API's wire
format, so evals run offline and deterministically.

The simulated judge decides each criterion from the transcript with one heuristic:

- the phrases in double quotes inside a criterion are its evidence
  (``Looks up "get_order" before answering``);
- when a negation word (never, not, no, without, doesn't, don't, didn't, cannot, can't, won't;
  so also "does not", "must not") comes before the first quoted phrase, the criterion is met
  when *none* of the phrases appears in the transcript;
- otherwise it is met when *all* of them appear;
- matching is case-insensitive, over the whole transcript (customer lines included);
- a criterion with no quoted phrase is met, with the reason "nothing checkable for the
  simulated judge; use a real judge model".

Each reason starts with "simulated judge:" and names the phrase and the transcript line it
was found in, so a verdict can be checked by eye. Write one claim per criterion: a negation
applies to every quoted phrase of its criterion.

A model that answers without a usable ``record_verdict`` call (a refusal, a truncated answer,
malformed input) does not raise: the verdict marks every criterion it did not rule on as unmet,
with the reason "the judge returned no verdict …". One odd answer then fails one case, visibly,
instead of ending the whole run. A judge that cannot be reached or refuses the request raises
``ScorerError``: that would happen to every case alike.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import anthropic
import httpx2
from pydantic import BaseModel

import tracer
from tracer import clip_text

from ._errors import ScorerError
from ._trajectory import Trajectory

JudgeClientFactory = Callable[[], anthropic.Anthropic]
"""``() -> client``: makes the client a judge scorer talks through (called once per scorer, when first used)."""

DEFAULT_JUDGE_MODEL = "claude-haiku-4-5"
JUDGE_MODEL_ENV = "FLIGHTREC_JUDGE_MODEL"
VERDICT_TOOL = "record_verdict"
UNCHECKABLE = "nothing checkable for the simulated judge; use a real judge model"

_SIM_BASE_URL = "http://judge.flightrec.invalid"
"""Where the simulated judge's client points; nothing resolves it, the transport answers first."""
_RETRIES = 2
_TIMEOUT_S = 60.0
_CHARS_PER_TOKEN = 4
_CLIP = 160

_SYSTEM = """\
You are an evaluation judge for an LLM agent that serves customers and uses tools. You read the \
whole session: what the customer wrote, what the agent said at each turn, every tool call with \
its arguments and its result (ERROR marks a failed call), and any guard that stopped the agent.

For each numbered criterion of the rubric, decide whether the session meets it. Judge only from \
the transcript: what is not in it did not happen. Judge each criterion on its own. A criterion \
about something the agent must never do is met when the transcript shows no sign of it. Give \
each decision a one-sentence reason that cites the evidence (the turn, the tool call or the words).

Record the verdict by calling the record_verdict tool once, with one entry per criterion, in \
order, using the criterion's number as its index."""

_TOOL: dict[str, Any] = {
    "name": VERDICT_TOOL,
    "description": "Record, for each criterion of the rubric, whether the session meets it and why.",
    "input_schema": {
        "type": "object",
        "properties": {
            "criteria": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer", "description": "The criterion's number in the rubric (from 1)."},
                        "met": {"type": "boolean", "description": "Whether the session meets the criterion."},
                        "reason": {"type": "string", "description": "One sentence citing the evidence."},
                    },
                    "required": ["index", "met", "reason"],
                },
            },
        },
        "required": ["criteria"],
    },
}

_RUBRIC = re.compile(r"<rubric>\n(.*?)\n</rubric>", re.DOTALL)
_TRANSCRIPT_OPEN = "<transcript>\n"
_TRANSCRIPT_CLOSE = "\n</transcript>"
_ITEM = re.compile(r"^(\d+)\. (.*)$")
_QUOTED = re.compile(r'"([^"]+)"|\u201c([^\u201d]+)\u201d')
_WORD = re.compile(r"[a-z']+")
_NEGATIONS = frozenset({"never", "not", "no", "without", "doesn't", "don't", "didn't", "cannot", "can't", "won't"})


class CriterionVerdict(BaseModel):
    """The judge's ruling on one criterion of the rubric."""

    index: int
    """The criterion's number in the rubric (from 1)."""
    criterion: str
    """The criterion, as written in the rubric."""
    met: bool
    """Whether the session meets it."""
    reason: str
    """Why, with the evidence, in the judge's words."""


class JudgeVerdict(BaseModel):
    """What the judge made of one trajectory."""

    criteria: list[CriterionVerdict]
    """One ruling per criterion, in rubric order."""
    share_met: float
    """The share of criteria met, 0..1."""
    model: str
    """The model that judged (as the API named it)."""
    simulated: bool
    """The offline simulated judge gave this verdict, not a model."""
    cost_usd: float | None = None
    """What the call cost, from its usage and flightrec's price table; 0 for the simulated judge, ``None``
    when the model's price is unknown. Online scoring keeps the judge within a budget by it."""


def judge(trajectory: Trajectory, rubric: Sequence[str], *, model: str | None = None,
          client: anthropic.Anthropic | None = None) -> JudgeVerdict:
    """Asks a model whether the whole trajectory meets each criterion of a rubric.

    Blocks for one Messages API call (the client's own retries included). Safe to call from
    several threads with one client.

    Args:
        trajectory: The session to judge; the judge reads all of it, not only the final answer.
        rubric: The criteria, each a claim about the session ("Never promises a refund ...").
        model: The judge model; default ``$FLIGHTREC_JUDGE_MODEL``, else ``claude-haiku-4-5``.
        client: The client to ask; default ``default_judge_client()``.

    Raises:
        ScorerError: the rubric is empty, or the judge model cannot be reached or refused the request.
    """
    criteria = [" ".join(str(c).split()) for c in rubric]
    if not criteria or not all(criteria):
        raise ScorerError("a judge rubric needs at least one criterion, and no empty ones; list the claims the "
                          "session must meet under 'rubric'.")
    client = client or default_judge_client()
    model = model or os.environ.get(JUDGE_MODEL_ENV) or DEFAULT_JUDGE_MODEL
    simulated = _is_sim(client)
    where = "the simulated judge" if simulated else f"the judge model {model} at {client.base_url}"
    try:
        reply = client.messages.create(
            model=model, max_tokens=min(4096, 256 + 160 * len(criteria)), system=_SYSTEM, tools=[_TOOL],
            tool_choice={"type": "tool", "name": VERDICT_TOOL},
            messages=[{"role": "user", "content": _prompt(criteria, trajectory.transcript())}],
            # messages.create has no temperature parameter in this SDK; the API still takes it.
            extra_body={"temperature": 0},
        )
    except anthropic.AuthenticationError as exc:
        raise ScorerError(f"{where} rejected the API key (HTTP 401): {_api_message(exc)}. Check ANTHROPIC_API_KEY, or "
                          f"unset {JUDGE_MODEL_ENV} to use the simulated judge.") from None
    except anthropic.NotFoundError as exc:
        raise ScorerError(f"{where} does not exist (HTTP 404): {_api_message(exc)}. Check the judge's model name (the "
                          f"scorer's 'model', or {JUDGE_MODEL_ENV}).") from None
    except anthropic.APIStatusError as exc:
        raise ScorerError(f"{where} answered HTTP {exc.status_code}: {_api_message(exc)}. Retry later, or use another "
                          f"judge model (the scorer's 'model', or {JUDGE_MODEL_ENV}).") from None
    except anthropic.APIConnectionError as exc:  # APITimeoutError included
        raise ScorerError(f"cannot reach {where}: {exc}. Check the network and ANTHROPIC_BASE_URL, or unset "
                          f"{JUDGE_MODEL_ENV} to use the simulated judge.") from None
    return _verdict(reply, criteria, model=reply.model or model, simulated=simulated)


def default_judge_client() -> anthropic.Anthropic:
    """The real API when ``ANTHROPIC_API_KEY`` is set and ``FLIGHTREC_JUDGE_MODEL`` names a model, else the sim judge.

    Both conditions are needed so that having a key in the environment never makes an eval
    run spend money by surprise: choosing a judge model is the opt-in.
    """
    if os.environ.get("ANTHROPIC_API_KEY") and os.environ.get(JUDGE_MODEL_ENV):
        return anthropic.Anthropic(max_retries=_RETRIES, timeout=_TIMEOUT_S)
    return sim_judge_client()


def sim_judge_client() -> anthropic.Anthropic:
    """A real ``anthropic.Anthropic`` client whose API is the simulated judge, in process.

    It answers ``POST /v1/messages`` in the API's wire format (a ``message`` with one
    ``record_verdict`` ``tool_use`` block, ``stop_reason`` ``tool_use`` and usage), deciding each
    criterion with the quoted-phrase heuristic of this module's docstring. Nothing leaves the process.
    """
    return anthropic.Anthropic(api_key="sim-judge", base_url=_SIM_BASE_URL, max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(_sim_handle)))


# -- the request and the verdict ---------------------------------------------------------------


def _prompt(criteria: list[str], transcript: str) -> str:
    numbered = "\n".join(f"{i}. {c}" for i, c in enumerate(criteria, 1))
    return (f"Judge this agent session against the rubric.\n\n<rubric>\n{numbered}\n</rubric>\n\n"
            f"{_TRANSCRIPT_OPEN}{transcript}{_TRANSCRIPT_CLOSE}\n\n"
            f"Call {VERDICT_TOOL} once, with one entry per criterion (indices 1 to {len(criteria)}).")


def _verdict(reply: Any, criteria: list[str], *, model: str, simulated: bool) -> JudgeVerdict:
    use = next((b for b in reply.content if b.type == "tool_use" and b.name == VERDICT_TOOL), None)
    items = use.input.get("criteria") if use is not None and isinstance(use.input, dict) else None
    rulings: dict[int, tuple[bool, str]] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        index, met = item.get("index"), item.get("met")
        if (isinstance(index, int) and not isinstance(index, bool) and 1 <= index <= len(criteria)
                and isinstance(met, bool) and index not in rulings):
            rulings[index] = (met, str(item.get("reason") or "").strip() or "(no reason given)")
    if rulings:
        missing = "the judge returned no verdict on this criterion; re-run, or try another judge model"
    else:
        missing = (f"the judge returned no verdict (stop_reason {reply.stop_reason}); re-run, or try another "
                   "judge model")
    out = [CriterionVerdict(index=i, criterion=c, met=rulings.get(i, (False, missing))[0],
                            reason=rulings.get(i, (False, missing))[1]) for i, c in enumerate(criteria, 1)]
    return JudgeVerdict(criteria=out, share_met=sum(c.met for c in out) / len(out), model=model,
                        simulated=simulated, cost_usd=0.0 if simulated else _cost(model, reply))


def _cost(model: str, reply: Any) -> float | None:
    usage = getattr(reply, "usage", None)
    if usage is None:
        return None
    return _prices().cost(model, tracer.Usage(
        input_tokens=usage.input_tokens or 0, output_tokens=usage.output_tokens or 0,
        cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
        cache_write_5m_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0))


@functools.cache
def _prices() -> tracer.PriceTable:
    return tracer.PriceTable.load()


def _api_message(exc: anthropic.APIStatusError) -> str:
    """The API's own error message (``exc.message`` wraps it in the status line and the raw body)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    return str(error.get("message") or exc.message)


def _is_sim(client: anthropic.Anthropic) -> bool:
    return str(client.base_url).rstrip("/") == _SIM_BASE_URL


# -- the simulated judge -----------------------------------------------------------------------


def _sim_handle(request: httpx2.Request) -> httpx2.Response:
    """An httpx2 ``MockTransport`` handler: the Messages API as the simulated judge."""
    if request.method != "POST" or not request.url.path.rstrip("/").endswith("/v1/messages"):
        return _error(404, "not_found_error", f"{request.method} {request.url.path} is not simulated.")
    try:
        body = json.loads(request.content)
    except ValueError:
        return _error(400, "invalid_request_error", "the request body is not JSON")
    choice = body.get("tool_choice") or {}
    if not any(t.get("name") == VERDICT_TOOL for t in body.get("tools") or []) or choice.get("name") != VERDICT_TOOL:
        return _error(400, "invalid_request_error",
                      f"the simulated judge only answers requests that force the {VERDICT_TOOL} tool")
    messages = body.get("messages") or []
    text = _text(messages[-1].get("content")) if messages else ""
    rubric = _RUBRIC.search(text)
    start, end = text.find(_TRANSCRIPT_OPEN), text.rfind(_TRANSCRIPT_CLOSE)
    if rubric is None or start < 0 or end < start:
        return _error(400, "invalid_request_error",
                      "the simulated judge needs a <rubric> and a <transcript> in the last user message")
    transcript = text[start + len(_TRANSCRIPT_OPEN):end]
    verdicts = []
    for line in rubric.group(1).splitlines():
        item = _ITEM.match(line)
        if item:
            met, reason = _sim_decide(item.group(2), transcript)
            verdicts.append({"index": int(item.group(1)), "met": met, "reason": reason})
    verdict = {"criteria": verdicts}
    digest = hashlib.sha256(request.content).hexdigest()
    return httpx2.Response(200, json={
        "id": f"msg_simjudge{digest[:24]}", "type": "message", "role": "assistant", "model": body.get("model"),
        "content": [{"type": "tool_use", "id": f"toolu_simjudge{digest[24:48]}", "name": VERDICT_TOOL,
                     "input": verdict}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": max(1, len(request.content) // _CHARS_PER_TOKEN),
                  "output_tokens": max(1, len(json.dumps(verdict)) // _CHARS_PER_TOKEN),
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    })


def _sim_decide(criterion: str, transcript: str) -> tuple[bool, str]:
    """The simulated judge's ruling on one criterion: ``(met, reason)``, by the module docstring's heuristic."""
    quoted = list(_QUOTED.finditer(criterion))
    phrases = [p for m in quoted if (p := (m.group(1) or m.group(2) or "").strip())]
    if not phrases:
        return True, UNCHECKABLE
    before = criterion[:quoted[0].start()].lower().replace("\u2019", "'")
    negated = any(w in _NEGATIONS for w in _WORD.findall(before))
    where = {p: _evidence(p, transcript) for p in phrases}
    found = [p for p in phrases if where[p] is not None]
    missing = [p for p in phrases if where[p] is None]
    if negated:
        if not found:
            return True, f"simulated judge: negated criterion, and {_none_of(phrases)} appears in the transcript"
        return False, (f"simulated judge: negated criterion, but {_quote(found[0])} appears in the transcript: "
                       f"{where[found[0]]}")
    if not missing:
        return True, (f"simulated judge: {_both(phrases)} {'appears' if len(phrases) == 1 else 'all appear'} in "
                      f"the transcript; {_quote(phrases[0])} in: {where[phrases[0]]}")
    verb = "does" if len(missing) == 1 else "do"
    return False, f"simulated judge: {_both(missing)} {verb} not appear in the transcript"


def _evidence(phrase: str, transcript: str) -> str | None:
    """The transcript line that holds ``phrase`` (case-insensitive), clipped around it; ``None`` if absent."""
    at = transcript.lower().find(phrase.lower())
    if at < 0:
        return None
    start = transcript.rfind("\n", 0, at) + 1
    end = transcript.find("\n", at)
    return clip_text(transcript[start:end if end >= 0 else len(transcript)], _CLIP, around=phrase)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def _quote(phrase: str) -> str:
    return json.dumps(phrase, ensure_ascii=False)


def _both(phrases: list[str]) -> str:
    return " and ".join(_quote(p) for p in phrases)


def _none_of(phrases: list[str]) -> str:
    return f"none of {', '.join(_quote(p) for p in phrases)}" if len(phrases) > 1 else f"no {_quote(phrases[0])}"


def _error(status: int, kind: str, message: str) -> httpx2.Response:
    return httpx2.Response(status, json={"type": "error", "error": {"type": kind, "message": message}})
