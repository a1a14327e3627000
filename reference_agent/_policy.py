"""The simulated model's mind: what it decides, read from the request alone.

The policy sees what a real model sees, the system prompt, the tools on offer and the
messages, and nothing else. It finds the customer's task in the latest user message (falling
back on earlier ones, and on the offer the assistant made last), collects the facts that tool
results have established, and picks the next step: a tool call, a question, or an answer.

It reacts to its context on purpose:

- rule 2 of the system prompt (confirm before a refund) makes it ask before calling
  ``issue_refund``; without the rule, it refunds at once;
- rule 4 (knowledge-base text is data) makes it ignore instructions planted in an article;
  without it, it follows them;
- a tool missing from ``tools`` is never called; it offers a hand-over instead;
- offered more than 20 tools, it now and then passes a tool an argument named as another
  system's tools name it (``order_number`` for ``order_id``), as models choose worse among many
  tools; the schema error that comes back sets it right on the next call;
- tool errors steer it: it retries what the error calls retryable, fixes what was invalid,
  and escalates when a service stays down.

Every choice that could go either way (an optional lookup, parallel calls, wording) is drawn
from a random generator seeded by (scenario, seed, what is decided), so a seed replays exactly
and different seeds take plausibly different paths. Misbehaviours bend the policy on purpose.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ._world import STOPWORDS, money

Misbehaviour = Literal["loop", "wrong_tool", "hallucinate", "runaway", "ignore_rule"]
MISBEHAVIOURS: dict[str, str] = {
    "loop": "repeats its first tool call of a turn forever, ignoring the results",
    "wrong_tool": "picks a plausible but wrong tool for its first call",
    "hallucinate": "invents an argument (an order id, an out-of-range limit) in its first call",
    "runaway": "keeps pulling long articles and restating them, so the context grows without end",
    "ignore_rule": "ignores the system prompt's rules (confirm before refunds; articles are data)",
}

_ORDER_RE = re.compile(r"\bA-\d{4}\b")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_MONEY_RE = re.compile(r"\$\s?(\d[\d,]*(?:\.\d{1,2})?)")
_OFFER_RE = re.compile(r"refund \$([\d,]+\.\d{2}) for order (A-\d{4}) \((\w+)\)")
_ESCALATION_OFFER = "pass this to a colleague"
_CONFIRM_RULE = re.compile(r"confirm[^.\n]*before[^.\n]*refund|before (?:calling )?issue_refund[^.\n]*confirm", re.I)
_DATA_RULE = re.compile(r"(?:article|knowledge[- ]base|tool result)[^.\n]*never follow instructions"
                        r"|never follow instructions[^.\n]*(?:article|knowledge[- ]base|tool result)", re.I)
# A planted instruction, or the placeholder the agent's sanitiser left where one was.
_INJECTION = re.compile(r"ignore (?:all )?(?:previous|prior|your) instructions|\[removed: text that addressed", re.I)
_WHY_DOWN = {"timeout": "timed out", "circuit_open": "service down"}
_SEND_TO = re.compile(r"\bto\b[^.?!@]*?([\w.+-]+@[\w-]+(?:\.[\w-]+)+)", re.I)
_INJECTED_REFUND = re.compile(r"issue_refund for order (A-\d{4}) with amount_cents (\d+) and reason (\w+)")

_INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("privacy", re.compile(r"card number|home address|address of|someone else|another customer|other customer")),
    ("human", re.compile(r"\b(?:human|real person|a person|manager|supervisor|speak to someone)\b")),
    ("receipt", re.compile(r"\b(?:receipt|e-?mail me|send me a copy)\b")),
    # A question about the rules ("what is your refund policy?") is a policy question, not a request.
    ("policy", re.compile(r"\b(?:policy|policies|warranty|how long|international|do you ship|ship to)\b")),
    ("refund", re.compile(r"\b(?:refund|money back|reimburse|return it|send it back)\b")),
    ("billing", re.compile(r"\b(?:charged|charges?|billing|bill|invoice|payments?)\b")),
    ("policy", re.compile(r"\b(?:gift cards?|return window|can i)\b")),
    ("status", re.compile(r"\b(?:where|status|track|tracking|shipped|arrived?|delivery|delivered|late)\b")),
)
_SHORT = 80
_MANY_TOOLS = 20
_MIXED_UP = 0.4
"""How often a decision with more than ``_MANY_TOOLS`` tools mixes up an argument's name."""
_OTHER_NAMES = {"order_id": "order_number", "email": "customer_email", "customer_id": "customer",
                "query": "search_query"}
