-- No query reads bindings by merchant and creation time (there is no list
-- of bindings in the API): the index only cost a write on every binding.
-- Worse, before a fresh table had statistics, the planner rated it as
-- cheap as the primary key for "merchant_id = $1 AND id = $2", and a
-- connection's cached plan then walked every binding of the merchant to
-- find one (docs/decisions.md, "Plans cached before statistics").
DROP INDEX IF EXISTS bindings_merchant_created;
