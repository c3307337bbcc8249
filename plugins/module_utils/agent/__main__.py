"""`python -m <engine package>.agent`: the same as bin/flannel-agent."""

import sys

from .daemon import main

sys.exit(main())
