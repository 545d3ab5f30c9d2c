"""Which job a free worker takes next: model affinity, so checkpoints stay where they are loaded.

A job needs a set of model files (its checkpoint, LoRAs, ControlNets, upscaler...).
When a worker is free it takes, in order of preference:

1. a job whose models it already holds;
2. else a job whose models no other worker holds or is loading (so two workers do not
   both load the same checkpoint while another one waits untouched);
3. else the first job waiting (a busy farm beats an idle worker; it loads what it needs).

Ties go to the job with the most models in common with the worker, then to the earliest
job. Several free workers are served least-loaded first. ``round-robin`` ignores models
(the baseline the benchmark compares with): jobs go out in order to the free workers.
Jobs are grouped by model set, so choosing costs the number of groups, not of jobs.
The job server's dispatcher ranks its queued jobs by the same rule (`choose_job`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Sequence, Set
from dataclasses import dataclass, field
from typing import Generic, TypeVar

POLICIES = ("affinity", "round-robin")

J = TypeVar("J", bound=Hashable)


@dataclass
class WorkerSlot:
    """What the scheduler knows of a worker: the models it holds and its load."""

    name: str
    holds: set[str] = field(default_factory=set)
    """Models resident on the worker, as it last reported them."""
    loading: frozenset[str] = frozenset()
    """Models of the job it is running now (held once that job is done)."""
    busy: bool = False
    assigned: int = 0
    """Jobs given to it so far."""


def affinity(models: frozenset[str], holds: Set[str], others: Iterable[Set[str]]) -> tuple[int, int, int]:
    """How well a job needing ``models`` suits a worker holding ``holds``, while the other
    workers hold or are loading ``others``: (1 if it holds them all, 1 if no other worker
    holds or loads them all, how many it holds). Higher is better; ties go to the oldest job."""
    elsewhere = bool(models) and any(models <= other for other in others)
    return int(models <= holds), int(not elsewhere), len(models & holds)


def choose_job(waiting: Sequence[frozenset[str]], holds: Set[str],
               others: Iterable[Set[str]]) -> int:
    """The index of the job a free worker takes among ``waiting`` (oldest first), by
    `affinity`."""
    others = list(others)
    return max(range(len(waiting)), key=lambda i: (*affinity(waiting[i], holds, others), -i))


class JobScheduler(Generic[J]):
    """Pending jobs, each with its model set; hands them to free workers by ``policy``."""

    def __init__(self, policy: str = "affinity") -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown scheduling policy {policy!r} (choose from {POLICIES})")
        self.policy = policy
        self._groups: OrderedDict[frozenset[str], deque[tuple[int, J]]] = OrderedDict()
        self._order = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._groups.values())

    def add(self, job: J, models: Iterable[str], *, first: bool = False) -> None:
        """Queue a job; ``first`` puts it before every other (a job given back by a lost worker)."""
        key = frozenset(models)
        queue = self._groups.setdefault(key, deque())
        if first:
            queue.appendleft((-1 - self._order, job))
        else:
            queue.append((self._order, job))
        self._order += 1

    def assign(self, workers: Iterable[WorkerSlot]) -> list[tuple[WorkerSlot, J, frozenset[str]]]:
        """Give a job to each free worker while jobs remain; mark those workers busy."""
        slots = list(workers)
        free = sorted((w for w in slots if not w.busy), key=lambda w: w.assigned)
        out: list[tuple[WorkerSlot, J, frozenset[str]]] = []
        while free and len(self):
            if self.policy == "round-robin":
                worker, key = free[0], min((k for k, q in self._groups.items() if q),
                                           key=lambda k: self._groups[k][0][0])
            else:
                worker, key = self._best(free, slots)
            _, job = self._groups[key].popleft()
            if not self._groups[key]:
                del self._groups[key]
            free.remove(worker)
            worker.busy, worker.loading = True, key
            worker.assigned += 1
            out.append((worker, job, key))
        return out

    def _best(self, free: list[WorkerSlot], slots: list[WorkerSlot]) -> tuple[WorkerSlot, frozenset[str]]:
        best: tuple[tuple[int, int, int, int, int], WorkerSlot, frozenset[str]] | None = None
        for rank, worker in enumerate(free):
            others = [w.holds | w.loading for w in slots if w is not worker]
            for key, queue in self._groups.items():
                if not queue:
                    continue
                score = (*affinity(key, worker.holds, others), -queue[0][0], -rank)
                if best is None or score > best[0]:
                    best = (score, worker, key)
        assert best is not None
        return best[1], best[2]

    def done(self, worker: WorkerSlot, holds: Iterable[str] | None = None) -> None:
        """The worker finished its job; ``holds`` is what it reports holding now."""
        worker.busy = False
        worker.holds = set(holds) if holds is not None else worker.holds | worker.loading
        worker.loading = frozenset()
