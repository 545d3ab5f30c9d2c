"""Loading full-size models: the plan-time estimate (models + load transient) against the peak
RSS the load really reaches, and the RSS once every weight has been read.

Builds full-size architectures with random weights from the carried configs (SD 1.5 in fp16
as a diffusers folder and as an original-layout single file; an SD 1.5 ControlNet in fp16 as a
single file; with --sdxl also SDXL in bf16 as a single file, which needs about 7 GB of disk and
20 GB of RAM to build), then loads each in a fresh process through a one-node graph, in each
dtype asked for, and prints the estimate beside two measures above the interpreter's baseline:
the peak while loading, and the RSS after every weight has been read once (as the first forward
pass reads them).

The two differ when a file is loaded in the dtype it stores: safetensors maps the file and
diffusers uses such tensors in place, so the load itself stays small and the weights' pages
become resident (file-backed, reclaimable) only when first read. Converted to another dtype, each
tensor's file pages sit beside its copy while loading. The plan counts the weights plus the
load transient, so the estimate must cover both measures.

SDXL is loaded only in bf16, the dtype it is stored in: converted, it would need 14 GB (fp16)
or 21 GB (fp32); the SD 1.5 rows measure the converting loads.

Usage: python bench/load_memory.py [--sdxl] [--dir DIR] [--dtype fp32|fp16|bf16 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # training/ runs from the checkout

GB = 1024 ** 3


def build_sd15(root: Path) -> tuple[Path, Path]:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodeflow.nodes.diffusion.clip_vocab import clip_tokenizer
    from nodeflow.nodes.diffusion.single_file import CONFIGS
    from training.export_single_file import save_sd1_single_file

    folder, single = root / "checkpoints" / "sd15-folder", root / "checkpoints" / "sd15.safetensors"
    if single.is_file():
        return folder, single
    config = CONFIGS / "sd15"
    torch.manual_seed(0)
    parts = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")),
    }
    for module in parts.values():
        module.to(torch.float16)
    pipe = StableDiffusionPipeline(**parts, tokenizer=clip_tokenizer(),
                                   scheduler=EulerDiscreteScheduler.from_pretrained(config / "scheduler"),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    save_sd1_single_file(folder, single)
    return folder, single


def build_controlnet(root: Path) -> Path:
    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from nodeflow.nodes.diffusion.single_file import ControlNetFileInfo, _carried_controlnet_config
    from training.export_single_file import controlnet_to_ldm

    target = root / "controlnet" / "control_sd15_canny.safetensors"
    if target.is_file():
        return target
    torch.manual_seed(0)
    net = ControlNetModel.from_config(_carried_controlnet_config(ControlNetFileInfo("sd1", "", 3)))
    out = {k: v.to(torch.float16) for k, v in controlnet_to_ldm(net).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({"control_model." + k: v.contiguous() for k, v in out.items()}, str(target))
    return target


def build_sdxl(root: Path) -> Path:
    import torch

    from nodeflow.nodes.diffusion.single_file import CONFIGS

    target = root / "checkpoints" / "sdxl.safetensors"
    if target.is_file():
        return target
    config = CONFIGS / "sdxl"
    torch.manual_seed(0)
    state: dict = {}
    # Built in bf16 from the start: an fp32 SDXL UNet and its bf16 copy would need ~16 GB.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        return _build_sdxl(target, config, state)
    finally:
        torch.set_default_dtype(default)


def _build_sdxl(target: Path, config: Path, state: dict) -> Path:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from training.export_single_file import open_clip_to_ldm, text_encoder_to_ldm, unet_to_ldm, vae_to_ldm

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
    state.update({k: v.to(torch.bfloat16) for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()})
    del unet
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
    state.update({k: v.to(torch.bfloat16) for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    for k, v in text_encoder_to_ldm(te.state_dict()).items():
        state["conditioner.embedders.0." + k.removeprefix("cond_stage_model.")] = v.to(torch.bfloat16)
    te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config / "text_encoder_2"))
    for k, v in open_clip_to_ldm(te2.state_dict()).items():  # open-clip's names, as SDXL files hold it
        state["conditioner.embedders.1.model." + k] = v.to(torch.bfloat16)
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    return target


CHILD = r"""
import json, os, sys, threading, time
os.environ["HF_HUB_OFFLINE"] = "1"
import psutil
import torch
torch.set_num_threads(1)
from pathlib import Path
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.models import ModelManager
from nodeflow.registry import load_registry
from nodeflow.settings import Settings
import diffusers, transformers  # their import is not the load's
from dataclasses import fields, is_dataclass
node_type, path, models, dtype = sys.argv[1:5]
graph = Graph()
graph.add_node(node_type, "load", {"path": path})
executor = Executor(load_registry(use_env=False), Settings(models_dirs=[Path(models)]),
                    models=ModelManager(["cpu"], dtype=dtype))
