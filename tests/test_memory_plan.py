"""Plan-time memory estimates: model files sized without loading them, estimates flowing
along links, and a run that can never fit failing before any node runs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodeflow.cache import OutputCache
from nodeflow.devices import format_size
from nodeflow.errors import ModelError
from nodeflow.executor import Executor, estimate_plan_memory, plan_execution
from nodeflow.graph import Graph
from nodeflow.models import ModelManager, estimate_file_bytes, memory_report
from nodeflow.node import Input, MemoryEstimate, Node, Output, ValueEstimate
from nodeflow.registry import load_registry
from nodeflow.settings import Settings
from nodeflow.types import FLOAT, INT, STRING, SocketType

WEIGHTS = SocketType("TEST_PLAN_WEIGHTS", description="A stack of linear layers (tests).")
PACKED = SocketType("TEST_PLAN_PACKED", description="A number with a network attached (tests).")
RAN: list[str] = []
_lock = threading.Lock()


def _ran(node: str) -> None:
    with _lock:
        RAN.append(node)


def make_net(width: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Linear(width, width))


def write_net(path: Path, width: int, seed: int = 0) -> Path:
    save_file({k: v.contiguous() for k, v in make_net(width, seed).state_dict().items()}, str(path))
    return path


class LoadNet(Node):
    """Load a network; declares its size from the file before the run."""

    id = "plan.LoadNet"
    inputs = (Input("path", STRING, "File."),)
    outputs = (Output("net", WEIGHTS, "The network."),)

    @classmethod
    def estimate_memory(cls, values, upstream, ctx):
        path = Path(values["path"])
        size = estimate_file_bytes(path, ctx.dtype("net"))
        return MemoryEstimate({path.name: size}, outputs={"net": ValueEstimate({path.name: size})})

    def run(self, ctx, path):
        from safetensors.torch import load_file

        _ran(ctx.node_id)

        def loader(p):
            state = load_file(str(p))
            net = make_net(state["0.weight"].shape[0])
            net.load_state_dict(state)
            return net

        return ctx.models.load(Path(path), loader, kind="net")


class ApplyNet(Node):
    """Run a network on a number, on the accelerator; declares no estimate of its own."""

    id = "plan.ApplyNet"
    uses_accelerator = True
    inputs = (Input("net", WEIGHTS, "The network."), Input("x", FLOAT, "Input.", default=1.0))
    outputs = (Output("y", FLOAT, "Output."),)

    def run(self, ctx, net, x):
        _ran(ctx.node_id)
        with ctx.models.use(net) as device, torch.no_grad():
            width = net[0].weight.shape[0]
            return float(net(torch.full((1, width), float(x), device=device)).mean())


class Pack(Node):
    """Attach a network to a number (no accelerator): the network travels on."""

    id = "plan.Pack"
    inputs = (Input("x", FLOAT, "A number.", default=0.0), Input("net", WEIGHTS, "A network."))
    outputs = (Output("packed", PACKED, "The number with the network."),)

    def run(self, ctx, x, net):
        _ran(ctx.node_id)
        return (x, net)


class Work(Node):
    """Compute with a packed network and `size` numbers of scratch memory per batch item."""

    id = "plan.Work"
    uses_accelerator = True
    inputs = (Input("packed", PACKED, "The number and network."),
              Input("size", INT, "Scratch numbers.", default=1, min=1),
              Input("batch", INT, "Batch.", default=1, min=1))
    outputs = (Output("y", FLOAT, "Output."),)

    @classmethod
    def estimate_memory(cls, values, upstream, ctx):
        packed = upstream.get("packed")
        models = dict(packed.models) if packed else {}
        return MemoryEstimate(models, values["size"] * values["batch"] * ctx.itemsize("net"),
                              note=f"batch {values['batch']}")

    def run(self, ctx, packed, size, batch):
        _ran(ctx.node_id)
        x, net = packed
        with ctx.models.use(net):
            return x + float(torch.zeros(batch, size).sum())


REG = load_registry(use_env=False)
REG.register_module("plan", [LoadNet, ApplyNet, Pack, Work], "tests/test_memory_plan.py")
WIDTH = 256  # two 256×256 layers in float32: about 526 KB per net


@pytest.fixture
def nets(tmp_path):
    RAN.clear()
    return {"small": write_net(tmp_path / "small.safetensors", WIDTH // 2, 1),
            "big": write_net(tmp_path / "big.safetensors", WIDTH, 2)}


def net_bytes(width: int) -> int:
    return sum(p.numel() * 4 for p in make_net(width).parameters())


def two_branches(nets, file=None) -> Graph:
    g = Graph(source=file)
    for name, path in nets.items():
        g.add_node("plan.LoadNet", f"load_{name}", {"path": str(path)})
        g.add_node("plan.ApplyNet", f"apply_{name}")
        g.connect(f"load_{name}.net", f"apply_{name}.net")
    return g


def test_safetensors_files_are_sized_from_the_header_in_the_run_dtype(tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_file({"w": torch.zeros(10, 20, dtype=torch.float16), "ids": torch.zeros(5, dtype=torch.int64)},
              str(path))
    assert estimate_file_bytes(path) == 10 * 20 * 2 + 5 * 8
    assert estimate_file_bytes(path, "fp32") == 10 * 20 * 4 + 5 * 8  # integers keep their size
    assert estimate_file_bytes(path, "bf16") == 10 * 20 * 2 + 5 * 8
    # A diffusers folder: the weights of each component folder, not the .fp16 variant beside them.
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    (folder / "vae").mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "X"}))
    save_file({"w": torch.zeros(100)}, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    save_file({"w": torch.zeros(100, dtype=torch.float16)},
              str(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
    (folder / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"x" * 123)
    assert estimate_file_bytes(folder, "fp16") == 100 * 2 + 123
    # Any other file: its size.
    other = tmp_path / "net.pth"
    other.write_bytes(b"y" * 77)
    assert estimate_file_bytes(other, "fp16") == 77


def test_a_node_over_every_budget_fails_at_planning_and_no_node_runs(nets, tmp_path):
    graph = two_branches(nets, file=tmp_path / "two.json")
    budget = (net_bytes(WIDTH // 2) + net_bytes(WIDTH)) // 2  # the small net fits, the big one not
    events = []
    executor = Executor(REG, Settings(), models=ModelManager(["sim:0", "sim:1"], vram_budget=budget))
    with pytest.raises(ModelError) as caught:
        executor.run(graph, ["apply_small", "apply_big"], on_event=events.append)
    error = caught.value
    assert RAN == [] and events == []  # not even the loaders, nor the branch that fits
    assert error.location.node == "apply_big" and error.location.node_type == "plan.ApplyNet"
    assert error.location.file == str(tmp_path / "two.json")
    text = str(error)
    assert "two.json" in text and "Nothing was run" in text
    assert f"big.safetensors {format_size(net_bytes(WIDTH))}" in text
    assert f"the largest budget, of sim:0, {format_size(budget)}" in text
    assert "--vram-budget" in text and "--dtype fp16" in text
    # Within budget the same graph runs, and the estimates are what the report shows.
    models = ModelManager(["sim:0"], vram_budget=net_bytes(WIDTH) * 2)
    result = Executor(REG, Settings(), models=models).run(graph, ["apply_small", "apply_big"])
    assert result.ok and sorted(RAN) == ["apply_big", "apply_small", "load_big", "load_small"]
    assert models.node_memory["apply_big"].estimate.models == {"big.safetensors": net_bytes(WIDTH)}
    assert models.node_memory["apply_big"].peak >= net_bytes(WIDTH)


def test_the_dtype_of_the_run_sizes_the_models(nets):
    graph = two_branches({"big": nets["big"]})
    budget = net_bytes(WIDTH) * 3 // 4
    with pytest.raises(ModelError, match="apply_big|budget"):
        Executor(REG, models=ModelManager(["sim:0"], vram_budget=budget)).run(graph, ["apply_big"])
    # In fp16 the float32 file takes half: it fits, and the estimate says so before the run.
    models = ModelManager(["sim:0"], vram_budget=budget, dtype="fp16")
    plan = plan_execution(graph, REG, OutputCache(), ["apply_big"])
    estimates = estimate_plan_memory(graph, plan, Settings(), models.dtype_name, "sim:0")
    assert estimates["apply_big"].total == net_bytes(WIDTH) // 2


def test_models_packed_by_a_node_travel_to_the_node_that_computes_with_them(nets):
    g = Graph()
    g.add_node("plan.LoadNet", "load", {"path": str(nets["big"])})
    g.add_node("plan.Pack", "pack", {"x": 2.0})
    g.add_node("plan.Work", "work", {"size": 1000, "batch": 3})
    g.connect("load.net", "pack.net")
    g.connect("pack.packed", "work.packed")
    plan = plan_execution(g, REG, OutputCache(), ["work"])
    estimates = estimate_plan_memory(g, plan, Settings())
    assert estimates["work"].models == {"big.safetensors": net_bytes(WIDTH)}
    assert estimates["work"].activations == 1000 * 3 * 4
    assert "pack" not in estimates  # it computes nothing: it needs nothing on a device


def test_activations_alone_can_fail_the_plan_and_the_report_shows_estimates(nets):
    g = Graph()
    g.add_node("plan.LoadNet", "load", {"path": str(nets["small"])})
    g.add_node("plan.Pack", "pack")
    g.add_node("plan.Work", "work", {"size": 100_000, "batch": 4})
    g.connect("load.net", "pack.net")
    g.connect("pack.packed", "work.packed")
    budget = net_bytes(WIDTH // 2) + 1_000_000  # the model fits; 1.6 MB of activations do not
    with pytest.raises(ModelError) as caught:
        Executor(REG, models=ModelManager(["sim:0"], vram_budget=budget)).run(g, ["work"])
    assert "activations about 1.6 MB at batch 4" in str(caught.value)
    assert "smaller image size or batch" in str(caught.value)
    assert RAN == []
    g.set_input("work", "batch", 1)
    models = ModelManager(["sim:0"], vram_budget=budget)
    result = Executor(REG, models=models).run(g, ["work"])
    assert result.ok
    report = memory_report(models, result.ran)
    line = next(row for row in report.splitlines() if row.strip().startswith("work "))
    assert "sim:0" in line and "400.0 KB" in line  # the estimated activations beside the peak
    assert line.count(format_size(net_bytes(WIDTH // 2))) == 2  # peak measured, models estimated


def test_nodes_without_estimates_cost_the_plan_nothing(nets):
    g = Graph()
    g.add_node("plan.ApplyNet", "alone", {"x": 1.0})
    plan = plan_execution(g, REG, OutputCache(), ["alone"])
    assert estimate_plan_memory(g, plan, Settings()) == {}


def test_a_faulty_estimate_is_treated_as_unknown(nets, tmp_path):
    graph = two_branches({"gone": tmp_path / "missing.safetensors"})
    plan = plan_execution(graph, REG, OutputCache(), ["apply_gone"])
    assert estimate_plan_memory(graph, plan, Settings()) == {}  # the file error surfaces at run time


def test_the_dtype_rule_is_the_same_with_and_without_torch():
    models = ModelManager(["cuda:0"], vram_budget=1)  # a budget given: no GPU is asked
    assert models.dtype_name("unet", "cuda:0") == "fp16" and models.dtype_name("vae", "cuda:0") == "fp32"
    assert models.dtype_name("unet", "cpu") == "fp32"
    fp16 = ModelManager(["cpu"], vram_budget=1, dtype="fp16")
    assert fp16.dtype_name("unet", "cpu") == "fp16" and fp16.dtype_name("vae") == "fp32"
    assert fp16.dtype("unet") == torch.float16 and fp16.dtype("vae") == torch.float32
    assert ModelManager(["cpu"], vram_budget=1, dtype="bf16").dtype("vae") == torch.bfloat16


def test_a_loader_loads_in_the_dtype_of_the_device_its_models_compute_on():
    from nodeflow.models import current_device

    gpu = ModelManager(["cuda:0"], vram_budget=1)  # a budget given: no GPU is asked
    token = current_device.set("cpu")  # a loader runs beside the accelerator, on the CPU
    try:
        assert gpu.dtype_name("unet") == "fp16" and gpu.dtype_name("vae") == "fp32"
        assert ModelManager(["cpu"], vram_budget=1).dtype_name("unet") == "fp32"
    finally:
        current_device.reset(token)


def test_a_checkpoint_loaded_for_fp16_keeps_its_vae_in_fp32(tmp_path):
    graph = Graph()
    graph.add_node("diffusion.LoadCheckpoint", "checkpoint", {"path": "nodeflow-shapes"})
    result = Executor(load_registry(use_env=False), Settings(out_dir=tmp_path),
                      models=ModelManager(["cpu"], dtype="fp16")).run(graph, ["checkpoint"])
    out = result.outputs["checkpoint"]
    assert out["model"].unet.dtype == torch.float16
    assert out["clip"].text_encoder.dtype == torch.float16
    assert out["vae"].vae.dtype == torch.float32
