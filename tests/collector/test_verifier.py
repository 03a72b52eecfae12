"""Signature checks in worker processes answer exactly as in the serving process, batch after
batch, and a worker that dies loses no answer."""

from __future__ import annotations

import asyncio
import os
import signal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reconciler.core.report import REPORT_NAMESPACE
from reconciler.core.trust.sshsig import (
    SignedData,
    parse_signature,
    prepare_verification,
    sign_message,
)
from reconciler.fleet.collector.server import default_verify_workers
from reconciler.fleet.collector.verifier import VerifierPool, check_many


def signed(message: bytes, key: Ed25519PrivateKey) -> SignedData:
    armored = sign_message(key, message, namespace=REPORT_NAMESPACE)
    return prepare_verification(parse_signature(armored), message, namespace=REPORT_NAMESPACE)


def cases() -> list[SignedData]:
    one, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    good = [signed(f"report {n}".encode(), one) for n in range(40)]
    tampered = SignedData(good[0].key_blob, good[0].algorithm, good[0].signature, b"other data")
    foreign = signed(b"report", other)
    swapped = SignedData(good[1].key_blob, foreign.algorithm, foreign.signature, foreign.data)
    wrong_algorithm = SignedData(good[2].key_blob, "ssh-rsa", good[2].signature, good[2].data)
    return [*good, tampered, swapped, wrong_algorithm]


def test_check_many_says_which_verified_and_why_not() -> None:
    answers = check_many(cases())
    assert answers[:40] == [None] * 40
    assert answers[40] == answers[41] == "the signature does not match the signed data"
    assert answers[42] is not None and "does not fit an ed25519 key" in answers[42]


def test_the_pool_answers_as_the_serving_process_would_and_survives_a_dead_worker() -> None:
    items = cases()
    expected = check_many(items)
    pool = VerifierPool(2)
    pool.warm()

    async def all_at_once() -> list[str | None]:
        return list(await asyncio.gather(*(pool.check(item) for item in items)))

    try:
        assert asyncio.run(all_at_once()) == expected
        killed = pool.pids()
        for pid in killed:  # a worker killed between batches
            os.kill(pid, signal.SIGKILL)
        assert asyncio.run(all_at_once()) == expected
        assert not set(pool.pids()) & set(killed)  # started again
        assert asyncio.run(all_at_once()) == expected  # and the pool works again
    finally:
        pool.close()


def test_one_worker_beside_the_server_when_there_is_a_second_core() -> None:
    usable = len(os.sched_getaffinity(0))
    assert default_verify_workers() == (1 if usable > 1 else 0)


def test_a_worker_ends_with_its_input_and_the_pool_leaves_no_process_behind() -> None:
    pool = VerifierPool(2)
    pool.warm()
    pids = pool.pids()
    pool.close()
    for pid in pids:  # reaped by close(): no such process any more
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"signature worker {pid} still runs after close()")
