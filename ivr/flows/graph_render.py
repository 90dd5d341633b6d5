"""Draw a :class:`~ivr.flows.graph.FlowGraph`: DOT text, SVG or PNG through Graphviz, Mermaid.

:func:`to_dot` and :func:`to_mermaid` are pure text; :func:`render` runs Graphviz's ``dot``
(the Debian package ``graphviz``) for pictures and raises :class:`RenderError` when it cannot.

Marks, the same in every format: the start node has a thick blue border and an arrow from the
"call" point; nodes that end the call (``hangup``, ``reject``) are red octagons, ``return`` a
grey tag; unreachable nodes are grey and dashed; an outcome that goes nowhere is a red arrow to a
red "flow ends" (in a sub-flow: "returns") mark; ``sub`` arrows are blue and dashed; ``default``
arrows dashed; error and hang-up routes dotted. A call's path: visited nodes filled yellow, the
edges it took thick red with ``#step seconds`` labels.
"""

from __future__ import annotations

import html

import graphviz

from ivr.flows.graph import FlowGraph, GraphEdge, GraphNode

__all__ = ["FORMATS", "RenderError", "render", "to_dot", "to_mermaid"]

#: Output formats by file suffix.
FORMATS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".mmd": "mmd"}

_FONT = "DejaVu Sans"
_PATH_COLOR = "#d62728"
_VISITED_FILL = "#fff3b0"


class RenderError(RuntimeError):
    """Graphviz could not draw the graph (``dot`` missing or failing)."""


# -- DOT -----------------------------------------------------------------------------------------


def _node_label(node: GraphNode) -> str:
    if node.kind != "node":
        return html.escape(node.label)
    parts = [f"<B>{html.escape(node.label)}</B>"]
    parts += [f'<FONT POINT-SIZE="12">{html.escape(line)}</FONT>' for line in node.summary]
    if node.unreachable:
        parts.append('<FONT POINT-SIZE="11"><I>unreachable</I></FONT>')
    if node.visits:
        steps = ", ".join(f"#{n}" for n in node.visits)
        parts.append(f'<FONT POINT-SIZE="11" COLOR="{_PATH_COLOR}"><B>{steps}</B></FONT>')
    return "<" + "<BR/>".join(parts) + ">"


def _node_attrs(node: GraphNode) -> dict[str, str]:
    attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": "white"}
    marks = [node.kind] if node.kind != "node" else [node.action]
    if node.kind == "entry":
        attrs.update(shape="circle", fillcolor="#1f77b4", fontcolor="white", width="0.5", fixedsize="true")
    elif node.kind == "event":
        attrs.update(shape="box", style="dotted", fontcolor="#555555")
    elif node.kind == "end":
        attrs.update(shape="box", style="rounded,dashed", color=_PATH_COLOR, fontcolor=_PATH_COLOR)
        marks.append("dangling")
    elif node.ending in ("hangs up", "rejects"):
        attrs.update(shape="octagon", style="filled", fillcolor="#fde0dc", color="#c62828")
        marks.append("hangup")
    elif node.ending == "returns":
        attrs.update(shape="cds", style="filled", fillcolor="#eeeeee")
        marks.append("return")
    if node.start:
        attrs.update(penwidth="3", color="#1f77b4", fillcolor="#e3f2fd")
        marks.append("start")
    if node.unreachable:
        attrs.update(style="rounded,dashed,filled", fillcolor="#f0f0f0", fontcolor="#777777", color="#999999")
        marks.append("unreachable")
    if node.visits and node.kind != "entry":
        attrs.update(fillcolor=_VISITED_FILL, penwidth="2.5")
    if node.visits:
        marks.append("visited")
    attrs["class"] = " ".join(marks)
    return attrs


def _edge_label(edge: GraphEdge) -> str:
    if not edge.steps:
        return edge.label
    parts = [html.escape(edge.label)] if edge.label else []
    for number, seconds in edge.steps:
        parts.append(f'<FONT COLOR="{_PATH_COLOR}"><B>#{number} {seconds:.1f}s</B></FONT>')
    return "<" + "<BR/>".join(parts) + ">" if parts else ""


def _edge_attrs(edge: GraphEdge) -> dict[str, str]:
    attrs = {"class": edge.rule}
    if edge.rule == "sub":
        attrs.update(style="dashed", color="#1f77b4", fontcolor="#1f77b4")
    elif edge.rule == "default":
        attrs.update(style="dashed")
    elif edge.rule in ("error", "on_error", "on_hangup"):
        attrs.update(style="dotted", color="#555555")
    elif edge.rule == "end":
        attrs.update(color=_PATH_COLOR, fontcolor=_PATH_COLOR)
        attrs["class"] += " dangling"
    elif edge.rule == "trace":
        attrs.update(style="dashed")
    if edge.steps:
        attrs.update(color=_PATH_COLOR, penwidth="3")
        attrs["class"] += " path"
    label = _edge_label(edge)
    if label:
        attrs["label"] = label
    return attrs


