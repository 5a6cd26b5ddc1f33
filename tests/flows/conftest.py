"""Flow tests start Prefect's temporary server; on a busy 2-core machine its first start can exceed 20 s."""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
