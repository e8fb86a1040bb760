"""`python -m jobs.cli ...` (how jobs run on a cluster): the `convlstm` command."""
import sys

from jobs.cli import main

sys.exit(main())
