-- A member whose identity a binding verified keeps it by reference: the
-- binding's identity ciphertexts (AAD names the binding) are the member's,
-- and only the fingerprints are copied for comparison. No re-encryption,
-- no second copy of the data. Identity declared at creation stays in the
-- member's own *_ct columns.
ALTER TABLE members ADD COLUMN identity_binding_id text REFERENCES bindings (id);
