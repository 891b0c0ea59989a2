"""`python -m pgqueue ...`: the operator's command line (see `pgqueue.cli`).

python -m pgqueue migrate | schema-version
python -m pgqueue jobs [--queue Q] [--state S] [--kind K] [--payload JSON] [--limit N] [--json]
python -m pgqueue show ID [--json]
python -m pgqueue retry ID... | retry --failed [--queue Q] [--kind K]
python -m pgqueue cancel ID...
python -m pgqueue queues [--json] | pause Q | resume Q
python -m pgqueue workers [--json]
python -m pgqueue purge --older-than DURATION [--state S]...
python -m pgqueue dashboard [--host H] [--port P]
"""

from __future__ import annotations

import sys

from pgqueue.cli import main

if __name__ == "__main__":
    sys.exit(main())
