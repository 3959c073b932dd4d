package vaultkeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/quickpay/quickpay/internal/audit"
	"github.com/quickpay/quickpay/internal/db"
)

// KeyInfo describes one key version for `quickpay keys list`.
type KeyInfo struct {
	Purpose   Purpose   `json:"purpose"`
	Version   int       `json:"version"`
	Label     string    `json:"label"`
	CreatedAt time.Time `json:"created_at"`
	State     string    `json:"state"` // "current", "decrypt-only" or "retired"
}

// List returns every key version, oldest first within each purpose.
func (v *Vault) List(ctx context.Context) ([]KeyInfo, error) {
	rows, err := v.cfg.Pool.Query(ctx, `
		SELECT k.purpose, k.version, k.label, k.created_at,
		       CASE WHEN k.version = p.current_version THEN 'current'
		            WHEN k.version >= p.min_decryption_version THEN 'decrypt-only'
		            ELSE 'retired' END
		FROM key_versions k JOIN key_policies p USING (purpose)
		ORDER BY k.purpose, k.version`)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyInfo, error) {
		var k KeyInfo
		err := r.Scan(&k.Purpose, &k.Version, &k.Label, &k.CreatedAt, &k.State)
		return k, err
	})
}

// Rotate creates version N+1 of p's key in the HSM and makes it current, in
// one transaction that also writes the audit row and, for data and fp,
// enqueues the re-encryption job. Older versions stay decryptable until
// SetMinDecryption passes them. New writes in this process use the new
// version at once; other processes within Config.PolicyRefresh.
func (v *Vault) Rotate(ctx context.Context, p Purpose, actor string) (Policy, error) {
	var pol Policy
	err := db.InTx(ctx, v.cfg.Pool, func(tx pgx.Tx) error {
		pol = Policy{Purpose: p}
		err := tx.QueryRow(ctx,
			`SELECT current_version, min_decryption_version FROM key_policies WHERE purpose = $1 FOR UPDATE`,
			string(p)).Scan(&pol.Current, &pol.MinDecryption)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("no %s key policy: start quickpay once before rotating", p)
		}
		if err != nil {
			return err
		}
		pol.Current++
		label := Label(p, pol.Current)
		// The row lock serializes rotations; a key left by a rotation that
		// crashed before commit is reused, not duplicated.
		if _, err := v.hsm.EnsureKey(ctx, label); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO key_versions (purpose, version, label) VALUES ($1, $2, $3)`,
			string(p), pol.Current, label); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE key_policies SET current_version = $2, updated_at = now() WHERE purpose = $1`,
			string(p), pol.Current); err != nil {
			return err
		}
		if err := audit.Write(ctx, tx, audit.Entry{Actor: actor, Action: "key.rotate", Subject: label,
			Details: map[string]any{"purpose": p, "version": pol.Current, "previous": pol.Current - 1}}); err != nil {
			return err
		}
		if p != PurposeJWT && v.cfg.Jobs != nil {
			if _, err := v.cfg.Jobs.InsertTx(ctx, tx, ReencryptArgs{Purpose: p}, nil); err != nil {
				return fmt.Errorf("enqueue re-encryption: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return Policy{}, fmt.Errorf("rotate %s key: %w", p, err)
	}
	if _, err := v.loadPolicies(ctx); err != nil {
		return Policy{}, err
	}
	return pol, nil
}

// SetMinDecryption retires every version of p below min. For data and fp it
// refuses with ErrRowsBelowVersion while a registered column still holds
// anything under an older version: re-encrypt first.
func (v *Vault) SetMinDecryption(ctx context.Context, p Purpose, min int, actor string) error {
	err := db.InTx(ctx, v.cfg.Pool, func(tx pgx.Tx) error {
		var cur, old int
		if err := tx.QueryRow(ctx,
			`SELECT current_version, min_decryption_version FROM key_policies WHERE purpose = $1 FOR UPDATE`,
			string(p)).Scan(&cur, &old); err != nil {
			return err
		}
		if min < 1 || min > cur {
			return fmt.Errorf("minimum version %d is outside 1..%d", min, cur)
		}
		for _, c := range v.cfg.Columns {
			col := c.Ciphertext
			if p == PurposeFP {
				col = c.Fingerprint
			}
			if col == "" || p == PurposeJWT {
				continue
			}
			var n int64
			q := fmt.Sprintf(`SELECT count(*) FROM %s WHERE qp_key_version(%s) < $1`,
				pgx.Identifier{c.Table}.Sanitize(), pgx.Identifier{col}.Sanitize())
			if err := tx.QueryRow(ctx, q, min).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%w: %d rows of %s.%s", ErrRowsBelowVersion, n, c.Table, col)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE key_policies SET min_decryption_version = $2, updated_at = now() WHERE purpose = $1`,
			string(p), min); err != nil {
			return err
		}
		return audit.Write(ctx, tx, audit.Entry{Actor: actor, Action: "key.retire", Subject: string(p),
			Details: map[string]any{"purpose": p, "min_decryption_version": min, "previous": old}})
	})
	if err != nil {
		return fmt.Errorf("set %s minimum version: %w", p, err)
	}
	_, err = v.loadPolicies(ctx)
	return err
}

// reencryptBatch bounds the rows read per query.
const reencryptBatch = 200

// Reencrypt moves every registered column to p's current version: data
// ciphertexts are decrypted and encrypted again under the same AAD; fp
// fingerprints are recomputed from the decrypted plaintext. Rows written
// concurrently are left alone (each update checks the old value). It returns
// the number of rows rewritten and is safe to run again.
func (v *Vault) Reencrypt(ctx context.Context, p Purpose) (int, error) {
	if p == PurposeJWT {
		return 0, nil // signing keys protect no stored data
	}
	pol, err := v.Policy(ctx, p)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, c := range v.cfg.Columns {
		target := c.Ciphertext
		if p == PurposeFP {
			if c.Fingerprint == "" {
				continue
			}
			target = c.Fingerprint
		}
		n, err := v.reencryptColumn(ctx, c, p, target, pol.Current)
		total += n
		if err != nil {
			// The rows moved so far are audited too (a run out of its
			// time goes on in the next one).
			return total, errors.Join(fmt.Errorf("re-encrypt %s.%s: %w", c.Table, target, err),
				v.auditReencrypt(context.WithoutCancel(ctx), p, pol.Current, total))
		}
	}
	return total, v.auditReencrypt(ctx, p, pol.Current, total)
}

// auditReencrypt records rows moved to version current of p, if any.
func (v *Vault) auditReencrypt(ctx context.Context, p Purpose, current, rows int) error {
	if rows == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return audit.Write(ctx, v.cfg.Pool, audit.Entry{Actor: "worker:reencrypt", Action: "key.reencrypt",
		Subject: Label(p, current), Details: map[string]any{"purpose": p, "rows": rows}})
}

func (v *Vault) reencryptColumn(ctx context.Context, c Column, p Purpose, target string, current int) (int, error) {
	ident := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	// Keyset pages: each batch reads on from the last key of the one
	// before, so a large table is walked once, not from its start again at
	// every batch (its moved rows still lie on the key's index).
	sel := fmt.Sprintf(`SELECT %s::text, %s::text, %s, %s FROM %s WHERE qp_key_version(%s) < $1 AND %s::text > $2
		ORDER BY %s::text LIMIT %d`,
		ident(c.Key), ident(c.Merchant), ident(c.Ciphertext), ident(target), ident(c.Table),
		ident(target), ident(c.Key), ident(c.Key), reencryptBatch)
	upd := fmt.Sprintf(`UPDATE %s SET %s = $1 WHERE %s::text = $2 AND %s = $3`,
		ident(c.Table), ident(target), ident(c.Key), ident(target))
	total, after := 0, ""
	for {
		rows, err := v.cfg.Pool.Query(ctx, sel, current, after)
		if err != nil {
			return total, err
		}
		type row struct {
			key, merchant string
			ct, old       []byte
		}
		batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.key, &x.merchant, &x.ct, &x.old)
			return x, err
		})
		if err != nil {
			return total, err
		}
		if len(batch) == 0 {
			return total, nil
		}
		for _, r := range batch {
			pt, err := v.decrypt(ctx, r.ct, c.AAD(r.key, r.merchant))
			if err != nil {
				return total, fmt.Errorf("row %s: %w", r.key, err)
			}
			var next []byte
			if p == PurposeData {
				next, err = v.encryptWith(ctx, current, pt, c.AAD(r.key, r.merchant))
			} else {
				next, err = v.fingerprintWith(ctx, current, c.FPDomain, pt)
			}
			clear(pt)
			if err != nil {
				return total, err
			}
			if bytes.Equal(next, r.old) {
				continue
			}
			tag, err := v.cfg.Pool.Exec(ctx, upd, next, r.key, r.old)
			if err != nil {
				return total, err
			}
			if tag.RowsAffected() > 0 {
				total++
			}
		}
		after = batch[len(batch)-1].key
	}
}

// ReencryptArgs is the River job that Rotate enqueues.
type ReencryptArgs struct {
	Purpose Purpose `json:"purpose"`
}

// Kind implements river.JobArgs.
func (ReencryptArgs) Kind() string { return "vaultkeys_reencrypt" }

// InsertOpts keeps one pending re-encryption per purpose.
func (ReencryptArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: river.QueueDefault, MaxAttempts: 25, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// ReencryptWorker runs Reencrypt.
type ReencryptWorker struct {
	river.WorkerDefaults[ReencryptArgs]
	Vault *Vault
}

// Work implements river.Worker. A run that moved rows and then ran out of
// its time (River's JobTimeout, which stays under the stuck-job rescue)
// snoozes instead of failing: the next run carries on where it stopped,
// and a large table does not use up the job's attempts.
func (w *ReencryptWorker) Work(ctx context.Context, job *river.Job[ReencryptArgs]) error {
	n, err := w.Vault.Reencrypt(ctx, job.Args.Purpose)
	if err != nil && n > 0 && ctx.Err() != nil {
		return river.JobSnooze(time.Second)
	}
	return err
}
