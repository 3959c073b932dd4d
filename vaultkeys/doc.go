// Package vaultkeys keeps quickpay's keys in a PKCS#11 HSM and does all
// cryptography on card data there, and reads secrets from HashiCorp Vault.
//
// # Keys
//
// Keys are labelled by purpose and version (Label): qp-data-vN (AES-256,
// AES-GCM of PAN, ID number, name, phone), qp-fp-vN (generic secret,
// HMAC-SHA256 fingerprints) and qp-jwt-vN (EC P-256 pair, ES256 API tokens).
// Every secret and private key is created CKA_SENSITIVE and not
// CKA_EXTRACTABLE: the process never holds key material. Which version is
// current and which is the oldest still accepted (min_decryption_version)
// lives in Postgres (key_policies), so all processes agree; Rotate makes
// N+1 current in one transaction with its audit row and the re-encryption
// job.
//
// Ciphertexts are 0x01 ‖ version (uint32, big-endian) ‖ 12-byte IV ‖
// ciphertext ‖ 16-byte tag; the caller's AAD (e.g. card id and merchant id)
// binds each to its row. Fingerprints are 0x02 ‖ version ‖ HMAC. SQL reads
// the version with qp_key_version(bytea).
//
// # Sessions and concurrency
//
// An HSM is safe for concurrent use. It holds at most HSMConfig.PoolSize
// sessions, each used by one goroutine at a time (PKCS#11 sessions are not
// thread-safe; the token is). Rules:
//
//   - Every operation runs through HSM.Do, which borrows a session and
//     returns it. A caller waits for a free session until its context ends.
//   - A session that fails with CKR_SESSION_HANDLE_INVALID,
//     CKR_SESSION_CLOSED, CKR_DEVICE_* or CKR_TOKEN_NOT_PRESENT is closed and
//     never returned to the pool; the idle sessions are dropped with it,
//     since such failures usually hit all of them (C_CloseAllSessions, a
//     token reset). Do then retries on a new session: every operation here
//     is a pure function of its inputs, so a retry is safe.
//   - Login is per application, not per session, and is lost when the last
//     session closes. A new session is checked and logged in if needed, with
//     the PIN asked again from its PINSource (Vault); CKR_USER_NOT_LOGGED_IN
//     also triggers a login, and so do a stale object handle and a find
//     that sees no key from a session not logged in: C_Logout leaves the
//     sessions open, public, with the private objects' handles gone. The
//     dev-only faults (devfaults.go, -tags devfaults) provoke both losses.
//   - Object handles are found by label once and cached; the cache is
//     dropped after every login and when a handle turns out stale.
//   - Cryptography uses working copies of the token keys: session objects
//     made in the HSM by C_CopyObject (still sensitive and non-extractable)
//     and owned by one keeper session outside the pool, which stays open
//     until Close. SoftHSM2 re-checks a token object's file on every use; a
//     session object lives in memory.
//   - Key generation is serialized in the process; across processes,
//     Rotate's row lock on key_policies serializes it.
//   - The PKCS#11 module's state is process-wide: OpenHSM finalizes it on
//     Close only if it initialized it.
//
// # Decryption
//
// Decrypt (and DetokenizePAN) is the restricted path: it needs an Access
// saying who and why, refuses retired versions, and writes an audit row
// whether it succeeds or not. Errors never carry plaintext or key material.
//
// # Vault
//
// Secrets talks to HashiCorp Vault (KV v2) with a token (dev) or AppRole
// (production), renews its token, and explains failures: unreachable,
// sealed, denied, or missing secret. The HSM user PIN is read from it
// (default secret/quickpay/hsm, field pin) at every login.
package vaultkeys
