-- The warehouse's roles, made once by the postgres image on an empty data volume
-- (docker-entrypoint-initdb.d runs this as POSTGRES_USER, a superuser, in POSTGRES_DB).
--   featurestore         the service's own writes (WAREHOUSE_URL): creates the sources' tables and
--                        appends rows; owns the database and its public schema; not a superuser.
--   featurestore_reader  user SQL (WAREHOUSE_READ_URL): may only read the tables featurestore makes;
--                        read-only transactions, no server files; temporary tables only for the
--                        service's own uploads (a training spine, in a session of its own; user SQL
--                        is one checked SELECT in a read-only transaction and cannot create any).
-- The passwords match docker-compose.yml; the server is reachable only inside the compose network.
CREATE ROLE featurestore LOGIN PASSWORD 'featurestore' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE ROLE featurestore_reader LOGIN PASSWORD 'featurestore_reader'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I OWNER TO featurestore', current_database());
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO featurestore_reader', current_database());
END
$$;
ALTER SCHEMA public OWNER TO featurestore;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO featurestore_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE featurestore IN SCHEMA public GRANT SELECT ON TABLES TO featurestore_reader;
ALTER ROLE featurestore_reader SET default_transaction_read_only = on;
