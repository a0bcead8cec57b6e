"""``python -m scoring``: see ``scoring._cli``."""

from scoring._cli import main

raise SystemExit(main())
