"""Pull: fetch each configured source system's records for the night's interval and write them, as the vendor
sent them, to the landing area (`<landing>/<system>/dt=YYYY-MM-DD/`); mappings turn them into the contract's
rows (docs/contract/). In: Airflow connections and a day. Out: raw vendor files plus a pull manifest."""
