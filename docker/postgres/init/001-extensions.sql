-- PostGIS for the platform's databases. Installed in template1 first, so that every
-- database created afterwards (002-create-databases.sql) has it, then in the database
-- the script was started in. Safe to run again.
\set beat_initial_db :DBNAME
\connect template1
CREATE EXTENSION IF NOT EXISTS postgis;
\connect :"beat_initial_db"
CREATE EXTENSION IF NOT EXISTS postgis;
