"""What --force and `sunoflow reroll` name: step paths, instances, calls, and what runs
again because of them (everything downstream reads the new result, so its keys change)."""

from __future__ import annotations

from runner.plan.model import Instance, Plan


def forced_sets(plan: Plan, force: set[str]) -> tuple[set[str], set[str]]:
    """(step paths, instance ids) that --force names: a path forces every instance of it
    and everything downstream; an instance id (`song[1]/whole`) forces that instance; a
    call's id (`song[1]`) every step instance inside that call."""
    paths_ = {f for f in force if f in plan.paths}
    ids: set[str] = set()
    for f in force - paths_:
        inst = plan.instances.get(f)
        if inst is not None and inst.kind == "step":
            ids.add(f)
        else:
            ids |= {i.id for i in plan.steps() if i.id.startswith(f + "/")}
    return (plan.downstream(paths_) if paths_ else set()), ids


def rerun(plan: Plan, names: set[str]) -> list[Instance]:
    """The step instances a --force of `names` runs again: the forced ones, and every
    instance that reads them, transitively (their inputs change with the new result)."""
    paths_, hit = forced_sets(plan, names)
    hit = set(hit)
    for inst in plan.instances.values():  # in a topological order
        # A call's ends share its path: only a step instance is hit by its path.
        if inst.kind == "step" and inst.path in paths_ or any(d in hit for d in inst.deps):
            hit.add(inst.id)
    return [i for i in plan.steps() if i.id in hit]


def forceable(plan: Plan, name: str) -> bool:
    """A name --force and reroll accept: a step path, a step instance, or a call."""
    if name in plan.paths:
        return True
    inst = plan.instances.get(name)
    return inst is not None and inst.kind in ("step", "leave")
