-- pgmld 0006: pgml.models.algorithm as PostgresML writes it. PostgresML records every
-- fine-tune under the algorithm 'transformers' (pgml.tune returns it, pgml.trained_models
-- and pgml.deployed_models show it, pgml.deploy filters by it). pgmld recorded the base
-- model's name there; the name now has its own column, base_model, and algorithm becomes
-- 'transformers' for the models already trained too. pgml.deploy's algorithm argument
-- matches either column, so 'transformers' (PostgresML) and a base model name both filter.

ALTER TABLE pgml.models ADD COLUMN base_model text;
COMMENT ON COLUMN pgml.models.base_model IS 'pgmld: the model the fine-tune started from (a Hub id, a directory, pgml:<id>, a project), as pgml.tune''s model_name named it';

UPDATE pgml.models SET base_model = algorithm, algorithm = 'transformers'
 WHERE algorithm IS DISTINCT FROM 'transformers';
