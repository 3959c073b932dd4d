package ids_test

import (
	"testing"

	"github.com/quickpay/quickpay/internal/ids"
)

func TestNewIsValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 10_000 {
		id := ids.New("card")
		if !ids.Valid("card", id) || seen[id] {
			t.Fatalf("id %q invalid or repeated", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "card_", "mem_abcdefghijklmnopqrstuvwx", "card_ABCDEFGHIJKLMNOPQRSTUVWX", "card_abc"} {
		if ids.Valid("card", bad) {
			t.Errorf("Valid(card, %q) = true", bad)
		}
	}
}
