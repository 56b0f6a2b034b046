SET LOCAL lock_timeout = '3s';
DROP TABLE alert_listener_positions;
