"""A server tells its clients which node types are deprecated or experimental, in its own node
schemas and in ComfyUI's object_info."""

from __future__ import annotations

from pathlib import Path

from ..test_declarations import FLAGGED_PACK
from .conftest import start_server


def test_node_schemas_and_object_info_carry_the_flags(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flagged.py").write_text(FLAGGED_PACK)
    server = start_server(tmp_path / "data", extra=("--plugins", str(plugins)))
    try:
        with server.client() as client:
            old = client.get("/api/nodes/flagged.OldInvert").json()
            assert (old["deprecated"], old["experimental"], old["flag_note"]) == \
                (True, False, "use image.Invert instead")
            listed = {n["id"]: n for n in client.get("/api/nodes").json()}
            assert (listed["flagged.Dim"]["deprecated"], listed["flagged.Dim"]["experimental"]) == \
                (False, True)
            info = client.get("/object_info").json()
            assert (info["flagged.OldInvert"]["deprecated"], info["flagged.OldInvert"]["experimental"]) \
                == (True, False)
            assert (info["flagged.Dim"]["deprecated"], info["flagged.Dim"]["experimental"]) == \
                (False, True)
            assert (info["image.Invert"]["deprecated"], info["image.Invert"]["experimental"]) == \
                (False, False)
    finally:
        server.stop()
