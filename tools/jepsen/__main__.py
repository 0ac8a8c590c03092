"""python -m tools.jepsen: see tools/jepsen/README.md."""
import sys

from tools.jepsen.run import main

sys.exit(main())
