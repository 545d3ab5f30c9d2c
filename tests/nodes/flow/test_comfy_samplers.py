"""ComfyUI's heun, dpmpp_2m and euler_ancestral on SD3 and Flux (flow.Sample, semantics comfyui):
the sampler's latents are, byte for byte, those of the sampler written out directly on the same
tiny model (denoised = x − σ·v on ComfyUI's sigmas), ancestral noise comes from the seed, and the
other semantics refuses the names it does not run."""

from __future__ import annotations

from typing import Any

import pytest

from nodeflow.validate import GraphValidator
from tests.nodes.flow.test_txt2img import _EXECUTORS, close, flux_graph, run, sd3_graph

STEPS = 3


# --- the samplers, written out as ComfyUI's k-diffusion loops read --------------------------

def ref_heun(denoise: Any, x: Any, sigmas: Any, noise: Any) -> Any:
    for i in range(len(sigmas) - 1):
        d = (x - denoise(x, sigmas[i])) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - denoise(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def ref_dpmpp_2m(denoise: Any, x: Any, sigmas: Any, noise: Any) -> Any:
    def t_of(s: Any) -> Any:
        return -s.log()

    def s_of(t: Any) -> Any:
        return (-t).exp()

    old = None
    for i in range(len(sigmas) - 1):
        den = denoise(x, sigmas[i])
        t, t_next = t_of(sigmas[i]), t_of(sigmas[i + 1])
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (s_of(t_next) / s_of(t)) * x - (-h).expm1() * den
        else:
            r = (t - t_of(sigmas[i - 1])) / h
            x = (s_of(t_next) / s_of(t)) * x - (-h).expm1() * ((1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old)
        old = den
    return x


def ref_euler_ancestral(denoise: Any, x: Any, sigmas: Any, noise: Any) -> Any:
    for i in range(len(sigmas) - 1):
        den = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
            continue
        s_down = sigmas[i + 1] * (1 + (sigmas[i + 1] / sigmas[i] - 1) * 1.0)
        a_next, a_down = 1 - sigmas[i + 1], 1 - s_down
        x = (s_down / sigmas[i]) * x + (1 - s_down / sigmas[i]) * den
        x = (a_next / a_down) * x + noise() * (sigmas[i + 1] ** 2 - s_down ** 2 * a_next ** 2 / a_down ** 2) ** 0.5
    return x


REFERENCES = {"heun": ref_heun, "dpmpp_2m": ref_dpmpp_2m, "euler_ancestral": ref_euler_ancestral}


def outputs(registry: Any, graph: Any, models: Any, nodes: list[str]) -> dict[str, Any]:
    run(registry, graph, models)  # the shared executor of these tests, which then holds the models
    executor = _EXECUTORS[(models,)]
    result = executor.run(graph, nodes)
    assert result.ok, {k: str(v) for k, v in result.failed.items()}
    return result.outputs


def reference_latents(sampler: str, model: Any, cond: Any, negative: Any, cfg: float, seed: int,
                      scheduler: str) -> Any:
    import torch

    from nodeflow.nodes.flow.sample import image_ids, pack, prompt_embeds, unpack
    from nodeflow.nodes.flow.schedules import comfy_sigmas

    transformer, flux = model.transformer, model.family == "flux"
    h = w = 8
    sigmas = comfy_sigmas(model, scheduler, sampler, STEPS, 1.0)
    x = torch.randn((1, 16, h, w), generator=torch.Generator("cpu").manual_seed(seed)) * sigmas[0]
    embeds, pooled = prompt_embeds(model, cond, "cpu", torch.float32)
    ancestral = torch.Generator("cpu").manual_seed(seed + 1)

    def noise() -> Any:
        drawn = torch.randn((1, 16, h, w), generator=ancestral)
        return pack(drawn) if flux else drawn

    if flux:
        ids, txt = image_ids(h, w, "cpu", torch.float32), torch.zeros(embeds.shape[1], 3)
        guidance = torch.full([1], cond.guidance if cond.guidance is not None else 3.5)

        def velocity(x: Any, sigma: Any) -> Any:
            timestep = (sigma * 1000).expand(1)
            return transformer(hidden_states=x, timestep=timestep / 1000, guidance=guidance, pooled_projections=pooled,
                               encoder_hidden_states=embeds, txt_ids=txt, img_ids=ids, return_dict=False)[0]
    else:
        neg, neg_pooled = prompt_embeds(model, negative, "cpu", torch.float32)

        def velocity(x: Any, sigma: Any) -> Any:
            timestep = (sigma * 1000).expand(2)
            out = transformer(hidden_states=torch.cat([x, x]), timestep=timestep,
                              encoder_hidden_states=torch.cat([neg, embeds]),
                              pooled_projections=torch.cat([neg_pooled, pooled]), return_dict=False)[0]
            uncond, text = out.chunk(2)
            return uncond + cfg * (text - uncond)

    with torch.no_grad():
        start = pack(x) if flux else x
        done = REFERENCES[sampler](lambda x, sigma: x - sigma * velocity(x, sigma), start, sigmas, noise)
    return unpack(done, h, w) if flux else done


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "euler_ancestral"])
def test_flux_sampler_is_the_direct_loop(registry, flow_models, flux_parts, torch_threads, sampler):
    graph = flux_graph(sampler={"sampler": sampler, "scheduler": "simple", "steps": STEPS,
                                "semantics": "comfyui"}, guidance={"guidance": 4.0})
    out = outputs(registry, graph, flow_models, ["unet", "guidance", "sampler"])
    ours = out["sampler"]["latent"].samples
    ref = reference_latents(sampler, out["unet"]["model"], out["guidance"]["conditioning"], None, 1.0, 7, "simple")
    assert ours.shape == ref.shape and ours.numpy().tobytes() == ref.numpy().tobytes()


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
def test_sd3_guided_sampler_is_the_direct_loop(registry, flow_models, sd3_parts, torch_threads, sampler):
    graph = sd3_graph(sampler={"sampler": sampler, "scheduler": "sgm_uniform", "steps": STEPS,
                               "semantics": "comfyui"})
    out = outputs(registry, graph, flow_models, ["checkpoint", "positive", "negative", "sampler"])
    ours = out["sampler"]["latent"].samples
    ref = reference_latents(sampler, out["checkpoint"]["model"], out["positive"]["conditioning"],
                            out["negative"]["conditioning"], 7.0, 7, "sgm_uniform")
    assert ours.numpy().tobytes() == ref.numpy().tobytes()


def test_ancestral_noise_follows_the_seed(registry, flow_models, flux_parts, torch_threads):
    def picture(seed: int) -> Any:
        return run(registry, flux_graph(sampler={"sampler": "euler_ancestral", "scheduler": "simple",
                                                 "steps": STEPS, "semantics": "comfyui", "seed": seed}),
                   flow_models)

    first = picture(7)
    assert close(picture(7), first) == 0
    assert close(picture(8), first) > 0


def test_comfyui_only_samplers_are_refused_with_diffusers_semantics(registry, flow_models):
    from nodeflow.settings import Settings

    graph = flux_graph(sampler={"sampler": "dpmpp_2m"})
    problems = GraphValidator(registry, Settings(models_dirs=[flow_models])).validate(graph)
    located = [p for p in problems if p.location.node == "sampler" and p.location.socket == "sampler"]
    assert located and "comfyui" in located[0].message, [str(p) for p in problems]
