"""diffusion.KSampler / KSamplerAdvanced: ComfyUI's sigmas, samplers, noise, denoise and step
ranges, checked against their definitions (computed independently here) and against diffusers
where it has the same sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.nodes.diffusion import tiny

SD_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "num_train_timesteps": 1000, "prediction_type": "epsilon"}
PROMPT = "a red circle on a blue background"


def table() -> np.ndarray:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) of SD's scaled-linear betas, in float64."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    abar = np.cumprod(1 - betas)
    return np.sqrt((1 - abar) / abar)


def sigma_at(t: float, sig: np.ndarray) -> float:
    """Log-linear interpolation of the table at a fractional timestep."""
    lo, hi = math.floor(t), math.ceil(t)
    w = t - lo
    return math.exp((1 - w) * math.log(sig[lo]) + w * math.log(sig[hi]))


def expected_schedule(name: str, n: int) -> list[float]:
    sig = table()
    smin, smax = sig[0], sig[-1]
    if name == "normal":
        return [sigma_at(t, sig) for t in np.linspace(999, 0, n)] + [0.0]
    if name == "sgm_uniform":
        return [sigma_at(t, sig) for t in np.linspace(999, 0, n + 1)[:-1]] + [0.0]
    if name == "karras":
        rho = 7.0
        return [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
                for i in range(n)] + [0.0]
    if name == "exponential":
        return [math.exp(math.log(smax) + i / (n - 1) * (math.log(smin) - math.log(smax)))
                for i in range(n)] + [0.0]
    if name == "simple":
        return [sig[999 - int(i * 1000 / n)] for i in range(n)] + [0.0]
    if name == "ddim_uniform":
        return [sig[t] for t in range(1, 1000, 1000 // n)][::-1] + [0.0]
    if name == "beta":
        from scipy.stats import beta

        ts = np.rint(beta.ppf(1 - np.arange(n) / n, 0.6, 0.6) * 999).astype(int)
        return [sig[t] for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]] + [0.0]
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["normal", "karras", "exponential", "sgm_uniform", "simple",
                                  "ddim_uniform", "beta"])
@pytest.mark.parametrize("steps", [3, 10, 25])
def test_schedules_follow_their_definitions(name, steps):
    from nodeflow.nodes.diffusion.sigmas import SCHEDULERS, model_sampling

    ms = model_sampling(SD_CONFIG)
    ours = SCHEDULERS[name](ms, steps).double().numpy()
    expected = np.array(expected_schedule(name, steps))
    assert ours.shape == expected.shape
    assert ours[-1] == 0.0
    np.testing.assert_allclose(ours, expected, rtol=2e-5)
    assert (np.diff(ours) < 0).all()


def test_noise_levels_of_zero_terminal_snr_and_v_models():
    import torch

    from nodeflow.nodes.diffusion.sigmas import model_sampling

    ms = model_sampling({**SD_CONFIG, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction"})
    # √ᾱ shifted and stretched so that ᾱ_T = 0, then ᾱ_T set to 4.897e-8 (σ_max finite)
    root = np.sqrt(1 / (table() ** 2 + 1))
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])
    abar = root ** 2
    abar[-1] = 4.8973451890853435e-08
    np.testing.assert_allclose(ms.sigmas.double().numpy(), np.sqrt((1 - abar) / abar), rtol=1e-6)
    assert ms.sigma_max == pytest.approx(4518.8, rel=1e-4)
    # v-prediction: x̂₀ = x/(σ²+1) − v·σ/√(σ²+1)
    x, v, s = torch.randn(4), torch.randn(4), 3.0
    assert torch.allclose(ms.calculate_denoised(s, v, x), x / 10 - v * 3 / math.sqrt(10))


def test_denoise_takes_all_steps_from_a_longer_schedule():
    from nodeflow.nodes.diffusion.sigmas import calculate_sigmas, model_sampling, sampling_sigmas

    ms = model_sampling(SD_CONFIG)
    part = sampling_sigmas(ms, "normal", "euler", 4, denoise=0.6)  # ⌊4 / 0.6⌋ = 6 steps
    assert part.tolist() == calculate_sigmas(ms, "normal", 6)[-5:].tolist()
    # dpm_2 plans one step more and drops the next-to-last sigma
    full = calculate_sigmas(ms, "normal", 5, "dpm_2")
    longer = calculate_sigmas(ms, "normal", 6)
    assert len(full) == 6 and full[:-1].tolist() == longer[:-2].tolist() and full[-1] == 0


def test_step_ranges_cut_the_schedule():
    import torch

    from nodeflow.nodes.diffusion.sigmas import step_range

    s = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    assert step_range(s, 0, 2, False).tolist() == [8.0, 4.0, 2.0]
    assert step_range(s, 0, 2, True).tolist() == [8.0, 4.0, 0.0]
    assert step_range(s, 2, 10000, True).tolist() == [2.0, 1.0, 0.0]
    assert len(step_range(s, 4, 10000, True)) == 0


def test_noise_is_comfyuis_cpu_noise_for_the_whole_batch():
    import torch

    from nodeflow.nodes.diffusion.ksampler import prepare_noise

    latent = torch.zeros(3, 4, 5, 6)
    torch.manual_seed(123)
    expected = torch.randn(3, 4, 5, 6)
    assert torch.equal(prepare_noise(latent, 123), expected)
    # batch indices: items drawn one by one from the generator, those indices kept
    gen = torch.Generator().manual_seed(123)
    items = [torch.randn(1, 4, 5, 6, generator=gen) for _ in range(3)]
    assert torch.equal(prepare_noise(latent[:2], 123, [2, 0]), torch.cat([items[2], items[0]]))


# --- one step of each sampler against its update equation ---------------------------------

S0, S1 = 2.5, 1.2


def denoiser(x, sigma):
    """A smooth stand-in for a model: x̂₀ depends on x and σ."""
    return 0.6 * x / (1 + sigma) + 0.1 * sigma


class FixedNoise:
    """Noise that the update equations below can name: the same tensor every call."""

    def __init__(self, like):
        import torch

        self.value = torch.linspace(-1, 1, like.numel()).reshape(like.shape)
        self.calls = []

    def __call__(self, a, b):
        self.calls.append((float(a), float(b)))
        return self.value


def ancestral(s, s_next):
    up = math.sqrt(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2)
    return math.sqrt(s_next ** 2 - up ** 2), up


def expected_step(name, x, n):
    D = denoiser
    d = (x - D(x, S0)) / S0
    if name in ("euler", "ddim"):
        return x + d * (S1 - S0)
    if name == "heun":
        x2 = x + d * (S1 - S0)
        d2 = (x2 - D(x2, S1)) / S1
        return x + (d + d2) / 2 * (S1 - S0)
    if name == "dpm_2":
        mid = math.sqrt(S0 * S1)
        x2 = x + d * (mid - S0)
        return x + (x2 - D(x2, mid)) / mid * (S1 - S0)
    if name == "euler_ancestral":
        down, up = ancestral(S0, S1)
        return x + d * (down - S0) + n * up
    if name == "dpm_2_ancestral":
        down, up = ancestral(S0, S1)
        mid = math.sqrt(S0 * down)
        x2 = x + d * (mid - S0)
        return x + (x2 - D(x2, mid)) / mid * (down - S0) + n * up
    if name in ("lms", "dpmpp_2m"):  # first step of a multistep method: Euler / DPM-Solver-1
        if name == "lms":
            return x + d * (S1 - S0)
        return S1 / S0 * x + (1 - S1 / S0) * D(x, S0)
    if name == "dpmpp_2s_ancestral":
        down, up = ancestral(S0, S1)
        mid = math.sqrt(S0 * down)
        x2 = mid / S0 * x + (1 - mid / S0) * D(x, S0)
        return down / S0 * x + (1 - down / S0) * D(x2, mid) + n * up
    if name == "dpmpp_sde":
        mid = math.sqrt(S0 * S1)
        down, up = ancestral(S0, mid)
        x2 = down / S0 * x + (1 - down / S0) * D(x, S0) + n * up
        down, up = ancestral(S0, S1)
        # with r = 1/2 the second stage uses the midpoint prediction alone
        return down / S0 * x + (1 - down / S0) * D(x2, mid) + n * up
    if name == "dpmpp_2m_sde":  # e^(−2h) x + (1 − e^(−2h)) x̂₀ + σ₁ √(1 − e^(−2h)) n, h = ln(σ₀/σ₁)
        e = (S1 / S0) ** 2
        return e * x + (1 - e) * D(x, S0) + S1 * math.sqrt(1 - e) * n
    if name == "dpmpp_3m_sde":
        e = (S1 / S0) ** 2
        return e * x + (1 - e) * D(x, S0) + S1 * math.sqrt(1 - e) * n
    if name == "lcm":
        return D(x, S0) + n * S1
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral",
                                  "lms", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m",
                                  "dpmpp_2m_sde", "dpmpp_3m_sde", "lcm", "ddim"])
def test_one_step_of_each_sampler_follows_its_update_equation(name):
    import torch

    from nodeflow.nodes.diffusion.solvers import SOLVERS

    x = torch.linspace(-3, 3, 24, dtype=torch.float64).reshape(1, 2, 3, 4)
    noise = FixedNoise(x)
    out = SOLVERS[name](denoiser, x.clone(), torch.tensor([S0, S1]), noise, lambda *a: None)
    torch.testing.assert_close(out, expected_step(name, x, noise.value.double()), rtol=1e-6, atol=1e-9)


def test_multistep_samplers_use_their_history():
    """Second step of DPM-Solver++(2M): x̂₀ corrected by the previous one (r = h_last/h)."""
    import torch

    from nodeflow.nodes.diffusion.solvers import dpmpp_2m

    s = [3.0, 1.5, 0.5]
    x = torch.linspace(-2, 2, 8, dtype=torch.float64)
    out = dpmpp_2m(denoiser, x.clone(), torch.tensor(s, dtype=torch.float64), FixedNoise(x),
                   lambda *a: None)
    x1 = s[1] / s[0] * x + (1 - s[1] / s[0]) * denoiser(x, s[0])
    h, h_last = math.log(s[1] / s[2]), math.log(s[0] / s[1])
    r = h_last / h
    corrected = (1 + 1 / (2 * r)) * denoiser(x1, s[1]) - 1 / (2 * r) * denoiser(x, s[0])
    torch.testing.assert_close(out, s[2] / s[1] * x1 + (1 - s[2] / s[1]) * corrected)


@pytest.mark.parametrize("variant", ["uni_pc", "uni_pc_bh2"])
def test_uni_pc_predictor_and_corrector_follow_their_equations(variant):
    """Two steps of UniPC (order 1): a DPM-Solver-1 predictor in variance-preserving coordinates,
    corrected with the model's prediction at the new level (ρ = 1/2), then a final predictor."""
    import torch

    from nodeflow.nodes.diffusion.solvers import SOLVERS

    s = [2.5, 1.2, 0.4]
    x = torch.linspace(-3, 3, 24, dtype=torch.float64).reshape(1, 2, 3, 4)

    def alpha(v):
        return 1 / math.sqrt(v * v + 1)

    def std(v):
        return v * alpha(v)

    def b(h):
        return -h if variant == "uni_pc" else math.expm1(-h)

    x_vp = x * alpha(s[0])
    m0 = denoiser(x, s[0])
    h = math.log(s[0] / s[1])
    base = std(s[1]) / std(s[0]) * x_vp - alpha(s[1]) * (s[1] / s[0] - 1) * m0
    m1 = denoiser(base / alpha(s[1]), s[1])
    x1 = base - alpha(s[1]) * b(h) * 0.5 * (m1 - m0)
    x2 = std(s[2]) / std(s[1]) * x1 - alpha(s[2]) * (s[2] / s[1] - 1) * m1
    out = SOLVERS[variant](denoiser, x.clone(), torch.tensor(s, dtype=torch.float64), FixedNoise(x),
                           lambda *a: None)
    torch.testing.assert_close(out, x2 / alpha(s[2]))


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "uni_pc", "uni_pc_bh2"])
def test_deterministic_samplers_converge_to_the_exact_ode_solution(name):
    """Data N(μ, s²): the exact denoiser is (s²x + σ²μ)/(s² + σ²) and the probability-flow ODE
    solves to μ + (x − μ)·√(s² + σ²)/√(s² + σ₀²). More steps must bring the sampler closer."""
    import torch

    from nodeflow.nodes.diffusion.solvers import SOLVERS

    mu, s = 0.7, 0.5

    def exact_denoiser(x, sigma):
        return (s * s * x + sigma * sigma * mu) / (s * s + sigma * sigma)

    errors = []
    for n in (10, 40):
        hi, lo = 14.6 ** (1 / 7), 0.03 ** (1 / 7)
        sigmas = [(hi + i / (n - 1) * (lo - hi)) ** 7 for i in range(n)] + [0.0]
        x = torch.linspace(-1, 1, 16, dtype=torch.float64) * 14.6 + mu
        out = SOLVERS[name](exact_denoiser, x.clone(), torch.tensor(sigmas, dtype=torch.float64), None,
                            lambda *a: None)
        exact = mu + (x - mu) * s / math.sqrt(s * s + 14.6 ** 2)
        errors.append(float((out - exact).abs().max()))
    assert errors[1] < 0.05 and errors[1] < errors[0] / 2, errors


