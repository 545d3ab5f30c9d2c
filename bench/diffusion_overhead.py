"""Engine overhead of a text-to-image graph against the same diffusers pipeline call.

Runs graphs/txt2img.json and StableDiffusionPipeline with the same components, seed and
scheduler, alternated in one process, and prints the median wall and CPU time of each and
the median of the per-pair ratios (CPU time is the steadier figure on a shared machine);
then the time a re-run saves when only the seed changes, against a first run that has to
load the model (with --full, build it: its 3.4 GB of random weights are not written to
disk) and encode the prompt; then the peak RSS of a graph run against a pipeline run
(each in its own process).

    python bench/diffusion_overhead.py            # tiny random models (fast), 21 pairs
    python bench/diffusion_overhead.py --full     # full-size SD 1.5 architecture, random
                                                  # weights, 256×256, 4 steps, 8 pairs (long)
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


def build_full_checkpoint(_path: Path) -> Any:
    """The loaded checkpoint of SD 1.5's architecture with random weights (see full_components)."""
    from nodeflow.nodes.diffusion.loaders import Checkpoint
    from nodeflow.nodes.diffusion.types import Autoencoder, DiffusionModel, TextEncoders

    made = full_components()
    return Checkpoint(DiffusionModel(made["unet"], dict(made["scheduler"].config), "sd1", 8),
                      TextEncoders("sd1", made["tokenizer"], made["text_encoder"]),
                      Autoencoder(made["vae"], "sd1"))


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
        size, steps = 256, 4
        ckpt.mkdir(parents=True)
        (ckpt / "model_index.json").write_text("{}")
        # 3.4 GB of random UNet weights are not worth writing to disk: the model manager's
        # loader builds the checkpoint from its configs, as if it had read the folder.
        prepared = models.load(ckpt, build_full_checkpoint, kind="checkpoint")
        components = {"unet": prepared.model.unet, "vae": prepared.vae.vae,
                      "text_encoder": prepared.clip.text_encoder,
                      "tokenizer": prepared.clip.tokenizer,
                      "scheduler": _euler(prepared.model.scheduler_config)}
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
        out = executor.run(graph, ["checkpoint"]).outputs["checkpoint"]
        components = {"unet": out["model"].unet, "vae": out["vae"].vae,
                      "text_encoder": out["clip"].text_encoder, "tokenizer": out["clip"].tokenizer,
                      "scheduler": _euler(out["model"].scheduler_config)}
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


def clocked(action: Any) -> tuple[float, float]:
    """Wall and CPU seconds of ``action()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def overhead(full: bool, repeats: int) -> None:
    import numpy as np

    from nodeflow.executor import Executor
    from nodeflow.models import ModelManager

    med = statistics.median
    with tempfile.TemporaryDirectory() as tmp:
        executor, graph, pipe, size, steps = setup(full, Path(tmp))
        ours = run_graph(executor, graph, 0)  # warm-up, and a fidelity check
        ref = run_pipe(pipe, 0, size, steps)
        print(f"max |graph - pipeline| = {np.abs(ours - ref).max():.2e}")
        times: dict[str, list[tuple[float, float]]] = {"graph": [], "pipe": []}
        for i in range(repeats):
            for first in ("graph", "pipe") if i % 2 == 0 else ("pipe", "graph"):
                if first == "graph":
                    times["graph"].append(clocked(lambda: run_graph(executor, graph, 100 + i)))  # noqa: B023
                else:
                    times["pipe"].append(clocked(lambda: run_pipe(pipe, 100 + i, size, steps)))  # noqa: B023
        print(f"engine overhead ({'full-size SD 1.5 UNet, 256×256' if full else 'tiny models, 64×64'}, "
              f"{steps} steps, {repeats} alternated pairs)")
        for key, label in (("graph", "graph   "), ("pipe", "pipeline")):
            print(f"  {label} median {med(w for w, _c in times[key]) * 1e3:9.1f} ms wall, "
                  f"{med(c for _w, c in times[key]) * 1e3:9.1f} ms CPU")
        for index, label in ((1, "CPU "), (0, "wall")):
            ratios = [g[index] / p[index] for g, p in zip(times["graph"], times["pipe"], strict=True)]
            print(f"  ratio graph/pipeline ({label}): median {med(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f})")

        # A first run that must load the model (a new model manager) and encode the prompt,
        # then the same graph with only the seed changed.
        models = ModelManager()
        cold_executor = Executor(executor.registry, executor.settings, models=models)

        def first_run() -> None:
            if full:  # the loader builds the random checkpoint, as reading the folder would
                models.load(Path(tmp) / "checkpoints" / "bench", build_full_checkpoint,
                            kind="checkpoint")
            run_graph(cold_executor, graph, 1, force=False)

        cold_wall, cold_cpu = clocked(first_run)
        graph.set_input("sampler", "seed", 2)
        results = []
        rerun_wall, rerun_cpu = clocked(lambda: results.append(cold_executor.run(graph, ["decode"])))
        print("re-run after changing only the seed (the first run loads the model"
              f"{', built from its configs,' if full else ''} and encodes the prompt)")
        print(f"  first run {cold_wall * 1e3:9.1f} ms wall, {cold_cpu * 1e3:9.1f} ms CPU; re-run "
              f"{rerun_wall * 1e3:9.1f} ms wall, {rerun_cpu * 1e3:9.1f} ms CPU (saved "
              f"{(cold_cpu - rerun_cpu) * 1e3:.1f} ms CPU); from the cache: "
              f"{', '.join(sorted(results[0].cached))}")


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
    overhead(args.full, args.repeats or (8 if args.full else 21))
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
