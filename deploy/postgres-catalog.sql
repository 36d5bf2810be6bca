-- The catalog's own database (docker-compose.replicas.yml), made once on an empty data volume after
-- 10-featurestore-roles.sql: owned by featurestore, closed to everyone else, so user SQL (the
-- featurestore_reader role, connected to the warehouse database) cannot reach the catalog's tables (API key
-- hashes among them).
CREATE DATABASE catalog OWNER featurestore;
REVOKE CONNECT, TEMPORARY ON DATABASE catalog FROM PUBLIC;
