# The image every Airflow service of docker-compose.yaml runs: the official Airflow 3 image plus this
# project's pinned requirements, the feedback_loop package (so DAGs import it without sys.path tricks), the
# DAGs and the Flywheel plugin.
FROM apache/airflow:3.3.2-python3.11

USER airflow
COPY --chown=airflow:root requirements.txt /opt/acsr/requirements.txt
RUN pip install --no-cache-dir -r /opt/acsr/requirements.txt

COPY --chown=airflow:root pyproject.toml /opt/acsr/pyproject.toml
COPY --chown=airflow:root include /opt/acsr/include
RUN pip install --no-cache-dir --no-deps /opt/acsr

COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
