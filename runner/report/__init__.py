"""What sunoflow tells people about a plan or a run: the live progress view (or timestamped
lines), the plan table with its cost, and the step graph as Mermaid or dot.

    progress.py  progress while a run goes   plan_table.py  the plan table and its cost
    graph.py     `sunoflow graph`

Never imports the engine, the store, the providers or the CLI: it is handed what to show.
"""
