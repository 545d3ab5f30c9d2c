from nodeflow.cli import main

raise SystemExit(main())
