from birdsed.cli import main

raise SystemExit(main())
