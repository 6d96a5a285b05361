"""``python -m calibstudio`` is the ``calibstudio`` command."""

from calibstudio.cli import main

raise SystemExit(main())
