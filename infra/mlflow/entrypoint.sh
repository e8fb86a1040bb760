#!/bin/sh
# Start the MLflow tracking server (basic-auth app) from environment variables only. Credentials come
# from a Kubernetes Secret (secretKeyRef) or the compose .env file (env_file), never from the image.
#
# Required:
#   MLFLOW_FLASK_SERVER_SECRET_KEY   static Flask secret key of the basic-auth app (CSRF); the same on
#                                    every replica. Generate: python -c 'import secrets; print(secrets.token_hex(32))'
#   MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD   first admin of the basic-auth app
#                                    (created on the first start, ignored once it exists)
#   MLFLOW_ARTIFACTS_DESTINATION     s3://bucket/prefix, served through this server (--serve-artifacts)
#   MLFLOW_ALLOWED_HOSTS             Host headers to accept (comma-separated, host:port patterns)
#   MLFLOW_DB_USER, MLFLOW_DB_PASSWORD, MLFLOW_DB_HOST   PostgreSQL backend store, unless
#                                    MLFLOW_BACKEND_STORE_URI is set
# Optional (production defaults):
#   MLFLOW_BACKEND_STORE_URI         default postgresql://$MLFLOW_DB_USER:<password, URL-encoded>@$MLFLOW_DB_HOST:$MLFLOW_DB_PORT/$MLFLOW_DB_NAME
#   MLFLOW_DB_PORT (5432), MLFLOW_DB_NAME (mlflow)
#   MLFLOW_AUTH_DATABASE_URI         user store of the basic-auth app; default: the backend store
#                                    (its own tables and alembic_version_auth in the same database)
#   MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000), MLFLOW_WORKERS (4)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, MLFLOW_S3_ENDPOINT_URL   the S3-compatible artifact store
# tests/test_mlflow_auth.py runs this script with a sqlite store and a local artifact folder.
set -eu

fail() {
  echo "mlflow-entrypoint: $*" >&2
  exit 64
}

# One line per missing variable, naming where it should come from.
require() {
  for name in "$@"; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || fail "$name is not set (set it from the Secret mlflow-credentials on Kubernetes or infra/mlflow/.env with docker compose)"
  done
}

require MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD \
  MLFLOW_ARTIFACTS_DESTINATION MLFLOW_ALLOWED_HOSTS

if [ -n "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
  db_uri=$MLFLOW_BACKEND_STORE_URI
else
  require MLFLOW_DB_USER MLFLOW_DB_PASSWORD MLFLOW_DB_HOST
  # URL-encode the password so any character is safe inside the database URI.
  db_password=$(python -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["MLFLOW_DB_PASSWORD"], safe=""))')
  db_uri="postgresql://${MLFLOW_DB_USER}:${db_password}@${MLFLOW_DB_HOST}:${MLFLOW_DB_PORT:-5432}/${MLFLOW_DB_NAME:-mlflow}"
fi
auth_db_uri=${MLFLOW_AUTH_DATABASE_URI:-$db_uri}

# The basic-auth app reads its user store from an ini file, written at start into a private temporary
# folder so the password never sits in the image. configparser treats % as interpolation: double it
# (a URL-encoded password is full of %XX). The admin user comes from MLFLOW_AUTH_ADMIN_* (environment).
umask 077
auth_ini="$(mktemp -d)/basic_auth.ini"
cat > "$auth_ini" <<INI
[mlflow]
default_permission = READ
database_uri = $(printf '%s' "$auth_db_uri" | sed 's/%/%%/g')
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$auth_ini"
export MLFLOW_FLASK_SERVER_SECRET_KEY

exec mlflow server \
  --backend-store-uri "$db_uri" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  --serve-artifacts \
  --app-name basic-auth \
  --allowed-hosts "$MLFLOW_ALLOWED_HOSTS" \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-4}"
