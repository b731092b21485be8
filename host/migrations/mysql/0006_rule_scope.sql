-- As migrations/sqlite/0006: which patients a rule evaluates (`RuleScope` as JSON); NULL
-- means every patient.
ALTER TABLE Rules ADD COLUMN IF NOT EXISTS Scope TEXT NULL;