def to_dot(graph: FlowGraph) -> str:
    """The graph as Graphviz DOT source (top to bottom; sub-flows as ``cluster_`` subgraphs)."""
    dot = graphviz.Digraph(graph.title, graph_attr={
        "rankdir": "TB", "fontname": _FONT, "fontsize": "16", "labelloc": "t", "nodesep": "0.25",
        "ranksep": "0.45", "label": graph.title + (f" ({graph.caption})" if graph.caption else ""),
    }, node_attr={"fontname": _FONT, "fontsize": "13", "margin": "0.12,0.06"},
        edge_attr={"fontname": _FONT, "fontsize": "12", "arrowsize": "0.8"})
    containers: dict[str, graphviz.Digraph] = {"": dot}
    children: dict[str, list[str]] = {}
    for cluster in graph.clusters:
        containers[cluster.id] = graphviz.Digraph(f"cluster_{cluster.id}", graph_attr={
            "label": cluster.title, "style": "rounded,dashed", "color": "#1f77b4", "fontcolor": "#1f77b4",
            "fontsize": "13"})
        children.setdefault(cluster.parent, []).append(cluster.id)
    for node in graph.nodes.values():
        containers[node.cluster].node(node.id, _node_label(node), **_node_attrs(node))

    def attach(parent: str) -> None:
        for child in children.get(parent, []):
            attach(child)
            containers[parent].subgraph(containers[child])

    attach("")
    for edge in graph.edges:
        dot.edge(edge.source, edge.target, **_edge_attrs(edge))
    return dot.source


# -- pictures ----------------------------------------------------------------------------------


def render(graph: FlowGraph, fmt: str) -> bytes:
    """The graph in ``fmt`` (``dot``, ``svg``, ``png``, ``mmd``) as the bytes of a file."""
    if fmt == "mmd":
        return to_mermaid(graph).encode()
    source = to_dot(graph)
    if fmt == "dot":
        return source.encode()
    try:
        return graphviz.Source(source).pipe(format=fmt, engine="dot")
    except graphviz.ExecutableNotFound:
        raise RenderError("Graphviz's dot program is not installed (Debian: apt-get install graphviz)") from None
    except graphviz.CalledProcessError as exc:
        raise RenderError(f"Graphviz failed: {(exc.stderr or b'').decode(errors='replace').strip()}") from None


# -- Mermaid -------------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    # Mermaid reads #name; as an entity (hence #35; for #) and ends a label at a double quote
    text = html.escape(text.replace("#", "#35;"), quote=True)
    return text.replace("&quot;", "#quot;").replace("&#x27;", "'")


def to_mermaid(graph: FlowGraph) -> str:
    """The graph as a Mermaid ``flowchart`` (for Markdown pages), with the same marks as DOT."""
    ids: dict[str, str] = {}
    for index, node_id in enumerate(graph.nodes):
        safe = "".join(c if c.isalnum() else "_" for c in node_id)
        ids[node_id] = f"n{index}_{safe.strip('_')}"
    lines = ["flowchart TD"]
    shapes = {"entry": ("((", "))"), "event": ("[/", "/]"), "end": ("([", "])")}

    def node_line(node: GraphNode) -> str:
        if node.kind == "node":
            text = [f"<b>{_mermaid_text(node.label)}</b>"] + [_mermaid_text(s) for s in node.summary]
            if node.unreachable:
                text.append("<i>unreachable</i>")
            if node.visits:
                text.append(", ".join(f"#{n}" for n in node.visits))
            opening, closing = {"hangs up": ("{{", "}}"), "rejects": ("{{", "}}"), "returns": (">", "]")}.get(
                node.ending, ("[", "]"))
        else:
            text = [_mermaid_text(node.label)]
            opening, closing = shapes[node.kind]
        return f'{ids[node.id]}{opening}"{"<br/>".join(text)}"{closing}'

    children: dict[str, list] = {}
    for cluster in graph.clusters:
        children.setdefault(cluster.parent, []).append(cluster)

    def emit(cluster_id: str, indent: str) -> None:
        for node in graph.nodes.values():
            if node.cluster == cluster_id:
                lines.append(indent + node_line(node))
        for child in children.get(cluster_id, []):
            safe = "".join(c if c.isalnum() else "_" for c in child.id)
            lines.append(f'{indent}subgraph c_{safe}["{_mermaid_text(child.title)}"]')
            emit(child.id, indent + "  ")
            lines.append(f"{indent}end")

    emit("", "  ")
    arrows = {"default": "-.->", "sub": "-.->", "error": "-.->", "on_error": "-.->", "on_hangup": "-.->",
              "trace": "-.->"}
    styles = []
    for index, edge in enumerate(graph.edges):
        label = [_mermaid_text(edge.label)] if edge.label else []
        label += [f"#{n} {seconds:.1f}s" for n, seconds in edge.steps]
        arrow = "==>" if edge.steps else arrows.get(edge.rule, "-->")
        text = f'|"{"<br/>".join(label)}"|' if label else ""
        lines.append(f"  {ids[edge.source]} {arrow}{text} {ids[edge.target]}")
        if edge.steps:
            styles.append(f"  linkStyle {index} stroke:{_PATH_COLOR},stroke-width:3px")
        elif edge.rule == "end":
            styles.append(f"  linkStyle {index} stroke:{_PATH_COLOR}")
    lines += styles
    lines += [
        "  classDef start stroke:#1f77b4,stroke-width:3px,fill:#e3f2fd",
        "  classDef hangup fill:#fde0dc,stroke:#c62828",
        "  classDef unreachable fill:#f0f0f0,stroke:#999999,stroke-dasharray:4 3,color:#777777",
        f"  classDef dangling stroke:{_PATH_COLOR},color:{_PATH_COLOR},stroke-dasharray:4 3",
        f"  classDef visited fill:{_VISITED_FILL},stroke-width:2px",
    ]
    classes: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        if node.start:
            classes.setdefault("start", []).append(ids[node.id])
        if node.ending in ("hangs up", "rejects"):
            classes.setdefault("hangup", []).append(ids[node.id])
        if node.unreachable:
            classes.setdefault("unreachable", []).append(ids[node.id])
        if node.kind == "end":
            classes.setdefault("dangling", []).append(ids[node.id])
        if node.visits:
            classes.setdefault("visited", []).append(ids[node.id])
    lines += [f"  class {','.join(members)} {name}" for name, members in classes.items()]
    return "\n".join(lines) + "\n"
