"""The step graph as Mermaid or Graphviz dot text, for `sunoflow graph`."""

from __future__ import annotations

from runner.plan import Plan


def _label(plan: Plan, sid: str) -> str:
    step = plan.recipe.steps[sid]
    n = plan.fan[sid]
    fan = f" x{n}" if n is not None else ""
    return f"{sid}: {step.uses}{fan}"


def _edges(plan: Plan, instances: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    if instances:
        nodes = [(i.id, f"{i.id}: {i.step.uses}") for i in plan.instances.values()]
        edges = [(d, i.id) for i in plan.instances.values() for d in i.deps]
    else:
        order = list(dict.fromkeys(i.step.id for i in plan.instances.values()))
        nodes = [(s, _label(plan, s)) for s in order]
        edges = [(d, s) for s in order for d in sorted(plan.step_deps[s])]
    return nodes, edges


def _ident(name: str) -> str:
    return name.replace("[", "_").replace("]", "")


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
