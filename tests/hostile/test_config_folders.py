"""A single-file checkpoint's own config folder (model.config/) is checked before anything is
built from it: configs declaring a huge architecture are refused with the figure, and files too
large to be configs (a 2 GB "config") are refused from their size, never read."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from .util import assert_clean_error, cli, write_graph


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    """A tiny SD 1.x single file with its config folder beside it, in a models folder."""
    from tests.nodes.diffusion import ldm, tiny

    root = tmp_path_factory.mktemp("config-folders")
    folder = tiny.save_sd(root / "diffusers")
    models = root / "models"
    (models / "checkpoints").mkdir(parents=True)
    target = models / "checkpoints" / "tiny.safetensors"
    ldm.save_sd1_single_file(folder, target)
    ldm.config_beside(target, folder)
    return models


def _copy(models, tmp_path, name):
    """The models folder with the checkpoint and its config folder copied under ``name``."""
    out = tmp_path / "models"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(models / "checkpoints" / "tiny.safetensors", out / "checkpoints" / f"{name}.safetensors")
    shutil.copytree(models / "checkpoints" / "tiny.config", out / "checkpoints" / f"{name}.config")
    return out, out / "checkpoints" / f"{name}.config"


def _graph(tmp_path, name):
    return write_graph(tmp_path / "g.json", {
        "load": {"type": "diffusion.LoadCheckpoint", "inputs": {"path": f"{name}.safetensors"}}})


def test_a_sound_config_folder_still_validates(tmp_path, single_file, capsys):
    code, _out, err = cli(capsys, "validate", str(_graph(tmp_path, "tiny")), "--models", str(single_file))
    assert code == 0, err


@pytest.mark.parametrize("part,change", [
    ("unet", {"block_out_channels": [8192, 8192, 8192, 8192]}),
    ("text_encoder", {"hidden_size": 65536, "num_hidden_layers": 64}),
    ("vae", {"block_out_channels": [16384, 16384]}),
])
def test_a_config_declaring_a_huge_model_is_refused_with_the_figure(tmp_path, single_file, capsys,
                                                                    part, change):
    models, config = _copy(single_file, tmp_path, "huge")
    file = config / part / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **change}))
    graph = _graph(tmp_path, "huge")
    started = time.monotonic()
    for command in ("validate", "run"):
        args = [command, str(graph), "--models", str(models)]
        if command == "run":
            args += ["--output", "load", "--out", str(tmp_path / "out")]
        code, _out, err = cli(capsys, *args)
        assert code == 2, (part, err)
        assert "node 'load' (diffusion.LoadCheckpoint), socket 'path'" in err
        assert "huge.safetensors" in err and "GB in float32" in err and "declares a checkpoint" in err
        assert_clean_error(err)
    assert time.monotonic() - started < 30  # nothing was built


@pytest.mark.parametrize("name", ["unet/config.json", "model.yaml"])
def test_a_huge_file_in_the_config_folder_is_refused_unread(tmp_path, single_file, capsys, name):
    models, config = _copy(single_file, tmp_path, "bloated")
    file = config / name
    with open(file, "wb") as fh:  # sparse: 2 GB long, no disk used, and never read
        fh.truncate(2 * 1024 ** 3)
    graph = _graph(tmp_path, "bloated")
    started = time.monotonic()
    code, _out, err = cli(capsys, "validate", str(graph), "--models", str(models))
    assert code == 2, err
    assert "socket 'path'" in err and "2.1 GB" in err and "larger than a config file" in err
    assert name.split("/")[-1] in err
    assert_clean_error(err)
    assert time.monotonic() - started < 10


def test_a_fifo_in_the_config_folder_is_refused_without_hanging(tmp_path, single_file, capsys):
    models, config = _copy(single_file, tmp_path, "fifo")
    (config / "vae" / "config.json").unlink()
    os.mkfifo(config / "vae" / "config.json")
    code, _out, err = cli(capsys, "validate", str(_graph(tmp_path, "fifo")), "--models", str(models))
    assert code == 2 and "not a regular file" in err, err
