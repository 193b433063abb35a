from __future__ import annotations

from fusion_dspy.cli import main

raise SystemExit(main())
