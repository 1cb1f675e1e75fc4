"""The lake: partitioned Parquet with atomic writes (local or object store), DuckDB connections, and the
DuckDB warehouse file of views over the lake that analysts and the Flywheel page open.

Every stage reads and writes through here: `<lake>/<layer>/<name>/dt=YYYY-MM-DD/part.parquet`."""
