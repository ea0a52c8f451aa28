ALTER TABLE signals DROP COLUMN schedules;
DROP TABLE schedules;
