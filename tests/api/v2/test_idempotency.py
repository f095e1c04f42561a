"""The single-use key registry: claim, release, scope, expiry, bound."""

from __future__ import annotations

import time

from api.v2.idempotency import IdempotencyKeys, check_key, scope_of


def test_a_key_is_claimed_once_per_scope() -> None:
    keys = IdempotencyKeys()
    assert keys.claim("s", "k") and not keys.claim("s", "k")
    assert keys.claim("other", "k")  # another caller's key of the same name
    keys.release("s", "k")
    assert keys.claim("s", "k")


def test_keys_expire_and_stay_bounded() -> None:
    keys = IdempotencyKeys(limit=3, ttl=0.05)
    for i in range(5):
        keys.claim("s", str(i))
    assert len(keys) == 3 and keys.claim("s", "0")  # the oldest were forgotten
    time.sleep(0.06)
    assert keys.claim("s", "4")  # expired


def test_changes_are_mirrored_for_the_durable_store() -> None:
    seen: list[tuple[str, str, float | None]] = []
    keys = IdempotencyKeys(on_change=lambda *args: seen.append(args))
    keys.claim("s", "k", "submitting")
    keys.settle("s", "k", "job-1")
    keys.release("s", "k")
    assert [(s, w, t is not None) for s, w, t in seen] == [
        ("s:k", "submitting", True),
        ("s:k", "job-1", True),
        ("s:k", "", False),
    ]
    reloaded = IdempotencyKeys()
    reloaded.load([("s:old", time.time() - 10, "job-0")])
    assert not reloaded.claim("s", "old")


def test_key_rules() -> None:
    assert check_key("a" * 255) is None and check_key("uuid-like-1234") is None
    assert check_key("") and check_key("a" * 256) and check_key("é") and check_key("a\nb")
    assert scope_of(None) == "-" and scope_of("k1") != scope_of("k2") and "k1" not in scope_of("k1")
