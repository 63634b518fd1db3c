"""Everything sunoflow keeps on disk and in the shared cache: the state directory (the
journal of every step and the content-addressed files), the lock file and its YAML, which
recipes use a state directory, what a plan already has (`status`), stream previews, and the
shared cache with its ledger of claims (`--cache`, `push`, `pull`).

    journal.py  the state directory          lock.py, yamlout.py  NAME.lock
    status.py   done, stale or to run        ledger.py  recipes and files `clean` may delete
    cache.py    the shared cache             claims.py  who pays for a key, across machines
    blobsync.py files to and from the cache  sync.py    push, pull, status/clean with a cache
    previews.py stream previews              uploads.py  the uploads cache, handed to providers
    aliases.py  a file obtained again as other bytes, standing for the recorded one

Never imports the engine, the providers or the CLI: they use the store (tests/test_layout.py
checks it). Its formats stay readable: no format change without a version bump.
"""
