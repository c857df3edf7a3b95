"""Real data sets the benchmarks read (never committed: installed by scripts/bootstrap.sh)."""
