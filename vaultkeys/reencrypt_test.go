package vaultkeys_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/vaultkeys"
)

// TestRotateEnqueuesReencryption runs the real path: Rotate enqueues the
// River job in its transaction and a River worker moves every row.
func TestRotateEnqueuesReencryption(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	col := recordingTable(t, pool, "job_cards")

	worker := &vaultkeys.ReencryptWorker{}
	workers := river.NewWorkers()
	river.AddWorker(workers, worker)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Workers: workers, Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 2}},
		FetchPollInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := vaultkeys.New(vaultkeys.Config{Pool: pool, HSM: testenv.HSM(t, 4), Columns: []vaultkeys.Column{col}, Jobs: rc})
	if err != nil {
		t.Fatal(err)
	}
	worker.Vault = v
	if err := v.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		id, merchant := fmt.Sprintf("card_%d", i), "mch_job"
		tok, err := v.TokenizePAN(ctx, sensitive.NewPAN(fmt.Sprintf("622588%010d", i)), col.AAD(id, merchant))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO job_cards VALUES ($1, $2, $3, $4)`, id, merchant, tok.Ciphertext, tok.Fingerprint); err != nil {
			t.Fatal(err)
		}
	}
	pol, err := v.Rotate(ctx, vaultkeys.PurposeData, "test")
	if err != nil {
		t.Fatal(err)
	}
	var queued int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'vaultkeys_reencrypt' AND state = 'available'`).Scan(&queued); err != nil || queued != 1 {
		t.Fatalf("queued re-encryption jobs = %d, %v", queued, err)
	}

	if err := rc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Stop(context.Background()) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		var behind int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM job_cards WHERE qp_key_version(pan_ct) < $1`, pol.Current).Scan(&behind); err != nil {
			t.Fatal(err)
		}
		if behind == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows still below v%d after 30s", behind, pol.Current)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var id, merchant string
	var ct []byte
	if err := pool.QueryRow(ctx, `SELECT id, merchant_id, pan_ct FROM job_cards WHERE id = 'card_7'`).Scan(&id, &merchant, &ct); err != nil {
		t.Fatal(err)
	}
	if pt, err := v.Decrypt(ctx, ct, col.AAD(id, merchant), access); err != nil || string(pt) != "6225880000000007" {
		t.Fatalf("re-encrypted row decrypts to %q, %v", pt, err)
	}
}

// TestDumpHoldsNoClearCardData tokenizes card numbers the way binding will,
// then scans a pg_dump of the whole database for them, in clear and as the
// hex of their bytes.
func TestDumpHoldsNoClearCardData(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	col := recordingTable(t, pool, "dump_cards")
	v := newVault(t, pool, 2, col)
	pans := []string{"6217001234567890126", "4392251234567893", "6222029876543210987"}
	for i, p := range pans {
		id := fmt.Sprintf("card_dump_%d", i)
		tok, err := v.TokenizePAN(ctx, sensitive.NewPAN(p), col.AAD(id, "mch_dump"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO dump_cards VALUES ($1, 'mch_dump', $2, $3)`, id, tok.Ciphertext, tok.Fingerprint); err != nil {
			t.Fatal(err)
		}
		if _, err := v.DetokenizePAN(ctx, tok.Ciphertext, col.AAD(id, "mch_dump"), access); err != nil {
			t.Fatal(err)
		}
	}

	dump := testenv.PGDump(t)
	if !strings.Contains(dump, "card_dump_2") {
		t.Fatal("dump does not contain the test rows; the scan would prove nothing")
	}
	for _, p := range pans {
		for _, needle := range []string{p, p[6:], hex.EncodeToString([]byte(p)), hex.EncodeToString([]byte(p[6:]))} {
			if strings.Contains(dump, needle) {
				t.Errorf("pg_dump contains card data %q", needle)
			}
		}
	}
}

// TestReencryptOutOfTimeSnoozes: a run that moved some rows and then ran out
// of its time snoozes (the next run carries on; no attempt is used up),
// and the next run finishes. Each row's update is slowed by a trigger so
// that the time runs out after the first rows, whatever the machine.
func TestReencryptOutOfTimeSnoozes(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	col := recordingTable(t, pool, "slow_cards")
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION slow_cards_slow() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$;
		CREATE TRIGGER slow_cards_slow BEFORE UPDATE ON slow_cards FOR EACH ROW EXECUTE FUNCTION slow_cards_slow()`); err != nil {
		t.Fatal(err)
	}
	v := newVault(t, pool, 4, col)
	const rows = 20
	for i := range rows {
		id, merchant := fmt.Sprintf("card_%d", i), "mch_slow"
		tok, err := v.TokenizePAN(ctx, sensitive.NewPAN(fmt.Sprintf("622588%010d", i)), col.AAD(id, merchant))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO slow_cards VALUES ($1, $2, $3, $4)`, id, merchant, tok.Ciphertext, tok.Fingerprint); err != nil {
			t.Fatal(err)
		}
	}
	pol, err := v.Rotate(ctx, vaultkeys.PurposeData, "test")
	if err != nil {
		t.Fatal(err)
	}
	behind := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM slow_cards WHERE qp_key_version(pan_ct) < $1`, pol.Current).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	worker := &vaultkeys.ReencryptWorker{Vault: v}
	job := &river.Job[vaultkeys.ReencryptArgs]{Args: vaultkeys.ReencryptArgs{Purpose: vaultkeys.PurposeData}}

	short, cancel := context.WithTimeout(ctx, time.Second)
	err = worker.Work(short, job)
	cancel()
	var snooze *rivertype.JobSnoozeError
	if !errors.As(err, &snooze) {
		t.Fatalf("a run out of time after moving rows returned %v; want a snooze", err)
	}
	if left := behind(); left == 0 || left == rows {
		t.Fatalf("%d of %d rows left after the short run; want some moved and some left", left, rows)
	}
	if err := worker.Work(ctx, job); err != nil {
		t.Fatalf("the next run: %v", err)
	}
	if left := behind(); left != 0 {
		t.Fatalf("%d rows left after the next run", left)
	}
}

// TestReencryptWalksBatches: a table of several batches is moved whole,
// each row once, reading on from each batch's last key.
func TestReencryptWalksBatches(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	col := recordingTable(t, pool, "many_cards")
	v := newVault(t, pool, 4, col)
	const rows = 450 // three batches of at most 200
	for i := range rows {
		id, merchant := fmt.Sprintf("card_%04d", i), "mch_many"
		tok, err := v.TokenizePAN(ctx, sensitive.NewPAN(fmt.Sprintf("622588%010d", i)), col.AAD(id, merchant))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO many_cards VALUES ($1, $2, $3, $4)`, id, merchant, tok.Ciphertext, tok.Fingerprint); err != nil {
			t.Fatal(err)
		}
	}
	pol, err := v.Rotate(ctx, vaultkeys.PurposeData, "test")
	if err != nil {
		t.Fatal(err)
	}
	n, err := v.Reencrypt(ctx, vaultkeys.PurposeData)
	if err != nil || n != rows {
		t.Fatalf("Reencrypt = %d, %v; want %d rows moved", n, err, rows)
	}
	var behind int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM many_cards WHERE qp_key_version(pan_ct) < $1`, pol.Current).Scan(&behind); err != nil {
		t.Fatal(err)
	}
	if behind != 0 {
		t.Fatalf("%d rows left behind", behind)
	}
	if n, err := v.Reencrypt(ctx, vaultkeys.PurposeData); err != nil || n != 0 {
		t.Fatalf("a second Reencrypt = %d, %v; want nothing to move", n, err)
	}
}
