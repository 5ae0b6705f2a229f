from neurotorch.cli import main

raise SystemExit(main())
