from agent.run import main

raise SystemExit(main())
