"""`python -m auditai ...` (and `torchrun -m auditai ...`): the `auditai` command."""

import sys

from auditai.cli import main

if __name__ == "__main__":
    sys.exit(main())
