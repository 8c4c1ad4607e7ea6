from recovery.cli import main

raise SystemExit(main())
