import sys

from alae_fast.convert.cli import main

sys.exit(main())
