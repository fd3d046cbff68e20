"""A simulated agent workload for `archiver demo`, and what the archive must hold after it.

Conversations write successive checkpoints in the seed format (or LangChain's serialized
forms): the message list grows, later checkpoints replace older messages with a
`conversation_summary`, customers are identified late, a few payloads are malformed. Some
producers write shadows with `producer.Producer`, others a plain SET with a TTL (the consumer
arms those from `set` events). Every message has an identity of the workload's own, so the
expected archive is known without asking the archiver's decoder.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
import redis.asyncio as aioredis

from consumer import producer

Style = Literal["seed", "constructor", "typed"]
Malformed = Literal["truncated", "shape", "role"]
MALFORMED_KINDS: tuple[Malformed, ...] = ("truncated", "shape", "role")
KEEP_AFTER_SUMMARY = 3


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who the agent works for: its name, time zone (None: naive times) and phrases."""

    name: str
    zone: str | None
    exchanges: tuple[tuple[str, str], ...]
    summary: str


TENANTS = (
    Tenant(
        "salon-madrid",
        "Europe/Madrid",
        (
            ("Hola, quiero reservar un corte para el viernes", "¡Claro! ¿Prefieres mañana o tarde?"),
            ("Por la tarde, después de las 17h", "Tengo hueco a las 17:30 con Marta. ¿Te lo reservo?"),
            ("Sí, perfecto", "Reservado: viernes 17:30 con Marta. ¡Hasta pronto!"),
            ("¿Cuánto cuesta el tinte?", "El tinte completo son 45 €, con corte 60 €."),
            ("¿Puedo cambiar la cita al sábado?", "El sábado a las 11:00 está libre. ¿Lo cambio?"),
            ("Sí, cámbiala por favor", "Hecho: sábado 11:00 con Marta."),
            ("¿Aceptáis tarjeta?", "Sí, tarjeta, Bizum o efectivo."),
            ("Genial, gracias", "¡A ti! Te enviamos un recordatorio el viernes."),
        ),
        "Customer books a haircut with Marta and asks about prices",
    ),
    Tenant(
        "shop-42",
        "Europe/London",
        (
            ("What were my sales last week?", "Last week you sold 18,250.40 across 311 orders."),
            ("Do you ship to Portugal?", "Yes, in 2-4 business days."),
            ("Where is order 1187?", "Order 1187 left the warehouse this morning."),
            ("Can I return the blue jacket?", "Yes: returns are free within 30 days."),
            ("Which size should I take?", "The jacket runs small; take one size up."),
            ("Is there a discount code?", "WINTER10 takes 10% off until Sunday."),
        ),
        "Merchant asks about sales, shipping and returns",
    ),
    Tenant(
        "clinic-lyon",
        "Europe/Paris",
        (
            ("Bonjour, un rendez-vous mardi ?", "Mardi 9h15 avec le Dr Martin, cela vous convient ?"),
            ("Plutôt l'après-midi", "Mardi 16h40 est disponible."),
            ("Parfait, merci", "C'est noté : mardi 16h40. À bientôt !"),
            ("Faut-il être à jeun ?", "Non, ce n'est pas nécessaire pour cette consultation."),
        ),
        "Patient books an afternoon appointment with Dr Martin",
    ),
    Tenant(
        "kiosk-lisbon",
        None,
        (
            ("hi, are you open on sundays?", "We're closed on Sundays. Can I help you book another day?"),
            ("saturday morning then", "Saturday 10:00 is free. Shall I book it?"),
            ("yes please", "Booked: Saturday 10:00. See you then!"),
        ),
        "Visitor asks about opening hours and books Saturday",
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """The size and pace of the workload (seconds are the demo's scaled-down clock)."""

    conversations: int = 200
    max_checkpoints: int = 6
    spread: float = 10.0
    gap: tuple[float, float] = (1.0, 2.5)
    seed: int = 0
    tag: str = "demo"


@dataclass(frozen=True, slots=True)
class Script:
    """What one conversation will do; checkpoint indexes start at 0."""

    conversation_id: str
    tenant: Tenant
    style: Style
    shadowless: bool
    checkpoints: int
    customer_id: str | None
    identified_at: int | None
    summarize_from: int | None
    malformed_at: int | None
    malformed: Malformed
    start: float
    gaps: tuple[float, ...]

    @property
    def late_customer(self) -> bool:
        return self.identified_at is not None and self.identified_at > 0


@dataclass(frozen=True, slots=True)
class Line:
    """One message as the agent holds it, with the workload's own identity."""

    ident: str
    payload: dict[str, Any]


def _style(i: int) -> Style:
    return "constructor" if i % 5 == 2 else "typed" if i % 5 == 4 else "seed"


def _conversation_id(i: int, style: Style, tag: str) -> str:
    if style != "seed":
        return f"agent-thread-{tag}-{i:04d}"
    return f"wa:msg:{tag}-{i:04d}" if i % 10 == 6 else f"wa-msg-{tag}-{i:04d}"


def _identified_at(rng: random.Random, style: Style, checkpoints: int) -> int | None:
    draw = rng.random()
    if draw < 0.2 or style == "typed":
        return None
    return 0 if draw < 0.6 or checkpoints < 2 else rng.randint(1, checkpoints - 1)


def _summarize_from(rng: random.Random, checkpoints: int) -> int | None:
    if checkpoints < 4 or rng.random() < 0.4:
        return None
    return rng.randint(3, checkpoints - 1)


def script(i: int, plan: Plan, rng: random.Random) -> Script:
    """Conversation `i` of the plan; conversation 0 always shows every feature."""
    style = "seed" if i == 0 else _style(i)
    n = max(plan.max_checkpoints, 5) if i == 0 else rng.randint(2, max(2, plan.max_checkpoints))
    return Script(
        conversation_id=_conversation_id(i, style, plan.tag),
        tenant=TENANTS[0] if i == 0 else rng.choice(TENANTS),
        style=style,
        shadowless=i % 4 == 1,
        checkpoints=n,
        customer_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        identified_at=2 if i == 0 else _identified_at(rng, style, n),
        summarize_from=4 if i == 0 else _summarize_from(rng, n),
        malformed_at=rng.randint(1, n - 1) if i % 25 == 3 else None,
        malformed=MALFORMED_KINDS[(i // 25) % len(MALFORMED_KINDS)],
        start=0.0 if i == 0 else rng.uniform(0, plan.spread),
        gaps=tuple(rng.uniform(*plan.gap) for _ in range(n - 1)),
    )


# --- messages ------------------------------------------------------------------------------------


def _stamp(tenant: Tenant, at: datetime) -> str:
    local = at.astimezone(ZoneInfo(tenant.zone) if tenant.zone else UTC)
    if tenant.zone is None:
        local = local.replace(tzinfo=None)  # naive: read in ARCHIVER_TIMEZONE (UTC)
    return local.isoformat(timespec="milliseconds")


def _seed_line(s: Script, n: int, role: str, content: str, at: datetime) -> Line:
    message: dict[str, Any] = {"role": role, "content": content, "timestamp": _stamp(s.tenant, at)}
    if role == "assistant" and n % 2:
        message["metadata"] = {"tool": "calendar.search"}
    return Line(f"{role}:{n}", message)


_LC_CLASSES = {"human": "HumanMessage", "ai": "AIMessage", "tool": "ToolMessage"}


def _langchain_line(s: Script, ident: str, kind: str, fields: dict[str, Any]) -> Line:
    msg_id = f"{s.conversation_id}-{ident}"
    if s.style == "typed":
        return Line(ident, {"type": kind, "data": {**fields, "id": msg_id}})
    path = ["langchain", "schema", "messages", _LC_CLASSES[kind]]
    kwargs = {**fields, "type": kind, "id": msg_id}
    return Line(ident, {"lc": 1, "type": "constructor", "id": path, "kwargs": kwargs})


def _langchain_exchange(s: Script, n: int, user: str, reply: str) -> list[Line]:
    lines = [_langchain_line(s, f"h{n}", "human", {"content": user})]
    if s.style == "constructor" and n == 1:
        call = {"name": "lookup", "args": {"query": user[:40]}, "id": f"call_{n}"}
        lines.append(_langchain_line(s, f"a{n}-call", "ai", {"content": "", "tool_calls": [call]}))
        result = orjson.dumps({"found": True, "items": 3}).decode()
        lines.append(
            _langchain_line(s, f"t{n}", "tool", {"content": result, "tool_call_id": f"call_{n}"})
        )
    lines.append(_langchain_line(s, f"a{n}", "ai", {"content": reply}))
    return lines


def exchange(s: Script, n: int, now: datetime) -> list[Line]:
    """The messages checkpoint `n` adds: a user turn and the agent's answer (and tool use)."""
    user, reply = s.tenant.exchanges[n % len(s.tenant.exchanges)]
    if s.style != "seed":
        return _langchain_exchange(s, n, user, reply)
    return [
        _seed_line(s, n, "user", user, now - timedelta(seconds=1.5)),
        _seed_line(s, n, "assistant", reply, now - timedelta(seconds=0.25)),
    ]


# --- checkpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A payload to write and the identities of the messages it carries (None: malformed)."""

    payload: bytes
    carries: frozenset[str] | None


def _head(s: Script, n: int) -> dict[str, Any]:
    document: dict[str, Any] = {"conversation_id": s.conversation_id}
    if s.style == "typed":
        return document  # no tenant, no ids: the archiver's defaults apply
    document["tenant_id"] = s.tenant.name
    if s.style == "constructor":
        document["user_id"] = f"usr_{s.conversation_id[-4:]}"
    known = s.identified_at is not None and n >= s.identified_at
    document["customer_id"] = s.customer_id if known else None
    return document


def _summary(s: Script, older: int) -> str:
    return f"{s.tenant.summary} ({older} earlier messages summarized)."


def checkpoint(s: Script, n: int, lines: Sequence[Line]) -> Checkpoint:
    """Checkpoint `n` of the conversation holding `lines` so far."""
    document = _head(s, n)
    shown = list(lines)
    carries = {line.ident for line in lines}
    if s.summarize_from is not None and n >= s.summarize_from:
        shown = shown[-KEEP_AFTER_SUMMARY:]
        summary = _summary(s, len(lines) - len(shown))
        document["conversation_summary"] = summary
        carries = {line.ident for line in shown} | {f"summary:{summary}"}
    document["messages"] = [line.payload for line in shown]
    if n == s.malformed_at:
        return Checkpoint(_malformed(s.malformed, document), None)
    return Checkpoint(orjson.dumps(document), frozenset(carries))


def _malformed(kind: Malformed, document: dict[str, Any]) -> bytes:
    if kind == "shape":
        return orjson.dumps(["this", "is", "not", "a", "checkpoint", "object"])
    if kind == "role":
        return orjson.dumps(document | {"messages": [{"role": "robot", "content": "beep"}]})
    raw = orjson.dumps(document)
    return raw[: max(1, len(raw) * 3 // 5)]  # cut off mid-write


# --- running -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """What the workload wrote so far, and what the archive must hold for it."""

    planned: int = 0
    written: int = 0
    shadowless: int = 0
    conversations: set[str] = field(default_factory=set)
    keys: list[str] = field(default_factory=list)
    malformed_keys: list[str] = field(default_factory=list)
    expected: set[tuple[str, str]] = field(default_factory=set)
    late_customers: set[str] = field(default_factory=set)
    finished: bool = False

    def record(self, s: Script, n: int, key: str, written: Checkpoint) -> None:
        """Checkpoint `n` of `s` was written under `key`."""
        self.written += 1
        self.shadowless += 1 if s.shadowless else 0
        self.conversations.add(s.conversation_id)
        self.keys.append(key)
        if written.carries is None:
            self.malformed_keys.append(key)
            return
        self.expected.update((s.conversation_id, ident) for ident in written.carries)
        if s.late_customer and n >= (s.identified_at or 0):
            self.late_customers.add(s.conversation_id)


class Workload:
    """Plays every conversation of a plan against Redis, concurrently."""

    def __init__(self, plan: Plan, client: aioredis.Redis, writer: producer.Producer) -> None:
        rng = random.Random(plan.seed)
        self.scripts = [script(i, plan, rng) for i in range(plan.conversations)]
        self.client = client
        self.writer = writer
        self.tally = Tally(planned=sum(s.checkpoints for s in self.scripts))

    @property
    def showcase(self) -> Script:
        """The conversation to read back at the end: it shows every feature."""
        return self.scripts[0]

    async def run(self) -> None:
        """Play every conversation; the first failure (Redis gone) is raised as it is."""
        try:
            await asyncio.gather(*(self._play(s) for s in self.scripts))
        finally:
            self.tally.finished = True

    async def _play(self, s: Script) -> None:
        await asyncio.sleep(s.start)
        lines: list[Line] = []
        second = 0
        for n in range(s.checkpoints):
            if n:
                await asyncio.sleep(s.gaps[n - 1])
            second = await _next_second(second)
            lines += exchange(s, n, datetime.now().astimezone())
            written = checkpoint(s, n, lines)
            key = self.writer.key(s.conversation_id, second)
            await self._write(s, key, written.payload)
            self.tally.record(s, n, key, written)

    async def _write(self, s: Script, key: str, payload: bytes) -> None:
        if not s.shadowless:
            await self.writer.write(self.client, key, payload)
        elif self.writer.ttl == int(self.writer.ttl):
            await self.client.set(key, payload, ex=int(self.writer.ttl))
        else:
            await self.client.set(key, payload, px=int(self.writer.ttl * 1000))


async def _next_second(previous: int) -> int:
    """A whole unix second after `previous`: keys of one conversation never collide."""
    now = time.time()
    if int(now) <= previous:
        await asyncio.sleep(previous + 1 - now + 0.01)
    return int(time.time())