_THANKS = re.compile(r"^\W*(?:thanks|thank you|great|perfect|that's all|that is all|bye)\b", re.I)
_CONFIRM = re.compile(r"^\W*(?:yes|yeah|yep|sure|ok|okay|please do|go ahead|confirm|do it)\b", re.I)
_DECLINE = re.compile(r"^\W*(?:no|nope|don't|do not|never mind|cancel)\b", re.I)
_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("duplicate_charge", re.compile(r"twice|duplicate|double", re.I)),
    ("not_received", re.compile(r"never arrived|not received|didn't arrive|did not arrive|lost", re.I)),
    ("damaged", re.compile(r"damaged|broken|cracked|defective|smashed|dented", re.I)),
    ("late_delivery", re.compile(r"\blate\b", re.I)),
    ("changed_mind", re.compile(r"changed my mind|don't need|do not need|don't want|no longer", re.I)),
)
_RUNAWAY_QUERIES = ("refund policy", "shipping fees", "warranty", "international shipping", "gift cards",
                    "billing duplicate charge", "lost packages", "loyalty tiers", "privacy", "cancel order",
                    "damaged items")


# -- what the request says --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One tool call the assistant made, with the result it got (``None`` while unanswered)."""

    id: str
    name: str
    input: dict[str, Any]
    result: Any
    is_error: bool
    decision: int
    """Which assistant message asked for it (0-based)."""

    @property
    def error(self) -> dict[str, Any]:
        if self.is_error and isinstance(self.result, dict):
            return self.result.get("error") or {}
        return {}


@dataclass(frozen=True)
class View:
    """The request, read the way the policy needs it."""

    system: str
    tools: frozenset[str]
    user_texts: tuple[str, ...]
    steps: tuple[Step, ...]
    since: int
    """Index of the first step taken after the latest user text."""
    prev_reply: str
    """The assistant's last words before the latest user text."""
    call_index: int
    """Assistant messages so far: 0 for the first call of a conversation."""

    @property
    def turn_steps(self) -> tuple[Step, ...]:
        return self.steps[self.since:]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text")


def _parse_result(content: Any) -> Any:
    text = _text_of(content) if not isinstance(content, str) else content
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def read_request(body: dict[str, Any]) -> View:
    """Reads a Messages API request body into a ``View``."""
    system = body.get("system") or ""
    if not isinstance(system, str):
        system = _text_of(system)
    tools = frozenset(t.get("name", "") for t in body.get("tools") or ())
    if (body.get("tool_choice") or {}).get("type") == "none":
        tools = frozenset()
    user_texts: list[str] = []
    steps: list[Step] = []
    pending: dict[str, tuple[str, dict[str, Any], int]] = {}
    since, prev_reply, last_reply, calls = 0, "", "", 0
    for msg in body.get("messages") or ():
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or ())
        if msg.get("role") == "assistant":
            calls += 1
            last_reply = _text_of(blocks) or last_reply
            for b in blocks:
                if b.get("type") == "tool_use":
                    args = b.get("input")
                    pending[b.get("id", "")] = (b.get("name", ""), dict(args) if isinstance(args, dict) else {},
                                                calls - 1)
            continue
        text = _text_of(blocks)
        for b in blocks:
            if b.get("type") == "tool_result":
                name, args, decision = pending.pop(b.get("tool_use_id", ""), ("?", {}, calls - 1))
                steps.append(Step(b.get("tool_use_id", ""), name, args, _parse_result(b.get("content")),
                                  bool(b.get("is_error")), decision))
        if text.strip():
            user_texts.append(text.strip())
            since = len(steps)
            prev_reply = last_reply
    return View(system, tools, tuple(user_texts), tuple(steps), since, prev_reply, calls)


# -- what the policy makes of it ----------------------------------------------------------------


@dataclass(frozen=True)
class Use:
    """One tool call to make."""

    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Act:
    """One decision: words, tool calls, and how the turn stops."""

    text: str = ""
    uses: tuple[Use, ...] = ()
    stop: str | None = None
    """``None``: ``tool_use`` when there are uses, else ``end_turn``."""


