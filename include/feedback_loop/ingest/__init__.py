"""Ingest: the input contract, `land` (landing files -> typed raw Parquet), `validate` (Great Expectations
suites over DuckDB; staged rows and quarantine rows with a reason) and the GX Data Docs site.

In: `<landing>/<source>/dt=D/*`. Out: `<lake>/raw/<source>/dt=D/`, `<lake>/staged/<source>/dt=D/`,
`<lake>/quarantine/<source>/dt=D/`, run summaries under `<lake>/runs/dt=D/`."""
