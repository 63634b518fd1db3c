"""What a plan costs: the credits of one submission of an instance on the recipe's provider.

The prices are the step types' (runner.steps.types: a default per type and the exceptions
of one input's value, such as separate's split_stem), which the provider block's `prices`
may override; a step made locally (the provider's service does not do it, or not with
these inputs) costs nothing. `plan`, the budget (--max-credits), the balance check and
`sunoflow review` all price through here.
"""

from __future__ import annotations

from runner.plan.model import Instance, Plan

# What `plan` and the budget count as already paid: a finished result, and a task the service
# is working on (its id is journaled, so a resumed run polls it and never submits it again:
# engine rule 2). A possibly-submitted step (no task id recorded) may be paid again, so it
# still counts.
PAID_ALREADY = ("done", "missing", "in flight")


def price(plan: Plan, inst: Instance) -> float:
    """Credits one submission of `inst` costs on the recipe's provider (0 when local).
    Inputs not known before the run are taken at their defaults."""
    t = inst.step.type
    if t is None:
        return 0.0
    provider = plan.recipe.provider
    return t.price_of(provider.kind, provider.prices,
                      lambda name, default: plan.static_value(inst, name, default))
