"""The Flywheel page: one look at the loop (action queue, gaps, datasets, model decisions) served by the
Airflow plugin in plugins/acsr_flywheel.py from the warehouse and the lake."""
