-- Keyset paging in (received time, id) order, for downstream copies catching up
-- (Store::readings_since / alerts_since), and event-time deletes for retention.
CREATE INDEX IF NOT EXISTS GlucoseReadings_received ON GlucoseReadings (ReceivedAtMs, ReadingID);
CREATE INDEX IF NOT EXISTS DeviceOperationalData_received ON DeviceOperationalData (ReceivedAtMs, ReadingID);
CREATE INDEX IF NOT EXISTS DeviceOperationalData_time ON DeviceOperationalData (TimestampMs);
CREATE INDEX IF NOT EXISTS Alerts_created ON Alerts (CreatedAtMs, AlertID);
