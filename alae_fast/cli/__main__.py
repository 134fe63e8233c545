"""python -m alae_fast.cli"""

import sys

from alae_fast.cli import main

sys.exit(main())
