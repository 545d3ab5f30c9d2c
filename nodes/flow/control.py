"""SD3 and Flux ControlNets: hints prepared once per run, residuals computed every step."""

from __future__ import annotations

from typing import Any

from nodeflow.nodes.flow.types import FlowHint, FlowModel


def prepare_hints(model: FlowModel, hints: tuple[FlowHint, ...], latent: Any, batch: int, cfg: bool,
                  device: Any, generator: Any) -> list[tuple[FlowHint, Any]]:
    return []


def control_residuals(model: FlowModel, hints: list[tuple[FlowHint, Any]], step: int, total: int,
                      hidden: Any, timestep: Any, embeds: Any, pooled: Any, guidance: Any,
                      txt_ids: Any, img_ids: Any) -> dict[str, Any]:
    return {}
