"""What templates see while a plan runs, per scope: the top recipe, and each call of a
reusable recipe, which has its own `steps`, `inputs` and `vars`.

A call's two ends do no work. Entering it renders its `with` in the caller's scope, adds
the callee's defaults and checks every value against the declared type (a rendered value
can only be checked now); leaving it renders the callee's `outputs` in the call's scope and
publishes them in the caller's scope, as the outputs of the calling step. The engine and
`sunoflow status` share this, so they agree on every rendered input, hence on every key.
"""

from __future__ import annotations

from typing import Any

from runner.errors import StepError
from runner.plan.build import Instance, Plan, context, truthy
from runner.recipe import blame
from runner.recipe.include import INPUT_TYPES, at, fits
from runner.recipe.load import NO_DEFAULT, _got
from runner.recipe.template import TemplateError, compile_template, is_template, render


class Scopes:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.steps: dict[str, dict[str, Any]] = {
            prefix: {sid: [None] * n if n is not None else None for sid, n in sc.fan.items()}
            for prefix, sc in plan.scopes.items()}
        self.inputs: dict[str, dict[str, Any]] = {"": plan.recipe.input_defaults()}

    def context(self, inst: Instance, item: Any = None) -> dict[str, Any]:
        """The names a template of `inst` sees; `item` when the loop's values are outputs
        of a step (known only now)."""
        scope = self.plan.scopes[inst.scope]
        ctx = context(scope.recipe, inst, self.steps[inst.scope], self.inputs.get(inst.scope))
        if item is not None:
            ctx["item"] = item
        return ctx

    def condition(self, inst: Instance, ctx: dict[str, Any]) -> bool:
        """The step's `if:`, rendered (raises TemplateError)."""
        cond = inst.step.if_
        if is_template(cond):
            cond = compile_template(cond).render(ctx)
        return truthy(cond)

    def publish(self, inst: Instance, view: Any) -> None:
        steps = self.steps[inst.scope]
        if inst.index is None:
            steps[inst.step.id] = view
        else:
            steps[inst.step.id][inst.index] = view

    def enter(self, inst: Instance, item: Any = None) -> bool:
        """Start a call: False when its `if:` is false. Raises TemplateError, or StepError
        for a value of the wrong type (with the positions of the value and of the input's
        declaration)."""
        ctx = self.context(inst, item)
        if not self.condition(inst, ctx):
            return False
        step = inst.step
        callee = step.callee
        assert callee is not None
        values: dict[str, Any] = {}
        caller = self.plan.scopes[inst.scope].recipe
        for name, spec in callee.inputs.items():
            if name in step.with_:
                try:
                    value = render(step.with_[name], ctx)
                except TemplateError as exc:
                    diag = blame.diagnose(caller, ("steps", step.id, "with", name),
                                          step.with_[name], ctx, exc)
                    raise StepError(f"cannot render: {diag}", step=inst.call) from None
                if value is not None and not fits(spec.type, value):
                    raise StepError(
                        f"input '{name}' of {callee.file} must be "
                        f"{INPUT_TYPES.get(spec.type, spec.type)}; got {_got(value)} "
                        f"({at(caller.doc, ('steps', step.id, 'with', name))}; declared at "
                        f"{at(callee.doc, ('inputs', name), key=True)})", step=inst.call)
            elif spec.default is not NO_DEFAULT or not spec.required:
                value = None if spec.default is NO_DEFAULT else spec.default
            else:
                continue  # refused before the run
            values[name] = value
        self.inputs[inst.call + "/"] = values
        return True

    def leave(self, inst: Instance) -> dict[str, Any]:
        """Finish a call: its outputs, published as the calling step's (raises
        TemplateError)."""
        prefix = inst.id + "/"
        scope = self.plan.scopes[prefix]
        ctx = {"vars": scope.recipe.vars, "steps": self.steps[prefix],
               "inputs": self.inputs.get(prefix, {})}
        outputs = {}
        for name, src in scope.recipe.exposed.items():
            try:
                outputs[name] = render(src, ctx)
            except TemplateError as exc:
                diag = blame.diagnose(scope.recipe, ("outputs", name), src, ctx, exc)
                raise StepError(f"cannot render its outputs: {diag}", step=inst.id) from None
        self.publish(inst, outputs)
        return outputs
