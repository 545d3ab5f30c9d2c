"""The job scheduler on its own: which worker gets which job, and how many loads that costs."""

from __future__ import annotations

import pytest

from nodeflow.cluster.scheduler import JobScheduler, WorkerSlot


def simulate(policy: str, jobs: list[tuple[int, str]], workers: int, resident: int = 1,
             durations: dict[int, int] | None = None) -> tuple[dict[str, int], dict[int, str]]:
    """Run jobs (id, model) on workers that keep the ``resident`` most recent models; each job
    takes ``durations[id]`` ticks (1 by default). Returns loads per worker and job → worker."""
    scheduler: JobScheduler[int] = JobScheduler(policy)
    models = dict(jobs)
    for job, model in jobs:
        scheduler.add(job, [model])
    slots = [WorkerSlot(f"w{i}") for i in range(workers)]
    held: dict[str, list[str]] = {s.name: [] for s in slots}
    loads = {s.name: 0 for s in slots}
    placed: dict[int, str] = {}
    running: dict[str, tuple[int, int]] = {}
    tick = 0
    while len(scheduler) or running:
        for slot, job, _key in scheduler.assign(slots):
            running[slot.name] = (job, tick + (durations or {}).get(job, 1))
            placed[job] = slot.name
        tick += 1
        for slot in slots:
            if slot.name in running and running[slot.name][1] <= tick:
                job, _ = running.pop(slot.name)
                cache = held[slot.name]
                if models[job] not in cache:
                    loads[slot.name] += 1
                else:
                    cache.remove(models[job])
                cache.append(models[job])
                del cache[:-resident]
                scheduler.done(slot, cache)
    return loads, placed


@pytest.mark.parametrize("order", ["model-outer", "model-inner"])
def test_affinity_loads_each_checkpoint_about_once_where_round_robin_reloads(order: str) -> None:
    # 4 checkpoints × 8 seeds on 2 workers that hold one checkpoint at a time.
    pairs = [(m, s) for m in "ABCD" for s in range(8)] if order == "model-outer" else \
        [(m, s) for s in range(8) for m in "ABCD"]
    jobs = [(i, m) for i, (m, _s) in enumerate(pairs)]
    loads, placed = simulate("affinity", jobs, workers=2)
    assert sorted(placed) == list(range(32))  # every job placed exactly once
    assert sum(loads.values()) <= 6, loads
    assert all(n >= 8 for n in _jobs_per_worker(placed).values())  # both workers kept busy
    rr_loads, _ = simulate("round-robin", jobs, workers=2)
    # In order, both workers load every checkpoint; interleaved, nearly every job reloads.
    assert sum(rr_loads.values()) >= (8 if order == "model-outer" else 30), rr_loads


def test_a_job_goes_to_the_free_worker_holding_its_model() -> None:
    scheduler: JobScheduler[str] = JobScheduler()
    w0, w1 = WorkerSlot("w0", holds={"ckpt:B"}), WorkerSlot("w1", holds={"ckpt:A"})
    scheduler.add("a1", ["ckpt:A"])
    scheduler.add("b1", ["ckpt:B"])
    assigned = {w.name: job for w, job, _ in scheduler.assign([w0, w1])}
    assert assigned == {"w0": "b1", "w1": "a1"}


def test_a_new_checkpoint_goes_to_an_idle_worker_not_one_that_is_loading_it() -> None:
    scheduler: JobScheduler[str] = JobScheduler()
    for job in ("a1", "a2", "b1"):
        scheduler.add(job, [f"ckpt:{job[0].upper()}"])
    w0, w1 = WorkerSlot("w0"), WorkerSlot("w1")
    assigned = {w.name: job for w, job, _ in scheduler.assign([w0, w1])}
    assert assigned == {"w0": "a1", "w1": "b1"}  # not a2: w0 is already loading A


def test_a_job_given_back_by_a_lost_worker_goes_first() -> None:
    scheduler: JobScheduler[str] = JobScheduler()
    scheduler.add("j1", [])
    scheduler.add("j2", [])
    scheduler.add("lost", [], first=True)
    [(_, job, _)] = scheduler.assign([WorkerSlot("w0")])
    assert job == "lost"


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="round-robin"):
        JobScheduler("random")


def _jobs_per_worker(placed: dict[int, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker in placed.values():
        counts[worker] = counts.get(worker, 0) + 1
    return counts
