"""The recipe language: a YAML file read with positions (source), checked against the
JSON Schema built from the step types (schema, verdict), defaulted and frozen into the
records of `model` (load, include for reusable recipes, takes for the kept takes), and
the templates its values may hold (template, sandbox). `messages` says what is wrong and
how to fix it; `blame` says it for template errors found during the run.

It never imports the plan, the engine or the providers: what a recipe's templates refer
to is the plan's to check (runner.plan.build.check runs the loader, then the plan).
"""
