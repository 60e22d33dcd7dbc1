"""One generation for the parts of a Serve batch (no Ray here).

Serve's `@serve.batch` splits a batch by multiplexed model id and runs the parts at the same time,
one call each (ray/serve/batching.py, `_process_sub_batches`). With one adapter per part, a replica
would generate once per adapter, one after another. `Meeting` lets the parts of one batch meet:
each part's call submits its items and waits; the first one schedules a flush that runs after the
other parts of the same batch (started together, they are already queued on the event loop) have
submitted theirs, and one `run` serves them all. A part whose items could not run gets its own
exception; the other parts are not affected.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Sequence

Outcome = list[Any] | BaseException
Runner = Callable[[list[Sequence[Any]]], Awaitable[list[Outcome]]]


class Meeting:
    def __init__(self, run: Runner):
        self.run = run  # parts -> one outcome per part: its results, or the exception its callers get
        self._waiting: list[tuple[Sequence[Any], asyncio.Future]] = []
        self._flush: asyncio.Task | None = None
        self.meetings: list[int] = []  # parts per flush (a figure for stats)

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        if self._flush is None:
            self._flush = asyncio.create_task(self._run_waiting())
        return await future

    async def _run_waiting(self) -> None:
        await asyncio.sleep(0)  # the other parts of this batch were started with us: let them submit
        waiting, self._waiting, self._flush = self._waiting, [], None
        self.meetings.append(len(waiting))
        try:
            outcomes = await self.run([items for items, _ in waiting])
        except BaseException as exc:  # noqa: BLE001 - every caller gets it
            outcomes = [exc] * len(waiting)
        for (_, future), outcome in zip(waiting, outcomes):
            if future.done():  # its caller went away
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
