package binding_test

import (
	"context"
	"errors"
	"testing"

	"github.com/quickpay/quickpay/bankadapters/conformance"
	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/internal/dev/testenv"
	"github.com/quickpay/quickpay/internal/sensitive"
)

func TestRepeatBinds(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.account(t, "CCB", "debit")
	_, in, b := w.startExplicit(t, a, binding.MemberInput{ExternalID: "rep-1"})
	bound, err := w.svc.Confirm(ctx, w.merchant, b.ID, w.code(t, a.Phone))
	if err != nil {
		t.Fatal(err)
	}
	sent := w.texts(t, a.Phone)

	again, err := w.svc.StartBinding(ctx, w.merchant, in)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Existing || again.CardID != bound.CardID || again.Status != binding.StatusBound {
		t.Fatalf("binding the same card again = %+v, want the existing card %s", again, bound.CardID)
	}
	if w.texts(t, a.Phone) != sent {
		t.Fatal("binding an already bound card sent an SMS")
	}

	other, err := w.svc.CreateMember(ctx, w.merchant, binding.MemberInput{ExternalID: "rep-2"})
	if err != nil {
		t.Fatal(err)
	}
	in.MemberID = other.ID
	if _, err := w.svc.StartBinding(ctx, w.merchant, in); !errors.Is(err, binding.ErrCardBoundElsewhere) {
		t.Fatalf("binding for another member: %v", err)
	}
}

func TestBindingRefusals(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	good := w.account(t, "ICBC", "debit")
	credit := w.account(t, "CMB", "credit")
	for _, tc := range []struct {
		name  string
		edit  func(*binding.BindInput)
		field string
		want  error
	}{
		{"no member given", func(in *binding.BindInput) { in.ExternalUserID = "" }, "member_id", binding.ErrInvalid},
		{"bad card number", func(in *binding.BindInput) { in.CardNumber = sensitive.NewPAN("6222021234567890123") }, "card_number", binding.ErrInvalid},
		{"bad id number", func(in *binding.BindInput) { in.IDNumber = sensitive.NewIDNumber("110105199003070018") }, "id_number", binding.ErrInvalid},
		{"bad phone", func(in *binding.BindInput) { in.Phone = "12345678901" }, "phone", binding.ErrInvalid},
		{"bad name", func(in *binding.BindInput) { in.HolderName = "X" }, "holder_name", binding.ErrInvalid},
		{"unsupported BIN", func(in *binding.BindInput) { in.CardNumber = sensitive.NewPAN("4111111111111111") }, "", binding.ErrCardUnsupported},
		{"name the bank refuses", func(in *binding.BindInput) { in.HolderName = "不是本人" }, "holder_name", binding.ErrElementsMismatch},
		{"phone the bank refuses", func(in *binding.BindInput) { in.Phone = "13912345678" }, "phone", binding.ErrElementsMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input(good)
			in.ExternalUserID = "refusal-user"
			tc.edit(&in)
			before := w.texts(t, good.Phone)
			_, err := w.svc.StartBinding(ctx, w.merchant, in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var f interface{ ErrorFields() map[string]any }
			if tc.field != "" && (!errors.As(err, &f) || f.ErrorFields()["field"] != tc.field) {
				t.Fatalf("err = %v, want field %s", err, tc.field)
			}
			if w.texts(t, good.Phone) != before {
				t.Fatal("a refused binding sent an SMS")
			}
		})
	}
	t.Run("credit card needs expiry and cvv2", func(t *testing.T) {
		in := input(credit)
		in.ExternalUserID = "credit-user"
		in.CVV2 = sensitive.CVV2{}
		_, err := w.svc.StartBinding(ctx, w.merchant, in)
		var fe *binding.FieldError
		if !errors.As(err, &fe) || fe.Field != "cvv2" {
			t.Fatalf("err = %v", err)
		}
		in = input(credit)
		in.ExternalUserID = "credit-user"
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil || b.Card.CardType != "credit" {
			t.Fatalf("credit binding = %+v, %v", b, err)
		}
	})
	t.Run("bank down answers unavailable and the binding can be retried", func(t *testing.T) {
		if err := w.SimCtl.AddFault(ctx, conformance.Fault{BankCode: "ICBC", Operation: "bind_apply", Mode: conformance.FaultError}); err != nil {
			t.Fatal(err)
		}
		in := input(good)
		in.ExternalUserID = "retry-user"
		if _, err := w.svc.StartBinding(ctx, w.merchant, in); !errors.Is(err, binding.ErrBankUnavailable) {
			t.Fatalf("err = %v", err)
		}
		if _, err := w.svc.StartBinding(ctx, w.merchant, in); err != nil {
			t.Fatalf("retry: %v", err)
		}
	})
	t.Run("another merchant sees nothing", func(t *testing.T) {
		other := testenv.Merchant(t, w.Pool)
		in := input(good)
		in.ExternalUserID = "tenant-user"
		b, err := w.svc.StartBinding(ctx, w.merchant, in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.GetBinding(ctx, other, b.ID); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("other merchant's GetBinding: %v", err)
		}
		if _, err := w.svc.Confirm(ctx, other, b.ID, w.code(t, good.Phone)); !errors.Is(err, binding.ErrNotFound) {
			t.Fatalf("other merchant's Confirm: %v", err)
		}
	})
}
