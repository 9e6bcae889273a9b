import sys

from mccad.cli import main

sys.exit(main())
