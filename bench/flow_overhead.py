"""Engine overhead of the SD3 and Flux text-to-image graphs against the diffusers pipeline call.

Runs graphs/sd3_txt2img.json and graphs/flux_txt2img.json (the latter with its checkpoint
loaded from a diffusers folder) and StableDiffusion3Pipeline / FluxPipeline with the same
weights, seed and scheduler, alternated in one process with torch on one thread, and prints
the median time ratio per family. Every graph run recomputes every node (text encoding,
sampling, decoding), as the pipeline call does; models stay loaded in both.

    python bench/flow_overhead.py             # scaled-down models (width 256, 64 text tokens
                                              # per prompt), 128×128, 6 steps: about 2 minutes
    python bench/flow_overhead.py --tiny      # the tests' tiny models (overhead-dominated)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "a red fox in the snow"


def scaled_parts(family: str) -> dict[str, Any]:
    """The tests' components with a wider, deeper transformer (compute closer to real use)."""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    from tests.nodes.flow import tiny

    torch.manual_seed(0)
    if family == "sd3":
        parts = tiny.sd3_components()
        parts["transformer"] = SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=16, num_layers=6, attention_head_dim=64,
            num_attention_heads=4, joint_attention_dim=256, caption_projection_dim=256,
            pooled_projection_dim=192, out_channels=16, pos_embed_max_size=32, qk_norm="rms_norm").eval()
    else:
        parts = tiny.flux_components()
        parts["transformer"] = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=3, num_single_layers=6, attention_head_dim=64,
            num_attention_heads=4, joint_attention_dim=256, pooled_projection_dim=64, guidance_embeds=True,
            axes_dims_rope=(8, 28, 28)).eval()
    return parts


def setup(family: str, tiny_models: bool, work: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    import diffusers
    import torch

    from nodeflow.executor import Executor
    from nodeflow.registry import load_registry
    from nodeflow.settings import Settings
    from tests.nodes.diffusion import tiny as sd_tiny
    from tests.nodes.flow import tiny

    torch.set_num_threads(1)
    parts = (tiny.sd3_components() if family == "sd3" else tiny.flux_components()) if tiny_models \
        else scaled_parts(family)
    folder = work / "checkpoints" / f"bench-{family}"
    cls = diffusers.StableDiffusion3Pipeline if family == "sd3" else diffusers.FluxPipeline
    cls(**parts).save_pretrained(folder)
    pipe = cls.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    size, steps, length = (64, 4, 0) if tiny_models else (128, 6, 64)
    executor = Executor(load_registry(use_env=False), Settings(models_dirs=[work], out_dir=work / "out"))
    sampler = {"steps": steps, "seed": 0}
    if family == "sd3":
        graph = sd_tiny.load_graph("sd3_txt2img", checkpoint={"path": folder.name},
                                   positive={"text": PROMPT, "t5_length": length},
                                   negative={"text": "", "t5_length": length},
                                   latent={"width": size, "height": size}, sampler={**sampler, "cfg": 7.0})
        kwargs = {"guidance_scale": 7.0, "negative_prompt": ""}
    else:
        graph = sd_tiny.load_graph("flux_txt2img", positive={"text": PROMPT, "t5_length": length},
                                   latent={"width": size, "height": size}, sampler=sampler)
        for node in ("unet", "clip", "vae"):
            graph.remove_node(node)
        graph.add_node("flow.LoadCheckpoint", "checkpoint", {"path": folder.name})
        for source, target in (("checkpoint.model", "sampler.model"), ("checkpoint.clip", "positive.clip"),
                               ("checkpoint.vae", "decode.vae")):
            graph.connect(source, target)
        kwargs = {"guidance_scale": 3.5}
    if length:
        kwargs["max_sequence_length"] = length
    kwargs.update(height=size, width=size, num_inference_steps=steps)
    return executor, graph, pipe, kwargs


def run_graph(executor: Any, graph: Any, seed: int) -> Any:
    graph.set_input("sampler", "seed", seed)
    result = executor.run(graph, ["decode"], force=list(graph.nodes))
    assert result.ok, result.failed
    return result.outputs["decode"]["image"]


def run_pipe(pipe: Any, seed: int, kwargs: dict[str, Any]) -> Any:
    import torch

    return pipe(PROMPT, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kwargs).images


def bench(family: str, tiny_models: bool, repeats: int) -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        executor, graph, pipe, kwargs = setup(family, tiny_models, Path(tmp))
        ours, ref = run_graph(executor, graph, 0), run_pipe(pipe, 0, kwargs)  # warm-up and fidelity
        diff = np.abs(np.round(ours * 255) - np.round(ref * 255)).max()
        t_graph: list[float] = []
        t_pipe: list[float] = []
        c_graph: list[float] = []
        c_pipe: list[float] = []
        ratios, cpu_ratios = [], []
        for i in range(repeats):
            for first in ("graph", "pipe") if i % 2 == 0 else ("pipe", "graph"):
                t, c = time.perf_counter(), time.process_time()
                if first == "graph":
                    run_graph(executor, graph, 100 + i)
                    t_graph.append(time.perf_counter() - t)
                    c_graph.append(time.process_time() - c)
                else:
                    run_pipe(pipe, 100 + i, kwargs)
                    t_pipe.append(time.perf_counter() - t)
                    c_pipe.append(time.process_time() - c)
            ratios.append(t_graph[-1] / t_pipe[-1])
            cpu_ratios.append(c_graph[-1] / c_pipe[-1])
        med = statistics.median
        what = "tiny models" if tiny_models else "scaled-down models"
        print(f"{family}: {what}, {kwargs['width']}×{kwargs['height']}, {kwargs['num_inference_steps']} steps, "
              f"{repeats} alternated pairs; max pixel difference {diff:.0f}/255")
        print(f"  graph    median {med(t_graph) * 1e3:9.1f} ms")
        print(f"  pipeline median {med(t_pipe) * 1e3:9.1f} ms")
        print(f"  ratio graph/pipeline: median {med(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
        # CPU time of this process: less disturbed than wall time on a machine shared with others
        print(f"  CPU-time ratio graph/pipeline: median {med(cpu_ratios):.3f} (min {min(cpu_ratios):.3f}, "
              f"max {max(cpu_ratios):.3f}; {med(c_graph) * 1e3:.0f} ms against {med(c_pipe) * 1e3:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models")
    parser.add_argument("--repeats", type=int, default=7, help="alternated pairs to time")
    parser.add_argument("--family", choices=("sd3", "flux", "both"), default="both")
    args = parser.parse_args()
    for family in ("sd3", "flux") if args.family == "both" else (args.family,):
        bench(family, args.tiny, args.repeats)


if __name__ == "__main__":
    main()
