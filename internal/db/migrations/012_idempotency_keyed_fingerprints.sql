-- Idempotency fingerprints become keyed (issue 18). Until now request_hash
-- held SHA-256 of the method, path and body, and bodies carry card numbers,
-- CVV2, expiry dates, ID numbers and bank codes: beside the masked card
-- number of a saved answer, an unkeyed digest gives a CVV2 and expiry away in
-- about 10^5 guesses and a code in 10^6. From now on request_hash holds an
-- HMAC made in the HSM (vaultkeys RequestMAC: 0x02, the fp key version in 4
-- bytes, 32 bytes of MAC, over the merchant id, key, method, path and body).
--
-- The digests already stored cannot be re-keyed (their bodies are gone), so
-- they are erased, together with the answers they guarded. Their rows stay
-- until they expire, with an empty request_hash that matches no request: a
-- retry of such a key answers 422 idempotency_key_reused rather than run
-- again. Deleting the rows would let a retry made across the upgrade run a
-- second time, and a second run of a charge or a binding can debit or text
-- the member twice; a refused retry costs the merchant a new key.
UPDATE idempotency_keys
   SET request_hash = '\x'::bytea, response_body = NULL, response_type = NULL
 WHERE length(request_hash) = 32;

-- Nothing but a keyed fingerprint (or the erased mark) is stored again: a
-- process still running the old code fails its insert instead of writing a
-- digest.
ALTER TABLE idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_request_hash_keyed;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_request_hash_keyed
    CHECK (request_hash = '\x'::bytea OR (length(request_hash) = 37 AND get_byte(request_hash, 0) = 2));
