"""Running an API-format workflow in-process: validate it against node definitions, order it, execute it."""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..engine.core.errors import PAEInputError
from ..nodes.base import AUDIO_PLAYER

Workflow = dict[str, dict[str, Any]]


class WorkflowError(ValueError):
    """A problem with the graph itself, naming the node id (and input) at fault."""

    def __init__(self, node_id: str | None, message: str, input_name: str | None = None,
                 class_type: str | None = None):
        self.node_id, self.input_name, self.class_type = node_id, input_name, class_type
        where = ""
        if node_id is not None:
            where = f"node {node_id}" + (f" ({class_type})" if class_type else "")
            where += f" input '{input_name}'" if input_name else ""
            where += ": "
        super().__init__(where + message)


def load_api_workflow(path: str | Path) -> Workflow:
    """Read an API-format workflow (what ComfyUI's 'Export (API)' writes), refusing the UI format with a hint."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowError(None, f"workflow file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise WorkflowError(None, f"{path} is not readable JSON: {exc}") from None
    except RecursionError:
        raise WorkflowError(None, f"{path} nests its JSON too deeply to be a workflow.") from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(None, f"{path} is a UI-format workflow, but this needs the API format: open it in "
                            "ComfyUI and use Workflow > Export (API), or take the shipped twin from workflows/api/.")
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # a saved /prompt request body
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) for v in data.values()):
        raise WorkflowError(None, f"{path} is not an API-format workflow "
                            "(expected {node_id: {class_type, inputs}}).")
    return {str(k): v for k, v in data.items()}


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split 'NODE.INPUT=VALUE'; VALUE is JSON when it parses as JSON (numbers, true, lists), else a string."""
    target, sep, raw = text.partition("=")
    node_id, dot, input_name = target.partition(".")
    if not sep or not dot or not node_id or not input_name:
        raise WorkflowError(None, f"--set '{text}' should read NODE.INPUT=VALUE, e.g. 3.filename_prefix=edits/take1")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node_id.strip(), input_name.strip(), value


def apply_overrides(workflow: Workflow, overrides: list[str], node_classes: dict[str, type] | None = None
                    ) -> Workflow:
    """Return a copy of the workflow with --set values written into node inputs; with node_classes, an input the
    node does not have is refused here, before anything loads."""
    graph = json.loads(json.dumps(workflow))
    for text in overrides:
        node_id, input_name, value = parse_override(text)
        node_id = resolve_node(graph, node_id)
        cls = (node_classes or {}).get(graph[node_id].get("class_type"))
        if cls is not None and input_name not in (names := input_specs(cls)):
            raise WorkflowError(node_id, f"--set names an input '{input_name}' that {cls.NODE_ID} does not have "
                                f"(its inputs: {', '.join(names)}).")
        graph[node_id].setdefault("inputs", {})[input_name] = value
    return graph


def resolve_node(workflow: Workflow, node_id: str) -> str:
    """A node named by id or by its title (_meta.title, as ComfyUI shows it), or WorkflowError listing the ids."""
    if node_id in workflow:
        return node_id
    titles = {str(n.get("_meta", {}).get("title")): k for k, n in workflow.items()}
    if node_id not in titles:
        raise WorkflowError(node_id, f"--set names a node that is not in the workflow "
                            f"(ids: {', '.join(sorted(workflow, key=_id_order))}).")
    return titles[node_id]


