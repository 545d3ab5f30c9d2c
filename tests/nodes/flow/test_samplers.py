"""Samplers, schedules and shift: flow.Sample with heun or Karras sigmas gives the SD3 pipeline's
pixels with the same scheduler; ModelSamplingSD3 changes the shift; Flux runs with heun."""

from __future__ import annotations

from typing import Any

import pytest

from tests.nodes.flow.test_txt2img import close, flux_graph, pipeline_pixels, run, sd3_graph


def with_scheduler(pipe: Any, class_name: str, **kwargs: Any) -> Any:
    import diffusers

    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **kwargs)
    return pipe


@pytest.mark.parametrize(("sampler", "schedule", "class_name", "extra"), [
    ("heun", "normal", "FlowMatchHeunDiscreteScheduler", {}),
    ("euler", "karras", "FlowMatchEulerDiscreteScheduler", {"use_karras_sigmas": True}),
])
def test_sd3_sampler_matches_pipeline(registry, flow_models, sd3_parts, sd3_pipe, torch_threads, sampler,
                                      schedule, class_name, extra):
    ours = run(registry, sd3_graph(sampler={"sampler": sampler, "scheduler": schedule, "steps": 3}), flow_models)
    base = sd3_pipe.scheduler
    try:
        ref = pipeline_pixels(with_scheduler(sd3_pipe, class_name, **extra), steps=3, guidance_scale=7.0,
                              negative_prompt="")
    finally:
        sd3_pipe.scheduler = base
    assert close(ours, ref) <= 1


def test_shift_changes_the_picture_and_shift_3_is_the_default(registry, flow_models, sd3_parts,
                                                               torch_threads):
    default = run(registry, sd3_graph(), flow_models)
    graph = sd3_graph()
    graph.add_node("flow.ModelSamplingSD3", "shift", {"shift": 3.0})
    graph.connect("checkpoint.model", "shift.model")
    graph.connect("shift.model", "sampler.model")
    assert close(run(registry, graph, flow_models), default) == 0
    graph.set_input("shift", "shift", 6.0)
    assert close(run(registry, graph, flow_models), default) > 3


def test_flux_heun_and_resolution_shift_run(registry, flow_models, flux_parts, torch_threads):
    euler = run(registry, flux_graph(), flow_models)
    heun = run(registry, flux_graph(sampler={"sampler": "heun"}), flow_models)
    assert heun.shape == euler.shape and close(heun, euler) > 0
    graph = flux_graph()
    graph.add_node("flow.ModelSamplingFlux", "shift", {"width": 1024, "height": 1024})
    graph.connect("unet.model", "shift.model")
    graph.connect("shift.model", "sampler.model")
    # shifted as for a 1024×1024 picture (mu 1.15) rather than for the 64×64 one sampled
    assert close(run(registry, graph, flow_models), euler) > 3
