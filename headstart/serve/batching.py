"""Micro-batching: concurrent requests to one model are gathered into one micro-batch, which the model runs in its
own batches (`Predictor.batch_size`).

A batch starts with the oldest waiting request and takes more while it holds fewer than `max_batch` inputs and
the oldest has waited less than `max_wait_ms`. Inference runs on one worker thread per model, so the event loop
stays free to accept requests. `max_batch=1` turns batching off: each request runs alone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


class ShuttingDown(RuntimeError):
    """A request reached a model whose batcher is closing (the service is stopping)."""


class MicroBatcher:
    """`await submit(items)` returns `run(items)`'s results for those items, computed within a shared batch."""

    def __init__(self, run: Callable[[list], list], max_batch: int = 32, max_wait_ms: float = 5.0,
                 name: str = "model"):
        self.run, self.max_batch, self.max_wait = run, max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.pending: deque[tuple[list, asyncio.Future, float]] = deque()  # (items, future, arrival time)
        self.queued = 0
        self.wake = asyncio.Event()
        self.closing = False
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, items: list) -> list:
        if self.closing:
            raise ShuttingDown("The service is shutting down; send the request again once it is back.")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((items, future, loop.time()))
        self.queued += len(items)
        self.wake.set()
        return await future

    def _take(self) -> list[tuple[list, asyncio.Future]]:
        batch, size = [], 0
        while self.pending and (not batch or size + len(self.pending[0][0]) <= self.max_batch):
            items, future, _ = self.pending.popleft()
            batch.append((items, future))
            size += len(items)
        self.queued -= size
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.pending:
                if self.closing:
                    return
                continue
            # requests that queued while the previous batch ran have been waiting already
            deadline = self.pending[0][2] + self.max_wait
            while self.queued < self.max_batch and (remaining := deadline - loop.time()) > 0:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if self.pending or self.closing:
                self.wake.set()
            items = [item for request, _ in batch for item in request]
            try:
                results = await loop.run_in_executor(self.executor, self.run, items)
            except Exception as exc:  # the model failed on this batch: every request in it gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for request, future in batch:
                if not future.done():
                    future.set_result(results[start:start + len(request)])
                start += len(request)

    async def close(self) -> None:
        """Finish every submitted request, then stop the worker."""
        self.closing = True
        self.wake.set()
        await self.task
        self.executor.shutdown(wait=True)
