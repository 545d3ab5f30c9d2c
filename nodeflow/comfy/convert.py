"""Turning a ComfyUI workflow (neutral form) into a nodeflow graph.

What ComfyUI does before it runs a workflow is done here once, so the graph that
results runs like any other: a PrimitiveNode's value is written into the widgets it
feeds, Reroutes are followed to their source, muted nodes (mode 2) are left out,
bypassed nodes (mode 4) pass the input of the matching type through, CLIPSetLastLayer
becomes the clip_skip of the text encoders after it, notes and groups become editor
frames, and positions are kept. Where a node's nodeflow counterpart depends on the model
family (SD 1.x/SDXL or SD3/Flux), the family is read from the graph first (``families``), and
ComfyUI's custom-sampler parts (noise, guider, sampler, sigmas) are folded into one sampler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.comfy.families import FLOW, Families, read_families
from nodeflow.comfy.formats import MODE_BYPASS, MODE_MUTED, ComfyNode, Workflow
from nodeflow.comfy.mapping import (
    BY_TYPE,
    CLIP_OF_MODEL,
    FAMILY,
    FLOW_MAPS,
    FOLDED_WIDGETS,
    PART_OUTPUT,
    PASS_INPUT,
    ConvertContext,
    NodeMap,
    Unmappable,
    Widget,
    widget_values,
)
from nodeflow.comfy.model_paths import settings_from_env
from nodeflow.errors import Location, Problem
from nodeflow.graph import Graph
from nodeflow.registry import NodeRegistry
from nodeflow.settings import Settings

NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
GROUP_NODE_PREFIXES = ("workflow>", "workflow/")
"""ComfyUI's (older) group nodes are typed by their name under this prefix."""
PASS_THROUGH = frozenset({"Reroute"})
NOTE_COLOR = "#665533"
UNCONVERTED_COLOR = "#aa3333"
MAX_DEPTH = 256


# Ends the "cannot run yet" problem; a --partial import replaces it with what it did instead.
UNSUPPORTED_ADVICE = (". Nothing was run. Replace or remove these nodes, or convert the rest "
                      "with `nodeflow import FILE -o graph.json --partial`")


@dataclass
class ImportResult:
    """A converted graph, the problems that stop it running as is, and what was left out."""

    graph: Graph
    problems: list[Problem] = field(default_factory=list)
    unsupported: list[ComfyNode] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    """What the conversion assumed where the workflow does not say (e.g. a model's family, when
    its file is not in the models folders); also in the graph's ``meta.comfyui.assumptions``."""


