"""The step graph as Mermaid or Graphviz dot text, for `sunoflow graph`."""

from __future__ import annotations

from runner.plan.model import Plan


def _label(plan: Plan, path: str, uses: str, count: int) -> str:
    n = plan.fan[path] if path in plan.fan else (count if count > 1 else None)
    fan = f" x{n}" if n is not None else ""
    return f"{path}: {uses}{fan}"


def _edges(plan: Plan, instances: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Nodes and edges; a call of a reusable recipe is a node for the call (its outputs)
    and one per step inside it, named `call/step`."""
    shown = [i for i in plan.instances.values() if i.kind != "enter"]
    if instances:
        nodes = [(i.id, f"{i.id}: {i.step.uses}") for i in shown]
        edges = [(d, i.id) for i in shown for d in plan.waits_for(i)]
    else:
        counts: dict[str, int] = {}
        uses: dict[str, str] = {}
        for i in shown:
            counts[i.path] = counts.get(i.path, 0) + 1
            uses[i.path] = i.step.uses
        nodes = [(p, _label(plan, p, uses[p], counts[p])) for p in counts]
        edges = [(d, p) for p in counts for d in sorted(plan.step_deps[p])]
    return nodes, edges


def _ident(name: str) -> str:
    return name.replace("[", "_").replace("]", "").replace("/", "__")


def mermaid(plan: Plan, *, instances: bool = False) -> str:
    nodes, edges = _edges(plan, instances)
    lines = ["flowchart LR"]
    lines += [f'    {_ident(n)}["{label}"]' for n, label in nodes]
    lines += [f"    {_ident(a)} --> {_ident(b)}" for a, b in edges]
    return "\n".join(lines) + "\n"


def dot(plan: Plan, *, instances: bool = False) -> str:
    nodes, edges = _edges(plan, instances)
    lines = [f'digraph "{plan.recipe.name}" {{', "    rankdir=LR;", "    node [shape=box];"]
    lines += [f'    "{n}" [label="{label}"];' for n, label in nodes]
    lines += [f'    "{a}" -> "{b}";' for a, b in edges]
    return "\n".join(lines) + "\n}\n"
