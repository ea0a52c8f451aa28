-- Which process a worker is beyond its pid: boot id, PID namespace and start time (see host.rs).
ALTER TABLE workers ADD COLUMN process_key TEXT;
