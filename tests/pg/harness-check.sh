# Sourced (with ROOT set) by the long fleet runs, tests/chaos/run.sh and tests/soak/run.sh. Their
# suite starts a PostgreSQL of its own (its faults restart it); the shared test server started here
# only answers the harness's "is PostgreSQL here" check, as in tests/run.sh, and is stopped on exit
# when this script started it.
pg_ours=1
bash "$ROOT/tests/pg/pg.sh" status >/dev/null 2>&1 && pg_ours=0
cleanup_pg() { if [ "$pg_ours" = 1 ]; then bash "$ROOT/tests/pg/pg.sh" stop >/dev/null 2>&1 || true; fi; }
trap cleanup_pg EXIT
pg_line=$(bash "$ROOT/tests/pg/pg.sh" start | tail -n 1)
export "${pg_line?}"
