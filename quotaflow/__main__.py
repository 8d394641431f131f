"""`python -m quotaflow` is the `quotaflow` command."""

from quotaflow.cli.main import main

raise SystemExit(main())
