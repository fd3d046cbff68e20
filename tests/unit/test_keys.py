from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

import pytest
from redis.crc import key_slot

from consumer import keys
from consumer.exceptions import ConfigError
from consumer.keys import Layout

PATTERN = "langgraph:checkpoint:{conversation_id}:{timestamp}"
SHADOW = "archiver:shadow:"
TS = 1_700_000_000
WRITTEN = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.fixture
def layout() -> Layout:
    return Layout(PATTERN, SHADOW)


# --- Redis Cluster key slots, implemented here from the Redis Cluster specification -------------


def crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def redis_hash_tag(key: bytes) -> bytes | None:
    """The part Redis hashes instead of the whole key: first '{', then the next '}', non-empty."""
    start = key.find(b"{")
    if start < 0:
        return None
    end = key.find(b"}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return key[start + 1 : end]


def keyslot(key: str) -> int:
    raw = key.encode()
    return crc16_xmodem(redis_hash_tag(raw) or raw) % 16384


def colocatable(key: str) -> bool:
    """Whether any '{…}'-wrapping can land in the key's slot: a '}' in a tag-less key cannot."""
    return redis_hash_tag(key.encode()) is not None or "}" not in key


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        ("somekey", 11058),  # examples from the CLUSTER KEYSLOT documentation
        ("foo{hash_tag}", 2515),
        ("bar{hash_tag}", 2515),
        ("foo", 12182),
        ("bar", 5061),
    ],
)
def test_keyslot_matches_redis_reference_values(key: str, slot: int) -> None:
    assert keyslot(key) == slot


def test_crc16_check_value() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3


# --- parse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "conversation_id"),
    [
        (f"langgraph:checkpoint:conv-1:{TS}", "conv-1"),
        (f"langgraph:checkpoint:a:b:c:{TS}", "a:b:c"),
        (f"langgraph:checkpoint:thread:42:{TS}", "thread:42"),
        (f"langgraph:checkpoint:{{tag}}:x:{TS}", "{tag}:x"),
        (f"langgraph:checkpoint:with space/é:{TS}", "with space/é"),
        (f"langgraph:checkpoint:multi\nline:{TS}", "multi\nline"),
    ],
)
def test_parse_takes_the_last_segment_as_timestamp(
    layout: Layout, key: str, conversation_id: str
) -> None:
    info = layout.parse(key)
    assert info is not None
    assert info.key == key
    assert info.conversation_id == conversation_id
    assert info.written_at == WRITTEN
    assert info.written_ts == TS
    assert layout.is_checkpoint(key)


@pytest.mark.parametrize(
    "key",
    [
        "langgraph:checkpoint:conv",
        "langgraph:checkpoint:conv:",
        "langgraph:checkpoint:conv:abc",
        f"langgraph:checkpoint::{TS}",
        f"langgraph:checkpoint:conv:{TS}:extra",
        f"langgraph:checkpoint:conv:{TS}000",  # 13 digits: milliseconds are not accepted
        f"langgraph:checkpoint:conv:-{TS}",
        f"Langgraph:checkpoint:conv:{TS}",
        f"xlanggraph:checkpoint:conv:{TS}",
        f"archiver:shadow:{{langgraph:checkpoint:conv:{TS}}}",
        "",
    ],
)
def test_non_checkpoint_keys_parse_to_none(layout: Layout, key: str) -> None:
    assert layout.parse(key) is None
    assert not layout.is_checkpoint(key)


def test_parse_with_a_custom_pattern() -> None:
    custom = Layout("tenants/{conversation_id}/ckpt/{timestamp}", SHADOW)
    info = custom.parse(f"tenants/acme/c1/ckpt/{TS}")
    assert info is not None
    assert info.conversation_id == "acme/c1"
    assert info.written_at == WRITTEN
    assert custom.parse(f"langgraph:checkpoint:c1:{TS}") is None


def test_literal_regex_metacharacters_in_the_pattern_are_literal() -> None:
    custom = Layout("chat.v2+(x):{conversation_id}:{timestamp}", SHADOW)
    assert custom.parse(f"chat.v2+(x):c:{TS}") is not None
    assert custom.parse(f"chatXv22(x):c:{TS}") is None


@pytest.mark.parametrize(
    "key", ["langgraph:checkpoint:conv:999999999999", "langgraph:checkpoint:c:\u0661\u0662\u0663"]
)
def test_parse_of_an_impossible_timestamp_is_not_a_checkpoint(layout: Layout, key: str) -> None:
    assert layout.parse(key) is None
    assert not layout.is_checkpoint(key)


