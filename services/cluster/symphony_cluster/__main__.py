import sys

from symphony_cluster.cli import main

sys.exit(main())
