"""The recipe language: a YAML album recipe read with the position of every node, checked
against the schema, defaulted and frozen into dataclasses; its templates and their sandbox;
reusable recipes (`uses:`); the kept-takes file beside a recipe.

    source.py   YAML with positions        load.py     read, validate, default, freeze
    schema.py   the JSON Schema            verdict.py  the fast yes/no schema check
    template.py templates, their refs      sandbox.py  what a template may reach
    include.py  reusable recipes           blame.py    template errors, positioned
    bulk.py     GC paused while loading    takes.py    NAME.takes.yaml

Never imports the plan, the engine or the providers (nor anything above them): the
language reads and freezes a recipe; planning and running it are other parts' work
(tests/test_layout.py checks it).
"""
