"""Micro-batching: score the small requests that arrive together in one call.

A CS tool that scores accounts one by one keeps several requests in flight. Each worker runs its
scoring on the event loop, and a call to :func:`serving.scoring.score_accounts` has a fixed cost
(a LightGBM call that re-initialises its predictor, a few dozen numpy operations on the health
columns) that is larger than the per-account cost for a handful of accounts. So instead of
scoring each request on its own, :meth:`MicroBatcher.score` queues it and schedules one flush
with ``loop.call_soon``; every request whose handler reaches the queue in the same turn of the
event loop (under load: all the requests read from the sockets in one ``select``) joins the batch,
which is scored in one call and split back per request, in order.

Nothing waits on a timer: with one request in flight the flush runs on the next turn of the loop,
so an idle server answers without delay. A batch reaching ``max_rows`` is scored at once.
Requests of ``max_rows`` accounts or more are scored on their own (they amortise the fixed cost
already), one at a time on a thread of the worker's own: a batch of 1,000 accounts with reasons
takes a noticeable while, and on the event loop it would hold up health probes and every small
request of that worker meanwhile. LightGBM releases the GIL while it predicts and explains.
Requests are only batched with requests for the same model object and the same number of
reasons, so a hot reload or ``?explain=false`` never mixes answers.

Big requests queue for that thread, so a client that sends many at once (a sync with too many
parallel calls) would wait longer and longer while the worker computes answers its timeout may
already have given up on. With ``max_queued_rows`` set, a big request that would take the
worker's big-request queue (scoring or waiting) beyond that many accounts is refused with
:class:`Overloaded` (the API answers 503 with ``Retry-After``) unless the queue is empty. Small
requests are never refused: they are scored on the loop, not queued.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from serving.model import LoadedModel
from serving.scoring import AccountColumns, AccountInput, AccountScore


class Overloaded(RuntimeError):
    """The worker's queue of big requests is full; the client should retry later."""

    def __init__(self, queued: int, limit: int, accounts: int) -> None:
        super().__init__(f"this worker is busy: {queued:,} accounts of big requests are queued "
                         f"(limit {limit:,}), so these {accounts:,} were not accepted; retry "
                         "shortly or send fewer requests in parallel")
        self.queued, self.limit = queued, limit


#: Accounts as records, or column by column.
Accounts = Sequence[AccountInput] | AccountColumns
#: ``(model, accounts, reasons) -> one score per account, in order``.
ScoreFn = Callable[[LoadedModel, Accounts, int], list[AccountScore]]


@dataclass
class _Batch:
    model: LoadedModel
    reasons: int
    parts: list[tuple[Sequence[AccountInput], asyncio.Future[list[AccountScore]]]] = field(
        default_factory=list)
    rows: int = 0


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` on ``loop``'s thread, from any thread; nothing once the loop is closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


class MicroBatcher:
    """Batches concurrent scoring requests of one event loop (see the module docstring)."""

    def __init__(self, score: ScoreFn, *, max_rows: int = 64, max_queued_rows: int = 0,
                 on_batch: Callable[[int, int], Any] | None = None) -> None:
        """``on_batch(requests, accounts)`` is called for every model call (for metrics);
        ``max_queued_rows`` bounds the big-request queue (0 = unbounded)."""
        self._score = score
        self.max_rows = max_rows
        self.max_queued_rows = max_queued_rows
        #: Accounts of big requests accepted and not yet answered (scoring or waiting).
        self.queued_rows = 0
        self._on_batch = on_batch
        self._open: dict[tuple[int, int], _Batch] = {}
        # One thread: big requests are scored one after the other, as they were on the loop, so
        # they do not fight over the worker's core (threads start on first use).
        self._big = ThreadPoolExecutor(max_workers=1, thread_name_prefix="churn-big-batch")

    async def score(self, model: LoadedModel, accounts: Accounts, reasons: int
                    ) -> list[AccountScore]:
        """The scores of ``accounts``, computed together with the requests queued meanwhile
        (small :class:`AccountColumns` join a micro-batch as records)."""
        if len(accounts) >= self.max_rows:
            return await self._score_big(model, accounts, reasons)
        if isinstance(accounts, AccountColumns):
            accounts = accounts.records()
        key = (id(model), reasons)
        batch = self._open.get(key)
        if batch is None or batch.model is not model:
            batch = self._open[key] = _Batch(model, reasons)
            asyncio.get_running_loop().call_soon(self._flush, key, batch)
        future: asyncio.Future[list[AccountScore]] = asyncio.get_running_loop().create_future()
        batch.parts.append((accounts, future))
        batch.rows += len(accounts)
        if batch.rows >= self.max_rows:
            self._flush(key, batch)
        return await future

    async def _score_big(self, model: LoadedModel, accounts: Accounts, reasons: int
                         ) -> list[AccountScore]:
        n = len(accounts)
        if self.max_queued_rows and self.queued_rows and self.queued_rows + n > self.max_queued_rows:
            raise Overloaded(self.queued_rows, self.max_queued_rows, n)
        loop = asyncio.get_running_loop()
        work = self._big.submit(self._run, model, accounts, reasons, 1)
        self.queued_rows += n  # after submit, which raises once the executor is shut down
        # Released when the thread is done with the request, not when its caller stops waiting:
        # a request whose client went away is cancelled if it is still queued and otherwise
        # still holds the thread, so it still counts until then.
        work.add_done_callback(lambda _: _call_soon(loop, self._release, n))
        return await asyncio.wrap_future(work)

    def _release(self, rows: int) -> None:
        self.queued_rows -= rows

    def _run(self, model: LoadedModel, accounts: Accounts, reasons: int,
             requests: int) -> list[AccountScore]:
        results = self._score(model, accounts, reasons)
        if self._on_batch is not None:
            self._on_batch(requests, len(accounts))
        return results

    def _flush(self, key: tuple[int, int], batch: _Batch) -> None:
        if self._open.get(key) is batch:
            del self._open[key]
        if not batch.parts:
            return  # already flushed: it filled up before its scheduled flush
        parts, batch.parts = batch.parts, []
        accounts = [a for chunk, _ in parts for a in chunk]
        try:
            results = self._run(batch.model, accounts, batch.reasons, len(parts))
        except Exception as exc:  # every request of the batch gets the error (500)
            for _, future in parts:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for chunk, future in parts:
            if not future.done():
                future.set_result(results[start:start + len(chunk)])
            start += len(chunk)
