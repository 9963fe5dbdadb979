"""`python -m supervisor` is the `loopvisor` command."""

import sys

from .cli import main

sys.exit(main())
