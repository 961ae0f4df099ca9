import sys

from refit.cli import main

sys.exit(main())
