-- One database per service. PostgreSQL has no CREATE DATABASE IF NOT EXISTS, so each
-- statement is generated only when the database is missing (psql's \gexec): safe to run
-- again.
SELECT 'CREATE DATABASE auth_service'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'auth_service')\gexec
SELECT 'CREATE DATABASE core_service'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'core_service')\gexec
SELECT 'CREATE DATABASE messaging_service'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'messaging_service')\gexec
