-- As migrations/sqlite/0003: keyset paging in (received time, id) order for catch-up, and
-- event-time deletes for retention (DeviceOperationalData_time exists since 0001).
ALTER TABLE GlucoseReadings ADD INDEX GlucoseReadings_received (ReceivedAtMs, ReadingID);
ALTER TABLE DeviceOperationalData ADD INDEX DeviceOperationalData_received (ReceivedAtMs, ReadingID);
ALTER TABLE Alerts ADD INDEX Alerts_created (CreatedAtMs, AlertID);
