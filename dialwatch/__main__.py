from dialwatch.cli import main

raise SystemExit(main())
