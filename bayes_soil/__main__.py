from bayes_soil.cli import main

raise SystemExit(main())
