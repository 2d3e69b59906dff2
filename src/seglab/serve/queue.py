"""A bounded inference queue served by one worker thread, off the event loop.

Requests wait in a FIFO of at most ``max_queue`` jobs; a full queue raises :class:`QueueFull`
at once (the app answers 503 with ``Retry-After``) instead of letting latency grow without
bound. The worker takes the oldest job and, up to ``max_batch``, the queued jobs that can run
in the same batch (same model, options and image size), so concurrent requests share one
forward pass. One worker means one model call at a time: the backends already use every
core for one call, and OpenVINO's infer request is not shared between threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs; ``retry_after`` is a wait estimate in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"inference queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    key: Hashable  # jobs with equal keys may run in one batch
    payload: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class InferenceQueue:
    """``run(key, payloads) -> results`` is called in the worker thread, one batch at a time."""

    def __init__(
        self,
        run: Callable[[Hashable, Sequence[Any]], Sequence[Any]],
        max_queue: int = 16,
        max_batch: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        self.run = run
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.busy = 0  # jobs in the batch being run
        self._avg_job_s = 0.1  # running mean of seconds per job, for Retry-After

    # -- state ------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Jobs waiting (not yet running)."""
        return len(self._jobs)

    @property
    def full(self) -> bool:
        return len(self._jobs) >= self.max_queue

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: at least 1."""
        return max(1, round((len(self._jobs) + self.busy) * self._avg_job_s + 0.5))

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._work, name="seglab-inference", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- use --------------------------------------------------------------------------
    async def submit(self, key: Hashable, payload: Any) -> Any:
        """Queue a job and wait for its result; QueueFull when ``max_queue`` jobs wait."""
        self.start()
        loop = asyncio.get_running_loop()
        job = Job(key, payload, loop, loop.create_future())
        with self._cond:
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(self.retry_after())
            self._jobs.append(job)
            self._cond.notify()
        return await job.future

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if self._stopping and not self._jobs:
                return None
            first = self._jobs.popleft()
            batch = [first]
            if self.max_batch > 1:
                for job in list(self._jobs):
                    if len(batch) >= self.max_batch:
                        break
                    if job.key == first.key:
                        self._jobs.remove(job)
                        batch.append(job)
            self.busy = len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            batch = [j for j in batch if not j.future.cancelled()]  # client went away
            start = time.perf_counter()
            results: Sequence[Any] = ()
            error: BaseException | None = None
            if batch:
                try:
                    results = self.run(batch[0].key, [j.payload for j in batch])
                except BaseException as err:  # noqa: BLE001 - handed to every waiting request
                    error = err
            elapsed = time.perf_counter() - start
            if batch:
                self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * elapsed / len(batch)
                if self.on_batch is not None:
                    self.on_batch(len(batch), elapsed)
            for i, job in enumerate(batch):
                result = None if error is not None else results[i]
                job.loop.call_soon_threadsafe(_resolve, job.future, result, error)
            with self._cond:
                self.busy = 0
