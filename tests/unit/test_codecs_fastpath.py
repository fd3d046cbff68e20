"""The decoder's fast path for seed messages: it must give exactly what the general path gives."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer import codecs, model
from consumer.codecs import CodecOptions, decode
from consumer.exceptions import DecodeError

KEY_TIME = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BOGOTA = ZoneInfo("America/Bogota")


def decode_doc(doc: object, options: CodecOptions | None = None) -> model.Checkpoint:
    return decode(
        "langgraph:checkpoint:conv:1",
        orjson.dumps(doc),
        key_conversation_id="conv",
        key_time=KEY_TIME,
        options=options or CodecOptions(),
    )


def decode_error(doc: object, options: CodecOptions | None = None) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_doc(doc, options)
    return str(caught.value)


def context(options: CodecOptions | None = None) -> codecs._Context:
    return codecs._Context("conv", KEY_TIME, options or CodecOptions())


def general_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codecs, "_fast_checkpoint", lambda *_: None)


def hash_key(role: str, stamp: str, content: str, occurrence: int) -> str:
    joined = "\x1f".join((role, stamp, content, str(occurrence)))
    return "h:" + hashlib.sha256(joined.encode()).hexdigest()[:32]


MIXED: dict[str, Any] = {
    "conversation_id": "c-1",
    "messages": [
        {"role": "user", "content": "hola ñandú", "timestamp": "2026-11-21T10:00:00+01:00"},
        {
            "role": "ai",
            "content": "hi",
            "timestamp": "2026-11-21T10:00:04Z",
            "metadata": {"channel": "whatsapp"},
        },
        {"role": "user", "content": "same", "timestamp": "2026-11-21T10:00:05"},
        {"role": "user", "content": "same", "timestamp": "2026-11-21T10:00:05"},
        {"role": "tool", "content": "no time"},
        {"role": "system", "content": "null time", "timestamp": None},
        {"role": "user", "content": "with id", "timestamp": "2026-11-21T10:00:06Z", "id": 7},
    ],
}

# Keys as stored in PostgreSQL by the decoder before it had a fast path: they must never change.
MIXED_KEYS_UTC = [
    "h:39affd319441686671176f505ac9d856",
    "h:533aa6277b8b7c286cb8aced5bc8195c",
    "h:14bc50d74a085adf1e184a30c35bec73",
    "h:38ae0d192b1348af6449577fea3cafd4",
    "h:afc97298c784034ca65f4c3fbd1abf91",
    "h:48d104e057aaf55ff6b9ac7ed7ffd812",
    "id:7",
]
MIXED_KEYS_BOGOTA = [
    *MIXED_KEYS_UTC[:2],
    "h:f105017f0446111a0b996ced20a1b2c3",
    "h:2064338262871f313b60a9bda5ab4fa3",
    *MIXED_KEYS_UTC[4:],
]


# --- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [(CodecOptions(), MIXED_KEYS_UTC), (CodecOptions(timezone=BOGOTA), MIXED_KEYS_BOGOTA)],
)
def test_keys_are_unchanged(options: CodecOptions, expected: list[str]) -> None:
    assert [m.key for m in decode_doc(MIXED, options).messages] == expected


def test_seed_keys_hash_role_iso_timestamp_content_and_occurrence() -> None:
    messages = decode_doc(MIXED).messages

    assert messages[0].key == hash_key("user", "2026-11-21T09:00:00+00:00", "hola ñandú", 0)
    assert messages[3].key == hash_key("user", "2026-11-21T10:00:05+00:00", "same", 1)
    assert messages[4].key == hash_key("tool", "", "no time", 0)


@pytest.mark.parametrize("options", [CodecOptions(), CodecOptions(timezone=BOGOTA)])
def test_fast_and_general_paths_agree_on_the_mixed_sample(
    options: CodecOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = decode_doc(MIXED, options)
    general_path_only(monkeypatch)

    assert decode_doc(MIXED, options) == fast


# --- the fast path is taken, and left when it must be ----------------------------------------------


def test_seed_checkpoints_take_the_fast_path() -> None:
    doc = {
        "conversation_id": "c-1",
        "customer_id": 42,
        "conversation_summary": "earlier talk",
        "extra": {"ignored": [1, 2.5]},
        "messages": [
            {"role": "user", "content": "a", "timestamp": "2026-11-21T10:00:00Z"},
            {"role": "assistant", "content": "b", "timestamp": None, "metadata": {"a": [1]}},
            {"role": "human", "content": "c", "timestamp": "2026-11-21", "id": "m-1", "x": 1},
            {"role": "tool", "content": "d"},
        ],
    }

    checkpoint = codecs._fast_checkpoint("k", orjson.loads(orjson.dumps(doc)), context())

    assert checkpoint is not None
    assert [m.role for m in checkpoint.messages] == ["system", "user", "assistant", "user", "tool"]
    assert checkpoint.messages[2].metadata == {"a": [1], "timestamp_source": "checkpoint"}


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": ["blocks"], "timestamp": "2026-11-21T10:00:00Z"},
        {"role": "user", "content": "a\x00b", "timestamp": "2026-11-21T10:00:00Z"},
        {"role": "user", "content": "x", "timestamp": "2026-11-21T10:00:00Z", "lc": 1},
        {"role": "user", "content": "x", "timestamp": "2026-11-21T10:00:00." + "1" * 80},
        {"role": "user", "content": "x", "timestamp": "2026-11-21T10:00:00Z", "n": 2.0**64},
        {"type": "human", "data": {"content": "x"}},
    ],
)
def test_unusual_messages_take_the_general_path(message: dict[str, Any]) -> None:
    doc = orjson.loads(orjson.dumps({"messages": [message]}))

    assert codecs._fast_checkpoint("k", doc, context()) is None


def test_identical_messages_take_the_general_path_for_their_occurrences() -> None:
    message = {"role": "user", "content": "ok", "timestamp": "2026-11-21T10:00:00Z"}
    doc = orjson.loads(orjson.dumps({"messages": [message, message]}))

    assert codecs._fast_checkpoint("k", doc, context()) is None
    assert [m.key for m in decode_doc(doc).messages] == [
        hash_key("user", "2026-11-21T10:00:00+00:00", "ok", 0),
        hash_key("user", "2026-11-21T10:00:00+00:00", "ok", 1),
    ]


def test_long_timestamps_are_still_decoded() -> None:
    stamp = "2026-11-21T10:00:00." + "5" * 80 + "+01:00"
    message = {"role": "user", "content": "x", "timestamp": stamp}

    checkpoint = decode_doc({"messages": [message]})

    assert checkpoint.messages[0].timestamp == datetime(2026, 11, 21, 9, 0, 0, 555555, UTC)


# --- refusals the fast path must not skip --------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"big": 123456789012345678901234, "messages": []}',
        b'{"messages": [{"role": "user", "content": "x", "timestamp": null, "n": -9223372036854775809}]}',
        b'{"messages": [{"role": "user", "content": "x", "timestamp": null, "metadata": {"n": [18446744073709551616]}}]}',
    ],
    ids=["top-level", "message-field", "metadata"],
)
def test_wide_integers_anywhere_are_refused(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="beyond 64 bits"):
        decode("k", raw, key_conversation_id="c", key_time=KEY_TIME, options=CodecOptions())


def test_wide_floats_that_are_no_integers_are_accepted() -> None:
    raw = b'{"n": 1e19, "messages": [{"role": "user", "content": "x", "timestamp": null}]}'

    checkpoint = decode(
        "k", raw, key_conversation_id="c", key_time=KEY_TIME, options=CodecOptions()
    )

    assert checkpoint.messages[0].content == "x"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            {
                "role": "user",
                "content": "x",
                "timestamp": None,
                "metadata": {"timestamp_source": 1},
            },
            "metadata.timestamp_source: the archiver needs this key for its own marker",
        ),
        (
            {"role": "user", "content": "x", "timestamp": "2026-11-21", "metadata": {"k\x00": 1}},
            "messages[0].metadata: contains NUL",
        ),
        (
            {"role": "user", "content": "x", "timestamp": "2200-01-01T00:00:00Z"},
            "messages[0].timestamp: year out of range 1970..2199",
        ),
        (
            {"role": "user", "content": "x", "timestamp": "2026-11-21", "id": True},
            "messages[0].id: not a string or integer",
        ),
    ],
)
def test_errors_are_those_of_the_general_path(message: dict[str, Any], expected: str) -> None:
    assert decode_error({"messages": [message]}) == expected


@pytest.mark.parametrize(("levels", "refused"), [(199, False), (200, True), (300, True)])
def test_metadata_depth_limit_holds(levels: int, refused: bool) -> None:
    raw = (
        b'{"messages": [{"role": "user", "content": "x", "timestamp": "2026-11-21", '
        + b'"metadata": {"n": '
        + b"[" * levels
        + b"1"
        + b"]" * levels
        + b"}}]}"
    )

    def run() -> model.Checkpoint:
        return decode("k", raw, key_conversation_id="c", key_time=KEY_TIME, options=CodecOptions())

    if refused:
        with pytest.raises(DecodeError, match="nested more than 200 levels"):
            run()
    else:
        assert run().messages[0].metadata["n"]


def test_timestamp_errors_keep_their_exception_context() -> None:
    unparsed = {"role": "user", "content": "x", "timestamp": "not a date"}
    far = {"role": "user", "content": "x", "timestamp": "2200-01-01T00:00:00Z"}

    with pytest.raises(DecodeError) as caught:
        decode_doc({"messages": [unparsed]})
    assert caught.value.__suppress_context__
    with pytest.raises(DecodeError) as caught:
        decode_doc({"messages": [far]})
    assert not caught.value.__suppress_context__


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        (UTC, datetime(2026, 7, 1, 12, tzinfo=UTC)),
        (BOGOTA, datetime(2026, 7, 1, 17, tzinfo=UTC)),
        (ZoneInfo("Europe/Madrid"), datetime(2026, 7, 1, 10, tzinfo=UTC)),
        (timezone(timedelta(hours=3)), datetime(2026, 7, 1, 9, tzinfo=UTC)),
        (timezone(timedelta(hours=3), "other name"), datetime(2026, 7, 1, 9, tzinfo=UTC)),
    ],
)
def test_cached_naive_timestamps_depend_on_the_zone(zone: Any, expected: datetime) -> None:
    doc = {"messages": [{"role": "user", "content": "x", "timestamp": "2026-07-01T12:00:00"}]}

    message = decode_doc(doc, CodecOptions(timezone=zone)).messages[0]

    assert message.timestamp == expected
    assert message.timestamp.tzinfo is UTC


class _Plus2(tzinfo):
    """A tzinfo of a type the timestamp cache does not know: it is parsed each time."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=2)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "+02"

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]


