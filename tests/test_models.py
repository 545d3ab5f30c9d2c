"""The model manager and device-aware scheduling, on the CPU with budgets."""

import threading

import pytest
import torch
from safetensors.torch import save_file

from nodeflow.devices import Device, parse_size
from nodeflow.errors import UsageError
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.models import ModelManager, current_device
from nodeflow.node import Input, Node, Output
from nodeflow.registry import load_registry
from nodeflow.settings import Settings
from nodeflow.types import FLOAT, INT, STRING, SocketType

NET = SocketType("TEST_NET", description="A small torch network (tests).")
LOG: list[dict] = []
_lock = threading.Lock()
HIDDEN = 256  # 4 layers of 256x256 float32: about 1 MB per net


def make_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(*[torch.nn.Linear(HIDDEN, HIDDEN) for _ in range(4)])


def net_bytes() -> int:
    return sum(p.numel() * 4 for p in make_net(0).parameters())


class LoadNet(Node):
    """Load a test network from a safetensors file."""

    id = "mm.LoadNet"
    inputs = (Input("path", STRING, "File."), Input("tag", INT, "Anything.", default=0))
    outputs = (Output("net", NET, "The network."),)

    def run(self, ctx, path, tag):
        from pathlib import Path

        from safetensors.torch import load_file

        def loader(p):
            net = make_net(0)
            net.load_state_dict(load_file(str(p)))
            return net

        return ctx.models.load(Path(path), loader, kind="net")


class ApplyNet(Node):
    """Run a network on a number; computes on the accelerator."""

    id = "mm.ApplyNet"
    uses_accelerator = True
    inputs = (Input("net", NET, "The network."), Input("x", FLOAT, "Input.", default=1.0))
    outputs = (Output("y", FLOAT, "Output."),)
    fail_first_oom: set[str] = set()

    def run(self, ctx, net, x):
        with ctx.models.use(net) as device:
            if ctx.node_id in ApplyNet.fail_first_oom and not ctx.low_memory:
                raise MemoryError("CUDA out of memory (simulated)")
            with _lock:
                LOG.append({"node": ctx.node_id, "device": current_device.get(),
                            "resident": sorted(c.name for c in ctx.models.resident()),
                            "accounted": {d.name: ctx.models.accounted(d.name)
                                          for d in ctx.models.devices}})
            inp = torch.full((1, HIDDEN), float(x), device=device)
            with torch.no_grad():
                return float(net(inp).tanh().mean())


REG = load_registry(use_env=False)
REG.register_module("mm", [LoadNet, ApplyNet], "tests/test_models.py")


@pytest.fixture
def nets(tmp_path):
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"net{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in make_net(seed).state_dict().items()}, str(path))
        paths.append(str(path))
    LOG.clear()
    ApplyNet.fail_first_oom = set()
    return paths


def alternating(paths, steps=4):
    """A chain that alternates between two networks: a, b, a, b..."""
    g = Graph()
    g.add_node("mm.LoadNet", "load_a", {"path": paths[0]})
    g.add_node("mm.LoadNet", "load_b", {"path": paths[1]})
    previous = None
    for i in range(steps):
        node = f"apply{i}"
        g.add_node("mm.ApplyNet", node, {} if previous else {"x": 0.5})
        g.connect(f"load_{'ab'[i % 2]}.net", f"{node}.net")
        if previous:
            g.connect(f"{previous}.y", f"{node}.x")
        previous = node
    return g, previous


def run(graph, outputs, models, workers=1):
    return Executor(REG, Settings(), models=models, workers=workers).run(graph, outputs)


def test_budget_for_one_model_keeps_one_resident_with_identical_results(nets):
    graph, last = alternating(nets)
    unlimited = run(graph, [last], ModelManager(["cpu"], vram_budget=parse_size("1GB")))
    LOG.clear()
    budget = int(net_bytes() * 1.5)
    models = ModelManager(["cpu"], vram_budget=budget)
    tight = run(graph, [last], models)
    assert tight.ok and tight.outputs == unlimited.outputs
    assert all(len(entry["resident"]) == 1 for entry in LOG)
    assert models.peak["cpu"] <= budget
    assert models.loads == 2  # each file read from disk once: RAM allows both
    assert models.offloads >= 3


