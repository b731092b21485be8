-- Rule faults get a key derived from the fault and its batch, so a retried batch write stores
-- each fault once (the auto-increment FaultID alone made a replay insert it again). Alerts get
-- an event-time index for rebuilding the suppression state on start.
ALTER TABLE RuleFaults ADD COLUMN FaultKey TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS RuleFaults_key ON RuleFaults (FaultKey);
CREATE INDEX IF NOT EXISTS Alerts_time ON Alerts (TimestampMs);
-- Where each storage sink (archive, analytics) has copied the OLTP store up to: the sinks
-- catch up from the store, which is the log, and resume from here after a restart.
CREATE TABLE IF NOT EXISTS SinkCursors (
    Sink        TEXT PRIMARY KEY,
    CursorJson  TEXT NOT NULL,
    UpdatedAtMs INTEGER NOT NULL
);
-- Dead letters and rule faults are bounded by age and count (`[diagnostics]`): the deletes
-- find their cut by time.
CREATE INDEX IF NOT EXISTS DeadLetters_received ON DeadLetters (ReceivedAtMs);
CREATE INDEX IF NOT EXISTS RuleFaults_time ON RuleFaults (AtMs);