def test_unhashable_zones_are_not_cached() -> None:
    doc = {"messages": [{"role": "user", "content": "x", "timestamp": "2026-07-01T12:00:00"}]}

    message = decode_doc(doc, CodecOptions(timezone=_Plus2())).messages[0]

    assert message.timestamp == datetime(2026, 7, 1, 10, tzinfo=UTC)


# --- property: the fast path returns only what the general path returns --------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
CLEAN_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8
)
STAMPS = st.one_of(
    st.none(),
    TEXT,
    st.sampled_from(["2026-11-21T10:00:00Z", "2026-11-21T10:00:00", "2026-11-21", "1969-12-31"]),
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-7))])).map(
        datetime.isoformat
    ),
)
INTS = st.integers(-(2**63), 2**64 - 1)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(allow_nan=False), TEXT)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)
# Messages the fast path takes, most of the time, and messages with any field at all.
USUAL = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool", "human", "ai"]),
        "content": st.sampled_from(["same", "ñandú\x1f", ""]) | CLEAN_TEXT,
        "timestamp": st.none()
        | st.sampled_from(["2026-11-21T10:00:00Z", "2026-11-21T10:00:00"])
        | st.datetimes(
            min_value=datetime(1971, 1, 1),
            max_value=datetime(2198, 12, 31),
            timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-7))]),
        ).map(datetime.isoformat),
    },
    optional={
        "metadata": st.none()
        | st.dictionaries(CLEAN_TEXT, CLEAN_TEXT | INTS | st.lists(CLEAN_TEXT), max_size=3)
        | st.dictionaries(st.sampled_from(["timestamp_source", "k"]), JSON, max_size=2),
        "id": st.none() | st.sampled_from(["", "m-1", "m-2"]) | st.integers(-3, 3),
        "extra": INTS | CLEAN_TEXT,
    },
)
ANY = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool", "human", "ai", "x"]),
        "content": st.one_of(st.sampled_from(["same", "a\x00b"]), TEXT),
    },
    optional={
        "timestamp": STAMPS,
        "metadata": st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(["timestamp_source", "k", "k\x00"]), JSON),
            JSON,
        ),
        "id": st.one_of(st.none(), st.sampled_from(["", "m-1"]), st.integers(-3, 3), JSON),
        "extra": JSON,
        "lc": JSON,
    },
)
USUAL_DOCUMENTS = st.fixed_dictionaries(
    {"conversation_id": st.just("c"), "messages": st.lists(USUAL, min_size=2, max_size=6)},
    optional={"customer_id": CLEAN_TEXT | INTS, "conversation_summary": TEXT},
)
ANY_DOCUMENTS = st.fixed_dictionaries(
    {"messages": st.lists(st.one_of(USUAL, USUAL, USUAL, USUAL, ANY, JSON), max_size=5)},
    optional={
        "conversation_id": st.one_of(st.just("c"), st.just("c"), JSON),
        "tenant_id": st.one_of(st.just("t"), st.just("t"), JSON),
        "customer_id": st.one_of(CLEAN_TEXT, st.integers(0, 2**64 - 1), JSON),
        "user_id": st.one_of(CLEAN_TEXT, JSON),
        "conversation_summary": st.one_of(TEXT, TEXT, JSON),
        "extra": JSON,
    },
)
DOCUMENTS = USUAL_DOCUMENTS | ANY_DOCUMENTS
ZONES = st.sampled_from([UTC, BOGOTA, timezone(timedelta(hours=5, minutes=30))])


@settings(
    max_examples=400, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(doc=DOCUMENTS, zone=ZONES)
def test_fast_path_agrees_with_the_general_path(doc: dict[str, Any], zone: Any) -> None:
    ctx = context(CodecOptions(timezone=zone))
    document = orjson.loads(orjson.dumps(doc))

    fast = codecs._fast_checkpoint("k", document, ctx)

    if fast is not None:
        assert not codecs._has_wide_float(document)
        assert codecs._general_checkpoint("k", document, ctx) == fast
