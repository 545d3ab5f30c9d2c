"""Engine overhead of a text-to-image graph against the same diffusers pipeline call.

Runs graphs/txt2img.json and StableDiffusionPipeline with the same components, seed and
scheduler, alternated in one process, and prints the median time ratio; then the time a
re-run saves when only the seed changes (model loading and text encoding come from the
cache); then the peak RSS of a graph run against a pipeline run (each in its own process).

    python bench/diffusion_overhead.py            # tiny random models (fast)
    python bench/diffusion_overhead.py --full     # full-size SD 1.5 architecture, random
                                                  # weights, 256×256, 4 steps (minutes)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "a red circle on a blue background"


def full_components() -> dict[str, Any]:
    """SD 1.5's architecture (from the carried configs) with random weights."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodeflow.nodes.diffusion.clip_vocab import clip_tokenizer
    from nodeflow.nodes.diffusion.single_file import CONFIGS

    folder = CONFIGS / "sd15"
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    scheduler = PNDMScheduler.from_config(PNDMScheduler.load_config(folder / "scheduler"))
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": te.eval(),
            "tokenizer": clip_tokenizer(), "scheduler": scheduler}


def setup(full: bool, work: Path) -> tuple[Any, Any, Any, int, int]:
    """(executor, graph, pipeline, size, steps) sharing one set of components."""
    import torch
    from diffusers import StableDiffusionPipeline

    from nodeflow.executor import Executor
    from nodeflow.models import ModelManager
    from nodeflow.registry import load_registry
    from nodeflow.settings import Settings
    from tests.nodes.diffusion import tiny

    torch.set_num_threads(1)
    ckpt = work / "checkpoints" / "bench"
    models = ModelManager()
    if full:
        components = full_components()
        size, steps = 256, 4
        ckpt.mkdir(parents=True)
        (ckpt / "model_index.json").write_text("{}")
        from nodeflow.nodes.diffusion.loaders import Checkpoint
        from nodeflow.nodes.diffusion.types import Autoencoder, DiffusionModel, TextEncoders

        # 3.4 GB of random UNet weights are not worth writing to disk: hand the model
        # manager the loaded checkpoint, as if it had read the folder.
        prepared = Checkpoint(
            DiffusionModel(components["unet"], dict(components["scheduler"].config), "sd1", 8),
            TextEncoders("sd1", components["tokenizer"], components["text_encoder"]),
            Autoencoder(components["vae"], "sd1"))
        models.load(ckpt, lambda _p: prepared, kind="checkpoint")
    else:
        tiny.save_sd(ckpt)
        components = None
        size, steps = 64, 8
    registry = load_registry(use_env=False)
    executor = Executor(registry, Settings(models_dirs=[work], out_dir=work / "out"), models=models)
    graph = tiny.load_graph("txt2img", checkpoint={"path": "bench"}, positive={"text": PROMPT},
                            latent={"width": size, "height": size},
                            sampler={"steps": steps, "sampler": "euler", "cfg": 7.5})
    if components is None:  # the graph's own loaded components, handed to the pipeline
        executor.run(graph, ["checkpoint"])
        out = executor.cache.get(executor._structure[1].keys["checkpoint"])  # noqa: SLF001
        components = {"unet": out["model"].unet, "vae": out["vae"].vae,
                      "text_encoder": out["clip"].text_encoder, "tokenizer": out["clip"].tokenizer,
                      "scheduler": _euler(out["model"].scheduler_config)}
    else:
        components["scheduler"] = _euler(components["scheduler"].config)
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return executor, graph, pipe, size, steps


def _euler(config: Any) -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.from_config(dict(config))


def run_graph(executor: Any, graph: Any, seed: int, force: bool = True) -> Any:
    graph.set_input("sampler", "seed", seed)
    everything = list(graph.nodes) if force else []
    result = executor.run(graph, ["decode"], force=everything)
    assert result.ok, result.failed
    return result.outputs["decode"]["image"]


