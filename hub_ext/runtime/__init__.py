"""What runs as the user, in the user's environment, not in the hub's.

The model server of each deployed replica (:mod:`.modelserver`, a package with its
micro-batching), the drift statistics it shares with the notebook side that writes
the training summary (:mod:`.drift`), the data-quality checks of its inputs against the
signature and that summary (:mod:`.quality`) and the warm papermill host of scheduled runs
(:mod:`.warm`). These run with the environment's Python, as the owner's account, so
they never import a service, a spawner, the hub, the CLI or the authenticators
(checked by import-linter, ``pyproject.toml``); the services start them by module
name and speak to them over HTTP or pipes.
"""
