"""A checkpoint when a worker process gets SIGTERM (`scaling.checkpoint_on_preemption`).

SIGTERM is what Kubernetes sends before it kills a pod, and what a node's shutdown sends every
process. Ray's own handler, installed in each worker's main thread, turns it into SystemExit at
once, and the stage would redo every step since its last periodic checkpoint. So each training
worker's main thread (Ray Train's `WorkerCallback.after_init_train_context`, a DeveloperAPI hook
that runs in the worker actor's main thread, the only one Python lets install a signal handler)
gets a handler that only records the signal. At the next step boundary the workers learn it
together (an all-reduce in rayft.records.preemption.PreemptionSaver), the Trainer saves, the
checkpoint goes through Ray Train as any other (rayft.records.checkpoints), and once Ray Train has
committed it the signalled process exits through Ray's handler; Ray Train restarts the group
(`scaling.max_failures`) and the stage resumes from that step: no step is redone.

If no step boundary comes within SIGTERM_GRACE_S (a step longer than that, or training stuck),
the process exits anyway, as it would have without rayft: inside Kubernetes' default grace period
(30 s), before the SIGKILL that follows it.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from ray.train.v2._internal.execution.callback import WorkerCallback

SIGTERM_GRACE_S = 25.0

_TERM = threading.Event()  # this process got SIGTERM
_RELEASE = threading.Event()  # its checkpoint is committed (or the grace ran out): exit on the next signal
_previous: list[Any] = [signal.SIG_DFL]


def sigterm_received() -> bool:
    return _TERM.is_set()


def exit_now() -> None:
    """Let the process end as Ray would have ended it on the SIGTERM it got (from any thread)."""
    _RELEASE.set()
    os.kill(os.getpid(), signal.SIGTERM)


def _on_sigterm(signum: int, frame: Any) -> None:
    if _RELEASE.is_set():
        previous = _previous[0]
        signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signum, frame)  # Ray's: SystemExit in this (the main) thread
        raise SystemExit(1)
    if not _TERM.is_set():
        _TERM.set()
        print(f"rayft: worker process {os.getpid()} got SIGTERM: checkpointing at the next step boundary "
              f"(exiting in {SIGTERM_GRACE_S:.0f} s at the latest)", flush=True)
        timer = threading.Timer(SIGTERM_GRACE_S, exit_now)
        timer.daemon = True
        timer.start()


class SigtermCheckpoint(WorkerCallback):
    """Installs the recording handler in each training worker's main thread."""

    def after_init_train_context(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            print("rayft: WARNING: cannot catch SIGTERM in this worker (Ray Train did not set it up in the main "
                  "thread); a SIGTERM ends it without a checkpoint", flush=True)
            return
        _TERM.clear()
        _RELEASE.clear()
        _previous[0] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)

    def before_worker_shutdown(self) -> None:
        """Ray Train ends the worker group (the stage finished, or it restarts it): the SIGTERM that
        may come with the actor's end is Ray's to handle again."""
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, _previous[0])
