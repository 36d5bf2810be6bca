# The feature store service: slim, non-root, served by waitress (python -m app).
FROM python:3.11-slim

# DATA_DIR exists and belongs to the service user (a new named volume mounted there takes that ownership);
# ETL repositories mounted from the host (docker-compose.yml: /srv/etl-repos) belong to another uid, which
# git would refuse as "dubious ownership" without safe.directory.
RUN apt-get update && apt-get install -y --no-install-recommends git curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 featurestore \
    && mkdir -p /var/lib/featurestore /srv/etl-repos \
    && chown featurestore:featurestore /var/lib/featurestore \
    && git config --system --add safe.directory '*'

WORKDIR /srv/featurestore
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY app ./app
COPY catalog ./catalog
COPY checks ./checks
COPY client ./client
COPY common ./common
COPY demo ./demo
COPY etl ./etl
COPY extraction ./extraction
COPY feed ./feed
COPY featurerepo ./featurerepo
COPY realtime ./realtime
COPY sources ./sources
COPY sql ./sql
COPY ui ./ui
COPY warehouse ./warehouse

USER featurestore
ENV HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/var/lib/featurestore
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/v1.0/health || exit 1
CMD ["python", "-m", "app"]