process = psutil.Process()
base = peak = process.memory_info().rss
done = threading.Event()
def sample():  # the high-water mark of the process would include the imports' own peak
    global peak
    while not done.is_set():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
result = executor.run(graph, ["load"])
done.set()
sampler.join()
assert result.ok, {k: str(v) for k, v in result.failed.items()}
peak = max(peak, process.memory_info().rss)
with torch.no_grad():  # read every weight once, as the first forward pass does
    for value in result.outputs["load"].values():
        for field in fields(value) if is_dataclass(value) else ():
            module = getattr(value, field.name)
            if isinstance(module, torch.nn.Module):
                for tensor in module.parameters():
                    float(tensor.sum())
print(json.dumps({"base": base, "peak": peak, "used": process.memory_info().rss}))
"""


def estimate(node_type: str, path: str, models: Path, dtype: str) -> tuple[int, int]:
    from nodeflow.models import ModelManager
    from nodeflow.node import EstimateContext
    from nodeflow.registry import load_registry
    from nodeflow.settings import Settings

    cls = load_registry(use_env=False).get(node_type)
    manager = ModelManager(["cpu"], dtype=dtype)
    ctx = EstimateContext(Settings(models_dirs=[models]), "cpu",
                          lambda kind, device: manager.dtype_name(kind, device))
    est = cls.estimate_memory({"path": path}, {}, ctx)
    return est.model_bytes, est.activations


def measure(node_type: str, path: str, models: Path, dtype: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, node_type, path, str(models), dtype],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["peak"] - data["base"], data["used"] - data["base"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdxl", action="store_true", help="also SDXL from a bf16 single file (in bf16)")
    parser.add_argument("--dir", type=Path, default=None, help="keep the built models here")
    parser.add_argument("--dtype", action="append", choices=("fp32", "fp16", "bf16"),
                        help="a dtype to load in (repeatable; default: fp16 and bf16)")
    args = parser.parse_args()
    dtypes = args.dtype or ["fp16", "bf16"]
    root = args.dir or Path(tempfile.mkdtemp(prefix="nodeflow-load-memory-"))
    print(f"models in {root}; RSS above the interpreter's baseline: peak while loading, and once "
          "every weight has been read")
    _folder, single = build_sd15(root)
    cases = [("SD 1.5, diffusers folder (fp16)", "diffusion.LoadCheckpoint", "sd15-folder", dtypes),
             ("SD 1.5, single file (fp16)", "diffusion.LoadCheckpoint", single.name, dtypes)]
    build_controlnet(root)
    cases.append(("SD 1.5 ControlNet, single file (fp16)", "diffusion.LoadControlNet",
                  "control_sd15_canny.safetensors", dtypes))
    if args.sdxl:
        cases.append(("SDXL, single file (bf16)", "diffusion.LoadCheckpoint", build_sdxl(root).name, ["bf16"]))
    print(f"{'model':38} {'load':>4} {'weights':>8} {'transient':>9} {'estimate':>8} {'peak':>7} "
          f"{'read':>7} {'max/est':>7}")
    for label, node_type, path, load_dtypes in cases:
        for dtype in load_dtypes:
            weights, transient = estimate(node_type, path, root, dtype)
            peak, used = measure(node_type, path, root, dtype)
            total = weights + transient
            print(f"{label:38} {dtype:>4} {weights / GB:7.2f}G {transient / GB:8.2f}G {total / GB:7.2f}G "
                  f"{peak / GB:6.2f}G {used / GB:6.2f}G {max(peak, used) / total:7.2f}")
    print("(peak: while loading; read: after every weight was read once, the steady state the plan "
          "counts as the model's weights; max/est: the larger of the two over the estimate, at most 1 "
          "when the estimate is a safe bound)")


if __name__ == "__main__":
    main()
