-- As migrations/sqlite/0004: an idempotency key for rule faults and an event-time index on
-- alerts. Re-runnable: a column or index that is already there counts as added.
ALTER TABLE RuleFaults ADD COLUMN FaultKey VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL;
ALTER TABLE RuleFaults ADD UNIQUE INDEX RuleFaults_key (FaultKey);
ALTER TABLE Alerts ADD INDEX Alerts_time (TimestampMs);
CREATE TABLE IF NOT EXISTS SinkCursors (
    Sink        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    CursorJson  TEXT NOT NULL,
    UpdatedAtMs BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
ALTER TABLE RuleFaults ADD INDEX RuleFaults_time (AtMs);