def test_lms_weights_integrate_the_interpolating_polynomial():
    from nodeflow.nodes.diffusion.solvers import lms_coefficient

    t = np.array([5.0, 3.0, 2.0, 1.2])
    # order 2 at i = 1: Lagrange basis over t1, t0 integrated from t1 to t2
    w0 = lms_coefficient(2, t, 1, 0)
    w1 = lms_coefficient(2, t, 1, 1)
    a, b = t[1], t[2]
    exact0 = ((b - t[0]) ** 2 - (a - t[0]) ** 2) / 2 / (t[1] - t[0])
    exact1 = ((b - t[1]) ** 2 - (a - t[1]) ** 2) / 2 / (t[0] - t[1])
    assert w0 == pytest.approx(exact0) and w1 == pytest.approx(exact1)
    assert w0 + w1 == pytest.approx(b - a)  # the weights of a constant derivative sum to the step


def test_brownian_noise_is_reproducible_and_unit_variance():
    import torch

    from nodeflow.nodes.diffusion.solvers import NoiseSource

    x = torch.zeros(1, 4, 16, 16)
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0])
    a = NoiseSource(x, 7, sigmas, brownian=True)(3.0, 0.5)
    b = NoiseSource(x, 7, sigmas, brownian=True)(3.0, 0.5)
    c = NoiseSource(x, 8, sigmas, brownian=True)(3.0, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a.std()) - 1) < 0.1


