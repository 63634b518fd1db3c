"""What templates see while a plan runs, per scope: the top recipe, and each call of a
reusable recipe, which has its own `steps`, `inputs` and `vars`.

A call's two ends do no work. Entering it renders its `with` in the caller's scope, adds
the callee's defaults and checks every value against the declared type (a rendered value
can only be checked now); leaving it renders the callee's `outputs` in the call's scope and
publishes them in the caller's scope, as the outputs of the calling step.

A step instance's identity is found once, here (`Scopes.identify`): render its inputs in
its scope, route it (the step type's rule: the service, or ffmpeg here) and compute its
key. The engine and `sunoflow status` both call it, so they agree on every rendered input,
hence on every key; the journal and the lock are indexed by those keys, so the way a key is
made never changes (a changed key would pay again for every step already done).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runner import paths
from runner.errors import StepError
from runner.plan.keys import NO_ALIASES, key
from runner.plan.model import Instance, Plan, context, truthy
from runner.recipe import blame
from runner.recipe.messages import got as _got
from runner.recipe.model import INPUT_TYPES, NO_DEFAULT, fits
from runner.recipe.model import Provider as ProviderConfig
from runner.recipe.source import at
from runner.recipe.template import TemplateError, compile_template, is_template, render


@dataclass(frozen=True, slots=True)
class Identity:
    """A step instance as the run knows it once its inputs are rendered."""

    inputs: dict[str, Any]
    route: str  # "remote": the provider's service does it; "local": ffmpeg here
    key: str


class Unrendered(Exception):
    """A template of a step instance could not be rendered: `where` is its path in its
    recipe (`("steps", id, "if")` or `("steps", id, "with", name)`), `ctx` the names it saw
    (for the message: runner.recipe.blame)."""

    def __init__(self, exc: TemplateError, where: tuple[Any, ...], ctx: dict[str, Any]) -> None:
        super().__init__(str(exc))
        self.exc, self.where, self.ctx = exc, where, ctx


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

    def identify(self, inst: Instance, item: Any, roots: paths.Roots,
                 hashes: dict[tuple[Any, ...], str],
                 check: Callable[[str, dict[str, Any]], None] | None = None,
                 aliases: Mapping[str, str] = NO_ALIASES) -> Identity | None:
        """Render a step instance's inputs, route it and compute its key; None when its
        `if:` is false. Raises Unrendered. `hashes`: the run's memo of local files' hashes
        (paths.content_hashes); `check(route, inputs)` runs before any local file is read
        for the key (the engine refuses there what the provider would refuse); `aliases`:
        the store's (runner.store.aliases), so a file re-obtained as other bytes keys as
        the file it stands for."""
        step = inst.step
        assert step.type is not None, "reusable recipes are expanded before the run"
        ctx: dict[str, Any] = {}
        where: tuple[Any, ...] = ("steps", step.id, "if")
        try:
            ctx = self.context(inst, item)
            if not self.condition(inst, ctx):
                return None
            inputs = {}
            for k, v in step.with_.items():
                where = ("steps", step.id, "with", k)
                inputs[k] = render(v, ctx)
        except TemplateError as exc:
            raise Unrendered(exc, where, ctx) from None
        provider = self.plan.recipe.provider
        route = step.type.route(provider.kind, inputs)
        if check is not None:
            check(route, inputs)
        # A local file enters the key by content (read only where the recipe may read:
        # content_hashes confines each path as check_inputs does).
        k = instance_key(provider, step.uses, inputs, route,
                         paths.content_hashes(inputs, roots, hashes), aliases)
        return Identity(inputs, route, k)


def instance_key(provider: ProviderConfig, uses: str, inputs: dict[str, Any],
                 route: str, files: dict[str, str] | None = None,
                 aliases: Mapping[str, str] = NO_ALIASES) -> str:
    """`files`: the content hash of each local file the inputs name (paths.content_hashes).
    Added to the key only when there is one, so the keys of steps that read no local file
    are those of earlier versions (no journal or lock entry is orphaned by this)."""
    extra: dict[str, Any] = {"local_files": files} if files else {}
    if route == "local":
        # Local work depends on the take length, never on which service the recipe names:
        # switching provider does not redo a free local step whose inputs are unchanged.
        return key(uses, inputs, "local", None, {"take_seconds": provider.take_seconds,
                                                 **extra}, aliases)
    return key(uses, inputs, provider.kind, provider.base_url, extra or None, aliases)


def apply_take(outputs: Any, take: Any) -> Any:
    """Keep one of the two takes. Applied when reading, so a changed choice of take reruns
    nothing paid: the key (and the journal) hold both."""
    if take in (0, 1) and isinstance(outputs, dict) and isinstance(outputs.get("tracks"), list):
        tracks = outputs["tracks"]
        if len(tracks) > take:
            chosen = tracks[take]
            return {**outputs, "tracks": [chosen], "file": chosen.get("file")}
    return outputs
