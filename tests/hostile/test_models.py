"""Model files and folders: sizes checked against headers and configs before anything is
built, FIFOs refused, implausible models folders refused, dangling symlinks skipped."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from nodeflow.settings import packaged_models_dir

from ..conftest import REPO
from .util import assert_clean_error, cli, cli_process, write_graph

DEMO = packaged_models_dir()


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    for kind in ("upscale", "priors", "tokenizers"):
        (folder / kind).mkdir(parents=True)
    return folder


def loader_graph(tmp_path, node_type, path):
    return write_graph(tmp_path / "g.json", {"load": {"type": node_type, "inputs": {"path": path}}})


def test_truncated_safetensors_fails_validation(tmp_path, models, capsys):
    data = (DEMO / "upscale" / "nodeflow-shapes-4x.safetensors").read_bytes()
    (models / "upscale" / "cut.safetensors").write_bytes(data[: len(data) // 2])
    graph = loader_graph(tmp_path, "upscale.LoadModel", "cut.safetensors")
    code, _out, err = cli(capsys, "validate", str(graph), "--models", str(models))
    assert code == 2
    assert "node 'load' (upscale.LoadModel), socket 'path'" in err and "truncated" in err
    assert_clean_error(err)


def test_header_that_lies_about_a_tensor_size_fails_validation(tmp_path, models, capsys):
    path = models / "upscale" / "lying.safetensors"
    save_file({"body.0.weight": np.zeros((4, 3, 3, 3), dtype=np.float32)}, str(path))
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    header["body.0.weight"]["shape"] = [4096, 4096, 3, 3]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])
    graph = loader_graph(tmp_path, "upscale.LoadModel", "lying.safetensors")
    code, _out, err = cli(capsys, "validate", str(graph), "--models", str(models))
    assert code == 2 and "damaged" in err


def _prior_file(path, **config):
    base = {"vocab_size": 16, "height": 4, "width": 4, "dim": 8, "layers": 1, "heads": 2,
            "num_classes": 0}
    save_file({"token_embedding.weight": np.zeros((16, 8), dtype=np.float32)}, str(path),
              metadata={"format": "nodeflow.ar_prior", "config": json.dumps({**base, **config})})
    return path


def test_prior_declaring_a_huge_model_is_refused_with_the_figure(tmp_path, models, capsys):
    _prior_file(models / "priors" / "huge.safetensors", dim=16384, layers=48, vocab_size=65536)
    graph = loader_graph(tmp_path, "ar.LoadPrior", "huge.safetensors")
    started = time.monotonic()
    for command in ("validate", "run"):
        args = [command, str(graph), "--models", str(models)]
        if command == "run":
            args += ["--output", "load", "--out", str(tmp_path / "out")]
        code, _out, err = cli(capsys, *args)
        assert code == 2
        assert "socket 'path'" in err and "GB in float32" in err and "token prior" in err
        assert_clean_error(err)
    assert time.monotonic() - started < 30  # nothing was built


def test_tokenizer_folder_declaring_a_huge_model_is_refused(tmp_path, models, capsys):
    folder = models / "tokenizers" / "huge-vq"
    shutil.copytree(DEMO / "tokenizers" / "nodeflow-shapes-vq", folder)
    config = json.loads((folder / "config.json").read_text())
    config["block_out_channels"] = [8192, 8192, 8192, 8192]
    (folder / "config.json").write_text(json.dumps(config))
    graph = loader_graph(tmp_path, "ar.LoadTokenizer", "huge-vq")
    code, _out, err = cli(capsys, "validate", str(graph), "--models", str(models))
    assert code == 2
    assert "VQ tokenizer" in err and "GB in float32" in err


def test_tokenizer_single_file_declaring_a_huge_model_is_refused(tmp_path, models, capsys):
    config = {"_class_name": "VQModel", "block_out_channels": [4096] * 6, "layers_per_block": 4,
              "num_vq_embeddings": 1_000_000, "vq_embed_dim": 512}
    save_file({"w": np.zeros(4, dtype=np.float32)}, str(models / "tokenizers" / "t.safetensors"),
              metadata={"format": "nodeflow.vq_tokenizer", "config": json.dumps(config)})
    graph = loader_graph(tmp_path, "ar.LoadTokenizer", "t.safetensors")
    code, _out, err = cli(capsys, "validate", str(graph), "--models", str(models))
    assert code == 2 and "VQ tokenizer" in err


def test_the_shipped_ar_models_still_validate(capsys):
    code, _out, err = cli(capsys, "validate", str(REPO / "graphs" / "ar_sample.json"))
    assert code == 0, err


def test_fifo_as_a_model_file_is_refused_without_hanging(tmp_path, models):
    os.mkfifo(models / "priors" / "pipe.safetensors")
    graph = loader_graph(tmp_path, "ar.LoadPrior", "pipe.safetensors")
    proc = cli_process("validate", str(graph), "--models", str(models), timeout=60)
    assert proc.returncode == 2
    assert "FIFO" in proc.stderr and "socket 'path'" in proc.stderr
    assert_clean_error(proc.stderr)


@pytest.mark.parametrize("folder", ["/", "/usr", "/proc", "NOWHERE", "EMPTY"])
def test_implausible_models_folders_are_refused(tmp_path, capsys, folder):
    if folder == "NOWHERE":
        folder = str(tmp_path / "no-such-folder")
    elif folder == "EMPTY":
        folder = str(tmp_path)
    graph = write_graph(tmp_path / "g.json", {"v": {"type": "value.Int", "inputs": {"value": 1}}})
    for command in ("validate", "run"):
        code, _out, err = cli(capsys, command, str(graph), "--models", folder)
        assert code == 2
        assert folder in err and ("models folder" in err)
        assert_clean_error(err)


def test_models_folder_from_the_environment_is_checked_too(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NODEFLOW_MODELS", "/usr")
    graph = write_graph(tmp_path / "g.json", {"v": {"type": "value.Int", "inputs": {"value": 1}}})
    code, _out, err = cli(capsys, "validate", str(graph))
    assert code == 2 and "/usr is a system folder" in err


def test_dangling_symlink_in_a_model_folder_is_skipped_with_a_warning(tmp_path, models, capsys):
    folder = models / "tokenizers" / "vq"
    shutil.copytree(DEMO / "tokenizers" / "nodeflow-shapes-vq", folder)
    (folder / "old.safetensors").symlink_to(tmp_path / "gone.safetensors")
    graph = write_graph(tmp_path / "g.json", {"tok": {"type": "ar.LoadTokenizer", "inputs": {"path": "vq"}}})
    code, out, err = cli(capsys, "validate", str(graph), "--models", str(models))
    assert code == 0, err
    assert "nodeflow: warning: skipping" in err and "old.safetensors" in err
    assert_clean_error(err)


def test_model_manager_loads_a_folder_holding_a_dangling_symlink(tmp_path, models):
    from nodeflow.errors import NodeflowWarning
    from nodeflow.models import ModelManager

    folder = models / "tokenizers" / "vq"
    shutil.copytree(DEMO / "tokenizers" / "nodeflow-shapes-vq", folder)
    (folder / "broken.bin").symlink_to(tmp_path / "gone.bin")
    with pytest.warns(NodeflowWarning, match="broken.bin"):
        loaded = ModelManager(["cpu"]).load(folder, lambda path: {"from": path}, kind="tokenizers")
    assert loaded == {"from": folder}
