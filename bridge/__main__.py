"""`python -m bridge` is the same as the `fax-bridge` command."""

from bridge.cli import main

raise SystemExit(main())