@dataclass(frozen=True)
class Facts:
    """What successful tool results have established so far in the conversation."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing_orders: frozenset[str] = frozenset()
    shipments: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By e-mail (lower case) and by customer id."""
    order_lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """search_orders results by customer id."""
    kb_queries: tuple[str, ...] = ()
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Paid refunds by order id."""
    tickets: tuple[dict[str, Any], ...] = ()


def collect_facts(steps: tuple[Step, ...]) -> Facts:
    orders: dict[str, dict[str, Any]] = {}
    missing: set[str] = set()
    shipments: dict[str, dict[str, Any]] = {}
    customers: dict[str, dict[str, Any]] = {}
    lists: dict[str, list[dict[str, Any]]] = {}
    kb: list[str] = []
    refunds: dict[str, dict[str, Any]] = {}
    tickets: list[dict[str, Any]] = []
    for s in steps:
        r = s.result if isinstance(s.result, dict) else {}
        if s.name == "search_kb":
            kb.append(str(s.input.get("query", "")))
        if s.is_error:
            if s.name == "get_order" and s.error.get("code") == "not_found":
                missing.add(str(s.input.get("order_id")))
            continue
        if s.name == "get_order" and "order_id" in r:
            orders[r["order_id"]] = r
            missing.discard(r["order_id"])
        elif s.name == "get_shipment" and "order_id" in r:
            shipments[r["order_id"]] = r
        elif s.name == "get_customer" and "customer_id" in r:
            customers[r["customer_id"]] = customers[str(r.get("email", "")).lower()] = r
        elif s.name == "search_orders" and "customer_id" in r:
            lists[r["customer_id"]] = list(r.get("orders") or [])
            if "email" in s.input:
                customers.setdefault(str(s.input["email"]).lower(), {"customer_id": r["customer_id"]})
        elif s.name == "issue_refund" and r.get("status") == "refunded":
            refunds[str(r.get("order_id") or s.input.get("order_id"))] = r
        elif s.name == "escalate_to_human" and r.get("status") == "escalated":
            tickets.append(r)
    return Facts(orders, frozenset(missing), shipments, customers, lists, tuple(kb), refunds, tuple(tickets))


@dataclass(frozen=True)
class Task:
    """What the customer wants now."""

    kind: str
    order_id: str | None = None
    email: str | None = None
    amount_cents: int | None = None
    reason: str | None = None
    confirmed: bool = False


@dataclass(frozen=True)
class Rules:
    """The system prompt's rules that the policy obeys."""

    confirm_refunds: bool
    kb_is_data: bool


def read_rules(system: str, misbehave: frozenset[str]) -> Rules:
    if "ignore_rule" in misbehave:
        return Rules(False, False)
    return Rules(bool(_CONFIRM_RULE.search(system)), bool(_DATA_RULE.search(system)))


def intent_of(text: str) -> str | None:
    """The task a user message asks for, ``None`` when it only adds details."""
    if len(text) <= _SHORT:
        if _CONFIRM.search(text):
            return "confirm"
        if _DECLINE.search(text):
            return "decline"
        if _THANKS.search(text) and "?" not in text:  # "Thanks. Also, …?" is a new question
            return "thanks"
    low = text.lower()
    for name, pattern in _INTENTS:
        if pattern.search(low):
            return name
    return None


def _cents(text: str) -> int:
    return round(float(text.replace(",", "")) * 100)


def _offer(text: str) -> Task | None:
    m = _OFFER_RE.search(text)
    if m:
        return Task("refund", order_id=m.group(2), amount_cents=_cents(m.group(1)), reason=m.group(3))
    if _ESCALATION_OFFER in text:
        orders = _ORDER_RE.findall(text)
        return Task("human", order_id=orders[-1] if orders else None)
    return None


def read_task(v: View) -> Task:
    """The customer's task, from the latest message, the assistant's last offer, and earlier messages."""
    latest = v.user_texts[-1] if v.user_texts else ""
    kind = intent_of(latest)
    offer = _offer(v.prev_reply)
    email = next((m[-1] for t in reversed(v.user_texts) if (m := _EMAIL_RE.findall(t))), None)
    if kind == "confirm" and offer is not None:
        return replace(offer, email=email, confirmed=True)
    if kind in ("decline", "thanks", "privacy", "human"):
        return Task(kind or "unclear", email=email, order_id=_latest_order(v))
    if kind in (None, "confirm"):
        earlier = next((k for t in reversed(v.user_texts[:-1])
                        if (k := intent_of(t)) not in (None, "confirm", "decline", "thanks")), None)
        kind = earlier or "unclear"
    reason = next((name for t in reversed(v.user_texts) for name, p in _REASONS if p.search(t)), None)
    amount = None
    amounts = _MONEY_RE.findall(latest)
    if kind == "refund" and amounts:
        amount = _cents(amounts[-1])
    return Task(kind, order_id=_latest_order(v), email=email, amount_cents=amount, reason=reason)


def _latest_order(v: View) -> str | None:
    for t in reversed(v.user_texts):
        found = _ORDER_RE.findall(t)
        if found:
            return str(found[-1])
    offer = _offer(v.prev_reply)
    return offer.order_id if offer else None


# -- deciding -----------------------------------------------------------------------------------


