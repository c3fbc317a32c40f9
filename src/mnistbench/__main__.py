from mnistbench.cli import main

raise SystemExit(main())
