import sys

from training.experiments.running import main

sys.exit(main())