def _id_order(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def input_specs(cls: type) -> dict[str, tuple[Any, dict, bool]]:
    """name -> (type or choice list, options, required) for every non-hidden input, in ComfyUI's layout order."""
    declared = cls.INPUT_TYPES()
    specs = {}
    for section, required in (("required", True), ("optional", False)):
        for name, spec in declared.get(section, {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs[name] = (kind, options, required)
    return specs


# Frontend widgets that carry no value for the node (ComfyUI sends "" or null for them).
_DISPLAY_ONLY = (AUDIO_PLAYER,)
_WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def _has_seed_control(name: str, kind: Any, options: dict) -> bool:
    """The frontend stores a control-after-generate value right after such an INT widget."""
    return kind == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed"))


def ui_workflow_with_values(ui_workflow: dict, workflow: Workflow, node_classes: dict[str, type]) -> dict:
    """A copy of the UI workflow whose widget values are the API workflow's (after --set and per-job inputs), so a
    saved file that is dropped back on the page restores the inputs that made it. Widgets are walked in the order
    the frontend stores them: declared order, a control value after each seed, the audio player's empty slot."""
    ui = json.loads(json.dumps(ui_workflow))
    for node in ui.get("nodes", []) if isinstance(ui.get("nodes"), list) else []:
        api_node = workflow.get(str(node.get("id"))) if isinstance(node, dict) else None
        cls = node_classes.get(node.get("type")) if api_node else None
        values = node.get("widgets_values")
        if cls is None or api_node.get("class_type") != node.get("type") or not isinstance(values, list):
            continue
        inputs, position = api_node.get("inputs", {}), 0
        for name, (kind, options, _required) in input_specs(cls).items():
            if kind == AUDIO_PLAYER:
                position += position < len(values)
                continue
            if not (isinstance(kind, list) or kind in _WIDGET_TYPES):
                continue  # a socket
            if position >= len(values):
                break  # an optional widget appended after the UI file was saved
            if name in inputs and not _is_link(inputs[name]):
                values[position] = inputs[name]
            position += 1 + _has_seed_control(name, kind, options)
    return ui


def _validated_by_node(cls: type, specs: dict[str, tuple[Any, dict, bool]]) -> set[str]:
    """Inputs a node's VALIDATE_INPUTS names: ComfyUI skips its own checks for those."""
    check = getattr(cls, "VALIDATE_INPUTS", None)
    if check is None:
        return set()
    spec = inspect.getfullargspec(check)
    return set(specs) if spec.varkw else set(spec.args[1:] if spec.args[:1] == ["cls"] else spec.args)


def check_widget_value(node_id: str, class_type: str, name: str, kind: Any, options: dict, value: Any) -> None:
    """Check a literal input value against its declared type, range and choices, as ComfyUI's validator does;
    raise WorkflowError naming the node and input."""
    def fail(message: str) -> None:
        raise WorkflowError(node_id, message, name, class_type)

    if kind in _DISPLAY_ONLY:
        return
    if isinstance(kind, (list, tuple)):
        if value not in kind:
            shown = ", ".join(map(str, list(kind)[:10])) or "nothing is available"
            fail(f"'{value}' is not one of the choices ({shown}).")
        return
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            fail(f"expected a whole number, got {value!r}.")
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"expected a number, got {value!r}.")
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            fail(f"expected true or false, got {value!r}.")
    elif kind == "STRING":
        if not isinstance(value, str):
            fail(f"expected text, got {value!r}.")
    else:
        fail(f"needs a link from a node that outputs {kind}, not a literal value {value!r}.")
    if kind in ("INT", "FLOAT"):
        if "min" in options and value < options["min"]:
            fail(f"{value} is below the minimum {options['min']}.")
        if "max" in options and value > options["max"]:
            fail(f"{value} is above the maximum {options['max']}.")


# ComfyUI core's preview nodes only show things in the browser; headless, the runner leaves them out.
CORE_PREVIEW_NODES = ("PreviewImage", "PreviewAudio")


def without_previews(workflow: Workflow, node_classes: dict[str, type]) -> Workflow:
    """The workflow minus core preview nodes this runner cannot show (nothing links from them: they have no outputs)."""
    return {node_id: node for node_id, node in workflow.items()
            if not (node.get("class_type") in CORE_PREVIEW_NODES and node.get("class_type") not in node_classes)}


def validate_workflow(workflow: Workflow, node_classes: dict[str, type]) -> None:
    """Check every node exists, every input is present and fits, every link joins matching types."""
    workflow = without_previews(workflow, node_classes)
    for node_id in sorted(workflow, key=_id_order):
        node = workflow[node_id]
        class_type = node.get("class_type")
        if class_type not in node_classes:
            raise WorkflowError(node_id, f"unknown node type '{class_type}'; this runner knows "
                                f"{', '.join(sorted(node_classes))}.")
        cls = node_classes[class_type]
        inputs = node.get("inputs", {})
        specs = input_specs(cls)  # INPUT_TYPES may list folders: ask once per node
        validated = _validated_by_node(cls, specs)
        for name, (kind, options, required) in specs.items():
            if name not in inputs:
                if required:
                    raise WorkflowError(node_id, "required input is missing.", name, class_type)
                continue
            value = inputs[name]
            if _is_link(value):
                source_id, index = value
                if source_id not in workflow:
                    raise WorkflowError(node_id, f"links to node {source_id}, which is not in the workflow.",
                                        name, class_type)
                source_type = workflow[source_id].get("class_type")
                if source_type not in node_classes:
                    continue  # reported when that node is checked
                outputs = node_classes[source_type].RETURN_TYPES
                if not 0 <= index < len(outputs):
                    raise WorkflowError(node_id, f"links to output {index} of node {source_id} ({source_type}), "
                                        f"which has {len(outputs)} output(s).", name, class_type)
                expected = "COMBO" if isinstance(kind, (list, tuple)) else kind
                if outputs[index] != expected and "*" not in (outputs[index], expected):
                    raise WorkflowError(node_id, f"expects {expected} but is linked to a {outputs[index]} output "
                                        f"of node {source_id} ({source_type}).", name, class_type)
            elif name in validated:
                continue  # the node checks it itself, as inside ComfyUI
            else:
                check_widget_value(node_id, class_type, name, kind, options, value)
        if hasattr(cls, "VALIDATE_INPUTS"):
            verdict = cls.VALIDATE_INPUTS(**{k: (None if _is_link(v) else v) for k, v in inputs.items()
                                            if k in validated})
            if verdict is not True:
                raise WorkflowError(node_id, str(verdict), None, class_type)
    execution_order(workflow, node_classes)


def execution_order(workflow: Workflow, node_classes: dict[str, type]) -> list[str]:
    """Nodes that output nodes need, dependencies first; refuses cycles."""
    outputs = [n for n in workflow if getattr(node_classes[workflow[n]["class_type"]], "OUTPUT_NODE", False)]
    if not outputs:
        raise WorkflowError(None, "the workflow has no output node (e.g. Save Audio), so nothing would run.")
    order: list[str] = []
    state: dict[str, str] = {}
    for output in sorted(outputs, key=_id_order):
        # Depth-first with an explicit stack (a long chain of nodes must not exhaust Python's recursion).
        stack = [(output, iter(_links_of(workflow, output)))]
        path = [output]
        if state.get(output) == "done":
            continue
        state[output] = "active"
        while stack:
            node_id, links = stack[-1]
            source = next(links, None)
            if source is None:
                stack.pop()
                path.pop()
                state[node_id] = "done"
                order.append(node_id)
            elif state.get(source) == "active":
                cycle = " -> ".join(path[path.index(source):] + [source])
                raise WorkflowError(source, f"the graph has a cycle: {cycle}.")
            elif state.get(source) != "done":
                state[source] = "active"
                stack.append((source, iter(_links_of(workflow, source))))
                path.append(source)
    return order


def _links_of(workflow: Workflow, node_id: str) -> list[str]:
    return [value[0] for value in workflow[node_id].get("inputs", {}).values() if _is_link(value)]


@dataclass
class NodeRun:
    """What one executed node produced."""

    node_id: str
    class_type: str
    outputs: tuple
    ui: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def execute_workflow(workflow: Workflow, node_classes: dict[str, type], *, extra_pnginfo: dict | None = None,
                     on_node: Callable[[int, int, str, str], None] | None = None) -> dict[str, NodeRun]:
    """Validate, then run the nodes in dependency order, passing outputs along links."""
    workflow = without_previews(workflow, node_classes)
    validate_workflow(workflow, node_classes)
    order = execution_order(workflow, node_classes)
    results: dict[str, NodeRun] = {}
    for position, node_id in enumerate(order, 1):
        node = workflow[node_id]
        class_type = node["class_type"]
        cls = node_classes[class_type]
        if on_node is not None:
            on_node(position, len(order), node_id, class_type)
        kwargs = {}
        for name, value in node.get("inputs", {}).items():
            kwargs[name] = results[value[0]].outputs[value[1]] if _is_link(value) else value
        hidden = cls.INPUT_TYPES().get("hidden", {})
        for name, kind in hidden.items():
            kwargs[name] = {"PROMPT": workflow, "EXTRA_PNGINFO": extra_pnginfo or {}, "UNIQUE_ID": node_id}.get(kind)
        started = time.perf_counter()
        try:
            returned = getattr(cls(), cls.FUNCTION)(**kwargs)
        except PAEInputError as exc:
            raise WorkflowError(node_id, exc.message, exc.input_name, class_type) from None
        except (KeyboardInterrupt, WorkflowError):
            raise
        except Exception as exc:  # a bug or an environment failure: keep the cause, name the node
            raise WorkflowError(node_id, f"failed with {exc.__class__.__name__}: {exc}", None, class_type) from exc
        ui = {}
        if isinstance(returned, dict):
            ui = returned.get("ui", {})
            returned = returned.get("result", ())
        results[node_id] = NodeRun(node_id, class_type, tuple(returned or ()), ui, time.perf_counter() - started)
    return results
