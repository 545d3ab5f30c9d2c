"""diffusion.KSampler (ComfyUI's semantics) against the diffusers scheduler that implements the
same method, side by side: how far apart their pictures are.

Both start from the same CPU noise (ComfyUI's ``prepare_noise``) on a small SD 1.x-like model
with random weights (the SD 1.5 noise schedule), so what differs is only the method's details:
the starting scale (√(1+σ_max²) against σ_max), the network's timestep (nearest integer against
interpolated), the sigma tables' precision, and where the schedules differ by design.

Usage: python bench/sampler_parity.py [--steps 10] [--size 64]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPT = "a red circle on a blue background"
PAIRS = [  # (sampler_name, scheduler, diffusers class, its options)
    ("euler", "normal", "EulerDiscreteScheduler", {}),
    ("euler", "karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    ("heun", "karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True}),
    ("lms", "karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    ("dpmpp_2m", "normal", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    ("dpmpp_2m", "karras", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    ("uni_pc", "karras", "UniPCMultistepScheduler", {"use_karras_sigmas": True}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    import diffusers
    import torch

    from nodeflow.executor import Executor
    from nodeflow.graph import Graph
    from nodeflow.nodes.diffusion.ksampler import prepare_noise
    from nodeflow.registry import load_registry
    from nodeflow.settings import Settings
    from tests.nodes.diffusion import tiny

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        (models / "checkpoints").mkdir()
        folder = tiny.save_sd(models / "checkpoints" / "tiny-sd")
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                                 requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        executor = Executor(load_registry(use_env=False), Settings(models_dirs=[models]))
        latent_size = args.size // pipe.vae_scale_factor
        print(f"{args.steps} steps, {args.size}×{args.size}, cfg 7.5, seed 5")
        print(f"{'KSampler':22} {'diffusers':44} {'max |Δ|':>8} {'PSNR dB':>8}")
        for sampler, schedule, name, options in PAIRS:
            graph = Graph.load(REPO / "graphs" / "txt2img.json")
            graph.set_input("checkpoint", "path", "tiny-sd")
            graph.set_input("positive", "text", PROMPT)
            graph.set_input("latent", "width", args.size)
            graph.set_input("latent", "height", args.size)
            graph.remove_node("sampler")
            graph.add_node("diffusion.KSampler", "sampler", {
                "seed": 5, "steps": args.steps, "cfg": 7.5, "sampler_name": sampler,
                "scheduler": schedule})
            for src, dst in (("checkpoint.model", "model"), ("positive.conditioning", "positive"),
                             ("negative.conditioning", "negative"), ("latent.latent", "latent_image")):
                graph.connect(src, f"sampler.{dst}")
            graph.connect("sampler.latent", "decode.latent")
            result = executor.run(graph, ["decode"])
            if not result.ok:
                raise SystemExit(str(result.failed))
            ours = result.outputs["decode"]["image"]
            base = pipe.scheduler.config
            pipe.scheduler = getattr(diffusers, name).from_config(base, **options)
            noise = prepare_noise(torch.zeros(1, 4, latent_size, latent_size), 5)
            ref = pipe(PROMPT, negative_prompt="", height=args.size, width=args.size,
                       num_inference_steps=args.steps, guidance_scale=7.5, latents=noise,
                       output_type="np").images
            pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(base)
            diff = float(np.abs(ours - ref).max())
            mse = float(((ours - ref) ** 2).mean())
            psnr = 10 * math.log10(1 / mse) if mse > 0 else float("inf")
            label = name + (" (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else "")
            print(f"{sampler + '/' + schedule:22} {label[:44]:44} {diff:8.4f} {psnr:8.1f}", flush=True)


if __name__ == "__main__":
    main()
