"""The scheduler settings a run used are visible in its events, and Sample can set the timestep
spacing that otherwise comes from the checkpoint (folders and single files can differ there)."""

from __future__ import annotations

import numpy as np

from tests.nodes.diffusion import tiny


def test_spacing_override_matches_the_pipeline_and_is_reported(registry, models_dir, sd_ckpt, sd_pipe,
                                                               torch_threads):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from nodeflow.events import NodeProgress
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    executor = Executor(registry, Settings(models_dirs=[models_dir], base_dir=tiny.REPO / "graphs"))

    def render(spacing: str):
        graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, latent={"width": 32, "height": 32},
                                sampler={"steps": 3, "seed": 6, "timestep_spacing": spacing})
        events: list = []
        result = executor.run(graph, ["decode"], on_event=events.append)
        assert result.ok, {k: str(v) for k, v in result.failed.items()}
        said = [e.message for e in events if isinstance(e, NodeProgress) and e.node == "sampler" and e.message]
        return result.outputs["decode"]["image"], said

    trailing, said = render("trailing")
    auto, said_auto = render("auto")
    configured = sd_pipe.scheduler.config.get("timestep_spacing", "linspace")
    assert said and "EulerDiscreteScheduler" in said[0] and "timestep_spacing trailing" in said[0]
    assert f"timestep_spacing {configured}" in said_auto[0]
    assert np.abs(trailing - auto).max() > 1e-2

    text = tiny.load_graph("txt2img")
    scheduler = EulerDiscreteScheduler.from_config(sd_pipe.scheduler.config, timestep_spacing="trailing")
    pipe = StableDiffusionPipeline(**{**sd_pipe.components, "scheduler": scheduler})
    ref = pipe(text.nodes["positive"].inputs["text"], negative_prompt=text.nodes["negative"].inputs["text"],
               height=32, width=32, num_inference_steps=3, guidance_scale=text.nodes["sampler"].inputs["cfg"],
               generator=torch.Generator("cpu").manual_seed(6), output_type="np").images
    assert np.abs(trailing - ref).max() <= 1e-5
