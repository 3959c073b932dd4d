package main

import (
	"context"
	"testing"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/operators"
	"github.com/quickpay/quickpay/internal/sensitive"
	"github.com/quickpay/quickpay/vaultkeys"
)

// TestRotationReachesEveryColumn binds a card, rotates the data and fp keys,
// re-encrypts the registered columns, and checks nothing is left behind and
// everything still works: repeat binds find the card, unbind reads the
// agreement.
func TestRotationReachesEveryColumn(t *testing.T) {
	ctx := context.Background()
	st := testenv.NewStack(t)
	v, err := vaultkeys.New(vaultkeys.Config{Pool: st.Pool, HSM: st.HSM, Columns: encryptedColumns()})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := binding.New(binding.Config{Pool: st.Pool, Vault: v, Banks: st.Banks})
	if err != nil {
		t.Fatal(err)
	}
	merchant := testenv.Merchant(t, st.Pool)
	info, err := st.SimCtl.Bank(ctx, "CCB")
	if err != nil {
		t.Fatal(err)
	}
	a, err := conformance.NewGen().Account(info, "debit", 100_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SimCtl.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	in := binding.BindInput{ExternalUserID: "rot-user", HolderName: a.HolderName, IDNumber: sensitive.NewIDNumber(a.IDNumber),
		CardNumber: sensitive.NewPAN(a.CardNumber), Phone: a.Phone}
	b, err := svc.StartBinding(ctx, merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	texts, err := st.SimCtl.SMS(ctx, a.Phone)
	if err != nil || len(texts) == 0 {
		t.Fatalf("sms: %v", err)
	}
	bound, err := svc.Confirm(ctx, merchant, b.ID, sensitive.NewOTP(texts[0].Code))
	if err != nil {
		t.Fatal(err)
	}

	ops, err := operators.NewStore(operators.Config{Pool: st.Pool, Sealer: v})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Create(ctx, "rotation-op", operators.RoleViewer, "test"); err != nil {
		t.Fatal(err)
	}

	for _, p := range []vaultkeys.Purpose{vaultkeys.PurposeData, vaultkeys.PurposeFP} {
		pol, err := v.Rotate(ctx, p, "test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Reencrypt(ctx, p); err != nil {
			t.Fatal(err)
		}
		// Retiring the old version succeeds only if no registered column
		// holds it any more.
		if err := v.SetMinDecryption(ctx, p, pol.Current, "test"); err != nil {
			t.Fatalf("retire old %s versions: %v", p, err)
		}
	}
	var behind int
	if err := st.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM bindings WHERE qp_key_version(pan_ct) < 2 OR qp_key_version(id_number_fp) < 2)
		+ (SELECT count(*) FROM members WHERE qp_key_version(name_ct) < 2 OR qp_key_version(name_fp) < 2)
		+ (SELECT count(*) FROM cards WHERE qp_key_version(agreement_ct) < 2 OR qp_key_version(pan_fp) < 2)
		+ (SELECT count(*) FROM operators WHERE qp_key_version(totp_secret_ct) < 2)`).Scan(&behind); err != nil {
		t.Fatal(err)
	}
	if behind != 0 {
		t.Fatalf("%d rows still under the old keys", behind)
	}
	in.ExternalUserID = "rot-user"
	again, err := svc.StartBinding(ctx, merchant, in)
	if err != nil || !again.Existing || again.CardID != bound.CardID {
		t.Fatalf("repeat bind after rotation = %+v, %v", again, err)
	}
	if c, err := svc.Unbind(ctx, merchant, bound.CardID); err != nil || c.Status != binding.CardUnbound {
		t.Fatalf("unbind after rotation = %+v, %v", c, err)
	}
}
