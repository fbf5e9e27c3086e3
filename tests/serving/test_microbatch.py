"""Micro-batching: concurrent small requests are scored in one model call and split back."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

from serving.microbatch import MicroBatcher, Overloaded
from serving.scoring import score_accounts
from tests.serving.test_scoring import _records


class Recorder:
    """The real scoring function, recording the size of every call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[int, int]] = []  # (accounts, reasons)
        self.fail = fail

    def __call__(self, model, accounts, reasons):
        self.calls.append((len(accounts), reasons))
        if self.fail:
            raise RuntimeError("scoring failed")
        return score_accounts(model, accounts, reasons=reasons)


def _run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_one_call_and_get_their_own_scores(tiny_model):
    accounts = _records(12, seed=3)
    requests = [accounts[0:1], accounts[1:4], accounts[4:5], accounts[5:12]]
    score = Recorder()
    sizes = []
    batcher = MicroBatcher(score, max_rows=64, on_batch=lambda n, rows: sizes.append((n, rows)))

    async def main():
        return await asyncio.gather(*(batcher.score(tiny_model, r, 2) for r in requests))

    answers = _run(main())
    assert score.calls == [(12, 2)]
    assert sizes == [(4, 12)]
    for request, answer in zip(requests, answers, strict=True):
        alone = score_accounts(tiny_model, request, reasons=2)
        assert [a.account_id for a in answer] == [a for a, _ in request]
        # identical to scoring the request on its own: probabilities, reasons, health
        assert [dataclasses.asdict(a) for a in answer] == [dataclasses.asdict(a) for a in alone]


def test_requests_with_different_reasons_or_models_are_not_mixed(tiny_model):
    accounts = _records(4, seed=4)
    other = dataclasses.replace(tiny_model, version="2")
    score = Recorder()
    batcher = MicroBatcher(score)

    async def main():
        return await asyncio.gather(
            batcher.score(tiny_model, accounts[:1], 3), batcher.score(tiny_model, accounts[1:2], 0),
            batcher.score(other, accounts[2:3], 3), batcher.score(tiny_model, accounts[3:], 3))

    answers = _run(main())
    assert sorted(score.calls) == [(1, 0), (1, 3), (2, 3)]
    assert answers[1][0].reasons is None and answers[0][0].reasons
    assert [a[0].account_id for a in answers] == [a for a, _ in accounts]


def test_large_requests_and_full_batches_are_scored_at_once(tiny_model):
    accounts = _records(10, seed=5)
    score = Recorder()
    batcher = MicroBatcher(score, max_rows=4)

    async def main():
        return await asyncio.gather(
            batcher.score(tiny_model, accounts[:5], 0),   # >= max_rows: on its own
            batcher.score(tiny_model, accounts[5:7], 0),
            batcher.score(tiny_model, accounts[7:9], 0),  # fills the batch to 4: flushed now
            batcher.score(tiny_model, accounts[9:], 0))   # next batch

    answers = _run(main())
    assert score.calls == [(5, 0), (4, 0), (1, 0)]
    assert [s.account_id for a in answers for s in a] == [a for a, _ in accounts]


def test_a_failed_batch_fails_every_request_in_it(tiny_model):
    accounts = _records(3, seed=6)
    batcher = MicroBatcher(Recorder(fail=True))

    async def main():
        return await asyncio.gather(*(batcher.score(tiny_model, [a], 1) for a in accounts),
                                    return_exceptions=True)

    answers = _run(main())
    assert all(isinstance(a, RuntimeError) for a in answers)


def test_one_request_alone_is_answered_without_waiting_for_company(tiny_model):
    score = Recorder()
    batcher = MicroBatcher(score)

    async def main():
        return await asyncio.wait_for(batcher.score(tiny_model, _records(1), 1), timeout=5)

    assert len(_run(main())) == 1
    assert score.calls == [(1, 1)]


def test_max_rows_1_turns_batching_off(tiny_model):
    score = Recorder()
    batcher = MicroBatcher(score, max_rows=1)

    async def main():
        return await asyncio.gather(*(batcher.score(tiny_model, [a], 0) for a in _records(3)))

    _run(main())
    assert score.calls == [(1, 0)] * 3