# --- SCAN MATCH glob -----------------------------------------------------------------------------


def redis_glob_regex(glob: str) -> re.Pattern[str]:
    """Redis's stringmatch for the subset scan_match produces: *, ? and backslash escapes."""
    out, i = [], 0
    while i < len(glob):
        ch = glob[i]
        if ch == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        assert ch not in "[]", "unescaped bracket in glob"
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


def test_scan_match_of_default_pattern(layout: Layout) -> None:
    assert layout.scan_match == "langgraph:checkpoint:*:*"


@pytest.mark.parametrize(
    ("pattern", "glob"),
    [
        ("chat*:{conversation_id}:{timestamp}", r"chat\*:*:*"),
        ("chat?:{conversation_id}:{timestamp}", r"chat\?:*:*"),
        ("chat[v2]:{conversation_id}:{timestamp}", r"chat\[v2\]:*:*"),
        ("back\\slash:{conversation_id}:{timestamp}", r"back\\slash:*:*"),
    ],
)
def test_scan_match_escapes_glob_metacharacters(pattern: str, glob: str) -> None:
    assert Layout(pattern, SHADOW).scan_match == glob


@pytest.mark.parametrize(
    "pattern",
    [PATTERN, "chat[v2]*?:{conversation_id}:{timestamp}", "a\\b:{conversation_id}/{timestamp}"],
)
def test_scan_match_selects_checkpoint_keys_and_only_literal_prefixes(pattern: str) -> None:
    custom = Layout(pattern, SHADOW)
    glob = redis_glob_regex(custom.scan_match)
    key = pattern.replace("{conversation_id}", "c:1").replace("{timestamp}", str(TS))
    assert custom.parse(key) is not None
    assert glob.match(key)
    mangled = "X" + key[1:]
    assert not glob.match(mangled)


def test_scan_match_metacharacters_do_not_widen_the_match() -> None:
    custom = Layout("chat[v2]*?:{conversation_id}:{timestamp}", SHADOW)
    glob = redis_glob_regex(custom.scan_match)
    assert not glob.match(f"chatv-anything!:c:{TS}")


# --- shadow and claim keys -----------------------------------------------------------------------

TRICKY = [
    f"langgraph:checkpoint:conv-1:{TS}",
    f"langgraph:checkpoint:a:b:{TS}",
    f"langgraph:checkpoint:{{tenant}}:c:{TS}",
    "a{b}c",
    "{}x",
    "x{",
    "a}b",
    "{",
    "}",
    "{}",
    "}{",
    "{{a}}",
    "{a}{b}",
    "a{}b{c}",
    "~tilde",
    "~{a}",
    "with space",
    "café:ünïcødé:日本語:🎉",
    "tab\tand\nnewline",
    "shadow:",
    "archiver:shadow:nested",
]


@pytest.mark.parametrize("key", TRICKY)
def test_shadow_round_trips_to_its_checkpoint(layout: Layout, key: str) -> None:
    shadow = layout.shadow(key)
    assert shadow.startswith(SHADOW)
    assert layout.checkpoint_of_shadow(shadow) == key


@pytest.mark.parametrize("key", TRICKY)
def test_claim_embeds_the_key_like_the_shadow_and_is_not_a_shadow(layout: Layout, key: str) -> None:
    claim = layout.claim(key)
    assert claim.startswith("archiver:claim:")
    assert layout.checkpoint_of_shadow(claim) is None
    embedded = claim.removeprefix("archiver:claim:")
    assert layout.checkpoint_of_shadow(SHADOW + embedded) == key


@pytest.mark.parametrize("key", [k for k in TRICKY if colocatable(k)])
def test_shadow_and_claim_hash_to_the_checkpoint_slot(layout: Layout, key: str) -> None:
    slot = keyslot(key)
    assert keyslot(layout.shadow(key)) == slot
    assert keyslot(layout.claim(key)) == slot


def test_every_small_key_round_trips_and_colocates_when_possible(layout: Layout) -> None:
    alphabet = "a{}~: é"
    checked = 0
    for n in range(1, 5):
        for chars in itertools.product(alphabet, repeat=n):
            key = "".join(chars)
            shadow, claim = layout.shadow(key), layout.claim(key)
            assert layout.checkpoint_of_shadow(shadow) == key
            if colocatable(key):
                assert keyslot(shadow) == keyslot(key) == keyslot(claim), key
                checked += 1
    assert checked > 1000


