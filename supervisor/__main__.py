"""`python -m supervisor` is the `loopvisor` command."""

import sys

from supervisor.cli.main import main

sys.exit(main())