def run_pipe(pipe: Any, seed: int, size: int, steps: int) -> Any:
    import torch

    return pipe(PROMPT, negative_prompt="", height=size, width=size, num_inference_steps=steps,
                guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(seed),
                output_type="np").images


def overhead(full: bool, repeats: int) -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        executor, graph, pipe, size, steps = setup(full, Path(tmp))
        ours = run_graph(executor, graph, 0)  # warm-up, and a fidelity check
        ref = run_pipe(pipe, 0, size, steps)
        print(f"max |graph - pipeline| = {np.abs(ours - ref).max():.2e}")
        ratios, t_graph, t_pipe = [], [], []
        for i in range(repeats):
            for first in ("graph", "pipe") if i % 2 == 0 else ("pipe", "graph"):
                t = time.perf_counter()
                if first == "graph":
                    run_graph(executor, graph, 100 + i)
                    t_graph.append(time.perf_counter() - t)
                else:
                    run_pipe(pipe, 100 + i, size, steps)
                    t_pipe.append(time.perf_counter() - t)
            ratios.append(t_graph[-1] / t_pipe[-1])
        med = statistics.median
        print(f"engine overhead ({'full-size SD 1.5 UNet, 256×256' if full else 'tiny models, 64×64'}, "
              f"{steps} steps, {repeats} alternated pairs)")
        print(f"  graph    median {med(t_graph) * 1e3:9.1f} ms")
        print(f"  pipeline median {med(t_pipe) * 1e3:9.1f} ms")
        print(f"  ratio graph/pipeline: median {med(ratios):.3f} (min {min(ratios):.3f}, "
              f"max {max(ratios):.3f})")

    with tempfile.TemporaryDirectory() as tmp:
        from nodeflow.executor import Executor

        executor, graph, _pipe, size, steps = setup(full, Path(tmp))
        cold_executor = Executor(executor.registry, executor.settings)
        if full:  # the full model is prepared in memory: start from the same manager
            cold_executor = executor
        t = time.perf_counter()
        run_graph(cold_executor, graph, 1, force=False)
        cold = time.perf_counter() - t
        graph.set_input("sampler", "seed", 2)
        t = time.perf_counter()
        result = cold_executor.run(graph, ["decode"])
        rerun = time.perf_counter() - t
        print("re-run after changing only the seed")
        print(f"  first run {cold * 1e3:9.1f} ms; re-run {rerun * 1e3:9.1f} ms "
              f"(saved {(cold - rerun) * 1e3:.1f} ms); from the cache: {', '.join(sorted(result.cached))}")


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss(mode: str, full: bool) -> None:
    """Peak RSS (KiB) while one generation runs, models already in memory (Linux only)."""
    import gc

    with tempfile.TemporaryDirectory() as tmp:
        executor, graph, pipe, size, steps = setup(full, Path(tmp))
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
        before = _vm("VmRSS")
        if mode == "graph":
            run_graph(executor, graph, 0)
        else:
            run_pipe(pipe, 0, size, steps)
        print(before, _vm("VmHWM"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full-size SD 1.5 architecture")
    parser.add_argument("--repeats", type=int, default=None, help="alternated pairs to time")
    parser.add_argument("--rss", choices=("graph", "pipeline"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss:
        peak_rss(args.rss, args.full)
        return
    overhead(args.full, args.repeats or (3 if args.full else 15))
    rss = {}
    for mode in ("graph", "pipeline"):
        cmd = [sys.executable, __file__, "--rss", mode] + (["--full"] if args.full else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
        rss[mode] = (int(out[-2]) / 1024, int(out[-1]) / 1024)
    print("peak RSS while one generation runs (each in a fresh process, models already loaded)")
    for mode, (before, peak) in rss.items():
        print(f"  {mode:8s} before {before:8.1f} MiB, peak {peak:8.1f} MiB (+{peak - before:.1f})")
    print(f"  ratio of peaks graph/pipeline: {rss['graph'][1] / rss['pipeline'][1]:.3f}")


if __name__ == "__main__":
    main()
