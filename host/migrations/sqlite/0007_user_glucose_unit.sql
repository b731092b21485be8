-- Each user's glucose display unit (`mg/dL` or `mmol/L`); NULL means the default, mg/dL.
ALTER TABLE Users ADD COLUMN GlucoseUnit TEXT;
