"""`python -m supervisor` is the `loopvisor` command."""

import sys

from supervisor.cli import main

sys.exit(main())
