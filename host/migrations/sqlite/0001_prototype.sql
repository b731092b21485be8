-- The prototype's tables, kept with their names. Timestamps are epoch milliseconds (UTC).
-- Fact tables (readings, telemetry, alerts) carry no foreign keys: readings may arrive
-- before the dimension rows that describe their patient or device.
CREATE TABLE IF NOT EXISTS Patient (
    PatientID   INTEGER PRIMARY KEY,
    FirstName   TEXT NOT NULL,
    LastName    TEXT NOT NULL,
    DateOfBirth TEXT,
    Sex         TEXT,
    Email       TEXT,
    Phone       TEXT,
    Profile     TEXT,
    DiabetesType TEXT,
    CreatedAtMs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS Manufacturer (
    ManufacturerID INTEGER PRIMARY KEY,
    Name           TEXT NOT NULL,
    Country        TEXT
);
CREATE TABLE IF NOT EXISTS DeviceStaticInfo (
    DeviceID       INTEGER PRIMARY KEY,
    ManufacturerID INTEGER REFERENCES Manufacturer(ManufacturerID),
    PatientID      INTEGER REFERENCES Patient(PatientID),
    Model          TEXT,
    SerialNumber   TEXT,
    DeviceType     TEXT,
    FirmwareVersion TEXT
);
CREATE TABLE IF NOT EXISTS DeviceOperationalData (
    ReadingID          TEXT PRIMARY KEY,
    DeviceID           INTEGER NOT NULL,
    TimestampMs        INTEGER NOT NULL,
    BatteryLevel       REAL,
    FirmwareVersion    TEXT,
    ConnectivityStatus TEXT NOT NULL,
    ErrorCodes         TEXT NOT NULL,
    ReceivedAtMs       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS DeviceOperationalData_device_time ON DeviceOperationalData (DeviceID, TimestampMs);
CREATE TABLE IF NOT EXISTS GlucoseReadings (
    ReadingID    TEXT PRIMARY KEY,
    PatientID    INTEGER NOT NULL,
    DeviceID     INTEGER NOT NULL,
    GlucoseLevel REAL NOT NULL,
    TimestampMs  INTEGER NOT NULL,
    Location     TEXT,
    ReceivedAtMs INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS GlucoseReadings_time ON GlucoseReadings (TimestampMs);
CREATE INDEX IF NOT EXISTS GlucoseReadings_patient_time ON GlucoseReadings (PatientID, TimestampMs);
CREATE TABLE IF NOT EXISTS Subscriber (
    SubscriberID   INTEGER PRIMARY KEY,
    Name           TEXT NOT NULL,
    Role           TEXT NOT NULL CHECK (Role IN ('patient', 'doctor', 'caregiver', 'app')),
    TelegramChatID INTEGER,
    Email          TEXT
);
CREATE TABLE IF NOT EXISTS SubscribedPatients (
    SubscriberID INTEGER NOT NULL REFERENCES Subscriber(SubscriberID),
    PatientID    INTEGER NOT NULL REFERENCES Patient(PatientID),
    PRIMARY KEY (SubscriberID, PatientID)
);
CREATE TABLE IF NOT EXISTS Alerts (
    AlertID     TEXT PRIMARY KEY,
    ReadingID   TEXT NOT NULL,
    PatientID   INTEGER,
    DeviceID    INTEGER NOT NULL,
    Kind        TEXT NOT NULL,
    RuleName    TEXT NOT NULL,
    RuleVersion TEXT NOT NULL,
    Code        TEXT NOT NULL,
    Severity    TEXT NOT NULL,
    Message     TEXT NOT NULL,
    Value       REAL,
    TimestampMs INTEGER NOT NULL,
    CreatedAtMs INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS Alerts_patient_time ON Alerts (PatientID, TimestampMs);
CREATE TABLE IF NOT EXISTS AlertLifecycle (
    AlertID          TEXT PRIMARY KEY REFERENCES Alerts(AlertID),
    Status           TEXT NOT NULL CHECK (Status IN ('open', 'acknowledged', 'resolved', 'suppressed')),
    AcknowledgedBy   TEXT,
    AcknowledgedAtMs INTEGER,
    ResolvedBy       TEXT,
    ResolvedAtMs     INTEGER,
    UpdatedAtMs      INTEGER NOT NULL
);
