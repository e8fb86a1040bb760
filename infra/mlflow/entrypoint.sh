#!/bin/sh
# Start the MLflow tracking server from environment variables only (credentials come from a
# Kubernetes Secret or the compose .env file, never from the image):
#   MLFLOW_DB_USER, MLFLOW_DB_PASSWORD, MLFLOW_DB_HOST, MLFLOW_DB_PORT (5432), MLFLOW_DB_NAME (mlflow)
#   MLFLOW_ARTIFACTS_DESTINATION   s3://bucket/prefix, served through this server (--serve-artifacts)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, MLFLOW_S3_ENDPOINT_URL (S3-compatible store, e.g. MinIO)
#   MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD   first admin of the basic-auth app
#   MLFLOW_ALLOWED_HOSTS           Host headers to accept (comma-separated, host:port patterns)
#   MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000)
set -eu
: "${MLFLOW_DB_USER:?}" "${MLFLOW_DB_PASSWORD:?}" "${MLFLOW_DB_HOST:?}" "${MLFLOW_ARTIFACTS_DESTINATION:?}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_ALLOWED_HOSTS:?}"

# URL-encode the password so any character is safe inside the database URI.
db_password=$(python -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["MLFLOW_DB_PASSWORD"], safe=""))')
db_uri="postgresql://${MLFLOW_DB_USER}:${db_password}@${MLFLOW_DB_HOST}:${MLFLOW_DB_PORT:-5432}/${MLFLOW_DB_NAME:-mlflow}"

# The basic-auth app reads its user store from an ini file; it lives in the same database (its own
# tables and alembic_version_auth) and is written at start so the password never sits on disk in the image.
umask 077
auth_ini="$(mktemp -d)/basic_auth.ini"
cat > "$auth_ini" <<INI
[mlflow]
default_permission = READ
database_uri = ${db_uri}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$auth_ini"

exec mlflow server \
  --backend-store-uri "$db_uri" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --serve-artifacts \
  --app-name basic-auth \
  --allowed-hosts "$MLFLOW_ALLOWED_HOSTS" \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "${MLFLOW_PORT:-5000}"