def node_id_for(node: ComfyNode) -> str:
    """The nodeflow id of a converted node: its ComfyUI type and id, e.g. ``KSampler_3``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{node.type}_{node.id}")


class WorkflowConverter:
    """Converts one `Workflow` to a nodeflow `Graph` with the node mapping table."""

    def __init__(self, wf: Workflow, registry: NodeRegistry, settings: Settings | None = None) -> None:
        self.wf = wf
        self.registry = registry
        self.settings = settings
        self.problems: list[Problem] = []
        self.named: dict[str, dict[str, Any]] = {
            n.id: widget_values(n.type, n.widgets) for n in wf.nodes.values()}
        self.families = Families()
        self.folded: set[str] = set()
        self.origins: dict[tuple[str, str], tuple[ComfyNode, str]] = {}
        """(sampler id, widget) -> the folded node and widget the value came from, for problems."""

    def _find_model(self, kind: str, name: str) -> Path | None:
        if self.settings is None:
            base = Path(self.wf.file).resolve().parent if self.wf.file else None
            self.settings = settings_from_env(base_dir=base)
        try:
            return self.settings.resolve_path(kind, name.replace("\\", "/"))
        except (OSError, ValueError):
            return None

    def _file_family(self, comfy_type: str, found: Path | None) -> str | None:
        """The family of a model file as the flow loader this ComfyUI loader becomes reads it
        (the node type's ``model_family`` hook; None when no such node type is registered)."""
        nmap = FLOW_MAPS.get(comfy_type)
        if found is None or nmap is None:
            return None
        cls = self.registry.get(next(iter(nmap.parts.values())).type)
        family = cls.model_family(found) if cls is not None else None
        return family if isinstance(family, str) else None

    def map_for(self, node: ComfyNode) -> NodeMap | None:
        """The mapping of a node for the model family it works on."""
        if self.families.family(node.id) in FLOW and node.type in FLOW_MAPS:
            return FLOW_MAPS[node.type]
        return BY_TYPE.get(node.type)

    def problem(self, code: str, message: str, node: ComfyNode | None = None, socket: str | None = None) -> None:
        loc = node.location(self.wf.file, socket) if node is not None else Location(self.wf.file)
        self.problems.append(Problem(code, message, loc))

    # --- following links through what ComfyUI removes before running ----------------------
    def source(self, link: tuple[str, int], depth: int = 0) -> tuple[str, int] | None:
        """The node and output slot that really feed a link, past reroutes, bypasses and clip-layer nodes."""
        src_id, slot = link
        node = self.wf.nodes.get(src_id)
        if node is None or depth > MAX_DEPTH:
            return None
        if node.mode == MODE_MUTED:
            return None
        if node.type in PASS_THROUGH or node.type == "CLIPSetLastLayer":
            upstream = next(iter(node.links.values()), None)
            return self.source(upstream, depth + 1) if upstream else None
        if node.mode == MODE_BYPASS:
            upstream = self._bypass_input(node, slot)
            return self.source(upstream, depth + 1) if upstream else None
        return src_id, slot

    def _bypass_input(self, node: ComfyNode, slot: int) -> tuple[str, int] | None:
        # As ComfyUI: the input at the same position if its type matches, else the first that does.
        out_type = node.output_types[slot] if slot < len(node.output_types) else None
        names = list(node.input_types)
        if out_type is None:
            return None
        if slot < len(names) and node.input_types[names[slot]] == out_type and names[slot] in node.links:
            return node.links[names[slot]]
        for name in names:
            if node.input_types[name] == out_type and name in node.links:
                return node.links[name]
        return None

    def clip_skip(self, node: ComfyNode) -> int | None:
        """The stop_at_clip_layer a text encoder's CLIP went through, as nodeflow's clip_skip."""
        link = node.links.get("clip")
        depth = 0
        while link is not None and depth < MAX_DEPTH:
            depth += 1
            up = self.wf.nodes.get(link[0])
            if up is None:
                return None
            if up.type == "CLIPSetLastLayer" and up.mode != MODE_BYPASS:
                layer = self.named[up.id].get("stop_at_clip_layer", -1)
                if isinstance(layer, int | float) and not isinstance(layer, bool) and -100 <= layer <= -1:
                    return -int(layer) - 1
                return None  # a value ComfyUI refuses too; the encoder keeps every layer
            if up.type in PASS_THROUGH or up.mode == MODE_BYPASS or up.type == "LoraLoader":
                link = up.links.get("clip") or next(iter(up.links.values()), None)
                continue
            return None
        return None

    # --- the conversion -------------------------------------------------------------------
    def convert(self) -> ImportResult:
        wf = self.wf
        graph = Graph(source=Path(wf.file))
        frames: list[dict[str, Any]] = [dict(g) for g in wf.groups]
        self._apply_primitives()
        self.families = read_families(wf, self.named, self.source, self._find_model, self._file_family)
        for node, message in self.families.conflicts:
            self.problem("comfy_family", message, node)
        for node in wf.nodes.values():
            if node.type == "VAELoader":
                self.named[node.id][FAMILY] = self.families.vae.get(node.id, "sd")
        for node in wf.nodes.values():
            if node.type in ("SamplerCustomAdvanced", "SamplerCustom") and node.mode not in (MODE_MUTED,
                                                                                             MODE_BYPASS):
                self._fold_custom_sampler(node)
        unsupported: list[ComfyNode] = []
        placed: dict[str, NodeMap] = {}
        for node in wf.nodes.values():
            if node.id in self.folded:
                continue
            if node.type in NOTE_TYPES:
                frames.append(self._note_frame(node))
                continue
            if node.mode == MODE_MUTED or node.mode == MODE_BYPASS or node.type in PASS_THROUGH \
                    or node.type in ("PrimitiveNode", "CLIPSetLastLayer"):
                continue
            if node.type in wf.subgraphs:
                self.problem("comfy_subgraph", f"this node is the subgraph '{wf.subgraphs[node.type]}'; "
                             "nodeflow does not expand subgraphs yet. In ComfyUI, right-click it and "
                             "choose 'Unpack Subgraph', then save the workflow again", node)
                unsupported.append(node)
                continue
            if node.type.startswith(GROUP_NODE_PREFIXES):
                self.problem("comfy_subgraph", f"this node is the group node '{node.type[9:]}'; nodeflow "
                             "does not expand group nodes. In ComfyUI, right-click it and choose 'Convert "
                             "to nodes', then save the workflow again", node)
                unsupported.append(node)
                continue
            nmap = self.map_for(node)
            if nmap is None or any(self.registry.get(p.type) is None for p in nmap.parts.values()):
                unsupported.append(node)
                continue
            placed[node.id] = nmap
        for node_id, nmap in placed.items():
            self._add_node(graph, wf.nodes[node_id], nmap)
        for node_id, nmap in placed.items():
            self._add_links(graph, wf.nodes[node_id], nmap, placed)
        plain = [n for n in unsupported if n.type not in wf.subgraphs and not n.type.startswith(GROUP_NODE_PREFIXES)]
        if plain:
            self._report_unsupported(plain)
        for node in unsupported:
            x, y = node.pos or (0.0, 0.0)
            w, h = node.size or (240.0, 120.0)
            frames.append({"title": f"Not converted: {node.label}", "rect": [x, y, w, h],
                           "color": UNCONVERTED_COLOR})
        if frames:
            graph.editor["@frames"] = {"frames": frames}
        assumptions = [f"{n.label}: {text}" for n, text in self.families.assumptions]
        graph.meta = {"title": Path(wf.file).stem,
                      "comfyui": {"source": Path(wf.file).name, "format": wf.kind, "semantics": "comfy",
                                  **({"unconverted": [{"id": n.id, "type": n.type, "title": n.title}
                                                      for n in unsupported]} if unsupported else {}),
                                  **({"assumptions": assumptions} if assumptions else {})}}
        return ImportResult(graph, self.problems, unsupported, assumptions)

    # --- ComfyUI's custom sampler: noise, guider, sampler and sigmas as one flow.Sample ---------
    def _fold_custom_sampler(self, node: ComfyNode) -> None:
        """Read SamplerCustomAdvanced's RandomNoise, KSamplerSelect, BasicScheduler and
        BasicGuider/CFGGuider (SamplerCustom's KSamplerSelect and BasicScheduler) into the sampler's
        own links and widgets: they become one node."""
        parts: dict[str, ComfyNode] = {}
        advanced = node.type == "SamplerCustomAdvanced"
        wanted: dict[str, tuple[str, ...]] = {"sampler": ("KSamplerSelect",), "sigmas": ("BasicScheduler",)}
        if advanced:
            wanted = {"noise": ("RandomNoise",), "guider": ("BasicGuider", "CFGGuider"), **wanted}
        ok = True
        if not advanced and self.named[node.id].get("add_noise") is False:
            self.problem("comfy_value", "add_noise is off: nodeflow's sampler always starts from the seed's "
                         "noise", node, "add_noise")
            ok = False
        for name, types in wanted.items():
            link = node.links.get(name)
            src = self.source(link) if link is not None else None
            part = self.wf.nodes.get(src[0]) if src is not None else None
            if part is None:
                self.problem("comfy_link", f"input '{name}' is not connected", node, name)
                ok = False
            elif part.type not in types:
                self.problem("comfy_value", f"input '{name}' comes from {part.label}; nodeflow runs this "
                             f"sampler with {' or '.join(types)} there", node, name)
                ok = False
            else:
                parts[name] = part
        if not ok:
            return
        for part in parts.values():
            for widget in FOLDED_WIDGETS[part.type]:
                if widget in part.links:
                    self.problem("comfy_link", f"widget '{widget}' is fed by a link; nodeflow can only take "
                                 "a fixed value here. Set the value in ComfyUI", part, widget)
                    ok = False
        for widget in ("noise_seed", "cfg") if not advanced else ():
            if widget in node.links:
                self.problem("comfy_link", f"widget '{widget}' is fed by a link; nodeflow can only take a "
                             "fixed value here. Set the value in ComfyUI", node, widget)
                ok = False
        guider, scheduler = parts.get("guider", node), parts["sigmas"]
        model, schedule_model = guider.links.get("model"), scheduler.links.get("model")
        if model is not None and schedule_model is not None and self.source(model) != self.source(schedule_model):
            self.problem("comfy_link", f"the sigmas come from a BasicScheduler on another model than "
                         f"{guider.label}'s; nodeflow's sampler computes its schedule from the model it "
                         "samples with. Give both the same model", scheduler, "model")
            ok = False
        if not ok:
            return
        named = self.named
        links = {"latent_image": node.links["latent_image"]} if "latent_image" in node.links else {}
        for target, (part, name) in {"model": (guider, "model"),
                                     "positive": (guider, "conditioning" if guider.type == "BasicGuider"
                                                  else "positive"),
                                     "negative": (guider, "negative")}.items():
            if name in part.links:
                links[target] = part.links[name]
        node.links = links
        seed_from = parts.get("noise", node)
        named[node.id] = {"seed": named[seed_from.id].get("noise_seed"),
                          "sampler_name": named[parts["sampler"].id].get("sampler_name"),
                          "cfg": named[guider.id].get("cfg", 1.0),
                          **{k: named[scheduler.id].get(k) for k in ("scheduler", "steps", "denoise")}}
        named[node.id] = {k: v for k, v in named[node.id].items() if v is not None}
        self.folded.update(p.id for p in parts.values())
        for widget, (part, name) in {"seed": (seed_from, "noise_seed"), "cfg": (guider, "cfg"),
                                     "sampler_name": (parts["sampler"], "sampler_name"),
                                     **{k: (scheduler, k) for k in ("scheduler", "steps", "denoise")}}.items():
            self.origins[(node.id, widget)] = (part, name)

    def _report_unsupported(self, nodes: list[ComfyNode]) -> None:
        by_type: dict[str, list[ComfyNode]] = {}
        for n in nodes:
            by_type.setdefault(n.type, []).append(n)
        parts = []
        for type_name, group in sorted(by_type.items()):
            where = ", ".join(f"#{n.id}" + (f" '{n.title}'" if n.title and n.title != n.type else "")
                              for n in group)
            parts.append(f"{type_name} (node{'s' if len(group) > 1 else ''} {where})")
        count = len(by_type)
        self.problems.insert(0, Problem(
            "comfy_unsupported",
            f"{count} ComfyUI node type{'s' if count > 1 else ''} nodeflow cannot run yet: "
            + "; ".join(parts) + UNSUPPORTED_ADVICE,
            Location(self.wf.file)))

    def _apply_primitives(self) -> None:
        """Write each PrimitiveNode's value into the widgets it feeds, then forget the links."""
        for prim in self.wf.nodes.values():
            if prim.type != "PrimitiveNode" or prim.mode == MODE_MUTED:
                continue
            values = prim.widgets if isinstance(prim.widgets, list) else list(prim.widgets.values())
            if not values:
                continue
            value = values[0]
            for node in self.wf.nodes.values():
                for name, link in list(node.links.items()):
                    if self._fed_by(link, prim.id):
                        self.named[node.id][name] = value
                        del node.links[name]

    def _fed_by(self, link: tuple[str, int], prim_id: str) -> bool:
        for _ in range(MAX_DEPTH):
            if link[0] == prim_id:
                return True
            up = self.wf.nodes.get(link[0])
            if up is None or up.type not in PASS_THROUGH or not up.links:
                return False
            link = next(iter(up.links.values()))
        return False

    def _note_frame(self, node: ComfyNode) -> dict[str, Any]:
        values = node.widgets if isinstance(node.widgets, list) else list(node.widgets.values())
        text = str(values[0]) if values else ""
        first = next((ln.strip("#> ").strip() for ln in text.splitlines() if ln.strip()), "")
        title = node.title if node.title and node.title not in NOTE_TYPES else first or "Note"
        x, y = node.pos or (0.0, 0.0)
        w, h = node.size or (300.0, 150.0)
        return {"title": title[:80], "rect": [x, y, w, h], "color": NOTE_COLOR, "note": text}

    def _part_id(self, node: ComfyNode, part: str) -> str:
        return node_id_for(node) + (f"_{part}" if part else "")

    def _add_node(self, graph: Graph, node: ComfyNode, nmap: NodeMap) -> None:
        named = self.named[node.id]
        if node.type == "CLIPTextEncodeFlux" and named.get("clip_l") != named.get("t5xxl") \
                and "clip_l" not in node.links and "t5xxl" not in node.links:
            self.problem("comfy_value", "nodeflow's Flux text encoder reads one prompt for CLIP-L and T5, "
                         "and this node gives two different ones. Put the same text in clip_l and t5xxl "
                         "(or use CLIPTextEncode)", node, "clip_l")
        if node.type == "CLIPTextEncode":
            skip = self.clip_skip(node)
            if skip:
                named = {**named, "@clip_skip": skip}
        for i, (part_name, part) in enumerate(nmap.parts.items()):
            cls = self.registry.get(part.type)
            assert cls is not None
            inputs: dict[str, Any] = {}
            for target, widget in part.values.items():
                value = self._widget(node, named, widget, cls.input_map.get(target))
                if value is not None:
                    inputs[target] = value
            for widget in part.checks.values():
                self._widget(node, named, widget, None)
            if "@clip_skip" in named and "clip_skip" in cls.input_map:
                inputs["clip_skip"] = named["@clip_skip"]
            for target, value in part.semantics.items():
                if target in cls.input_map:
                    inputs[target] = value
            nid = self._part_id(node, part_name)
            graph.nodes[nid] = _graph_node(nid, part.type, inputs, cls.version)
            if node.pos is not None:
                x, y = node.pos
                layout: dict[str, Any] = {"pos": [x, y + 160.0 * i]}
                graph.editor[nid] = layout

    def _widget(self, node: ComfyNode, named: dict[str, Any], widget: Widget, spec: Any) -> Any:
        if widget.name in node.links:
            return None  # fed by a link; _add_links connects it
        if widget.name not in named:
            return None
        raw = named[widget.name]
        if widget.convert is None:
            return raw
        choices = getattr(spec, "choices", None) if spec is not None else None
        try:
            return widget.convert(raw, ConvertContext(tuple(choices) if choices else None))
        except Unmappable as exc:
            origin, name = self.origins.get((node.id, widget.name), (node, widget.name))
            self.problem("comfy_value", str(exc), origin, name)
            return None

    def _clip_beside_model(self, node: ComfyNode, placed: dict[str, NodeMap]) -> tuple[str, int] | None:
        """The CLIP output of the node that produced ``node``'s model (past other model-only nodes)."""
        link = node.links.get("model")
        for _ in range(MAX_DEPTH):
            src = self.source(link) if link is not None else None
            if src is None:
                return None
            up = self.wf.nodes[src[0]]
            nmap = placed.get(up.id)
            if nmap is None:
                return None
            for slot, (_part, socket) in enumerate(nmap.outputs):
                if socket == "clip":
                    return up.id, slot
            link = up.links.get("model")
        return None

    def _add_links(self, graph: Graph, node: ComfyNode, nmap: NodeMap, placed: dict[str, NodeMap]) -> None:
        for part_name, part in nmap.parts.items():
            dst = self._part_id(node, part_name)
            wanted = dict(part.links)
            for target, widget in part.values.items():
                if widget.name in node.links:
                    if widget.linkable and widget.convert is None:
                        wanted[target] = widget.name
                    else:
                        self.problem("comfy_link", f"widget '{widget.name}' is fed by a link; nodeflow can "
                                     "only take a fixed value here. Set the value in ComfyUI", node, widget.name)
            for target, comfy_input in wanted.items():
                link: tuple[str, int] | None
                if comfy_input.startswith(PART_OUTPUT):  # from another part of the same ComfyUI node
                    other, socket = comfy_input[len(PART_OUTPUT):].split(".", 1)
                    graph.connect(f"{self._part_id(node, other)}.{socket}", f"{dst}.{target}")
                    continue
                if comfy_input == CLIP_OF_MODEL:
                    src = self._clip_beside_model(node, placed)
                    if src is None:
                        self.problem("comfy_link", "nodeflow's LoRA loader needs the CLIP that comes with "
                                     "the model, and none was found upstream of 'model'; use LoraLoader "
                                     "after a checkpoint loader", node, "model")
                        continue
                    link = src
                else:
                    link = node.links.get(comfy_input)
                if link is None:
                    continue
                src = self.source(link)
                if src is None:
                    continue
                src_node = self.wf.nodes[src[0]]
                src_map = placed.get(src[0])
                passed = 0
                while src_map is not None and src[1] < len(src_map.outputs) and \
                        src_map.outputs[src[1]][0] == PASS_INPUT and passed < MAX_DEPTH:
                    passed += 1  # an output that passes one of the node's inputs through
                    through = src_node.links.get(src_map.outputs[src[1]][1])
                    src = self.source(through) if through is not None else None
                    if src is None:
                        break
                    src_node, src_map = self.wf.nodes[src[0]], placed.get(src[0])
                if src is None or src_map is None:
                    continue  # from a node not converted (reported there), or from nothing
                if src[1] >= len(src_map.outputs):
                    self.problem("comfy_link", f"input '{comfy_input}' is linked from output {src[1]} of "
                                 f"{src_node.label}, which has only {len(src_map.outputs)} outputs", node,
                                 comfy_input)
                    continue
                out_part, socket = src_map.outputs[src[1]]
                graph.connect(f"{self._part_id(src_node, out_part)}.{socket}", f"{dst}.{target}")


def _graph_node(node_id: str, type_id: str, inputs: dict[str, Any], version: str) -> Any:
    from nodeflow.graph import GraphNode

    return GraphNode(node_id, type_id, inputs, version)


def convert_workflow(wf: Workflow, registry: NodeRegistry, settings: Settings | None = None) -> ImportResult:
    """Convert a parsed ComfyUI workflow to a nodeflow graph (see `ImportResult`). ``settings``
    says where model files are, so that a model's family can be read from its file (default: the
    folders the environment names)."""
    return WorkflowConverter(wf, registry, settings).convert()
