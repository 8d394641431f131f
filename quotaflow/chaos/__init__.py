"""`quotaflow chaos`: drive requests through a local stack while injecting faults (SIGKILL of a
function process, a broker kill, PostgreSQL backends terminated, Redis flushed), then check
that every accepted request ended exactly once and was billed exactly what its record says.

`plan` draws the seeded run, `load` sends it, `faults` injects and times recovery, `observe`
reads the stack's state, `checks` judges it (pure), `report` prints it and `harness` runs it
all."""
