"""``python -m segtext`` runs the ``segtext`` command line."""

from segtext.cli import main

raise SystemExit(main())