NOT_COLOCATABLE = ["a}b", "{}x", "{}", "}{", "a{}b{c}", f"langgraph:checkpoint:a}}b:{TS}"]


@pytest.mark.parametrize("key", NOT_COLOCATABLE)
def test_tagless_keys_with_a_closing_brace_cannot_colocate(layout: Layout, key: str) -> None:
    """Documented limitation: the slot of such a key hashes all of it, '}' included, and no
    hash tag can contain a '}'; single-node Redis is unaffected."""
    assert not keys.colocatable(key)


@pytest.mark.parametrize("key", NOT_COLOCATABLE)
def test_tagless_keys_with_a_closing_brace_still_round_trip(layout: Layout, key: str) -> None:
    assert layout.checkpoint_of_shadow(layout.shadow(key)) == key


@pytest.mark.parametrize(
    "name",
    [
        "archiver:deadlines",
        "archiver:last-sweep",
        "archiver:sweep-lock",
        "archiver:probe:abc",
        "archiver:shadow:",
        "archiver:shadow:plain",
        "archiver:shadow:{unterminated",
        "langgraph:checkpoint:c:1",
    ],
)
def test_other_keys_are_not_shadows(layout: Layout, name: str) -> None:
    assert layout.checkpoint_of_shadow(name) is None


def test_own_keys_live_under_the_prefix_and_are_not_checkpoints(layout: Layout) -> None:
    own = [layout.deadlines, layout.last_sweep, layout.sweep_lock, layout.probe("t0k3n")]
    assert own == [
        "archiver:deadlines",
        "archiver:last-sweep",
        "archiver:sweep-lock",
        "archiver:probe:t0k3n",
    ]
    assert not any(layout.is_checkpoint(k) for k in own)


def test_hash_tag_agrees_with_redis() -> None:
    for key in TRICKY:
        expected = redis_hash_tag(key.encode())
        assert keys.hash_tag(key) == (expected.decode() if expected is not None else None), key


def test_keyevent_channel() -> None:
    assert keys.keyevent_channel(3, "expired") == "__keyevent@3__:expired"


# --- Layout validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "langgraph:checkpoint:{timestamp}:{conversation_id}",
        "langgraph:checkpoint:{conversation_id}:{timestamp}:",
        "langgraph:checkpoint:{conversation_id}",
        "langgraph:checkpoint:{timestamp}",
        "langgraph:checkpoint:{conversation_id}:{ts}",
    ],
)
def test_pattern_must_contain_conversation_and_end_with_timestamp(pattern: str) -> None:
    with pytest.raises(ConfigError, match="ARCHIVER_KEY_PATTERN"):
        Layout(pattern, SHADOW)


@pytest.mark.parametrize(
    "shadow_prefix",
    [
        "langgraph:checkpoint:shadow:",  # shadows would look like checkpoint keys
        "langgraph:shadow:",  # own keys 'langgraph:…' prefix the pattern
        "langgraph:",
        "lang",
        "shadow:",  # own-key prefix '' prefixes everything
    ],
)
def test_shadow_prefix_overlapping_checkpoint_keys_is_rejected(shadow_prefix: str) -> None:
    with pytest.raises(ConfigError, match="ARCHIVER_SHADOW_PREFIX"):
        Layout(PATTERN, shadow_prefix)


@pytest.mark.parametrize("shadow_prefix", ["archiver:shadow:", "arch:", "lg:shadow:"])
def test_disjoint_shadow_prefix_is_accepted(shadow_prefix: str) -> None:
    layout = Layout(PATTERN, shadow_prefix)
    key = f"langgraph:checkpoint:c:{TS}"
    assert not layout.is_checkpoint(layout.shadow(key))
    assert not layout.is_checkpoint(layout.claim(key))
    assert layout.checkpoint_of_shadow(layout.shadow(key)) == key


def test_layout_from_builds_a_layout() -> None:
    assert keys.layout_from(PATTERN, SHADOW) == Layout(PATTERN, SHADOW)


@pytest.mark.parametrize("key", TRICKY)
def test_keyslot_agrees_with_redis_py(key: str) -> None:
    assert keyslot(key) == key_slot(key.encode())
