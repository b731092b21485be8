-- Which patients a rule evaluates (`RuleScope` as JSON); NULL means every patient.
ALTER TABLE Rules ADD COLUMN Scope TEXT;