# --- through graphs on a tiny SD checkpoint --------------------------------------------------

def ksampler_graph(node: str = "diffusion.KSampler", size: int = 32, **inputs):
    graph = tiny.load_graph("txt2img", checkpoint={"path": "tiny-sd"}, positive={"text": PROMPT},
                            latent={"width": size, "height": size})
    values = {"seed": 3, "steps": 4, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal"}
    if node == "diffusion.KSamplerAdvanced":
        values["noise_seed"] = values.pop("seed")
    values.update(inputs)
    graph.remove_node("sampler")
    graph.add_node(node, "sampler", values)
    for src, dst in (("checkpoint.model", "model"), ("positive.conditioning", "positive"),
                     ("negative.conditioning", "negative"), ("latent.latent", "latent_image")):
        graph.connect(src, f"sampler.{dst}")
    graph.connect("sampler.latent", "decode.latent")
    return graph


def chain(first: dict, second: dict):
    """Two KSamplerAdvanced nodes, the second carrying on from the first."""
    graph = ksampler_graph("diffusion.KSamplerAdvanced", **first)
    values = {"noise_seed": 3, "steps": 4, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal",
              **second}
    graph.add_node("diffusion.KSamplerAdvanced", "second", values)
    for src, dst in (("checkpoint.model", "model"), ("positive.conditioning", "positive"),
                     ("negative.conditioning", "negative"), ("sampler.latent", "latent_image")):
        graph.connect(src, f"second.{dst}")
    graph.connect("second.latent", "decode.latent")
    return graph


def latents(registry, models_dir, graph, node="sampler"):
    return tiny.run_graph(registry, graph, models_dir, [node]).outputs[node]["latent"].samples


@pytest.mark.parametrize("sampler", ["euler", pytest.param("heun", marks=pytest.mark.slow),
                                     pytest.param("dpm_2", marks=pytest.mark.slow)])
def test_two_chained_samplers_equal_one_over_the_whole_range(registry, models_dir, sd_ckpt,
                                                             torch_threads, sampler):
    whole = latents(registry, models_dir, ksampler_graph(
        "diffusion.KSamplerAdvanced", steps=6, sampler_name=sampler, scheduler="karras"))
    graph = chain({"steps": 6, "end_at_step": 2, "return_with_leftover_noise": True,
                   "sampler_name": sampler, "scheduler": "karras"},
                  {"steps": 6, "start_at_step": 2, "add_noise": False, "sampler_name": sampler,
                   "scheduler": "karras"})
    chained = latents(registry, models_dir, graph, "second")
    assert (chained - whole).abs().max() <= 1e-5
    # without the leftover noise the first half is denoised fully and the result differs
    graph = chain({"steps": 6, "end_at_step": 2, "sampler_name": sampler, "scheduler": "karras"},
                  {"steps": 6, "start_at_step": 2, "add_noise": False, "sampler_name": sampler,
                   "scheduler": "karras"})
    assert (latents(registry, models_dir, graph, "second") - whole).abs().max() > 1e-2


def test_ksampler_equals_advanced_over_all_steps(
        registry, models_dir, sd_ckpt, torch_threads):
    import torch

    plain = latents(registry, models_dir, ksampler_graph(steps=3, sampler_name="dpmpp_2m"))
    advanced = latents(registry, models_dir, ksampler_graph(
        "diffusion.KSamplerAdvanced", steps=3, sampler_name="dpmpp_2m"))
    assert torch.equal(plain, advanced)
    # a range starting at or past the end runs nothing: the latent as it came (an empty one: zeros)
    skipped = latents(registry, models_dir, ksampler_graph("diffusion.KSamplerAdvanced", steps=3,
                                                           start_at_step=3))
    assert skipped.shape == plain.shape and skipped.abs().max() == 0


def test_img2img_denoise_runs_the_low_end_of_a_longer_schedule(registry, models_dir, sd_ckpt,
                                                                torch_threads, pictures):
    """KSampler at denoise 0.5 with 3 steps = steps 3..6 of a 6-step schedule, started from the
    encoded picture's mean plus the seed's noise at that level."""
    def img2img(node, **values):
        graph = ksampler_graph(node, **values)
        graph.add_node("image.Load", "image", {"path": str(pictures["picture"])})
        graph.add_node("diffusion.VAEEncode", "encode", {"tiled": False})
        graph.connect("image.image", "encode.image")
        graph.connect("checkpoint.vae", "encode.vae")
        graph.connect("encode.latent", "sampler.latent_image")
        return graph

    a = latents(registry, models_dir, img2img("diffusion.KSampler", steps=3, denoise=0.5))
    b = latents(registry, models_dir, img2img("diffusion.KSamplerAdvanced", steps=6, start_at_step=3))
    assert (a - b).abs().max() == 0


@pytest.mark.parametrize("sampler", [pytest.param("euler_ancestral", marks=pytest.mark.slow),
                                     "dpmpp_2m_sde"])
def test_stochastic_samplers_give_the_same_bytes_twice(registry, models_dir, sd_ckpt, torch_threads,
                                                      sampler, tmp_path):
    from nodeflow.executor import Executor
    from nodeflow.settings import Settings

    outs = []
    for i in range(2):  # two executors: nothing is shared between the runs
        executor = Executor(registry, Settings(models_dirs=[models_dir], out_dir=tmp_path / str(i)))
        result = tiny.run_graph(registry, ksampler_graph(sampler_name=sampler), executor=executor,
                                outputs=["decode"])
        outs.append(result.outputs["decode"]["image"])
    assert outs[0].tobytes() == outs[1].tobytes()
    other = tiny.run_graph(registry, ksampler_graph(sampler_name=sampler, seed=4), models_dir,
                           ["decode"]).outputs["decode"]["image"]
    assert np.abs(other - outs[0]).max() > 0.01


def test_euler_matches_diffusers_euler_within_the_stated_tolerance(registry, models_dir, sd_ckpt,
                                                                   sd_pipe, torch_threads):
    """ComfyUI's Euler/karras and diffusers' EulerDiscreteScheduler(use_karras_sigmas) from the same
    noise: they differ only in the starting scale (√(1+σ²) vs σ), in timesteps (nearest integer vs
    interpolated) and the last sigma (0.0292 in both). docs/sampling.md states the measured gap."""
    import diffusers
    import torch

    from nodeflow.nodes.diffusion.ksampler import prepare_noise

    ours = tiny.run_graph(registry, ksampler_graph(steps=8, scheduler="karras", seed=5), models_dir,
                          ["decode"]).outputs["decode"]["image"]
    base = sd_pipe.scheduler.config
    sd_pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(base, use_karras_sigmas=True)
    try:
        noise = prepare_noise(torch.zeros(1, 4, 16, 16), 5)  # the tiny VAE halves twice
        ref = sd_pipe(PROMPT, negative_prompt="", height=32, width=32, num_inference_steps=8,
                      guidance_scale=7.5, latents=noise, output_type="np").images
    finally:
        sd_pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(base)
    gap = float(np.abs(ours - ref).max())
    print(f"euler/karras vs diffusers: max pixel difference {gap:.4f}")
    assert gap < 0.005, gap  # measured: 0.0013


def test_bad_step_ranges_and_guidance_are_rejected_before_running(registry, models_dir):
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    graph = ksampler_graph("diffusion.KSamplerAdvanced", start_at_step=8, end_at_step=8, steps=10,
                           guidance_min_t=600.0, guidance_max_t=400.0)
    problems = GraphValidator(registry, Settings(models_dirs=[models_dir])).validate(graph)
    where = {(p.location.node, p.location.socket): p.message for p in problems}
    assert "must be after start_at_step" in where[("sampler", "end_at_step")]
    assert "guidance would never apply" in where[("sampler", "guidance_max_t")]
    graph = ksampler_graph(sampler_name="dpmpp_9000")
    problems = GraphValidator(registry, Settings(models_dirs=[models_dir])).validate(graph)
    assert [(p.location.node, p.location.socket) for p in problems] == [("sampler", "sampler_name")]