def test_shared_checkpoint_loads_once(nets):
    g = Graph()
    for branch in ("left", "right"):
        g.add_node("mm.LoadNet", f"{branch}_load", {"path": nets[0], "tag": 1 if branch == "left" else 2})
        g.add_node("mm.ApplyNet", f"{branch}_apply")
        g.connect(f"{branch}_load.net", f"{branch}_apply.net")
    models = ModelManager(["cpu"])
    result = run(g, ["left_apply", "right_apply"], models, workers=2)
    assert result.ok and models.loads == 1
    assert result.outputs["left_apply"] == result.outputs["right_apply"]


def test_node_that_cannot_fit_fails_before_running_with_a_located_error(nets):
    graph, last = alternating(nets, steps=1)
    models = ModelManager(["cpu"], vram_budget=net_bytes() // 2)
    result = run(graph, [last], models)
    error = result.failed["apply0"]
    assert error.location.node == "apply0" and "budget" in str(error) and "--vram-budget" in str(error)
    assert LOG == []


def test_parallel_results_equal_serial(nets):
    graph, last = alternating(nets, steps=6)
    serial = run(graph, [last], ModelManager(["cpu"]), workers=1)
    parallel = run(graph, [last], ModelManager(["cpu"]), workers=3)
    assert serial.outputs == parallel.outputs


def test_two_simulated_accelerators_take_one_branch_each_within_budget(nets):
    g = Graph()
    for i, branch in enumerate(("left", "right")):
        g.add_node("mm.LoadNet", f"{branch}_load", {"path": nets[i]})
        previous = None
        for step in range(3):
            node = f"{branch}{step}"
            g.add_node("mm.ApplyNet", node)
            g.connect(f"{branch}_load.net", f"{node}.net")
            if previous:
                g.connect(f"{previous}.y", f"{node}.x")
            previous = node
    budget = int(net_bytes() * 1.2)
    models = ModelManager(["sim:0", "sim:1"], vram_budget=budget)
    result = run(g, ["left2", "right2"], models, workers=4)
    assert result.ok
    devices = {entry["node"]: entry["device"] for entry in LOG}
    assert {devices["left0"], devices["left1"], devices["left2"]} != {devices["right0"]}
    assert len({devices[f"left{i}"] for i in range(3)}) == 1  # a branch stays on its device
    assert len({devices[f"right{i}"] for i in range(3)}) == 1
    assert devices["left0"] != devices["right0"]
    assert all(models.peak[d] <= budget for d in ("sim:0", "sim:1"))
    assert models.offloads == 0  # each device kept its own model


def test_out_of_memory_frees_and_retries_once(nets):
    graph, last = alternating(nets, steps=2)
    ApplyNet.fail_first_oom = {"apply1"}
    result = run(graph, [last], ModelManager(["cpu"]))
    assert result.ok
    assert [entry["node"] for entry in LOG] == ["apply0", "apply1"]


def test_ram_budget_drops_idle_models_and_reloads_them(nets):
    graph, last = alternating(nets, steps=4)
    models = ModelManager(["cpu"], vram_budget=int(net_bytes() * 1.5),
                          ram_budget=int(net_bytes() * 1.5))
    result = run(graph, [last], models)
    assert result.ok
    assert models.drops >= 1 and models.host_bytes() <= int(net_bytes() * 1.5)


def test_memory_report_names_models_and_peaks(nets):
    graph, last = alternating(nets, steps=2)
    models = ModelManager(["cpu"])
    run(graph, [last], models)
    report = models.node_memory
    assert report["apply0"].peak >= net_bytes() and report["apply0"].device == "cpu"
    assert report["apply0"].models[0].startswith("net1.safetensors")
    assert report["load_a"].models == ["net1.safetensors"]


def test_sizes_and_devices_are_parsed_clearly():
    assert parse_size("6GB") == 6 * 1000**3 and parse_size("512MiB") == 512 * 1024**2
    with pytest.raises(UsageError, match="not a memory size"):
        parse_size("lots")
    assert Device("sim:0", 10).torch_device == "cpu"
    with pytest.raises(UsageError, match="unknown device"):
        _ = ModelManager(["tpu:0"], vram_budget=1).devices
