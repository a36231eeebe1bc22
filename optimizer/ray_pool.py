"""A fixed number of Ray actors that load something slow once and then run calls, surviving the loss of any of them.

``ActorPool.map(calls)`` runs each call on whichever actor is free, one call per actor at a time, and returns the
results in the calls' order, whatever the order they finish in. An actor that dies (its process killed, its node
lost) has its call put back at the head of the queue, for the others, and is replaced by a new actor that loads
again; a call that has killed ``MAX_DEATHS_PER_CALL`` actors ends the map with an error, as does a pool with no actor
left that could start within ``STALL_SECONDS``. An exception raised inside a call or a load is not a death: it is
raised to the caller (as Ray's ``RayTaskError``, whose ``cause`` is the exception), as it would be in one process.

Every actor is created with a ``load()`` method that is called first (the model, here); its result is the actor's
``info``. The calls must be pure functions of their arguments, so that running one twice (once on an actor that then
died) is harmless. Imported only when there are workers: nothing else imports Ray.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import ray
from ray.exceptions import RayActorError

from .spec import RunFailure

MAX_DEATHS_PER_CALL = 3      # a call that kills this many actors is not the actors' fault
MAX_FAILED_STARTS = 3        # an actor slot whose replacements keep dying while loading is given up
STALL_SECONDS = 600.0        # nothing running and no actor able to start for this long: give up


class PoolFailure(RunFailure):
    """The pool cannot go on: no actor left, or a call that kills every actor it runs on."""


@dataclass
class Slot:
    """One actor of the pool and the replacements that took its place."""

    index: int
    handle: Any = None
    starting: Any = None          # the ObjectRef of its load() while it loads
    info: Any = None              # what load() returned
    busy: bool = False
    failed_starts: int = 0
    replaced: bool = False        # it took a dead actor's place (its start is reported)
    given_up: bool = False
    started_at: float = field(default_factory=time.monotonic)

    @property
    def ready(self) -> bool:
        return self.handle is not None and self.starting is None and not self.busy and not self.given_up


def death_reason(error: BaseException) -> str:
    """Why an actor died, in a few words from Ray's long message ("Worker unexpectedly exits with a connection error
    code 2", its process killed)."""
    text = str(error).strip()
    detail = text.split("Worker exit detail:", 1)
    if len(detail) == 2:
        return detail[1].strip().split(". ")[0].strip()[:200]
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


class ActorPool:
    """``size`` actors of ``actor_class`` (a ``ray.remote`` class) made with ``args`` and ``options``; ``say`` reports
    deaths and restarts; ``describe(slot)`` names an actor in those lines."""

    def __init__(self, actor_class, args: tuple, options: dict, size: int, say: Callable[[str], None] = print,
                 describe: Optional[Callable[[Slot], str]] = None):
        self.actor_class, self.args, self.options = actor_class, args, options
        self.say = say
        self.describe = describe or (lambda slot: f"worker {slot.index}")
        self.slots = [Slot(i) for i in range(size)]
        self.waiting_seconds = 0.0     # time the caller spent in map() and call(): waiting for the actors
        self.restarts = 0

    # ------------------------------------------------------------ starting

    def _create(self, slot: Slot) -> None:
        slot.handle = self.actor_class.options(**self.options).remote(*self.args)
        slot.starting = slot.handle.load.remote()
        slot.info, slot.busy, slot.started_at = None, False, time.monotonic()

    def start(self) -> list:
        """Create every actor and wait until each has loaded; returns their ``info`` in order. An exception raised by
        ``load`` (a setup problem) is raised here."""
        for slot in self.slots:
            self._create(slot)
        while any(s.starting is not None for s in self.slots):
            self._wait(running={})
        live = [s for s in self.slots if not s.given_up]
        if not live:
            raise PoolFailure("no worker could be started")
        return [s.info for s in live]

    def _started(self, slot: Slot) -> None:
        """``slot``'s load() has finished: ready, or dead (replaced), or failed (raised)."""
        ref, slot.starting = slot.starting, None
        try:
            slot.info = ray.get(ref)
            slot.failed_starts = 0
            if slot.replaced:
                self.say(f"{self.describe(slot)}: started in its place")
        except RayActorError as e:
            slot.failed_starts += 1
            if slot.failed_starts >= MAX_FAILED_STARTS:
                slot.given_up = True
                self.say(f"{self.describe(slot)} died {slot.failed_starts} times while loading ({death_reason(e)}); "
                         "going on without it")
                return
            self._replace(slot, f"died while loading ({death_reason(e)})")

    def _replace(self, slot: Slot, why: str) -> None:
        self.say(f"{self.describe(slot)} {why}; starting a new one")
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:  # already gone, which is the usual case
            pass
        self.restarts += 1
        slot.replaced = True
        self._create(slot)

    # ------------------------------------------------------------ running calls

    def map(self, calls: Sequence[tuple[str, tuple]]) -> list:
        """``(method, args)`` calls, each run once on some actor; their results in the calls' order."""
        start = time.monotonic()
        running: dict[Any, tuple[int, Slot]] = {}
        try:
            results: list = [None] * len(calls)
            pending = deque(range(len(calls)))
            deaths = [0] * len(calls)
            while pending or running:
                for slot in self.slots:
                    if pending and slot.ready:
                        i = pending.popleft()
                        method, args = calls[i]
                        slot.busy = True
                        running[getattr(slot.handle, method).remote(*args)] = (i, slot)
                for i, slot, result, death in self._wait(running):
                    slot.busy = False
                    if death is None:
                        results[i] = result
                        continue
                    deaths[i] += 1
                    if deaths[i] >= MAX_DEATHS_PER_CALL:
                        raise PoolFailure(f"a batch ended {deaths[i]} workers ({death_reason(death)}); giving up "
                                          "rather than losing more")
                    pending.appendleft(i)
                    self._replace(slot, f"died ({death_reason(death)}); its batch goes to the other workers")
            return results
        finally:
            for _, slot in running.values():  # left running by an exception: their actors take the next calls
                slot.busy = False
            self.waiting_seconds += time.monotonic() - start

    def call(self, method: str, *args) -> Any:
        """One call on the first free actor (a fixed one while none dies: timings stay on one device)."""
        return self.map([(method, args)])[0]

    def _wait(self, running: dict) -> list:
        """Wait until a running call finishes or an actor finishes loading (handled here); returns the finished calls
        as (index, slot, result, the actor's death or None). A call that raised is raised here (``RayTaskError``, the
        worker's traceback in its message; ``.cause`` is the exception)."""
        loading = {s.starting: s for s in self.slots if s.starting is not None}
        waiting = [*running, *loading]
        if not waiting:
            raise PoolFailure(f"no worker left: {sum(s.given_up for s in self.slots)} could not be started again")
        done, _ = ray.wait(waiting, num_returns=1, timeout=None if running else STALL_SECONDS)
        if not done:
            raise PoolFailure(f"no worker could be started within {STALL_SECONDS:.0f} s (is the cluster missing the "
                              "resources, or a node?)")
        finished = []
        for ref in done:
            if ref in loading:
                self._started(loading[ref])
                continue
            i, slot = running.pop(ref)
            try:
                finished.append((i, slot, ray.get(ref), None))
            except RayActorError as e:
                finished.append((i, slot, None, e))
        return finished

    # ------------------------------------------------------------ the end

    def close(self) -> None:
        for slot in self.slots:
            if slot.handle is not None:
                try:
                    ray.kill(slot.handle, no_restart=True)
                except Exception:  # already dead
                    pass
                slot.handle = None
