-- PostgreSQL compresses contexts with lz4 from this version on; SQLite stores them as they are.
SELECT 1;
