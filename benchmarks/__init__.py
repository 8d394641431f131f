"""quotaflow's benchmarks: a checkout's folder, not part of the installed `quotaflow` package
(the wheel ships none of it). Results and how to read them: BENCHMARKS.md.

`quotaflow bench` (the CLI imports `benchmarks.run` when the command runs) measures admit
against a bare CloudEvents endpoint and the whole pipeline with the stand-in model, on a local
stack of the bench's own (loopback only, bounded in time):
`run` (one run), `door` and `bare` (admit against the bare endpoint), `servers` (the server
comparison), `pipeline` (sustained, open loop, drain), `wrk` (the load generator's scripts),
`cpu` (CPU time by process, psutil), `stats`, `tables` (BENCHMARKS.md's tables) and `plots`
(matplotlib, imported only when drawing).

The other figures each have a script of their own, run from the checkout's root as
`python -m benchmarks.NAME --help`: `bench_admit`, `bench_pipeline`, `bench_streaming`,
`bench_model`, `bench_ledger`, `bench_analytics`, and `broker_fetch_race` (the local broker's
race, not a figure). psutil and matplotlib come with the `dev` extra."""