def test_a_big_request_is_scored_off_the_event_loop(tiny_model):
    """While a big request is being scored, the worker's loop still answers small requests (and
    probes): the big one runs on a thread. On the loop it would block everything until done."""
    started, release = threading.Event(), threading.Event()
    threads: dict[int, int] = {}  # accounts -> thread that scored them

    def score(model, accounts, reasons):
        threads[len(accounts)] = threading.get_ident()
        if len(accounts) >= 64:
            started.set()
            assert release.wait(10), "the big request held the loop"
        return score_accounts(model, accounts, reasons=reasons)

    batcher = MicroBatcher(score, max_rows=64)
    big, small = _records(100, seed=5), _records(2, seed=6)

    async def main():
        big_task = asyncio.create_task(batcher.score(tiny_model, big, 2))
        while not started.is_set():
            await asyncio.sleep(0.01)
        small_answer = await asyncio.wait_for(batcher.score(tiny_model, small, 2), timeout=5)
        assert not big_task.done()  # the small request overtook the big one
        release.set()
        return threading.get_ident(), small_answer, await big_task

    loop_thread, small_answer, big_answer = _run(main())
    assert threads[2] == loop_thread != threads[100]
    assert [a.account_id for a in small_answer] == [a for a, _ in small]
    assert [dataclasses.asdict(a) for a in big_answer] == [
        dataclasses.asdict(a) for a in score_accounts(tiny_model, big, reasons=2)]


def test_a_full_big_request_queue_refuses_big_requests_but_not_small_ones(tiny_model):
    """With ``max_queued_rows``, a big request that would overfill the queue is refused at once
    (the API's 503), small requests are still answered, and once the queue drains big requests are
    accepted again; an idle worker accepts a big request of any size."""
    started, release = threading.Event(), threading.Event()

    def score(model, accounts, reasons):
        if len(accounts) >= 64 and not release.is_set():
            started.set()
            assert release.wait(10)
        return score_accounts(model, accounts, reasons=reasons)

    batcher = MicroBatcher(score, max_rows=64, max_queued_rows=150)
    big, small = _records(100, seed=7), _records(2, seed=8)

    async def main():
        first = asyncio.create_task(batcher.score(tiny_model, big, 1))
        while not started.is_set():
            await asyncio.sleep(0.01)
        assert batcher.queued_rows == 100
        try:
            await batcher.score(tiny_model, big, 1)  # 100 + 100 > 150
        except Overloaded as exc:
            refused = exc
        else:
            raise AssertionError("the second big request was accepted")
        answered = await asyncio.wait_for(batcher.score(tiny_model, small, 1), timeout=5)
        release.set()
        await first
        assert batcher.queued_rows == 0
        again = await batcher.score(tiny_model, big, 1)
        whole = await batcher.score(tiny_model, _records(200, seed=9), 1)  # > 150, queue empty
        return refused, answered, again, whole

    refused, answered, again, whole = _run(main())
    assert (refused.queued, refused.limit) == (100, 150)
    assert "busy" in str(refused) and "retry" in str(refused)
    assert len(answered) == 2 and len(again) == 100 and len(whole) == 200


def test_a_cancelled_big_request_counts_until_the_thread_is_done_with_it(tiny_model):
    """A big request whose caller stops waiting (client gone, shutdown) still counts against the
    queue while the thread scores it, and one still waiting for the thread is never scored."""
    started, release = threading.Event(), threading.Event()
    scored: list[int] = []

    def score(model, accounts, reasons):
        scored.append(len(accounts))
        if len(scored) == 1:
            started.set()
            assert release.wait(10)
        return score_accounts(model, accounts, reasons=reasons)

    batcher = MicroBatcher(score, max_rows=64, max_queued_rows=1000)

    async def settle():
        for _ in range(3):
            await asyncio.sleep(0.01)

    async def main():
        running = asyncio.create_task(batcher.score(tiny_model, _records(100, seed=7), 0))
        while not started.is_set():
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(batcher.score(tiny_model, _records(70, seed=8), 0))
        await settle()
        assert batcher.queued_rows == 170
        waiting.cancel()
        await settle()
        assert batcher.queued_rows == 100  # never started: dropped and released
        running.cancel()
        await settle()
        assert batcher.queued_rows == 100  # the thread is still scoring it
        release.set()
        for _ in range(500):
            if batcher.queued_rows == 0:
                break
            await asyncio.sleep(0.01)
        assert batcher.queued_rows == 0
        assert running.cancelled() and waiting.cancelled()

    _run(main())
    assert scored == [100]
