"""C{python -m benchmarks}: run the suite."""

from benchmarks.run import main

raise SystemExit(main())
