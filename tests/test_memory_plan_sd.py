"""Plan-time memory estimates with real (tiny) Stable Diffusion checkpoints: sizes read from the
files, a sampler that needs its UNet and ControlNet together, a graph that can never fit failing
before anything runs, and two checkpoints swapped under a budget that holds one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nodeflow.cache import OutputCache
from nodeflow.cli import main
from nodeflow.events import NodeFinished
from nodeflow.executor import Executor, estimate_plan_memory, plan_execution
from nodeflow.graph import Graph
from nodeflow.models import ModelManager, memory_report
from nodeflow.settings import Settings
from tests.nodes.diffusion import ldm, tiny


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two different tiny SD 1.x checkpoints (diffusers folders) with random weights."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {"a": tiny.save_sd(root / "tiny-a", seed=0), "b": tiny.save_sd(root / "tiny-b", seed=1)}


def add_branch(g: Graph, tag: str, checkpoint: Path, size: int = 32, steps: int = 2) -> None:
    """checkpoint → prompts → sampler → decode, with node ids ending in ``_tag``."""
    g.add_node("diffusion.LoadCheckpoint", f"ckpt_{tag}", {"path": str(checkpoint)})
    g.add_node("diffusion.TextEncode", f"pos_{tag}", {"text": f"a red circle ({tag})"})
    g.add_node("diffusion.TextEncode", f"neg_{tag}", {"text": ""})
    g.add_node("diffusion.EmptyLatent", f"latent_{tag}", {"width": size, "height": size, "batch": 1})
    g.add_node("diffusion.Sample", f"sampler_{tag}", {"seed": 3, "steps": steps, "cfg": 7.5})
    g.add_node("diffusion.VAEDecode", f"decode_{tag}")
    for src, dst in (("ckpt.clip", "pos.clip"), ("ckpt.clip", "neg.clip"), ("ckpt.model", "sampler.model"),
                     ("pos.conditioning", "sampler.positive"), ("neg.conditioning", "sampler.negative"),
                     ("latent.latent", "sampler.latent"), ("sampler.latent", "decode.latent"),
                     ("ckpt.vae", "decode.vae")):
        a, b = src.split("."), dst.split(".")
        g.connect(f"{a[0]}_{tag}.{a[1]}", f"{b[0]}_{tag}.{b[1]}")


def estimates_of(registry, graph: Graph, outputs, models: ModelManager | None = None):
    plan = plan_execution(graph, registry, OutputCache(), outputs)
    dtypes = models.dtype_name if models is not None else None
    return estimate_plan_memory(graph, plan, Settings(), dtypes, "sim:0")


def test_checkpoint_sizes_are_read_from_the_files_as_the_loader_will_hold_them(registry, checkpoints,
                                                                               tmp_path):
    from nodeflow.nodes.diffusion.loaders import checkpoint_estimate

    g = Graph()
    add_branch(g, "a", checkpoints["a"])
    models = ModelManager(["sim:0"], vram_budget=10**9)
    result = Executor(registry, Settings(), models=models).run(g, ["ckpt_a"])
    assert result.ok
    loaded = {c.name.rsplit(".", 1)[-1]: c.size for c in models.loaded()[0].components}
    estimated = models.node_memory["ckpt_a"].estimate.models
    assert set(estimated) == {"tiny-a:unet", "tiny-a:text_encoder", "tiny-a:vae"}
    for part in ("unet", "text_encoder", "vae"):
        assert abs(estimated[f"tiny-a:{part}"] - loaded[part]) <= 0.01 * loaded[part], part
    # The same weights as one original-layout file: the same sizes, per part.
    single = ldm.save_sd1_single_file(checkpoints["a"], tmp_path / "tiny-a.safetensors")
    from_file = checkpoint_estimate(single, "fp32")
    for output, part in (("model", "unet"), ("clip", "text_encoder"), ("vae", "vae")):
        size = from_file[output].models[f"tiny-a.safetensors:{part}"]
        assert abs(size - loaded[part]) <= 0.01 * loaded[part], part
    # Loaded in fp16, every floating-point weight takes half.
    half = estimates_of(registry, g, ["sampler_a"], ModelManager(["sim:0"], vram_budget=1, dtype="fp16"))
    assert abs(half["sampler_a"].models["tiny-a:unet"] - loaded["unet"] / 2) <= 0.01 * loaded["unet"]


def test_a_sampler_needs_its_unet_and_controlnet_together(registry, checkpoints, tmp_path):
    controlnet = tiny.save_controlnet(tmp_path / "tiny-cn", seed=5)
    tiny.picture().save(tmp_path / "edges.png")
    g = Graph()
    add_branch(g, "a", checkpoints["a"], size=64)
    g.add_node("diffusion.LoadControlNet", "cn", {"path": str(controlnet)})
    g.add_node("image.Load", "edges", {"path": str(tmp_path / "edges.png")})
    g.add_node("diffusion.ApplyControlNet", "attach")
    g.connect("pos_a.conditioning", "attach.conditioning")
    g.connect("cn.controlnet", "attach.controlnet")
    g.connect("edges.image", "attach.image")
    g.connect("attach.conditioning", "sampler_a.positive")
    estimates = estimates_of(registry, g, ["decode_a"])
    sampler = estimates["sampler_a"]
    assert set(sampler.models) == {"tiny-a:unet", "tiny-cn"}
    assert sampler.models["tiny-cn"] == estimates["cn"].models["tiny-cn"] > 0
    # 64×64 pixels are 32×32 latent cells for this VAE (2× down), doubled for guidance, 32 UNet
    # channels, float32, half as much again for the ControlNet.
    assert sampler.activations == 64 * 32 * (32 * 32 * 2) * 4 * 3 // 2
    assert set(estimates["pos_a"].models) == {"tiny-a:text_encoder"}  # the encoder needs only its own
    assert set(estimates["decode_a"].models) == {"tiny-a:vae"}
    assert estimates["decode_a"].activations == 12 * 16 * 64 * 64 * 4
    assert "attach" not in estimates  # attaching computes nothing


def write_graph(g: Graph, path: Path) -> Path:
    path.write_text(json.dumps(g.to_json()))
    return path


def test_a_graph_that_can_never_fit_fails_before_anything_runs(registry, checkpoints, tmp_path, capsys):
    g = Graph()
    add_branch(g, "a", checkpoints["a"], size=256)
    g.add_node("image.Save", "save", {"prefix": "never"})
    g.connect("decode_a.image", "save.image")
    file = write_graph(g, tmp_path / "big.json")
    out = tmp_path / "out"
    code = main(["run", str(file), "--devices", "sim:0", "--vram-budget", "8MB", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"nodeflow: error: {file}, node 'sampler_a' (diffusion.Sample): needs about " in err
    assert "models 3.9 MB: tiny-a:unet 3.9 MB; activations about 268.4 MB at 256×256, batch 1 with " \
           "guidance" in err
    assert "more than the budget of sim:0, 8.0 MB" in err
    assert "Nothing was run (1 other node cannot fit either: decode_a)" in err
    assert "--vram-budget (at least 272.4 MB)" in err and "smaller image size or batch" in err
    assert "running" not in err and not out.exists()
    # A decoder too big for the budget is told to tile.
    g = Graph()
    g.add_node("diffusion.LoadCheckpoint", "ckpt", {"path": str(checkpoints["a"])})
    g.add_node("diffusion.EmptyLatent", "latent", {"width": 256, "height": 256})
    g.add_node("diffusion.VAEDecode", "decode", {"tiled": False})
    g.connect("ckpt.vae", "decode.vae")
    g.connect("latent.latent", "decode.latent")
    code = main(["run", str(write_graph(g, tmp_path / "decode.json")), "--output", "decode",
                 "--devices", "sim:0", "--vram-budget", "8MB", "--dtype", "fp16"])
    err = capsys.readouterr().err
    assert code == 2 and "node 'decode' (diffusion.VAEDecode)" in err
    assert "tiling (--set decode.tiled=true)" in err and "--dtype" not in err.split("Try")[1]


def test_two_checkpoints_under_a_budget_for_one_are_swapped_and_read_once(registry, checkpoints,
                                                                          torch_threads, monkeypatch):
    from nodeflow.nodes.diffusion import loaders

    g = Graph()
    for tag in ("a", "b"):
        add_branch(g, tag, checkpoints[tag])
    outputs = ["decode_a", "decode_b"]

    unlimited_models = ModelManager(["sim:0"], vram_budget=10**9)
    unlimited = Executor(registry, Settings(), models=unlimited_models).run(g, outputs)
    assert unlimited.ok
    parts = {Path(e.path).name: {c.name: c.size for c in e.components} for e in unlimited_models.loaded()}
    totals = {name: sum(sizes.values()) for name, sizes in parts.items()}
    smallest = min(size for sizes in parts.values() for size in sizes.values())
    # Room for either checkpoint whole, never for one whole plus any part of the other.
    budget = max(totals.values()) + smallest // 2
    assert budget < min(totals.values()) + smallest

    reads: dict[str, int] = {}
    real_load = loaders.load_checkpoint

    def counting_load(path, dtype=None):
        reads[path.name] = reads.get(path.name, 0) + 1
        return real_load(path, dtype)

    monkeypatch.setattr(loaders, "load_checkpoint", counting_load)
    models = ModelManager(["sim:0"], vram_budget=budget)
    snapshots: list[dict[str, set[str]]] = []

    def watch(event):
        if isinstance(event, NodeFinished):  # what stayed resident while the node ran
            held: dict[str, set[str]] = {}
            for c in models.resident("sim:0"):
                held.setdefault(Path(c.file_key[2]).name, set()).add(c.name)
            snapshots.append(held)
            assert models.accounted("sim:0") <= budget

    limited = Executor(registry, Settings(), models=models).run(g, outputs, on_event=watch)
    assert limited.ok, {k: str(v) for k, v in limited.failed.items()}
    for node in outputs:
        assert np.array_equal(limited.outputs[node]["image"], unlimited.outputs[node]["image"])
    # At most one checkpoint resident at a time: whenever one is resident whole, nothing of the
    # other is; each was resident whole at some point, so the budget forced swaps.
    for held in snapshots:
        whole = [name for name, names in held.items() if names == set(parts[name])]
        assert not whole or len(held) == 1, held
    assert {name for held in snapshots for name, names in held.items() if names == set(parts[name])} \
        == {"tiny-a", "tiny-b"}
    assert models.offloads >= 3 and models.peak["sim:0"] <= budget
    assert reads == {"tiny-a": 1, "tiny-b": 1} and models.loads == 2  # each file read once
    # The memory report puts each sampler's estimate beside its measured peak.
    report = memory_report(models, limited.ran)
    line = next(row for row in report.splitlines() if row.strip().startswith("sampler_b "))
    unet = parts["tiny-b"]["tiny-b:model.unet"]
    estimate = models.node_memory["sampler_b"].estimate
    assert abs(estimate.models["tiny-b:unet"] - unet) <= 0.01 * unet and estimate.activations > 0
    assert "sim:0" in line and "tiny-b:model.unet" in line