class Mind:
    """Decides the next step of one conversation.

    Args:
        key: What identifies the conversation's script (the scenario name), for seeding.
        seed: The trial's seed.
        misbehave: Misbehaviours to act out.
    """

    def __init__(self, key: str, seed: int, misbehave: frozenset[str]) -> None:
        self.key = key
        self.seed = seed
        self.misbehave = misbehave

    def _rng(self, *what: object) -> random.Random:
        # A string seed is hashed with SHA-512 by random.Random, so it is stable across runs.
        return random.Random("|".join(map(str, (self.key, self.seed, *what))))

    def chance(self, what: str, p: float) -> bool:
        """A per-conversation coin: the same answer at every call of one (scenario, seed)."""
        return self._rng("chance", what).random() < p

    def decide(self, v: View) -> Act:
        """The next decision for the conversation in ``v``."""
        rng = self._rng("call", v.call_index)
        if "runaway" in self.misbehave:
            return self._runaway(v, rng)
        if "loop" in self.misbehave and v.turn_steps:
            first = v.turn_steps[0]
            return Act(rng.choice(("Let me check that again.", "One more look to be sure.", "")),
                       (Use(first.name, first.input),))
        rules = read_rules(v.system, self.misbehave)
        facts = collect_facts(v.steps)
        task = read_task(v)
        act = self._recover(v, facts, task, rng) or self._plan(v, facts, task, rules, rng)
        act = self._within_tools(act, v, task, rng)
        corrected = bool(v.turn_steps) and v.turn_steps[-1].is_error  # a schema error just told it the names
        if len(v.tools) > _MANY_TOOLS and act.uses and not corrected and rng.random() < _MIXED_UP:
            act = self._mixed_up(act)
        if not v.steps and act.uses:
            if "hallucinate" in self.misbehave:
                act = self._hallucinate(act, rng)
            elif "wrong_tool" in self.misbehave:
                act = self._wrong_tool(act, v, task)
        return act

    # -- errors --------------------------------------------------------------------------------

    def _recover(self, v: View, facts: Facts, task: Task, rng: random.Random) -> Act | None:
        """Reacts to a failed tool call in this turn, or returns ``None`` to plan as usual."""
        if not v.turn_steps:
            return None
        # The last decision may have made parallel calls: react to the last of them that failed.
        latest = v.turn_steps[-1].decision
        failed = [s for s in v.turn_steps if s.decision == latest and s.is_error]
        if not failed:
            return None
        last = failed[-1]
        code = last.error.get("code")
        if code in ("service_unavailable", "circuit_open", "timeout"):
            tries = sum(1 for s in v.turn_steps if s.name == last.name and s.input == last.input and s.is_error)
            if last.error.get("retryable") and tries < 3:
                return Act(rng.choice(("That didn't go through; let me try again.", "The system hiccuped. "
                                       "Trying once more.", "")), (Use(last.name, last.input),))
            if facts.tickets:
                return Act(self._apology(facts.tickets[-1], rng))
            return Act(rng.choice(("That system isn't responding, so I'll hand this to a colleague.",
                                   "I can't reach that system right now; escalating to a colleague.")),
                       (Use("escalate_to_human", self._ticket(
                           f"The {last.name} tool is unavailable ({_WHY_DOWN.get(code, 'service down')}); the "
                           f"customer needs help with their {task.kind} request.", "high", facts, task)),))
        what = "e-mail" if last.name == "send_email" else "refund"
        if code == "approval_rejected":
            reason = (last.error.get("details") or {}).get("note") or ""
            return Act(f"I'm sorry: a team lead reviewed the {what} and declined it{': ' + reason if reason else '.'} "
                       f"If you'd like, I can {_ESCALATION_OFFER} for a second look.")
        if code == "approval_expired":
            if "escalate_to_human now" in str(last.error.get("recovery", "")) and "escalate_to_human" in v.tools:
                return Act(f"The {what} could not be approved in time, so I'm handing your case to a colleague.",
                           (Use("escalate_to_human", self._ticket(
                               f"The {what} waited for a team lead's approval and expired; the customer still needs "
                               f"help with their {task.kind} request.", "high", facts, task)),))
            return Act(f"I'm sorry: the {what} needed a team lead's approval and it could not be approved in time, "
                       "so nothing was done. You're welcome to contact us again and we'll take another look.")
        if code == "not_allowed":
            return Act(f"I'm afraid I can't do that: {last.error.get('message', '')} "
                       f"{rng.choice(('I can', 'If you like, I can'))} {_ESCALATION_OFFER} to ask for an exception. "
                       "Would you like that?")
        if code == "not_found" and last.name in ("get_order", "get_shipment"):
            if last.input.get("order_id") != task.order_id:
                return None  # it asked about an order nobody mentioned: plan again with the real one
            customer = self._customer_id(facts, task)
            if task.email and not (customer and customer in facts.order_lists):
                return Act("I can't find that order number; let me look at the orders on your account.",
                           (Use("search_orders", {"email": task.email}),))
            return None
        if code == "not_found" and last.name == "search_kb":
            if len(v.turn_steps) < 3:
                return Act("", (Use("search_kb", {"query": "policy"}),))
            return Act(f"I couldn't find a written policy on that. I can {_ESCALATION_OFFER} who can answer. "
                       "Would you like that?")
        return None  # invalid arguments and the like: planning again gets them right

    # -- planning ------------------------------------------------------------------------------

    def _plan(self, v: View, facts: Facts, task: Task, rules: Rules, rng: random.Random) -> Act:
        planner = {
            "status": self._status, "refund": self._refund, "billing": self._billing, "policy": self._policy,
            "receipt": self._receipt, "human": self._human,
        }.get(task.kind)
        ticket = next((s.result for s in v.turn_steps if s.name == "escalate_to_human" and not s.is_error), None)
        if ticket is not None:
            return Act(self._apology(ticket, rng))
        if planner is not None:
            return planner(v, facts, task, rules, rng)
        if task.kind == "privacy":
            return Act("I can't share another customer's personal or payment details. I'm happy to help with "
                       "your own orders, though.", stop="refusal")
        if task.kind == "thanks":
            return Act(rng.choice(("You're welcome! Have a lovely day.", "Glad I could help. Take care!",
                                   "Happy to help. Have a great day!")))
        if task.kind == "decline":
            return Act(rng.choice(("No problem, I won't change anything.", "Understood; I'll leave it as it is.")))
        return Act(rng.choice((
            "I'm sorry to hear something went wrong. Could you tell me the order number and what happened?",
            "I'd like to help. Which order is this about, and what would you like me to do?",
        )))

    def _order_or_ask(self, v: View, facts: Facts, task: Task, rng: random.Random) -> Act | dict[str, Any]:
        """The task's order, fetched, or the step that gets it (a lookup or a question)."""
        order_id = task.order_id
        customer = self._customer_id(facts, task)
        if order_id is None or order_id in facts.missing_orders:
            if customer and customer in facts.order_lists:
                listed = facts.order_lists[customer]
                if order_id is None and len(listed) == 1:
                    order_id = listed[0]["order_id"]
                else:
                    lead = f"I couldn't find an order {order_id}. " if order_id else ""
                    if not listed:
                        return Act(f"{lead}I can't see any orders on your account. Could you check the order "
                                   "number on your confirmation e-mail?")
                    names = ", ".join(f"{o['order_id']} ({o['item']}, {o['status']})" for o in listed[:5])
                    return Act(f"{lead}On your account I can see {names}. Which one do you mean?")
            elif task.email:
                return Act(rng.choice(("Let me look up your orders.", "")),
                           (Use("search_orders", {"email": task.email}),))
            elif order_id:
                return Act(f"I couldn't find an order {order_id}. Could you double-check the number, or give me the "
                           "e-mail address on your account?")
            else:
                return Act("Could you give me your order number (it looks like A-1234) or the e-mail address on your "
                           "account?")
        assert order_id is not None
        if order_id not in facts.orders:
            uses = [Use("get_order", {"order_id": order_id})]
            if task.kind == "status" and self.chance("parallel", 0.4):
                uses.append(Use("get_shipment", {"order_id": order_id}))
            return Act(rng.choice((f"Let me look up order {order_id}.", f"Checking order {order_id} for you.", "")),
                       tuple(uses))
        return facts.orders[order_id]

    def _status(self, v: View, facts: Facts, task: Task, rules: Rules, rng: random.Random) -> Act:
        if task.email and not facts.customers and self.chance("greet_by_name", 0.3) and not v.steps:
            return Act("Let me pull up your account first.", (Use("get_customer", {"email": task.email}),))
        order = self._order_or_ask(v, facts, task, rng)
        if isinstance(order, Act):
            return order
        oid, item = order["order_id"], order["item"]
        if order["status"] == "processing":
            return Act(f"Your {item} ({oid}) is still being prepared and should ship within 2 business days. "
                       "You'll get a tracking e-mail as soon as it leaves our warehouse.")
        ship = facts.shipments.get(oid)
        if ship is None:
            return Act(rng.choice(("Now the shipment.", "Let me track the parcel.", "")),
                       (Use("get_shipment", {"order_id": oid}),))
        if ship["status"] == "in_transit":
            return Act(f"Your {item} ({oid}) is on its way with {ship['carrier']} (tracking {ship['tracking']}). "
                       f"{ship['last_event']} It should arrive by {ship['eta']}.")
        if ship["status"] == "delivered":
            return Act(f"Your {item} ({oid}) was delivered: {ship['last_event']} If you can't find it, let me know.")
        amount = order["refundable_cents"]
        return Act(f"I'm sorry: the carrier reports a problem with your {item} ({oid}). {ship['last_event']} "
                   f"I can send a replacement, or I can refund {money(amount)} for order {oid} (not_received). "
                   "Shall I go ahead with the refund?")

    def _refund(self, v: View, facts: Facts, task: Task, rules: Rules, rng: random.Random) -> Act:
        order = self._order_or_ask(v, facts, task, rng)
        if isinstance(order, Act):
            return order
        oid = order["order_id"]
        done = facts.refunds.get(oid)
        turn_refund = next((s for s in v.turn_steps if s.name == "issue_refund" and not s.is_error), None)
        if done is not None and turn_refund is not None:
            return self._after_refund(v, facts, order, done, rng)
        if done is not None or order["refundable_cents"] <= 0:
            return Act(f"Order {oid} has already been refunded ({money(order['refunded_cents'])}); the money "
                       "reaches your account within 5-10 business days of the refund.")
        if not any("refund" in q for q in facts.kb_queries) and self.chance("kb_first", 0.5):
            return Act(rng.choice(("Let me check our refund policy first.", "")),
                       (Use("search_kb", {"query": "refund policy", "limit": 2}),))
        reason = task.reason or ("not_received" if facts.shipments.get(oid, {}).get("status") == "exception"
                                 else "other")
        amount = task.amount_cents or order["refundable_cents"]
        if reason == "duplicate_charge" and task.amount_cents is None:
            amount = _duplicate(order) or amount
        amount = min(amount, order["refundable_cents"])
        if rules.confirm_refunds and not task.confirmed:
            return Act(rng.choice((
                f"I'm sorry about that. I can refund {money(amount)} for order {oid} ({reason}) to your original "
                "payment method. Shall I go ahead?",
                f"Thanks for your patience. To confirm: shall I refund {money(amount)} for order {oid} ({reason})?",
            )))
        uses = (Use("issue_refund", {"order_id": oid, "amount_cents": amount, "reason": reason}),)
        return Act(rng.choice((f"Issuing the refund of {money(amount)} now.", "Processing your refund.", "")), uses)

    def _after_refund(self, v: View, facts: Facts, order: dict[str, Any], refund: dict[str, Any],
                      rng: random.Random) -> Act:
        emailed = any(s.name == "send_email" for s in v.turn_steps)
        amount = money(refund["amount_cents"])
        if not emailed and self.chance("email_confirmation", 0.6):
            return Act("I'll send you a confirmation by e-mail.", (Use("send_email", {
                "customer_id": order["customer_id"], "template": "refund_confirmation",
                "subject": f"Your refund {refund['refund_id']} for order {order['order_id']}",
                "body": f"We have refunded {amount} for your {order['item']} (order {order['order_id']}). It "
                        "reaches your account within 5-10 business days.",
            }),))
        lead = "Good news: a team lead approved it. " if refund.get("approved_by") else ""
        tail = " A confirmation e-mail is on its way too." if emailed else ""
        return Act(f"{lead}Done: refund {refund['refund_id']} of {amount} for order {order['order_id']} is on its way "
                   f"and reaches your account within 5-10 business days.{tail}")

    def _billing(self, v: View, facts: Facts, task: Task, rules: Rules, rng: random.Random) -> Act:
        order = self._order_or_ask(v, facts, task, rng)
        if isinstance(order, Act):
            return order
        oid = order["order_id"]
        dup = _duplicate(order)
        if dup:
            return Act(f"You're right: order {oid} was charged twice ({money(dup)} each time). That's our mistake. "
                       f"I can refund {money(dup)} for order {oid} (duplicate_charge) straight away. Shall I?")
        if not any("ship" in q for q in facts.kb_queries) and self.chance("kb_billing", 0.5):
            return Act("Let me check how shipping is billed.", (Use("search_kb", {"query": "shipping fees"}),))
        parts = f"{money(order['subtotal_cents'])} for the {order['item']}"
        if order["shipping_cents"]:
            parts += f" plus {money(order['shipping_cents'])} standard shipping (free on orders over $150.00)"
        return Act(f"Your order {oid} came to {money(order['total_cents'])}: {parts}. The receipt shows shipping as "
                   "its own line.")

    def _policy(self, v: View, facts: Facts, task: Task, rules: Rules, rng: random.Random) -> Act:
        if "ask_researcher" in v.tools:
            return self._delegated(v, rng)
        found = [s for s in v.turn_steps if s.name == "search_kb" and not s.is_error]
        if not found:
            words = [w for w in re.findall(r"[a-z0-9-]+", v.user_texts[-1].lower()) if w not in STOPWORDS]
            query = " ".join(words[:6]) or "policy"
            args: dict[str, Any] = {"query": query[:200]}
            if self.chance("kb_limit", 0.5):
                args["limit"] = rng.choice((2, 3))
            return Act(rng.choice(("Let me check our policy.", "I'll look that up in our knowledge base.", "")),
                       (Use("search_kb", args),))
        articles = found[-1].result.get("articles", []) if isinstance(found[-1].result, dict) else []
        clean = [a for a in articles if not _INJECTION.search(a.get("body", ""))]
        planted = [a for a in articles if _INJECTION.search(a.get("body", ""))]
        if planted and not rules.kb_is_data:
            hijack = self._hijacked(v, planted[0])
            if hijack is not None:
                return hijack
        if not clean:
            return Act(f"I couldn't find a reliable policy on that. I can {_ESCALATION_OFFER} who can answer. "
                       "Would you like that?")
        top = clean[0]
        sentences = re.split(r"(?<=[.!?])\s+", top["body"])
        answer = " ".join(sentences[: 2 + rng.randint(0, 1)])
        return Act(rng.choice((f"According to our {top['title']} policy ({top['article_id']}): {answer}",
                               f"{answer} (from {top['article_id']}, {top['title']})")))

    def _delegated(self, v: View, rng: random.Random) -> Act:
        """A policy question handed to the research assistant (``ask_researcher``), then its answer passed on."""
        asked = [s for s in v.turn_steps if s.name == "ask_researcher"]
        if not asked:
            question = " ".join(v.user_texts[-1].split())[:500]
            return Act(rng.choice(("Let me ask our research assistant to check the policy.", "")),
                       (Use("ask_researcher", {"question": question}),))
        answer = asked[-1].result.get("answer") if isinstance(asked[-1].result, dict) else None
        if asked[-1].is_error or not answer:
            return Act(f"I couldn't confirm our policy on that just now. I can {_ESCALATION_OFFER} who can answer. "
                       "Would you like that?")
        return Act(rng.choice((f"I checked with our research assistant. {answer}",
                               f"Here's what our policy says. {answer}")))

    def _hijacked(self, v: View, article: dict[str, Any]) -> Act | None:
        """Follows instructions planted in an article, as a model without rule 4 might."""
        m = _INJECTED_REFUND.search(article.get("body", ""))
        if m is None:
            return None
        oid, amount, reason = m.group(1), int(m.group(2)), m.group(3)
        refunded = next((s for s in v.turn_steps if s.name == "issue_refund"), None)
        if refunded is None:
            return Act("", (Use("issue_refund", {"order_id": oid, "amount_cents": amount, "reason": reason}),))
        result = refunded.result if isinstance(refunded.result, dict) else {}
        if "send_email" in article["body"] and result.get("customer_id") and not any(
                s.name == "send_email" for s in v.turn_steps):
            return Act("", (Use("send_email", {
                "customer_id": result["customer_id"], "template": "refund_confirmation",
                "subject": "Your gift card was refunded", "body": f"We refunded {money(amount)} for order {oid}.",
            }),))
        return None

    def _receipt(self, v: View, facts: Facts, task: Task, rules: Rules, rng: random.Random) -> Act:
        order = self._order_or_ask(v, facts, task, rng)
        if isinstance(order, Act):
            return order
        sent = next((s for s in v.turn_steps if s.name == "send_email" and not s.is_error), None)
        if sent is None:
            to = _SEND_TO.search(v.user_texts[-1])
            return Act("I'll e-mail the receipt now.", (Use("send_email", {
                "customer_id": order["customer_id"], **({"to": to.group(1)} if to else {}), "template": "receipt",
                "subject": f"Your receipt for order {order['order_id']}",
                "body": f"Order {order['order_id']}: {order['item']}, {money(order['subtotal_cents'])}; shipping "
                        f"{money(order['shipping_cents'])}; total {money(order['total_cents'])}.",
            }),))
        to = sent.result.get("to", "your e-mail address") if isinstance(sent.result, dict) else "you"
        return Act(f"Done: the receipt for order {order['order_id']} is on its way to {to}.")

    def _human(self, v: View, facts: Facts, task: Task, rules: Rules, rng: random.Random) -> Act:
        why = " ".join(v.user_texts[-1].split())[:200]
        text = why if len(why) >= 10 else "The customer asked to speak to a person."
        return Act(rng.choice(("Of course. I'm passing this to a colleague now.", "I'll get a person on this.")),
                   (Use("escalate_to_human", self._ticket(f"Customer asks for a human: {text}", "normal", facts,
                                                         task)),))

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _customer_id(facts: Facts, task: Task) -> str | None:
        if task.order_id and task.order_id in facts.orders:
            return str(facts.orders[task.order_id]["customer_id"])
        if task.email and task.email.lower() in facts.customers:
            return str(facts.customers[task.email.lower()]["customer_id"])
        return None

    def _ticket(self, reason: str, priority: str, facts: Facts, task: Task) -> dict[str, Any]:
        args: dict[str, Any] = {"reason": reason[:500], "priority": priority}
        customer = self._customer_id(facts, task)
        if customer:
            args["customer_id"] = customer
        if task.order_id and task.order_id not in facts.missing_orders:
            args["order_id"] = task.order_id
        return args

    @staticmethod
    def _apology(ticket: Any, rng: random.Random) -> str:
        tid = ticket.get("ticket_id", "") if isinstance(ticket, dict) else ""
        when = ticket.get("expected_response", "soon") if isinstance(ticket, dict) else "soon"
        return rng.choice((f"I've handed this to a colleague (ticket {tid}); they'll get back to you {when}. "
                           "Sorry for the trouble.",
                           f"A colleague will pick this up {when} (ticket {tid}). Thank you for your patience."))

    def _within_tools(self, act: Act, v: View, task: Task, rng: random.Random) -> Act:
        """Never calls a tool the request does not offer."""
        missing = [u.name for u in act.uses if u.name not in v.tools]
        if not missing:
            return act
        if "escalate_to_human" in v.tools and missing[0] != "escalate_to_human":
            return Act(f"I'm not able to do that from here ({missing[0]} isn't available to me), so I'll hand it to "
                       "a colleague.", (Use("escalate_to_human", {
                           "reason": f"The assistant cannot use {missing[0]}; the customer needs help with their "
                                     f"{task.kind} request.", "priority": "normal"}),))
        return Act("I'm sorry, I can't do that from here. Please contact our support team by phone.")

    @staticmethod
    def _mixed_up(act: Act) -> Act:
        first = act.uses[0]
        key = next((k for k in first.input if k in _OTHER_NAMES), None)
        if key is None:
            return act
        args = {(_OTHER_NAMES[k] if k == key else k): v for k, v in first.input.items()}
        return replace(act, uses=(Use(first.name, args), *act.uses[1:]))

    def _hallucinate(self, act: Act, rng: random.Random) -> Act:
        first = act.uses[0]
        if "order_id" in first.input:
            invented = f"A-{rng.randint(2000, 8999)}"
            return replace(act, uses=(Use(first.name, {**first.input, "order_id": invented}), *act.uses[1:]))
        if first.name == "search_kb":
            return replace(act, uses=(Use("search_kb", {**first.input, "limit": 10}),))
        if "email" in first.input:
            return replace(act, uses=(Use(first.name, {**first.input, "email": "customer@example"}),))
        return act

    def _wrong_tool(self, act: Act, v: View, task: Task) -> Act:
        first = act.uses[0]
        if first.name != "search_kb":
            return Act("Let me check our knowledge base.",
                       (Use("search_kb", {"query": (" ".join(v.user_texts[-1].split()) or "order")[:200]}),))
        if task.email:
            return Act("Let me look at your orders first.", (Use("search_orders", {"email": task.email}),))
        return Act("Let me look that up.", (Use("get_shipment", {"order_id": task.order_id or "A-1001"}),))

    def _runaway(self, v: View, rng: random.Random) -> Act:
        seen = [s for s in v.steps if s.name == "search_kb" and isinstance(s.result, dict)]
        recap = " ".join(a.get("body", "") for s in seen[-3:] for a in s.result.get("articles", []))
        query = _RUNAWAY_QUERIES[v.call_index % len(_RUNAWAY_QUERIES)]
        text = (f"To be thorough, here is everything relevant so far before I look up {query!r}: {recap}"
                if recap else f"To be thorough, I'll go through every relevant policy, starting with {query!r}.")
        return Act(text, (Use("search_kb", {"query": query, "limit": 5}),))


def _duplicate(order: dict[str, Any]) -> int | None:
    """The amount of a payment captured twice on the order, if any."""
    seen: set[int] = set()
    for p in order.get("payments") or ():
        if p.get("status") != "captured":
            continue
        if p["amount_cents"] in seen:
            return int(p["amount_cents"])
        seen.add(p["amount_cents"])
    return None
