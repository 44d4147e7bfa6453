"""Installs the test network block in subprocesses started by the tests (see litbench_netblock)."""

import os

if os.environ.get("LITBENCH_BLOCK_NETWORK") == "1":
    import litbench_netblock

    litbench_netblock.install()
