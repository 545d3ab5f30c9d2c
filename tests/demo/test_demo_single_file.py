"""The demo checkpoint as one original-layout .safetensors file (written by
`python -m training.export_single_file` beside the diffusers folder, with its config
sidecar `nodeflow-shapes.config/`): it loads through diffusion.LoadCheckpoint to the folder's
weights and pixels, stays small, and without its sidecar fails with a located error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from training import export_single_file

FOLDER = export_single_file.DEFAULT_SRC
SINGLE = export_single_file.DEFAULT_OUT
SIDECAR = export_single_file.sidecar_path(SINGLE)
REPO = Path(__file__).resolve().parents[2]
STALE = "re-run `python -m training.export_single_file` after retraining"

# The exporter stores the VAE and text encoder as fp16 only if that moves decoded pixels by at
# most 1/255 at the 99th percentile (measured: 0.18/255). Through 4 sampling steps with guidance
# the rounded text encoder adds a little more (measured over seeds 1, 2, 3, 7, 42: max 0.82-1.34/255,
# 99th percentile 0.16-0.26/255). The bounds leave room for a retrained UNet; the weights themselves
# are checked bit for bit, and a wrong tensor name or layout would move pixels by far more.
P99_TOLERANCE = 1 / 255
MAX_TOLERANCE = 4 / 255


def _run(path: str, outputs: list[str]):
    from nodeflow.graph import Graph
    from nodeflow.testing import run_graph

    graph = Graph.load(REPO / "graphs" / "txt2img.json")
    graph.set_input("checkpoint", "path", path)
    graph.set_input("sampler", "steps", 4)
    graph.set_input("sampler", "seed", 7)
    return run_graph(graph, outputs=outputs).outputs


@pytest.fixture(scope="module")
def renders():
    """The checkpoint node's outputs and the decoded 64×64 image, from the folder and the file
    (both found by name among the shipped demo models)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: _run(name, ["checkpoint", "decode"])
                for name in ("nodeflow-shapes", "nodeflow-shapes.safetensors")}
    finally:
        torch.set_num_threads(threads)


def _stored_dtypes(header: dict, prefix: str) -> set[str]:
    return {entry["dtype"] for key, entry in header.items() if key.startswith(prefix)}


def test_single_file_loads_the_folders_weights_and_pixels(renders):
    import torch
    from safetensors import safe_open

    from nodeflow.models import safetensors_header

    folder, single = renders["nodeflow-shapes"], renders["nodeflow-shapes.safetensors"]
    header = safetensors_header(SINGLE)
    parts = {  # part: (folder module, file module, its tensors in the file, its weights in the folder)
        "unet": (folder["checkpoint"]["model"].unet, single["checkpoint"]["model"].unet,
                 "model.diffusion_model.", FOLDER / "unet" / "diffusion_pytorch_model.safetensors"),
        "vae": (folder["checkpoint"]["vae"].vae, single["checkpoint"]["vae"].vae,
                "first_stage_model.", FOLDER / "vae" / "diffusion_pytorch_model.safetensors"),
        "text_encoder": (folder["checkpoint"]["clip"].text_encoder,
                         single["checkpoint"]["clip"].text_encoder,
                         "cond_stage_model.transformer.", FOLDER / "text_encoder" / "model.safetensors"),
    }
    rounded = []
    for name, (from_folder, from_file, prefix, weights) in parts.items():
        stored = _stored_dtypes(header, prefix)
        with safe_open(str(weights), "pt") as fh:
            as_in_folder = {str(fh.get_slice(k).get_dtype()) for k in fh.keys()}
        assert len(stored) == 1, (name, stored)
        if stored != as_in_folder:
            assert stored == {"F16"}, (name, stored, as_in_folder)
            rounded.append(name)
        expected, got = from_folder.state_dict(), from_file.state_dict()
        assert set(got) == set(expected), name
        for key, tensor in expected.items():
            if name in rounded and tensor.is_floating_point():
                tensor = tensor.to(torch.float16).to(tensor.dtype)
            assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), \
                f"{name}.{key} differs from the folder: {STALE}"
    assert rounded in ([], ["vae", "text_encoder"])
    assert folder["checkpoint"]["model"].scheduler_config == single["checkpoint"]["model"].scheduler_config

    a, b = folder["decode"]["image"], single["decode"]["image"]
    assert a.shape == b.shape == (1, 64, 64, 3)
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if not rounded:
        assert diff.max() == 0
    else:
        assert np.quantile(diff, 0.99) <= P99_TOLERANCE and diff.max() <= MAX_TOLERANCE, \
            (np.quantile(diff, 0.99) * 255, diff.max() * 255)


def test_single_file_is_small_and_its_sidecar_holds_only_configs():
    assert SINGLE.stat().st_size < 12_000_000
    files = {p.relative_to(SIDECAR).as_posix() for p in SIDECAR.rglob("*") if p.is_file()}
    assert {"model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
            "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"} <= files
    assert all(f.endswith((".json", ".txt")) for f in files), files
    for f in files:  # the configs are the folder's own
        assert (SIDECAR / f).read_bytes() == (FOLDER / f).read_bytes(), f"{f}: {STALE}"


def test_single_file_without_its_sidecar_fails_naming_the_file(tmp_path, capsys):
    from nodeflow.cli import main
    from nodeflow.errors import GraphInvalid, NodeflowError
    from nodeflow.nodes.diffusion.loaders import load_checkpoint

    alone = tmp_path / "nodeflow-shapes.safetensors"
    shutil.copy(SINGLE, alone)

    with pytest.raises(GraphInvalid) as caught:
        _run(str(alone), ["decode"])
    (problem,) = caught.value.problems
    assert (problem.location.node, problem.location.socket) == ("checkpoint", "path")
    assert "nodeflow-shapes.safetensors" in problem.message
    assert str(tmp_path / "nodeflow-shapes.config") in problem.message

    with pytest.raises(NodeflowError) as caught_at_load:  # a path that comes in by a link
        load_checkpoint(alone)
    assert "nodeflow-shapes.safetensors" in caught_at_load.value.message
    assert "config folder" in (caught_at_load.value.hint or "")

    code = main(["run", str(REPO / "graphs" / "txt2img.json"), "--set", f"checkpoint.path={alone}",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "nodeflow-shapes.safetensors" in err and "Traceback" not in err, err


def test_memory_estimate_of_the_single_file_reads_its_sidecar():
    # the demo VAE downsamples 4x; the SD1.5 config the file would otherwise be read
    # with says 8x, which would make every latent-size estimate 4 times too small
    from nodeflow.nodes.diffusion.loaders import checkpoint_estimate

    from_folder = checkpoint_estimate(FOLDER, "fp32")
    from_file = checkpoint_estimate(SINGLE, "fp32")
    assert from_folder["vae"].info["scale"] == from_file["vae"].info["scale"] == 4
    assert from_file["model"].info["latent_scale"] == 4
    assert from_file["vae"].info["channels"] == from_folder["vae"].info["channels"]
