"""The load transient in the memory plan: what loading a model file holds beside the model, read
from the safetensors header alone. A tensor stored in the dtype it is used in is mapped from the
file, not copied (checked here on a real load); one the load converts holds its file pages beside
its copy. Peaks of full-size loads are measured by bench/load_memory.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.models import ModelManager, safetensors_header, tensor_bytes
from nodeflow.node import EstimateContext
from nodeflow.settings import Settings


@pytest.fixture(scope="module")
def tiny_sd(sd_ckpt) -> Path:
    """The session's tiny SD 1.x diffusers folder (stored in fp32)."""
    return sd_ckpt


def single_file(folder: Path, target: Path, dtype: str, extra_ema: bool = False) -> Path:
    """``folder`` as an original-layout single file with its floating-point tensors in ``dtype``
    (and, with ``extra_ema``, fp32 EMA copies of the UNet, which loaders leave unread)."""
    import torch
    from safetensors.torch import save_file

    from training.export_single_file import ldm_state_dict, write_sidecar

    to = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    state = {k: v.to(to) if v.is_floating_point() else v for k, v in ldm_state_dict(folder).items()}
    if extra_ema:
        state.update({"model_ema." + k.removeprefix("model.diffusion_model.").replace(".", ""): v.float()
                      for k, v in state.items() if k.startswith("model.diffusion_model.")})
    save_file(state, str(target))
    write_sidecar(folder, target)  # the tiny architecture is not a carried one
    return target


def loaded_bytes(path: Path, prefixes: tuple[str, ...] = ("model.", "first_stage_model.",
                                                          "cond_stage_model.")) -> int:
    """Stored bytes of the tensors a checkpoint load reads."""
    return sum(tensor_bytes(e) for k, e in safetensors_header(path).items() if k.startswith(prefixes))


def load_estimate(registry, node_type: str, path: Path, dtype: str):
    """The node's plan-time estimate of loading ``path`` on the CPU in ``dtype``."""
    manager = ModelManager(["cpu"], dtype=dtype)
    ctx = EstimateContext(Settings(), "cpu", lambda kind, device: manager.dtype_name(kind, device))
    estimate = registry.get(node_type).estimate_memory({"path": str(path)}, {}, ctx)
    assert estimate is not None
    return estimate


def variable(estimate) -> int:
    """The transient beyond the fixed part every load holds."""
    from nodeflow.nodes.diffusion.loaders import LOAD_FIXED

    return estimate.activations - LOAD_FIXED


def test_a_file_loaded_in_its_own_dtype_is_mapped_not_copied(registry, tiny_sd, tmp_path, torch_threads):
    """What the estimate rests on: loaded in the dtype the file stores, every weight lies in the
    file's mapping, renamed from the original layout but not copied (its pages are read when
    first used); loaded in another dtype, none does. In fp16 the VAE is cast to fp32: copied."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        pytest.skip("needs /proc/self/maps to see the file mapping (Linux)")
    path = single_file(tiny_sd, tmp_path / "tiny-fp16.safetensors", "fp16")

    def in_mapping(dtype: str) -> dict[str, tuple[int, int]]:
        graph = Graph()
        graph.add_node("diffusion.LoadCheckpoint", "load", {"path": str(path)})
        result = Executor(registry, Settings(), models=ModelManager(["cpu"], dtype=dtype)).run(graph, ["load"])
        assert result.ok, result.failed
        ranges = []
        for line in maps.read_text().splitlines():
            if line.endswith(str(path.resolve())):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                ranges.append((start, end))
        out = result.outputs["load"]
        counts = {}
        for part, module in (("unet", out["model"].unet), ("text_encoder", out["clip"].text_encoder),
                             ("vae", out["vae"].vae)):
            params = list(module.parameters())
            counts[part] = (sum(any(a <= p.data_ptr() < b for a, b in ranges) for p in params), len(params))
        return counts

    same = in_mapping("fp16")
    assert same["unet"][0] == same["unet"][1] and same["text_encoder"][0] == same["text_encoder"][1]
    assert same["vae"][0] == 0
    assert all(inside == 0 for inside, _total in in_mapping("fp32").values())


def test_a_single_file_in_the_load_dtype_plans_little_beside_its_weights(registry, tiny_sd, tmp_path):
    path = single_file(tiny_sd, tmp_path / "tiny-bf16.safetensors", "bf16")
    stored = loaded_bytes(path)
    same = load_estimate(registry, "diffusion.LoadCheckpoint", path, "bf16")
    assert same.model_bytes == pytest.approx(stored, rel=0.01)
    assert 0 < variable(same) <= 0.2 * stored
    # Converted to another dtype, each tensor's file pages sit beside its copy.
    for dtype in ("fp16", "fp32"):
        converting = load_estimate(registry, "diffusion.LoadCheckpoint", path, dtype)
        assert stored <= variable(converting) <= 1.5 * stored, dtype


def test_the_vae_cast_after_loading_counts_as_converted(registry, tiny_sd, tmp_path):
    """In fp16 the VAE stays fp32: an fp16 file's VAE is copied, the rest is used in place."""
    path = single_file(tiny_sd, tmp_path / "tiny-fp16.safetensors", "fp16")
    vae = loaded_bytes(path, ("first_stage_model.",))
    rest = loaded_bytes(path) - vae
    estimate = load_estimate(registry, "diffusion.LoadCheckpoint", path, "fp16")
    assert estimate.models[f"{path.name}:vae"] == pytest.approx(2 * vae, rel=0.01)  # sized in fp32
    assert vae <= variable(estimate) <= 1.5 * vae + 0.2 * rest


def test_tensors_a_checkpoint_load_leaves_unread_are_not_planned(registry, tiny_sd, tmp_path):
    plain = single_file(tiny_sd, tmp_path / "plain.safetensors", "fp16")
    with_ema = single_file(tiny_sd, tmp_path / "ema.safetensors", "fp16", extra_ema=True)
    assert with_ema.stat().st_size > 1.5 * plain.stat().st_size
    for dtype in ("fp16", "fp32"):
        a = load_estimate(registry, "diffusion.LoadCheckpoint", plain, dtype)
        b = load_estimate(registry, "diffusion.LoadCheckpoint", with_ema, dtype)
        assert (a.model_bytes, a.activations) == (b.model_bytes, b.activations), dtype


def test_a_folder_plans_its_largest_component_file(registry, tiny_sd):
    """A folder's components load one after another: the transient is the largest file's."""
    largest = max(loaded_bytes(f, ("",)) for f in tiny_sd.rglob("*.safetensors"))
    same = load_estimate(registry, "diffusion.LoadCheckpoint", tiny_sd, "fp32")  # stored in fp32
    assert 0 < variable(same) <= 0.2 * largest
    converting = load_estimate(registry, "diffusion.LoadCheckpoint", tiny_sd, "bf16")
    assert largest <= variable(converting) <= 1.5 * largest
