import sys

from jqodi.cli import main

sys.exit(main())
