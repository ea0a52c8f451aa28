ALTER TABLE workers DROP COLUMN process_key;
