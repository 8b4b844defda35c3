-- pgmld 0007: pgml.embed, as PostgresML declares it: a sentence-transformers model's
-- vector for a text. The catalog entry carries its signature and EXECUTE privilege (see
-- 0003); pgmld serves the calls.

CREATE FUNCTION pgml.embed(transformer text, text text, kwargs jsonb DEFAULT '{}')
RETURNS real[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pgml.served_by_pgmld('embed');
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION pgml.embed(text, text, jsonb) IS 'pgmld: a sentence-transformers embedding of a text';
