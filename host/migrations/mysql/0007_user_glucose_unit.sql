-- As migrations/sqlite/0007: each user's glucose display unit (`mg/dL` or `mmol/L`); NULL
-- means the default, mg/dL.
ALTER TABLE Users ADD COLUMN IF NOT EXISTS GlucoseUnit VARCHAR(8) NULL;
