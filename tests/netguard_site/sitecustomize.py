"""Python runs this at start-up in every process the tests start (tests/netguard.py puts this
folder first on PYTHONPATH): the same socket guard as in the test process, so a render or a
Prefect server started by a test cannot reach the network either."""

import os

if os.environ.get("PROMPTREEL_NETGUARD") == "1":
    import importlib.util
    import pathlib

    _spec = importlib.util.spec_from_file_location(
        "promptreel_netguard", pathlib.Path(__file__).resolve().parent.parent / "netguard.py")
    _guard = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_guard)
    _guard.install()
