import sys

from childguard.cli.main import main

sys.exit(main())
