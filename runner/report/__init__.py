"""What sunoflow tells people about a plan or a run: the live progress view (or timestamped
lines), the plan table with its cost, the summary and JSON report of a finished run, and
the step graph as Mermaid or dot.

    progress.py  progress while a run goes   plan_table.py  the plan table and its cost
    summary.py   a finished run, said        graph.py       `sunoflow graph`

Never imports the engine, the store, the providers or the CLI: it is handed what to show.
"""
