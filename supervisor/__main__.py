"""`python -m supervisor` is the `loopvisor` command."""

import sys

from supervisor.cli.entry import main

sys.exit(main())
