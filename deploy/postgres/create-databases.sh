#!/bin/sh
# Creates one database per component (Prefect, MLflow, the judgment ledger) on first start.
set -eu
for db in "${PREFECT_DB:-prefect}" "${MLFLOW_DB:-mlflow}" "${LEDGER_DB:-refine_ledger}"; do
  echo "creating database $db"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "SELECT 'CREATE DATABASE \"$db\"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db')\gexec"
done
