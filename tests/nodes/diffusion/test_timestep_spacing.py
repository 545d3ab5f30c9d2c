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


def test_saved_pictures_and_the_memory_report_carry_the_settings_that_ran(registry, models_dir, sd_ckpt,
                                                                          tmp_path, torch_threads):
    """The PNG's nodeflow-settings chunk says which scheduler settings the sampler resolved (also
    when the sampler was served from the cache), and so does the memory report."""
    import json

    from nodeflow.events import NodeProgress
    from nodeflow.executor import Executor
    from nodeflow.models import ModelManager, memory_report
    from nodeflow.provenance import SETTINGS_KEY, png_text_from_file
    from nodeflow.settings import Settings

    models = ModelManager()
    executor = Executor(registry, Settings(models_dirs=[models_dir], out_dir=tmp_path,
                                           base_dir=tiny.REPO / "graphs"), models=models)

    def chunk(path):
        with open(path, "rb") as fh:
            return json.loads(png_text_from_file(fh, SETTINGS_KEY))

    graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, latent={"width": 32, "height": 32},
                            sampler={"steps": 4, "seed": 6, "timestep_spacing": "trailing",
                                     "guidance_max_t": 500.0}, save={"prefix": "first"})
    events: list = []
    result = executor.run(graph, on_event=events.append)
    assert result.ok, {k: str(v) for k, v in result.failed.items()}
    said = next(e.message for e in events if isinstance(e, NodeProgress) and e.node == "sampler" and e.message)
    facts = chunk(result.files[0])["sampler"]
    assert f"timestep_spacing {facts['timestep_spacing']}" in said and f"prediction {facts['prediction_type']}" in said
    assert facts["timestep_spacing"] == "trailing" and facts["scheduler"] == "EulerDiscreteScheduler"
    assert facts["steps"] == "4" and facts["steps_run"] == "4" and facts["guidance_t"] == "0–500"
    assert facts["cfg"] == "7.5" and facts["timesteps"].startswith("999")

    report = memory_report(models, result.ran, result.notes)
    line = next(x for x in report.splitlines() if "ran with:" in x)
    assert "timestep_spacing trailing" in line and "scheduler EulerDiscreteScheduler" in line
    assert "estimated for: 32×32, batch 1 with guidance" in report

    # Only the prefix changes: the sampler comes from the cache, its settings still reach the PNG.
    graph.set_input("save", "prefix", "second")
    again = executor.run(graph)
    assert again.ok and "sampler" not in again.ran and "save" in again.ran
    assert chunk(again.files[0])["sampler"] == facts

    # The spacing the checkpoint's config gives, when not overridden.
    graph.set_input("sampler", "timestep_spacing", "auto")
    auto = executor.run(graph)
    assert chunk(auto.files[0])["sampler"]["timestep_spacing"] != "trailing"
