"""The plan: a frozen recipe expanded into instances (`for_each`), every reference checked,
dependencies found, the graph ordered, and each instance's key computed, before anything is
paid for.

    build.py   the plan and its instances    refs.py    what each template may name
    scopes.py  what templates see per scope  fanin.py   a reusable recipe's loops

Never imports the engine (nor the store, the providers, the report or the CLI): a plan
is what will run, decided without running it (tests/test_layout.py checks it).
"""
